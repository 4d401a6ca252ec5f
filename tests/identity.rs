//! A node finds its own id in the hostfile: the real daemon on loopback,
//! several nodes on one machine told apart by their ports.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Node, free_port};

/// Writes `lines` as the node's hostfile and points network.hostfile at it.
fn with_hostfile(node: &Node, lines: &[String]) -> PathBuf {
    let path = node.dir.path().join("hostfile");
    let text = format!("# test cluster on loopback\n{}\n", lines.join("\n"));
    std::fs::write(&path, text).unwrap();
    node.write_config(
        "info",
        &format!("network:\n  hostfile: {}\n", path.display()),
    );
    path
}

fn status_json(node: &Node) -> serde_json::Value {
    let out = node.output(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stop(node: &mut Node, d: usize) {
    node.signal(d, libc::SIGTERM);
    let st = node.wait_exit(d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", node.stderr_of(d));
}

#[test]
fn the_line_with_our_port_is_our_node_id() {
    let mut node = Node::new("ident");
    let lines = [free_port(), node.port, free_port()].map(|p| format!("127.0.0.1:{p}"));
    let hostfile = with_hostfile(&node, &lines);

    let check = node.output(&["config", "check"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("node 1 of 3"),
        "{check:?}"
    );

    let d = node.spawn(&[]);
    node.wait_running(d);
    let v = status_json(&node);
    assert_eq!(v["node_id"], 1, "{v}");
    assert_eq!(v["zmq_port"], node.port, "{v}");
    let text = node.output(&["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&format!("node 1, zmq port {}", node.port)),
        "{text:?}"
    );
    assert!(
        node.log().contains(&format!(
            "node 1 of 3: line 3 (127.0.0.1:{}) of hostfile {}",
            node.port,
            hostfile.display()
        )),
        "log: {}",
        node.log()
    );
    stop(&mut node, d);
}

#[test]
fn a_node_in_no_line_exits_78_naming_the_hostfile() {
    let mut node = Node::new("ident_none");
    let lines = [free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
    let hostfile = with_hostfile(&node, &lines);

    for sub in [&["config", "check"][..], &["run"][..]] {
        let out = node.output(sub);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{sub:?}: {err}");
        assert!(
            err.contains(&format!(
                "network.hostfile: {}: this node is not in the hostfile",
                hostfile.display()
            )),
            "{sub:?}: {err}"
        );
        assert!(
            err.contains(&format!("with port {}", node.port))
                && err.contains("127.0.0.1")
                && err.contains("set network.node_id"),
            "{sub:?}: {err}"
        );
    }
    assert!(node.segments_present().is_empty(), "nothing was created");

    // Told its id, the node starts; a wrong one is refused.
    let d = node.spawn(&[("CHI_NODE_ID", "5")]);
    let st = node.wait_exit(d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(78), "{}", node.stderr_of(d));
    assert!(
        node.stderr_of(d)
            .contains("network.node_id is 5, but the hostfile lists 2 node(s)"),
        "{}",
        node.stderr_of(d)
    );
}

#[test]
fn an_ambiguous_hostfile_is_settled_by_network_node_id() {
    let mut node = Node::new("ident_dup");
    // Without a port a line means network.zmq_port: both lines are us.
    let lines = ["127.0.0.1".to_string(), format!("127.0.0.1:{}", node.port)];
    with_hostfile(&node, &lines);
    let out = node.output(&["config", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("this node is ambiguous: line 2 (127.0.0.1), line 3 (127.0.0.1:"),
        "{err}"
    );

    // network.node_id in the file settles it, for the daemon and the clients
    // that load the same configuration.
    let hostfile = node.dir.path().join("hostfile");
    node.write_config(
        "info",
        &format!(
            "network:\n  hostfile: {}\n  node_id: 1\n",
            hostfile.display()
        ),
    );
    let d = node.spawn(&[]);
    node.wait_running(d);
    assert_eq!(status_json(&node)["node_id"], 1);
    assert!(
        node.log().contains("set by network.node_id"),
        "{}",
        node.log()
    );
    stop(&mut node, d);
}
