//! Every printing subcommand piped into `head -1`: the reader closes the
//! pipe early, and the command ends quietly (exit 0, or 141 from SIGPIPE as
//! any Unix tool), never with a panic.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Node};

/// `args | head -1` with the node's configuration: (exit status of the
/// chimaera side, its stderr).
fn piped(node: &Node, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new("bash");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    cmd.arg("-c")
        .arg(format!(
            "'{BIN}' {} 2>\"$ERR\" | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
            quoted.join(" ")
        ))
        .env("CHI_SERVER_CONF", node.config_path())
        .env("ERR", node.dir.path().join("pipe.err"))
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let err = std::fs::read_to_string(node.dir.path().join("pipe.err")).unwrap_or_default();
    (code, err)
}

#[test]
fn printing_subcommands_end_quietly_on_a_closed_pipe() {
    let mut node = Node::new("pipes");
    let d = node.spawn(&[]);
    node.wait_running(d);
    for args in [
        &["config", "keys"][..],
        &["config", "show"],
        &["config", "check"],
        &["--help"],
        &["status"],
        &["status", "--json"],
        &["pool", "list"],
        &["ping", "-n", "2000"],
        &["ping", "-n", "2000", "--json"],
    ] {
        let (code, err) = piped(&node, args);
        assert!(
            code == 0 || code == 141,
            "chimaera {args:?} | head -1 exited {code}: {err}"
        );
        assert!(!err.contains("panicked"), "chimaera {args:?}: {err}");
    }
    assert_eq!(node.output(&["stop"]).status.code(), Some(0));
}
