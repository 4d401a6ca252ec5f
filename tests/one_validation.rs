//! One validation: whatever makes `chimaera run` refuse to start before it
//! serves makes `chimaera config check` fail the same way, with the same
//! lines and the same exit code, and the check creates nothing. The unit's
//! ExecStartPre and the container's entrypoint rely on it.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::Node;

struct Case {
    what: &'static str,
    /// YAML appended to the node's config.
    yaml: String,
    env: Vec<(&'static str, String)>,
    code: i32,
    /// Words the refusal's line must hold.
    says: Vec<String>,
}

fn case(what: &'static str, yaml: &str, code: i32, says: &[&str]) -> Case {
    Case {
        what,
        yaml: yaml.to_string(),
        env: Vec::new(),
        code,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

/// The refusal's lines in a command's stderr: those `chimaera: ` starts,
/// without the daemon's log lines.
fn refusal_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("chimaera: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn config_check_refuses_exactly_what_run_refuses() {
    let holder = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let taken = holder.local_addr().unwrap().port();
    let mut cases = vec![
        case(
            "a module nobody has",
            "compose:\n  - name: ram0\n    module: bdve\n",
            78,
            &[
                "compose[0] (line",
                ".module: no module \"bdve\" in this runtime",
                "bdev",
            ],
        ),
        case(
            "a misspelt module parameter",
            "compose:\n  - name: ram0\n    module: bdev\n    params:\n      kind: ram\n      sise: 16M\n",
            78,
            &["compose[0] (line", ".params: bdev pool \"ram0\"", "sise"],
        ),
        case(
            "an unknown section",
            "memry:\n  main_segment_size: 4M\n",
            78,
            &["memry: unknown section", "did you mean `memory`"],
        ),
        case(
            "a plugin that is not there",
            "modules:\n  load: [nosuch]\n",
            78,
            &["modules.load[0]", "module \"nosuch\" not found"],
        ),
        case(
            "a hostfile without this node",
            "",
            78,
            &["network.hostfile", "this node is not in the hostfile"],
        ),
        case(
            "a metrics port in use",
            "",
            69,
            &["monitoring.metrics_port", "is already in use on 127.0.0.1"],
        ),
    ];
    let hosts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(hosts.path(), "192.0.2.7\n192.0.2.8\n").unwrap();
    cases[4].env = vec![("CHI_HOSTFILE", hosts.path().display().to_string())];
    cases[5].env = vec![("CHI_METRICS_PORT", taken.to_string())];
    cases.push(Case {
        what: "a metrics address of another host",
        yaml: String::new(),
        env: vec![
            ("CHI_METRICS_PORT", common::free_port().to_string()),
            ("CHI_METRICS_ADDRESS", "192.0.2.1".into()),
        ],
        code: 69,
        says: vec!["monitoring.metrics_address 192.0.2.1 is not an address of this host".into()],
    });

    for c in &cases {
        let mut node = Node::new("onecheck");
        let mut text = std::fs::read_to_string(node.config_path()).unwrap();
        text.push_str(&c.yaml);
        std::fs::write(node.config_path(), text).unwrap();
        let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();

        let check = node
            .chimaera(&["config", "check"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let check_err = String::from_utf8_lossy(&check.stderr).to_string();
        assert_eq!(
            check.status.code(),
            Some(c.code),
            "{}: check: {check_err}",
            c.what
        );
        let said = refusal_lines(&check_err);
        assert!(
            !said.is_empty(),
            "{}: check said nothing: {check_err}",
            c.what
        );
        for w in &c.says {
            assert!(
                said.iter().any(|l| l.contains(w.as_str())),
                "{}: {w:?} not in {said:?}",
                c.what
            );
        }
        assert!(
            node.segments_present().is_empty(),
            "{}: check created segments",
            c.what
        );

        let d = node.spawn(&env);
        let st = node.wait_exit(d, Duration::from_secs(20));
        let run_err = node.stderr_of(d);
        assert_eq!(st.code(), Some(c.code), "{}: run: {run_err}", c.what);
        assert_eq!(
            refusal_lines(&run_err),
            said,
            "{}: run and config check must refuse with the same lines",
            c.what
        );
        assert!(
            node.segments_present().is_empty(),
            "{}: run left segments",
            c.what
        );
        assert!(
            !node.discovery_path().exists(),
            "{}: run wrote a discovery file",
            c.what
        );
    }
    drop(holder);
}

#[test]
fn config_check_passes_what_run_starts_and_leaves_the_ports_of_a_running_daemon_alone() {
    let mut node = Node::new("onecheckok");
    let mut text = std::fs::read_to_string(node.config_path()).unwrap();
    text.push_str("compose:\n  - name: ram0\n    module: bdev\n    params:\n      kind: ram\n      size: 1M\n");
    std::fs::write(node.config_path(), text).unwrap();
    let check = node.output(&["config", "check"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let d = node.spawn(&[]);
    node.wait_running(d);
    // The running daemon holds the zmq port: the check says the file is
    // fine instead of reporting the daemon's own port as taken.
    let again = node.output(&["config", "check"]);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    node.signal(d, libc::SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}
