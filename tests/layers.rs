//! The layer picture of docs/ARCHITECTURE.md, enforced: every module of the
//! daemon and of the protocol crate imports only modules of lower layers,
//! and the crates depend on each other only downward. A new top-level
//! module must be given its layer here, which is the moment to decide it.
//!
//! Test code (`tests.rs` files and `#[cfg(test)]` modules) is exempt: a test
//! may drive several layers at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The daemon's top-level modules (`src/`), lowest layer first. A module
/// may import modules of strictly lower layers only.
const DAEMON: &[(&str, u32)] = &[
    ("sys", 0),
    ("exit", 0),
    ("cpus", 0),
    ("config", 1),
    ("cluster", 2),
    ("shm", 2),
    ("plugin", 2),
    ("preflight", 3),
    ("engine", 4),
    ("modules", 5),
    ("net", 5),
    ("metrics", 6),
    ("service", 7),
    ("bench", 8),
    ("cli", 9),
    ("builder", 10),
];

/// `chimaera-proto`'s modules, lowest first.
const PROTO: &[(&str, u32)] = &[
    ("shared", 0),
    ("sys", 0),
    ("sync", 0),
    ("wire", 0),
    ("broadcast", 0),
    ("header", 1),
    ("record", 1),
    ("lane", 1),
    ("alloc", 1),
    ("layout", 2),
    ("admin", 2),
    ("protocol", 3),
    ("fuzz_support", 4),
];

/// `chimaera-client`'s modules, lowest first (`lib` is the crate root).
const CLIENT: &[(&str, u32)] = &[
    ("locate", 0),
    ("discovery", 1),
    ("connect", 2),
    ("submit", 2),
    ("handle", 2),
    ("lib", 4),
];

/// Which workspace crates each crate may depend on.
const CRATES: &[(&str, &[&str])] = &[
    ("crates/chimaera-proto", &[]),
    ("crates/chimaera-client", &["chimaera-proto"]),
    ("crates/chimaera-module", &["chimaera-proto"]),
    (
        "crates/chimaera-capi",
        &["chimaera-client", "chimaera-proto"],
    ),
    ("python", &["chimaera-client", "chimaera-proto"]),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without its `#[cfg(test)]` modules.
fn product_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            // A test module: skip it to its closing brace at its indent.
            let indent = line.len() - t.len();
            let head = lines.next().unwrap();
            if head.trim_end().ends_with(';') {
                continue;
            }
            for l in lines.by_ref() {
                if l.len() - l.trim_start().len() == indent && l.trim() == "}" {
                    break;
                }
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("// ") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The first path segments after `crate::`, including each name of a
/// `use crate::{a, b::c}` group.
fn crate_refs(code: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `chimaera_crate::` or similar, not ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            refs.push(first_segment(&item));
        } else {
            refs.push(first_segment(rest));
        }
    }
    refs.retain(|r| !r.is_empty());
    refs
}

fn first_segment(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level module a file belongs to, or None for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Checks one crate's sources against its layer table; returns the
/// violations as lines.
fn check_crate(src: &Path, table: &[(&str, u32)], root_name: Option<&str>) -> Vec<String> {
    let rank: BTreeMap<&str, u32> = table.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(module) = module_of(src, &file).or_else(|| root_name.map(String::from)) else {
            continue; // the crate root only declares and re-exports
        };
        if file.parent() == Some(&src.join("bin")) {
            continue;
        }
        let Some(&mine) = rank.get(module.as_str()) else {
            bad.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for target in crate_refs(&product_code(&text)) {
            if target == module {
                continue;
            }
            match rank.get(target.as_str()) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => bad.push(format!(
                    "{}: `{module}` (layer {mine}) imports `{target}` (layer {theirs}): only lower layers may be imported",
                    file.display()
                )),
                // Items of the crate root (re-exports, functions): allowed.
                None => {}
            }
        }
    }
    bad
}

#[test]
fn daemon_modules_import_only_lower_layers() {
    let bad = check_crate(&root().join("src"), DAEMON, None);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn protocol_modules_import_only_lower_layers() {
    let bad = check_crate(&root().join("crates/chimaera-proto/src"), PROTO, None);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn client_modules_import_only_lower_layers() {
    let bad = check_crate(
        &root().join("crates/chimaera-client/src"),
        CLIENT,
        Some("lib"),
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn crates_depend_only_downward_and_never_on_the_daemon() {
    for (dir, allowed) in CRATES {
        let manifest = std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap();
        let value: toml::Value = toml::from_str(&manifest).unwrap();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = value.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for name in deps.keys() {
                if name.starts_with("chimaera") {
                    assert!(
                        allowed.contains(&name.as_str()),
                        "{dir} depends on {name}; it may depend on {allowed:?} only"
                    );
                }
            }
        }
        let mut files = Vec::new();
        rust_files(&root().join(dir).join("src"), &mut files);
        for file in files {
            let code = product_code(&std::fs::read_to_string(&file).unwrap());
            assert!(
                !code.contains("chimaera::"),
                "{} names the daemon crate (`chimaera::`)",
                file.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_upward_imports() {
    // The parser itself: a group import, a path in an expression, and a
    // test module and comments that must not count.
    let code = product_code(
        "use crate::{config::Config, engine::{self, Engine}};\n\
         fn f() { crate::net::start(); } // crate::service\n\
         /// crate::cli in a doc comment\n\
         #[cfg(test)]\nmod tests {\n    use crate::bench;\n}\n",
    );
    assert_eq!(crate_refs(&code), ["config", "engine", "net"]);
}

#[test]
fn clients_and_modules_build_without_the_daemons_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (krate, banned) in [
        (
            "chimaera-client",
            &["zmq", "zmq-sys", "clap", "slog", "corosensei"][..],
        ),
        ("chimaera-module", &["zmq", "zmq-sys", "clap", "slog"][..]),
        (
            "chimaera-capi",
            &["zmq", "zmq-sys", "clap", "slog", "corosensei"][..],
        ),
        (
            "chimaera-python",
            &["zmq", "zmq-sys", "clap", "slog", "corosensei"][..],
        ),
        (
            "chimaera-proto",
            &["zmq", "zmq-sys", "clap", "slog", "corosensei"][..],
        ),
    ] {
        let out = std::process::Command::new(&cargo)
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo tree -p {krate} failed");
        let tree = String::from_utf8_lossy(&out.stdout);
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            assert!(
                !banned.contains(&name),
                "{krate} depends on {name}:\n{tree}"
            );
        }
    }
}
