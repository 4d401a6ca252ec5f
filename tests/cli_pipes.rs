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
        &["config", "check", "--json"],
        &["config", "show", "--json"],
        &["completions", "bash"],
        &["call", "admin", "0", "--hex"],
        &["reload"],
        &["--version"],
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

/// The completion scripts the .deb installs are what this binary writes
/// (regenerate with `chimaera completions SHELL > packaging/completions/...`).
#[test]
fn packaged_completions_are_current() {
    for (shell, file) in [
        ("bash", "chimaera.bash"),
        ("zsh", "_chimaera"),
        ("fish", "chimaera.fish"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("packaging/completions")
            .join(file);
        let kept = std::fs::read(&path).unwrap();
        assert!(
            out.stdout == kept,
            "{} is stale: run `chimaera completions {shell} > {}`",
            path.display(),
            path.display()
        );
    }
}

/// `--version` names the release, the commit and the shared-memory layout.
#[test]
fn version_names_commit_and_layout() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("chimaera {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(
        v.contains(&format!(
            "shared-memory layout {})",
            chimaera::proto::header::LAYOUT_VERSION
        )),
        "{v}"
    );
}

/// `ping` as ping(8): a line per reply as it comes, a summary at the end and
/// on SIGINT, `--quiet` for the summary alone, `-n 0` refused.
#[test]
fn ping_streams_and_summarizes_even_when_interrupted() {
    use std::io::{BufRead, BufReader};
    let mut node = Node::new("pingstream");
    let d = node.spawn(&[]);
    node.wait_running(d);

    let out = node.output(&["ping", "-n", "0"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");

    let out = node.output(&["ping", "-n", "5", "--quiet"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("5 pings: min "), "{text}");
    assert!(text.contains("5 answered, 0 lost (0%)"), "{text}");

    let mut child = node
        .chimaera(&["ping", "-n", "100000000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Replies stream before the series ends.
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("admin ping: "), "{first}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    let summary = rest.last().unwrap();
    assert!(summary.contains(" pings: min "), "{summary}");
    assert!(summary.contains(" lost (0%)"), "{summary}");

    let out = node.output(&["ping", "-n", "3", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 3, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert!(v["p99_ns"].as_u64().unwrap() >= v["p50_ns"].as_u64().unwrap());
    assert_eq!(node.output(&["stop"]).status.code(), Some(0));
}

/// A bench leaves nothing behind however it ends: SIGINT or SIGTERM stop
/// its daemon and remove its directory; after a SIGKILL its daemon dies
/// with it (and removes its segments), and the next bench removes the
/// directory. `--config`, which a bench does not use, is refused.
#[test]
fn an_interrupted_or_killed_bench_leaves_nothing_behind() {
    let node = Node::new("benchstop");
    let out = node.output(&["--config", "/nope.yaml", "bench", "local"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");

    let shm_of = |pid: u32| -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("chibench_{pid}_")))
            .collect()
    };
    let dir_of = |pid: u32| std::env::temp_dir().join(format!("chimaera-bench-{pid}-local"));
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "{what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    for (sig, clean_now) in [
        (libc::SIGINT, true),
        (libc::SIGTERM, true),
        (libc::SIGKILL, false),
    ] {
        let mut bench = node
            .chimaera(&["bench", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = bench.id();
        wait_for("the bench's daemon never came up", &|| {
            !shm_of(pid).is_empty()
        });
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, sig) };
        let _ = bench.wait();
        wait_for("the bench's segments stay", &|| shm_of(pid).is_empty());
        if clean_now {
            assert!(
                !dir_of(pid).exists(),
                "signal {sig}: {}",
                dir_of(pid).display()
            );
        } else {
            // The next bench removes what the killed one could not.
            let mut next = node
                .chimaera(&["bench", "local"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for("a killed bench's directory stays", &|| {
                !dir_of(pid).exists()
            });
            // SAFETY: as above.
            unsafe { libc::kill(next.id() as i32, libc::SIGINT) };
            let _ = next.wait();
            wait_for("the next bench's segments stay", &|| {
                shm_of(next.id()).is_empty()
            });
        }
    }
}

/// A frozen daemon (SIGSTOP): `status` says "not responding" (exit 75) and
/// `ping` counts its pings lost, each within its `--timeout`; `stop
/// --timeout 3` gives up within about 3 s, saying so; once the daemon runs
/// again, the stop it was asked for ends it cleanly.
#[test]
fn client_commands_answer_in_time_when_the_daemon_is_frozen() {
    use std::time::{Duration, Instant};
    let mut node = Node::new("frozen");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let pid = node.pid(d) as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };

    let t = Instant::now();
    let out = node.output(&["status", "--timeout", "1"]);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not responding"),
        "{out:?}"
    );

    let t = Instant::now();
    let out = node.output(&["ping", "-n", "2", "--timeout", "1"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 lost"),
        "{out:?}"
    );

    let t = Instant::now();
    let out = node.output(&["stop", "--timeout", "3"]);
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still running"),
        "{out:?}"
    );

    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(node.wait_exit(d, Duration::from_secs(15)).success());
}

/// A bench works wherever the daemon does: the `CHI_*` variables of a
/// container or of a shell with `CHI_HOSTFILE` exported move neither its
/// daemons nor its clients.
#[test]
fn bench_ignores_the_callers_chimaera_variables() {
    let node = Node::new("benchenv");
    let hostfile = node.dir.path().join("hosts");
    std::fs::write(&hostfile, "127.0.0.1:7001\n127.0.0.1:7002\n").unwrap();
    for bench in ["local", "remote"] {
        let out = node
            .chimaera(&["bench", bench, "--json"])
            .env("CHI_RUN_DIR", "/nonexistent/run")
            .env("CHI_HOSTFILE", &hostfile)
            .env("CHI_ZMQ_PORT", "7003")
            .env("CHI_SCHED_WORKERS", "3")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "bench {bench}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["rtt_p50_ns"].as_u64().unwrap() > 0, "{v}");
        if bench == "local" {
            // The figure users meet: the default worker count and lane
            // policy, whatever CHI_SCHED_WORKERS said.
            assert!(v["default_config_rtt_p50_ns"].as_u64().unwrap() > 0, "{v}");
            assert!(
                v["default_config_async_tasks_per_s"].as_f64().unwrap() > 0.0,
                "{v}"
            );
            assert_eq!(v["default_config_workers"], 8, "{v}");
            assert_eq!(v["default_config_lane_policy"], "round_robin", "{v}");
        }
    }
}
