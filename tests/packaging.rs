//! Packaging on real tools: the systemd unit (systemd-analyze), the man pages
//! (mandoc, groff) against the keys the binary knows, the .deb built by
//! cargo-deb (dpkg-deb, lintian). Installing, running and purging the .deb
//! needs a container: see tests/docker.rs.
//!
//! Tools: systemd (systemd-analyze), mandoc, groff, lintian, dpkg-dev,
//! cargo-deb (`cargo install cargo-deb --locked`).

#[path = "support/deploy.rs"]
mod deploy;

use deploy::{repo, require, run, run_in};
use std::collections::BTreeMap;
use std::fs;

const UNIT: &str = "systemd/chimaera.service";
const MAN_PAGES: [&str; 3] = [
    "man/chimaera-runtime.8",
    "man/chimaera.1",
    "man/chimaera_config.yaml.5",
];

fn chimaera() -> &'static str {
    env!("CARGO_BIN_EXE_chimaera")
}

/// One line of `chimaera config keys`.
struct Key {
    key: String,
    var: Option<String>,
    default: String,
}

fn config_keys() -> Vec<Key> {
    let r = run(60, &[chimaera(), "config", "keys"]).expect_ok();
    let keys: Vec<Key> = r
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(
                f.len() >= 4,
                "`chimaera config keys` line is not key<TAB>var<TAB>default<TAB>text: {l:?}"
            );
            Key {
                key: f[0].to_string(),
                var: (f[1] != "-").then(|| f[1].to_string()),
                default: f[2].to_string(),
            }
        })
        .collect();
    assert!(
        keys.len() >= 20,
        "expected the full key list, got {} lines",
        keys.len()
    );
    keys
}

/// Unit file as `Directive -> [values]` (the [Service] and [Unit] sections
/// merged; enough for the checks below).
fn unit_directives() -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(repo().join(UNIT)).unwrap();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad unit line {line:?}"));
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    map
}

fn one<'a>(d: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    let v = d.get(key).unwrap_or_else(|| panic!("{UNIT} lacks {key}="));
    v.last().unwrap()
}

#[test]
fn unit_has_the_service_contract() {
    let d = unit_directives();
    assert_eq!(one(&d, "Type"), "notify");
    assert_eq!(one(&d, "User"), "chimaera");
    assert_eq!(one(&d, "Group"), "chimaera");
    assert_eq!(one(&d, "Restart"), "on-failure");
    assert_eq!(one(&d, "RuntimeDirectory"), "chimaera");
    assert_eq!(one(&d, "LogsDirectory"), "chimaera");
    assert!(
        one(&d, "WatchdogSec")
            .trim_end_matches('s')
            .parse::<u32>()
            .unwrap()
            > 0
    );
    let pre = one(&d, "ExecStartPre");
    assert!(
        pre.starts_with("/usr/bin/chimaera config check"),
        "ExecStartPre={pre}"
    );
    assert!(one(&d, "ExecStart").starts_with("/usr/bin/chimaera run"));
    let reload = one(&d, "ExecReload");
    assert!(
        reload.contains("-HUP") && reload.contains("$MAINPID"),
        "ExecReload={reload}"
    );
    // The unit's config file is the packaged conffile.
    assert!(pre.ends_with("/etc/chimaera/chimaera_config.yaml"));
}

/// Copy of the unit whose commands point at the freshly built binary, with the
/// man pages findable, so `systemd-analyze verify` checks real paths.
fn unit_for_verify() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(repo().join(UNIT))
        .unwrap()
        .replace("/usr/bin/chimaera ", &format!("{} ", chimaera()));
    fs::write(dir.path().join("chimaera.service"), text).unwrap();
    for (page, section) in [
        ("chimaera-runtime.8", "man8"),
        ("chimaera.1", "man1"),
        ("chimaera_config.yaml.5", "man5"),
    ] {
        let d = dir.path().join("man").join(section);
        fs::create_dir_all(&d).unwrap();
        fs::copy(repo().join("man").join(page), d.join(page)).unwrap();
    }
    dir
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    require(
        "systemd-analyze",
        &["systemd-analyze", "--version"],
        "apt-get install systemd",
    );
    let dir = unit_for_verify();
    let unit = dir.path().join("chimaera.service");
    let manpath = dir.path().join("man");
    let r = run_in(
        Some(dir.path()),
        &[("MANPATH", manpath.to_str().unwrap())],
        120,
        &["systemd-analyze", "verify", unit.to_str().unwrap()],
    );
    assert!(
        r.ok() && r.stdout.trim().is_empty() && r.stderr.trim().is_empty(),
        "{}",
        r.describe()
    );
}

/// `systemd-analyze security --offline=yes` on the unit, as both tests
/// below read it.
fn security_report() -> deploy::Run {
    require(
        "systemd-analyze",
        &["systemd-analyze", "--version"],
        "apt-get install systemd",
    );
    let unit = repo().join(UNIT);
    run(
        120,
        &[
            "systemd-analyze",
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().unwrap(),
        ],
    )
}

#[test]
fn unit_security_exposure_is_at_most_3() {
    let r = security_report();
    let all = format!("{}{}", r.stdout, r.stderr);
    let score: f64 = all
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for chimaera.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{}", r.describe()));
    eprintln!("systemd-analyze security --offline=yes: exposure {score}");
    assert!(score <= 3.0, "exposure {score} > 3.0:\n{all}");
}

/// Every sandboxing directive the analysis still marks as missing must be
/// explained by a comment in the unit.
#[test]
fn unit_explains_every_sandboxing_directive_left_out() {
    let unit_text = fs::read_to_string(repo().join(UNIT)).unwrap();
    let comments: String = unit_text
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let r = security_report();
    for line in r.stdout.lines().filter(|l| l.starts_with('✗')) {
        let directive = line
            .trim_start_matches('✗')
            .split_whitespace()
            .next()
            .unwrap();
        // "SystemCallFilter=~@resources" -> "SystemCallFilter=", "~@resources"
        let name = directive.split('=').next().unwrap();
        if name == "DeviceAllow" {
            // char-rtc:r comes from ProtectClock=yes itself.
            continue;
        }
        assert!(
            comments.contains(name),
            "{directive} is left out but no comment in {UNIT} mentions {name} (line: {line})"
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    require(
        "mandoc",
        &["sh", "-c", "command -v mandoc"],
        "apt-get install mandoc",
    );
    require("groff", &["groff", "--version"], "apt-get install groff");
    for page in MAN_PAGES {
        let path = repo().join(page);
        let p = path.to_str().unwrap();
        let r = run(60, &["mandoc", "-T", "lint", "-W", "style", p]);
        assert!(
            r.ok() && r.stdout.trim().is_empty() && r.stderr.trim().is_empty(),
            "{}",
            r.describe()
        );
        let r = run(60, &["groff", "-ww", "-z", "-man", p]);
        assert!(r.ok() && r.stderr.trim().is_empty(), "{}", r.describe());
        let r = run(60, &["mandoc", "-T", "utf8", p]);
        assert!(r.ok() && !r.stdout.trim().is_empty(), "{}", r.describe());
    }
}

/// No font macro whose argument renders as nothing (`.B ""`, a bare `.B`
/// before another request): the reader would see a hole where a value was
/// meant to be.
#[test]
fn man_pages_have_no_empty_font_arguments() {
    let font = [".B", ".I", ".BR", ".RB", ".BI", ".IB", ".IR", ".RI"];
    for page in MAN_PAGES {
        let text = fs::read_to_string(repo().join(page)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let mut parts = line.splitn(2, ' ');
            let request = parts.next().unwrap();
            if !font.contains(&request) {
                continue;
            }
            let arg = parts.next().unwrap_or("").trim();
            let next_is_request = lines.get(i + 1).is_none_or(|n| n.starts_with('.'));
            assert!(
                !(arg.is_empty() && next_is_request),
                "{page}:{}: `{line}` has no argument: it renders as nothing",
                i + 1
            );
            let visible = arg.replace("\\&", "").replace(['"', ' '], "");
            assert!(
                !arg.is_empty() && !visible.is_empty() || arg.is_empty(),
                "{page}:{}: `{line}` renders as nothing",
                i + 1
            );
        }
    }
}

/// The `.B key` entry of the man page is followed by "Default: <default>.
/// Variable: <CHI_VAR|none>."
#[test]
fn daemon_man_page_lists_every_key_default_and_variable() {
    let page = fs::read_to_string(repo().join("man/chimaera-runtime.8")).unwrap();
    let lines: Vec<&str> = page.lines().collect();
    let env_section = page
        .split(".SH ENVIRONMENT")
        .nth(1)
        .expect("man page has ENVIRONMENT")
        .split("\n.SH ")
        .next()
        .unwrap();
    for k in config_keys() {
        let at = lines
            .iter()
            .position(|l| *l == format!(".B {}", k.key))
            .unwrap_or_else(|| panic!("man/chimaera-runtime.8 has no `.B {}` entry", k.key));
        let desc = lines[at + 1];
        let default = if k.default.is_empty() {
            "\"\"".to_string()
        } else {
            k.default.clone()
        };
        assert!(
            desc.starts_with("Default: ") && desc.contains(&default),
            "{}: the man page says {desc:?}, the binary's default is {default:?}",
            k.key
        );
        let var = k.var.clone().unwrap_or_else(|| "none".into());
        assert!(
            desc.contains(&format!("Variable: {var}.")),
            "{}: man page says {desc:?}, expected variable {var}",
            k.key
        );
        if let Some(var) = &k.var {
            assert!(
                env_section.contains(var.as_str()),
                "{var} missing from ENVIRONMENT of chimaera-runtime(8)"
            );
        }
    }
    assert!(env_section.contains("CHI_SERVER_CONF"));
    for section in [
        "SIGNALS",
        "EXIT STATUS",
        "FILES",
        "EXAMPLES",
        "OPTIONS",
        "SYNOPSIS",
    ] {
        assert!(
            page.contains(&format!(".SH {section}")),
            "chimaera-runtime(8) lacks {section}"
        );
    }
    for code in ["69", "70", "78"] {
        assert!(
            page.contains(&format!(".B {code}\n")),
            "exit status {code} not documented"
        );
    }
}

#[test]
fn config_file_man_page_lists_every_key() {
    let page = fs::read_to_string(repo().join("man/chimaera_config.yaml.5")).unwrap();
    for k in config_keys() {
        let (section, leaf) = k.key.split_once('.').unwrap();
        let body = page
            .split(&format!(".SS {section}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("chimaera_config.yaml(5) has no section {section}"))
            .split("\n.S")
            .next()
            .unwrap();
        assert!(
            body.contains(&format!(".BR {leaf} ")),
            "chimaera_config.yaml(5): {} not under .SS {section}",
            k.key
        );
    }
}

#[test]
fn packaged_conffile_is_valid() {
    // The group `chimaera` exists only where the package is installed (checked
    // with the group in tests/docker.rs); everything else is checked here.
    let conf = repo().join("packaging/chimaera_config.yaml");
    let r = run_in(
        None,
        &[("CHI_SHM_GROUP", "")],
        60,
        &[chimaera(), "config", "check", conf.to_str().unwrap()],
    );
    assert!(r.ok(), "{}", r.describe());
    let shown = run_in(
        None,
        &[("CHI_SHM_GROUP", "")],
        60,
        &[
            chimaera(),
            "config",
            "show",
            "--config",
            conf.to_str().unwrap(),
        ],
    )
    .expect_ok()
    .stdout;
    for want in [
        "main_segment_name: chi_main_segment\n",
        "run_dir: /run/chimaera\n",
        "file: /var/log/chimaera/chimaera.log\n",
    ] {
        assert!(
            shown.contains(want),
            "effective packaged config lacks {want:?}:\n{shown}"
        );
    }
    let text = fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("group: chimaera"),
        "the conffile must share the segments with group chimaera"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.split('#').next().unwrap().contains("${USER}")),
        "the system service's segment names must not depend on the user"
    );
}

#[test]
fn deb_has_binaries_unit_conffile_man_pages_and_hostfile() {
    let deb = deploy::deb();
    let d = deb.to_str().unwrap();
    let contents = run(120, &["dpkg-deb", "--contents", d]).expect_ok().stdout;
    for path in [
        "./usr/bin/chimaera",
        "./usr/bin/chimaera_start_runtime",
        "./usr/bin/chimaera_stop_runtime",
        "./etc/chimaera/chimaera_config.yaml",
        "./usr/lib/systemd/system/chimaera.service",
        "./usr/share/doc/chimaera/examples/hostfile",
        "./usr/share/doc/chimaera/copyright",
        "./usr/share/man/man8/chimaera-runtime.8.gz",
        "./usr/share/man/man1/chimaera.1.gz",
        "./usr/share/man/man5/chimaera_config.yaml.5.gz",
        "./usr/share/bash-completion/completions/chimaera",
        "./usr/share/zsh/vendor-completions/_chimaera",
        "./usr/share/fish/vendor_completions.d/chimaera.fish",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} not in the .deb:\n{contents}"
        );
    }
    let info = run(
        120,
        &[
            "sh",
            "-c",
            &format!("dpkg-deb -I '{d}' conffiles; dpkg-deb -f '{d}' Depends"),
        ],
    )
    .expect_ok()
    .stdout;
    assert!(
        info.contains("/etc/chimaera/chimaera_config.yaml"),
        "conffile not declared:\n{info}"
    );
    for dep in ["adduser", "libc6"] {
        assert!(info.contains(dep), "Depends lacks {dep}:\n{info}");
    }
    // `$auto` must cover the shared libraries the binary really links, e.g.
    // the system libzmq (libzmq5) when zmq is not built in statically.
    let root = tempfile::tempdir().unwrap();
    run(120, &["dpkg-deb", "-x", d, root.path().to_str().unwrap()]).expect_ok();
    let needed = run(
        60,
        &[
            "readelf",
            "-d",
            root.path().join("usr/bin/chimaera").to_str().unwrap(),
        ],
    )
    .expect_ok()
    .stdout;
    for (lib, package) in [("libzmq.so", "libzmq5"), ("libstdc++.so", "libstdc++6")] {
        if needed.contains(lib) {
            assert!(
                info.contains(package),
                "the binary links {lib} but Depends lacks {package}:\n{info}"
            );
        }
    }
    let scripts = run(120, &["sh", "-c", &format!("dpkg-deb -I '{d}' postinst")])
        .expect_ok()
        .stdout;
    assert!(
        scripts.contains("adduser --system"),
        "postinst does not create the user"
    );
    assert!(
        scripts.contains("deb-systemd-helper enable chimaera.service"),
        "postinst does not enable the unit"
    );
}

/// lintian: no errors; every warning is listed, with its reason, in
/// packaging/README.md.
#[test]
fn deb_is_lintian_clean() {
    require(
        "lintian",
        &["lintian", "--version"],
        "apt-get install lintian",
    );
    let deb = deploy::deb();
    let r = run(
        600,
        &["lintian", "--tag-display-limit", "0", deb.to_str().unwrap()],
    );
    let readme = fs::read_to_string(repo().join("packaging/README.md")).unwrap();
    let mut problems = Vec::new();
    for line in r.stdout.lines() {
        let Some((kind, rest)) = line.split_once(": chimaera") else {
            continue;
        };
        let tag = rest
            .trim_start_matches(|c| c != ' ')
            .split_whitespace()
            .next()
            .unwrap_or("");
        match kind {
            "E" => problems.push(format!("lintian error: {line}")),
            "W" if !readme.contains(&format!("`{tag}`")) => problems.push(format!(
                "lintian warning not explained in packaging/README.md: {line}"
            )),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nfull output:\n{}",
        problems.join("\n"),
        r.describe()
    );
}

/// lintian's errors, and its warnings that packaging/README.md does not
/// list with their reason, for any package.
fn lintian_problems(deb: &std::path::Path) -> Vec<String> {
    require(
        "lintian",
        &["lintian", "--version"],
        "apt-get install lintian",
    );
    let r = run(
        600,
        &["lintian", "--tag-display-limit", "0", deb.to_str().unwrap()],
    );
    let readme = fs::read_to_string(repo().join("packaging/README.md")).unwrap();
    let mut problems = Vec::new();
    for line in r.stdout.lines() {
        // "W: libchimaera0: tag [context]"
        let mut parts = line.splitn(3, ": ");
        let (Some(kind), Some(_package), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let tag = rest.split_whitespace().next().unwrap_or("");
        match kind {
            "E" => problems.push(format!("lintian error: {line}")),
            "W" if !readme.contains(&format!("`{tag}`")) => problems.push(format!(
                "lintian warning not explained in packaging/README.md: {line}"
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        problems.push(format!("full output:\n{}", r.describe()));
    }
    problems
}

#[test]
fn client_debs_are_lintian_clean() {
    for deb in deploy::client_debs() {
        let problems = lintian_problems(&deb);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// dpkg-deb's view of a package: its control fields and file list.
fn deb_info(deb: &std::path::Path, what: &str) -> String {
    run(120, &["dpkg-deb", what, deb.to_str().unwrap()])
        .expect_ok()
        .stdout
}

/// libchimaera0 is what Debian policy asks of a shared library package: named
/// after the soname, the library and its soname link in the multiarch
/// directory, an shlibs file, the ldconfig trigger, Depends from the
/// libraries it links. libchimaera-dev holds the header (the repository's,
/// byte for byte), the C++ wrapper, the .pc (the crate's version), the
/// link and the static archive, and depends on exactly this libchimaera0.
#[test]
fn client_debs_follow_the_shared_library_policy() {
    let [lib, dev] = deploy::client_debs();
    let version = env!("CARGO_PKG_VERSION");
    let control = deb_info(&lib, "--info");
    for want in [
        "Package: libchimaera0\n",
        "Section: libs\n",
        "Multi-Arch: same\n",
        " triggers ",
        " shlibs ",
        " md5sums ",
    ] {
        assert!(
            control.contains(want),
            "libchimaera0 lacks {want:?}:\n{control}"
        );
    }
    let depends = run(120, &["dpkg-deb", "-f", lib.to_str().unwrap(), "Depends"])
        .expect_ok()
        .stdout;
    assert!(depends.contains("libc6 (>="), "Depends: {depends}");
    let lib_version = run(120, &["dpkg-deb", "-f", lib.to_str().unwrap(), "Version"])
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    assert!(
        lib_version.starts_with(&format!("{version}-")),
        "{lib_version}"
    );
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    run(
        120,
        &[
            "sh",
            "-c",
            &format!(
                "dpkg-deb -e '{}' '{r}/lib-control' && dpkg-deb -e '{}' '{r}/dev-control' && dpkg-deb -x '{}' '{r}' && dpkg-deb -x '{}' '{r}'",
                lib.display(),
                dev.display(),
                lib.display(),
                dev.display()
            ),
        ],
    )
    .expect_ok();
    let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
    assert_eq!(read("lib-control/triggers"), "activate-noawait ldconfig\n");
    assert_eq!(
        read("lib-control/shlibs"),
        format!("libchimaera 0 libchimaera0 (>= {version})\n")
    );
    let multiarch = fs::read_dir(root.path().join("usr/lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.join("libchimaera.so.0").exists())
        .expect("usr/lib/<triplet>/libchimaera.so.0");
    let real = multiarch.join(format!("libchimaera.so.{version}"));
    assert_eq!(
        fs::read_link(multiarch.join("libchimaera.so.0")).unwrap(),
        std::path::Path::new(&format!("libchimaera.so.{version}"))
    );
    let dynamic = run(60, &["readelf", "-d", real.to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(
        dynamic.contains("Library soname: [libchimaera.so.0]"),
        "{dynamic}"
    );
    let symbols = run(60, &["readelf", "-S", real.to_str().unwrap()])
        .expect_ok()
        .stdout;
    assert!(!symbols.contains(".debug_info"), "not stripped:\n{symbols}");

    let dev_depends = run(120, &["dpkg-deb", "-f", dev.to_str().unwrap(), "Depends"])
        .expect_ok()
        .stdout;
    assert_eq!(
        dev_depends.trim(),
        format!("libchimaera0 (= {lib_version})")
    );
    assert_eq!(
        fs::read_link(multiarch.join("libchimaera.so")).unwrap(),
        std::path::Path::new("libchimaera.so.0")
    );
    assert!(multiarch.join("libchimaera.a").is_file());
    for header in ["chimaera.h", "chimaera.hpp"] {
        assert_eq!(
            read(&format!("usr/include/{header}")),
            fs::read_to_string(repo().join("crates/chimaera-capi/include").join(header)).unwrap(),
            "{header} in libchimaera-dev is not the repository's"
        );
    }
    let pc = fs::read_to_string(multiarch.join("pkgconfig/chimaera.pc")).unwrap();
    assert!(pc.contains(&format!("\nVersion: {version}\n")), "{pc}");
    // pkg-config reads it: the flags a program builds with.
    let flags = run_in(
        None,
        &[(
            "PKG_CONFIG_PATH",
            multiarch.join("pkgconfig").to_str().unwrap(),
        )],
        60,
        &["pkg-config", "--cflags", "--libs", "chimaera"],
    )
    .expect_ok()
    .stdout;
    assert_eq!(flags.trim(), "-lchimaera");
}
