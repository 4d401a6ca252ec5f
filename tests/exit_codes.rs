//! One exit-code table: src/exit.rs, README.md's table and the EXIT STATUS
//! of chimaera(1) list the same codes, and the subcommands exit with the
//! documented code in each situation the table names.

mod common;

use std::collections::BTreeSet;

use common::Node;

fn repo(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn from_source() -> BTreeSet<u8> {
    repo("src/exit.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('=').nth(1))
        .map(|v| v.trim().trim_end_matches(';').parse().unwrap())
        .collect()
}

fn from_readme() -> BTreeSet<u8> {
    let text = repo("README.md");
    let table = text
        .split("| code | meaning |")
        .nth(1)
        .expect("README has the exit-code table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_start_matches('|')
                .split('|')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect()
}

fn from_man_page() -> BTreeSet<u8> {
    let text = repo("man/chimaera.1");
    let section = text
        .split(".SH EXIT STATUS")
        .nth(1)
        .unwrap()
        .split("\n.SH ")
        .next()
        .unwrap();
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].strip_prefix(".B "))
        .map(|c| c.trim().parse().unwrap())
        .collect()
}

#[test]
fn the_code_the_readme_and_the_man_page_list_the_same_codes() {
    let src = from_source();
    assert_eq!(from_readme(), src, "README.md's table against src/exit.rs");
    assert_eq!(
        from_man_page(),
        src,
        "chimaera(1) EXIT STATUS against src/exit.rs"
    );
}

#[test]
fn subcommands_exit_as_the_table_says() {
    let documented = from_source();
    let mut node = Node::new("exitcodes");
    let code = |node: &Node, args: &[&str]| -> i32 {
        let out = node.output(args);
        let c = out.status.code().expect("exited");
        assert!(
            documented.contains(&(c as u8)),
            "{args:?} exited {c}, which the table does not list"
        );
        c
    };
    // Usage.
    assert_eq!(code(&node, &["frobnicate"]), 64);
    assert_eq!(code(&node, &["ping", "-n", "0"]), 64);
    assert_eq!(
        code(&node, &["call", "admin", "0", "@/nonexistent/input"]),
        64
    );
    // Bad configuration, for the daemon and its clients alike.
    assert_eq!(
        code(
            &node,
            &["--set", "workers.sched_threads=abc", "config", "check"]
        ),
        78
    );
    assert_eq!(
        code(&node, &["--config", "/nonexistent/chimaera.yaml", "status"]),
        78
    );
    assert_eq!(
        code(&node, &["module", "check", "/nonexistent/libx.so"]),
        78
    );
    // Nothing runs.
    for args in [
        &["status"][..],
        &["stop"],
        &["ping"],
        &["pool", "list"],
        &["call", "admin", "0"],
    ] {
        assert_eq!(code(&node, args), 3, "{args:?}");
    }
    // A runtime refuses or fails a request: 1.
    let d = node.spawn(&[]);
    node.wait_running(d);
    assert_eq!(code(&node, &["call", "nosuch", "0"]), 1);
    assert_eq!(code(&node, &["call", "admin", "999"]), 1);
    assert_eq!(code(&node, &["pool", "create", "x", "nosuchmodule"]), 1);
    assert_eq!(code(&node, &["pool", "create", "bad name!", "bdev"]), 1);
    assert_eq!(code(&node, &["status"]), 0);
    // Taken: a second daemon on the same segments.
    assert_eq!(code(&node, &["run"]), 69);
    let out = node.output(&["call", "admin", "999"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("status ") && err.contains("no method 999"),
        "no internal wording: {err}"
    );
    // A frozen runtime: every client command gives up within its --timeout.
    node.signal(d, libc::SIGSTOP);
    for args in [
        &["status", "--timeout", "1"][..],
        &["pool", "list", "--timeout", "1"],
        &["call", "admin", "0", "--timeout", "1"],
        &["reload", "--timeout", "1"],
    ] {
        let t = std::time::Instant::now();
        assert_eq!(code(&node, args), 75, "{args:?}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(4),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    node.signal(d, libc::SIGCONT);
    assert_eq!(code(&node, &["stop"]), 0);
}
