//! Modules as plugins: the stock `chimaera` binary loads module libraries
//! named in its configuration (a Rust one made with `export_module!`, a C
//! one written against chimaera_module.h), serves their pools to clients
//! and `chimaera call`, survives their panics, and refuses, before creating
//! anything, every library it cannot trust to fit.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use chimaera::client::{ClientError, Task};
use common::Node;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Rust plugins, built once per run into a target directory of their
/// own (the outer `cargo test` builds no cdylib artifacts for them).
fn rust_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target").join("plugin-tests");
        let out = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "build",
                "--quiet",
                "-p",
                "kv-plugin",
                "-p",
                "faulty-plugin",
                "--target-dir",
            ])
            .arg(&target)
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = target.join("debug");
        assert!(dir.join("libkv_plugin.so").is_file());
        dir
    })
}

/// examples/plugins/echo_c, built by its Makefile as a user would.
fn echo_c() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = root().join("examples/plugins/echo_c");
        let out = Command::new("make")
            .arg("-C")
            .arg(&dir)
            .output()
            .expect("make runs");
        assert!(
            out.status.success(),
            "make -C examples/plugins/echo_c failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("libecho_c.so")
    })
}

/// A C library from `source`, compiled against chimaera_module.h into `dir`.
fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let lib = dir.join(format!("lib{name}.so"));
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(root().join("crates/chimaera-module/include"))
        .arg(&src)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "cc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// A descriptor in C with the given fields, and functions that do nothing.
fn descriptor_source(abi: &str, hash: &str, name: &str) -> String {
    format!(
        r#"#include "chimaera_module.h"
static int32_t create(const ChiPoolInfo *p, const uint8_t *b, size_t n, void **c, ChiErrBuf *e) {{
    (void)p; (void)b; (void)n; (void)e; *c = 0; return CHI_OK; }}
static int32_t run(void *c, const ChiTaskInfo *i, ChiTask *t, const ChiHostApi *h, ChiErrBuf *e) {{
    (void)c; (void)i; (void)t; (void)h; (void)e; return CHI_OK; }}
static const ChiModuleDescriptor D = {{ {abi}, sizeof(ChiModuleDescriptor), {hash},
    CHI_STR("{name}"), CHI_STR("0.0.1"), CHI_STR(CHI_MODULE_SDK_VERSION), create, run, 0, 0 }};
const ChiModuleDescriptor *chimaera_module_entry(void) {{ return &D; }}
"#
    )
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `chimaera call` on `node`, with `args` after `call`.
fn call(node: &Node, args: &[&str]) -> Output {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    node.output(&all)
}

#[test]
fn a_rust_plugin_serves_pools_from_compose_the_client_and_call() {
    let dir = rust_plugins();
    let mut node = Node::new("kvplug");
    node.write_config(
        "debug",
        &format!(
            "modules:\n  path: [/nonexistent, {}]\n  load: [kv]\n",
            dir.display()
        ),
    );
    let mut text_cfg = std::fs::read_to_string(node.config_path()).unwrap();
    text_cfg
        .push_str("compose:\n  - name: sessions\n    module: kv\n    params:\n      capacity: 2\n");
    std::fs::write(node.config_path(), text_cfg).unwrap();

    // `config check` loads it as `run` will, and says so.
    let check = node.output(&["config", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let listed = String::from_utf8_lossy(&check.stdout);
    assert!(
        listed.contains("module kv 0.1.0 from") && listed.contains("libkv_plugin.so"),
        "{listed}"
    );

    let idx = node.spawn(&[]);
    node.wait_running(idx);
    assert!(
        node.log().contains("loaded module kv 0.1.0"),
        "{}",
        node.log()
    );
    let client = node.client();
    let sessions = client
        .list_pools()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "sessions")
        .expect("compose made the pool");
    assert_eq!(sessions.module, "kv");
    let put = |input: &[u8]| client.call(&Task::new(sessions.id, 0, input));
    assert_eq!(put(b"alice\0online").unwrap(), b"");
    assert_eq!(put(b"alice\0away").unwrap(), b"online");
    put(b"bob\0online").unwrap();
    let full = put(b"carol\0online").unwrap_err();
    assert!(
        full.to_string().contains("the pool is full (2 keys)"),
        "{full}"
    );
    let bad = put(b"no separator").unwrap_err();
    assert!(
        matches!(&bad, ClientError::Module { message, .. } if message.contains("expected key")),
        "{bad}"
    );

    // The same pool from the shell.
    let got = call(&node, &["sessions", "1", "alice"]);
    assert_eq!(got.status.code(), Some(0), "{}", text(&got));
    assert_eq!(got.stdout, b"away");
    let entry = node.dir.path().join("entry.bin");
    std::fs::write(&entry, b"dave\0here").unwrap();
    let at = format!("@{}", entry.display());
    let delete = call(&node, &["sessions", "2", "bob"]);
    assert_eq!(delete.stdout, b"online", "{}", text(&delete));
    let stored = call(&node, &["sessions", "0", &at]);
    assert_eq!(stored.status.code(), Some(0), "{}", text(&stored));
    let hex = call(&node, &[&sessions.id.to_string(), "1", "64617665", "--hex"]);
    assert_eq!(
        String::from_utf8_lossy(&hex.stdout),
        "68657265\n",
        "{}",
        text(&hex)
    );
    let count = call(&node, &["sessions", "3", "--hex"]);
    assert_eq!(String::from_utf8_lossy(&count.stdout), "0200000000000000\n");
    let missing = call(&node, &["sessions", "1", "zed"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no key \"zed\""),
        "{}",
        text(&missing)
    );
    let nopool = call(&node, &["nosuch", "1"]);
    assert_eq!(nopool.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&nopool.stderr).contains("sessions"),
        "{}",
        text(&nopool)
    );

    // `pool create` names the plugin module like a built-in one.
    let made = node.output(&[
        "pool",
        "create",
        "cache",
        "kv",
        "--params",
        r#"{"capacity": 5}"#,
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made));
    let refused = node.output(&["pool", "create", "bad", "kv", "--params", r#"{"size": 1}"#]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown field `size`"));

    let stop = node.output(&["stop"]);
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    assert_eq!(node.wait_exit(idx, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_c_plugin_runs_tasks_that_yield_and_wait_for_subtasks() {
    let lib = echo_c();
    let mut node = Node::new("echoc");
    // Named by the environment this time, found by name on the path.
    let path = lib.parent().unwrap().display().to_string();
    let idx = node.spawn(&[("CHI_MODULES_PATH", &path), ("CHI_MODULES_LOAD", "echo_c")]);
    node.wait_running(idx);
    let client = node.client();
    let pool = client
        .create_pool("echo", "echo_c", r#"{"prefix": "> "}"#)
        .unwrap();
    let run = |method, input: &[u8]| client.call(&Task::new(pool.id, method, input));
    assert_eq!(run(0, b"hello").unwrap(), b"> hello");
    assert_eq!(run(1, b"hello").unwrap(), b"olleh");
    assert_eq!(run(2, b"Hello, C!").unwrap(), b"HELLO, C!");
    let bad = run(2, "né".as_bytes()).unwrap_err();
    assert!(bad.to_string().contains("7-bit ASCII"), "{bad}");
    // A subtask to its own pool: the C code's stack is suspended in
    // `wait` while the worker runs the subtask.
    assert_eq!(run(4, b"relayed").unwrap(), b"> relayed");
    let nomethod = run(9, b"").unwrap_err();
    assert!(nomethod.to_string().contains("no method 9"), "{nomethod}");
    // Many at once, from several threads.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let client = node.client();
            s.spawn(move || {
                for i in 0..500u32 {
                    let input = format!("{t}-{i}");
                    let out = client
                        .call(&Task::new(pool.id, 1, input.as_bytes()))
                        .unwrap();
                    let back: Vec<u8> = out.into_iter().rev().collect();
                    assert_eq!(back, input.as_bytes());
                }
            });
        }
    });
    let calls = run(3, b"").unwrap();
    let n = u64::from_le_bytes(calls.try_into().unwrap());
    assert!(n >= 2000 + 7, "the container counted {n} tasks");
    // Bad parameters refuse the pool with the module's own words.
    let refused = client
        .create_pool("echo2", "echo_c", r#"{"colour": 1}"#)
        .unwrap_err();
    assert!(
        refused.to_string().contains("echo_c takes no parameters"),
        "{refused}"
    );
    let got = call(&node, &["echo", "1", "abc"]);
    assert_eq!(got.stdout, b"cba", "{}", text(&got));
    client.destroy_pool("echo").unwrap();
    node.signal(idx, libc::SIGTERM);
    assert_eq!(node.wait_exit(idx, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_panicking_plugin_fails_its_task_and_the_daemon_goes_on() {
    let dir = rust_plugins();
    let mut node = Node::new("faultyplug");
    let lib = dir.join("libfaulty_plugin.so");
    node.write_config("info", &format!("modules:\n  load: [{}]\n", lib.display()));
    let idx = node.spawn(&[]);
    node.wait_running(idx);
    let client = node.client();
    let refused = client.create_pool("p0", "faulty", "\"panic\"").unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("panicked creating the container"),
        "{refused}"
    );
    let pool = client.create_pool("p1", "faulty", "").unwrap();
    for _ in 0..3 {
        let e = client.call(&Task::new(pool.id, 0, b"")).unwrap_err();
        assert!(
            matches!(&e, ClientError::Module { message, .. } if message.contains("method 0 always panics")),
            "{e}"
        );
        let e = client.call(&Task::new(pool.id, 2, b"")).unwrap_err();
        assert!(e.to_string().contains("panicked after a yield"), "{e}");
        assert_eq!(client.call(&Task::new(pool.id, 1, b"")).unwrap(), b"fine");
        assert_eq!(client.call(&Task::new(pool.id, 3, b"")).unwrap(), b"fine");
    }
    assert!(client.ping().is_ok());
    node.signal(idx, libc::SIGTERM);
    assert_eq!(node.wait_exit(idx, Duration::from_secs(10)).code(), Some(0));
}

/// Every library the daemon cannot trust to fit stops `run` and fails
/// `config check` the same way: exit 78, one line naming the key, the file
/// and the fault, nothing created.
#[test]
fn every_unloadable_library_is_refused_before_anything_is_created() {
    let kv_dir = rust_plugins();
    let echo = echo_c();
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path();
    let no_entry = c_library(
        d,
        "noentry",
        "int chimaera_module_entree(void) { return 0; }\n",
    );
    let old_abi = c_library(
        d,
        "oldabi",
        &descriptor_source("99", "CHI_MODULE_LAYOUT_HASH", "oldabi"),
    );
    let bad_hash = c_library(
        d,
        "badhash",
        &descriptor_source("CHI_MODULE_ABI_VERSION", "0x1234ull", "badhash"),
    );
    let builtin = c_library(
        d,
        "fakebdev",
        &descriptor_source("CHI_MODULE_ABI_VERSION", "CHI_MODULE_LAYOUT_HASH", "bdev"),
    );
    let twin = c_library(
        d,
        "twin",
        &descriptor_source("CHI_MODULE_ABI_VERSION", "CHI_MODULE_LAYOUT_HASH", "echo_c"),
    );
    // Found as libmislabel.so, but holds module "other".
    c_library(
        d,
        "mislabel",
        &descriptor_source("CHI_MODULE_ABI_VERSION", "CHI_MODULE_LAYOUT_HASH", "other"),
    );
    let not_elf = d.join("libjunk.so");
    std::fs::write(&not_elf, b"not a library").unwrap();

    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            "load: [nosuch]".into(),
            format!("{}", d.display()),
            vec![
                "modules.load[0]",
                "module \"nosuch\" not found",
                "libnosuch.so",
            ],
        ),
        (
            format!("load: [{}/libgone.so]", d.display()),
            String::new(),
            vec!["modules.load[0]", "libgone.so", "no such file"],
        ),
        (
            format!("load: [{}]", not_elf.display()),
            String::new(),
            vec!["modules.load[0]", "libjunk.so", "cannot load it"],
        ),
        (
            format!("load: [{}]", no_entry.display()),
            String::new(),
            vec![
                "modules.load[0]",
                "libnoentry.so",
                "exports no `chimaera_module_entry`",
            ],
        ),
        (
            format!("load: [{}]", old_abi.display()),
            String::new(),
            vec![
                "modules.load[0]",
                "liboldabi.so",
                "built for module ABI 99",
                "loads ABI 1",
            ],
        ),
        (
            format!("load: [{}]", bad_hash.display()),
            String::new(),
            vec![
                "modules.load[0]",
                "libbadhash.so",
                "layout hash 0x0000000000001234",
            ],
        ),
        (
            format!("load: [{}]", builtin.display()),
            String::new(),
            vec![
                "modules.load[0]",
                "libfakebdev.so",
                "\"bdev\" is taken by a module built into this daemon",
            ],
        ),
        (
            format!("load: [{}, {}]", echo.display(), twin.display()),
            String::new(),
            vec![
                "modules.load[1]",
                "libtwin.so",
                "\"echo_c\" is taken by",
                "libecho_c.so",
            ],
        ),
        (
            "load: [mislabel]".into(),
            format!("{}", d.display()),
            vec![
                "modules.load[0]",
                "libmislabel.so",
                "holds module \"other\", not \"mislabel\"",
            ],
        ),
    ];
    let _ = kv_dir;
    for (load, path, wants) in cases {
        let mut node = Node::new("refuse");
        let path_line = if path.is_empty() {
            String::new()
        } else {
            format!("  path: [{path}]\n")
        };
        node.write_config("info", &format!("modules:\n{path_line}  {load}\n"));
        let check = node.output(&["config", "check"]);
        let idx = node.spawn(&[]);
        let st = node.wait_exit(idx, Duration::from_secs(20));
        let run_err = node.stderr_of(idx);
        assert_eq!(check.status.code(), Some(78), "{load}: {}", text(&check));
        assert_eq!(st.code(), Some(78), "{load}: {run_err}");
        let check_err = String::from_utf8_lossy(&check.stderr).to_string();
        let lines: Vec<&str> = run_err
            .lines()
            .filter(|l| l.contains("configuration error"))
            .collect();
        assert_eq!(lines.len(), 1, "{load}: one line: {run_err}");
        for w in &wants {
            assert!(lines[0].contains(w), "{load}: {w:?} not in {:?}", lines[0]);
        }
        // The same words from both: one validation.
        assert!(
            check_err.contains(lines[0]),
            "{load}: check said {check_err:?}, run said {run_err:?}"
        );
        assert!(
            node.segments_present().is_empty(),
            "{load}: segments created"
        );
        assert!(
            !node.discovery_path().exists(),
            "{load}: discovery file written"
        );
    }
}

#[test]
fn module_check_tells_what_a_library_is_and_whether_it_fits() {
    let dir = rust_plugins();
    let node = Node::new("modcheck");
    let ok = node.output(&[
        "module",
        "check",
        dir.join("libkv_plugin.so").to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let out = String::from_utf8_lossy(&ok.stdout);
    for w in [
        "module: kv",
        "version: 0.1.0",
        "abi: 1 (this daemon: 1",
        "sdk: 0.1.0",
        "compatible: yes",
    ] {
        assert!(out.contains(w), "{w:?} not in {out}");
    }
    let c = node.output(&["module", "check", echo_c().to_str().unwrap()]);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
    assert!(String::from_utf8_lossy(&c.stdout).contains("module: echo_c\nversion: 1.0.0"));

    let scratch = tempfile::tempdir().unwrap();
    let old = c_library(
        scratch.path(),
        "old",
        &descriptor_source("2", "CHI_MODULE_LAYOUT_HASH", "old"),
    );
    let bad = node.output(&["module", "check", old.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(78), "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("compatible: no"));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("built for module ABI 2"),
        "{}",
        text(&bad)
    );
    let taken = c_library(
        scratch.path(),
        "admin",
        &descriptor_source("CHI_MODULE_ABI_VERSION", "CHI_MODULE_LAYOUT_HASH", "admin"),
    );
    let clash = node.output(&["module", "check", taken.to_str().unwrap()]);
    assert_eq!(clash.status.code(), Some(78), "{}", text(&clash));
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("taken by a module built into this daemon")
    );
}
