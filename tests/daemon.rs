//! The real daemon binary, started and stopped like a service manager would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{Node, NotifySocket};

const SIGTERM: i32 = libc::SIGTERM;

#[test]
fn ready_then_stopping_through_a_real_notify_socket() {
    let mut node = Node::new("notify");
    let mut ns = NotifySocket::new(node.dir.path());
    let path = ns.path.to_str().unwrap().to_string();
    let d = node.spawn(&[("NOTIFY_SOCKET", &path)]);
    let ready = ns.wait_for("READY=1", Duration::from_secs(20));
    assert!(
        ready.contains("STATUS=running"),
        "READY=1 comes with a status line: {ready:?}"
    );
    // Everything READY=1 promises exists by then.
    assert_eq!(
        node.segments_present().len(),
        3,
        "segments exist at READY=1"
    );
    assert!(
        node.discovery_path().is_file(),
        "discovery file exists at READY=1"
    );
    let before = ns.position("READY=1").unwrap();
    assert!(
        ns.seen[..before]
            .iter()
            .any(|m| m.contains("STATUS=creating shared memory")),
        "progress is reported before READY=1: {:?}",
        ns.seen
    );
    for name in node.segment_names() {
        let meta = std::fs::metadata(Path::new("/dev/shm").join(&name)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{name} is owner-only"
        );
    }

    node.signal(d, SIGTERM);
    ns.wait_for("STOPPING=1", Duration::from_secs(10));
    let st = node.wait_exit(d, Duration::from_secs(10));
    assert_eq!(
        st.code(),
        Some(0),
        "SIGTERM is a clean stop: {}",
        node.stderr_of(d)
    );
    assert!(node.segments_present().is_empty(), "no segment left behind");
    assert!(!node.discovery_path().exists(), "discovery file removed");
    assert!(
        node.log().contains("chimaera runtime stopped"),
        "log: {}",
        node.log()
    );
    assert!(node.stderr_of(d).contains("chimaera runtime stopped"));
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut node = Node::new("sigint");
    let d = node.spawn(&[]);
    node.wait_running(d);
    node.signal(d, libc::SIGINT);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
    assert!(node.segments_present().is_empty());
}

#[test]
fn header_is_written_and_versioned() {
    let mut node = Node::new("header");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let main = std::fs::read(Path::new("/dev/shm").join(&node.segment_names()[0])).unwrap();
    assert_eq!(&main[..8], b"CHIMAERA");
    let u32_at = |o: usize| u32::from_ne_bytes(main[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(8), chimaera::shm::LAYOUT_VERSION);
    assert_eq!(u32_at(12), 1, "kind main");
    let ready_at = std::mem::offset_of!(chimaera::shm::SegmentHeader, ready);
    assert_eq!(u32_at(ready_at), chimaera::shm::READY);
    let pid_at = std::mem::offset_of!(chimaera::shm::SegmentHeader, owner_pid);
    assert_eq!(u32_at(pid_at), node.pid(d));
    assert_eq!(main.len(), 4 << 20, "main segment has its configured size");
}

#[test]
fn a_second_instance_is_refused_and_the_first_keeps_running() {
    let mut node = Node::new("second");
    let first = node.spawn(&[]);
    node.wait_running(first);
    let out = node.output(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!("already running (pid {})", node.pid(first))),
        "{err}"
    );
    assert_eq!(
        node.segments_present().len(),
        3,
        "the refused start removed nothing"
    );
    assert_eq!(node.output(&["status"]).status.code(), Some(0));

    let stop = node.output(&["stop"]);
    assert_eq!(
        stop.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(String::from_utf8_lossy(&stop.stdout).contains("stopped"));
    // `stop` returns only once the runtime is gone.
    assert!(node.segments_present().is_empty());
    assert_eq!(
        node.wait_exit(first, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn segments_of_a_killed_runtime_are_reclaimed() {
    let mut node = Node::new("reclaim");
    let first = node.spawn(&[]);
    node.wait_running(first);
    let dead_pid = node.pid(first);
    node.signal(first, libc::SIGKILL);
    node.wait_exit(first, Duration::from_secs(5));
    assert_eq!(
        node.segments_present().len(),
        3,
        "kill -9 leaves the segments"
    );

    let status = node.output(&["status"]);
    assert_eq!(status.status.code(), Some(3));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("stale") && text.contains(&dead_pid.to_string()),
        "{text}"
    );
    let stop = node.output(&["stop"]);
    assert_eq!(
        stop.status.code(),
        Some(3),
        "stop of a dead runtime says so"
    );

    let second = node.spawn(&[]);
    node.wait_running(second);
    let log = node.log();
    for name in node.segment_names() {
        assert!(
            log.contains(&format!(
                "reclaimed stale segment {name} left by dead runtime pid {dead_pid}"
            )),
            "{name} reclaimed: {log}"
        );
    }
    node.signal(second, SIGTERM);
    assert_eq!(
        node.wait_exit(second, Duration::from_secs(10)).code(),
        Some(0)
    );
    assert!(node.segments_present().is_empty());
}

#[test]
fn declared_shm_too_small_is_a_config_error() {
    let mut node = Node::new("small");
    let d = node.spawn(&[("CHI_SHM_SIZE", "6M")]);
    let st = node.wait_exit(d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(78));
    let err = node.stderr_of(d);
    assert!(
        err.contains("Total segment size exceeds shared memory size"),
        "{err}"
    );
    assert!(err.contains("memory.shm_size"), "{err}");
    assert!(node.segments_present().is_empty(), "nothing is created");
}

/// /dev/shm of a private mount namespace, shrunk to 6 MiB (the 8 MiB of segments do not fit): the segments
/// (declared to fit in shm_size) do not fit in what is really mounted.
#[test]
fn mounted_shm_too_small_is_a_config_error() {
    if unsafe_euid() != 0 || !Path::new("/usr/bin/unshare").exists() {
        eprintln!(
            "skipped: needs root and unshare(1) to mount a small /dev/shm in a private namespace"
        );
        return;
    }
    let node = Node::new("mounted");
    node.write_config("info", "");
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs /dev/shm && {bin} config check; echo \"check=$?\"; timeout 20 {bin} run; echo \"run=$?\"",
        bin = common::BIN
    );
    let out = node
        .command(
            "/usr/bin/unshare",
            &["--mount", "--propagation", "private", "sh", "-c", &script],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("check=78") && stdout.contains("run=78"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Total segment size exceeds shared memory size"),
        "{stderr}"
    );
    assert!(stderr.contains("/dev/shm has"), "{stderr}");
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[test]
fn sighup_applies_the_log_level_and_names_restart_only_changes() {
    let mut node = Node::new("hup");
    let mut ns = NotifySocket::new(node.dir.path());
    let path = ns.path.to_str().unwrap().to_string();
    let d = node.spawn(&[("NOTIFY_SOCKET", &path)]);
    ns.wait_for("READY=1", Duration::from_secs(20));

    node.signal(d, libc::SIGHUP);
    ns.wait_for("RELOADING=1", Duration::from_secs(5));
    ns.wait_for("READY=1", Duration::from_secs(5));
    assert!(
        !node.log().contains("reload complete"),
        "debug lines are off at info"
    );

    node.write_config("debug", "workers:\n  sched_threads: 3\n");
    node.signal(d, libc::SIGHUP);
    ns.wait_for("RELOADING=1", Duration::from_secs(5));
    ns.wait_for("READY=1", Duration::from_secs(5));
    let log = node.log();
    assert!(
        log.contains("applied logging.level = debug (was info)"),
        "{log}"
    );
    assert!(
        log.contains("reload complete"),
        "debug lines appear after the reload: {log}"
    );
    assert!(
        log.contains("workers.sched_threads changed from 8 to 3; restart chimaera to apply it"),
        "{log}"
    );

    // A broken file is refused; the runtime keeps going on the old one.
    std::fs::write(node.config_path(), "workers:\n  sched_threads: many\n").unwrap();
    node.signal(d, libc::SIGHUP);
    ns.wait_for("READY=1", Duration::from_secs(5));
    assert!(node.log().contains("reload refused"), "{}", node.log());
    assert!(
        node.children[d].try_wait().unwrap().is_none(),
        "still running"
    );
    node.write_config("debug", "");
    assert_eq!(node.output(&["status"]).status.code(), Some(0));
    node.signal(d, SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn sighup_reopens_a_rotated_log_file() {
    let mut node = Node::new("rotate");
    let mut ns = NotifySocket::new(node.dir.path());
    let path = ns.path.to_str().unwrap().to_string();
    let d = node.spawn(&[("NOTIFY_SOCKET", &path)]);
    ns.wait_for("READY=1", Duration::from_secs(20));
    let rotated = node.log_path().with_extension("log.1");
    std::fs::rename(node.log_path(), &rotated).unwrap();
    node.signal(d, libc::SIGHUP);
    ns.wait_for("READY=1", Duration::from_secs(5));
    node.signal(d, SIGTERM);
    node.wait_exit(d, Duration::from_secs(10));
    assert!(
        node.log().contains("chimaera runtime stopped"),
        "new file gets new lines"
    );
    assert!(
        !std::fs::read_to_string(rotated)
            .unwrap()
            .contains("stopped")
    );
}

#[test]
fn watchdog_pings_at_half_the_interval() {
    let mut node = Node::new("watchdog");
    let mut ns = NotifySocket::new(node.dir.path());
    let path = ns.path.to_str().unwrap().to_string();
    let d = node.spawn(&[
        ("NOTIFY_SOCKET", &path),
        ("WATCHDOG_USEC", "200000"),
        ("CHI_SCHED_WORKERS", "1"),
    ]);
    ns.wait_for("READY=1", Duration::from_secs(20));
    let start = std::time::Instant::now();
    for _ in 0..3 {
        ns.wait_for("WATCHDOG=1", Duration::from_secs(2));
    }
    // Three pings at 100 ms take about 300 ms; far less than 3 intervals of 200.
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );

    // A worker stuck in one task (it never yields) withholds the pings, so
    // systemd would restart the service; they resume when it is free.
    let client = node.client();
    let ms = 1200u64.to_le_bytes();
    let spin = chimaera::client::Task::new(0, chimaera::modules::admin::method::SPIN, &ms);
    let stuck = client.submit(&spin).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    // Pings sent before the worker got stuck may still wait in the socket.
    let pings = ns.heard_after_drain("WATCHDOG=1", Duration::from_millis(500));
    assert!(
        pings.is_empty(),
        "no ping while a worker is stuck: {pings:?}"
    );
    assert!(
        node.log().contains("withholding the watchdog ping"),
        "{}",
        node.log()
    );
    stuck.wait().unwrap();
    ns.wait_for("WATCHDOG=1", Duration::from_secs(2));
    node.signal(d, SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn unwritable_log_file_is_reported_once_and_stderr_goes_on() {
    let mut node = Node::new("nolog");
    let d = node.spawn(&[("CHI_LOG_FILE", "/proc/chimaera-cannot-exist/chimaera.log")]);
    node.wait_running(d);
    node.signal(d, SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
    let err = node.stderr_of(d);
    assert_eq!(err.matches("cannot write log file").count(), 1, "{err}");
    assert!(err.contains("chimaera runtime stopped"), "{err}");
}

#[test]
fn a_taken_port_is_named_and_nothing_is_left() {
    let mut node = Node::new("port");
    let _holder = std::net::TcpListener::bind(("0.0.0.0", node.port)).unwrap();
    let d = node.spawn(&[]);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(69));
    let err = node.stderr_of(d);
    assert!(
        err.contains(&format!("network.zmq_port {} is already in use", node.port)),
        "{err}"
    );
    assert!(
        node.segments_present().is_empty(),
        "segments undone on failure"
    );
}

#[test]
fn status_and_stop_without_a_runtime() {
    let node = Node::new("none");
    let st = node.output(&["status"]);
    assert_eq!(st.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&st.stdout).contains("not running"));
    let json = node.output(&["status", "--json"]);
    assert_eq!(json.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["running"], false);
    let stop = node.output(&["stop"]);
    assert_eq!(stop.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&stop.stderr).contains("not running"));
}

#[test]
fn status_json_describes_the_runtime() {
    let mut node = Node::new("json");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let out = node.output(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["pid"], node.pid(d));
    assert_eq!(v["zmq_port"], node.port);
    assert_eq!(v["segments"]["main"]["name"], node.segment_names()[0]);
    assert_eq!(v["segments"]["main"]["size"], 4u64 << 20);
}

#[test]
fn compatibility_binaries_start_and_stop() {
    let mut node = Node::new("compat");
    let start = node
        .command(env!("CARGO_BIN_EXE_chimaera_start_runtime"), &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    node.children.push(start);
    node.wait_running(0);
    let out = node
        .command(env!("CARGO_BIN_EXE_chimaera_stop_runtime"), &[])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.wait_exit(0, Duration::from_secs(5)).code(), Some(0));
    assert!(node.segments_present().is_empty());
}

#[test]
fn a_configured_group_gets_0660() {
    let mut node = Node::new("group");
    let group = if unsafe_euid() == 0 { "root" } else { "" };
    if group.is_empty() {
        eprintln!("skipped: chown to a group needs a group we are in; run as root");
        return;
    }
    let d = node.spawn(&[("CHI_SHM_GROUP", group)]);
    node.wait_running(d);
    for name in node.segment_names() {
        let mode = std::fs::metadata(Path::new("/dev/shm").join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660, "{name}");
    }
}

#[test]
fn compose_creates_pools_at_start_and_a_missing_module_is_a_config_error() {
    let mut node = Node::new("compose");
    let with_compose = |node: &Node, text: &str| {
        node.write_config("info", "");
        let mut yaml = std::fs::read_to_string(node.config_path()).unwrap();
        yaml.push_str(text);
        std::fs::write(node.config_path(), yaml).unwrap();
    };
    with_compose(
        &node,
        "compose:\n  - name: second\n    module: admin\n  - name: third\n    module: admin\n",
    );
    let d = node.spawn(&[]);
    node.wait_running(d);
    let pools = node.client().list_pools().unwrap();
    let names: Vec<(&str, u32)> = pools.iter().map(|p| (p.name.as_str(), p.id)).collect();
    assert_eq!(names, [("admin", 0), ("second", 1), ("third", 2)]);
    assert!(
        node.log()
            .contains("created pool third (id 2, module admin) from compose")
    );
    // A task for a composed pool runs in it.
    let out = node
        .client()
        .call(&chimaera::client::Task::new(
            2,
            chimaera::modules::admin::method::ECHO,
            b"x",
        ))
        .unwrap();
    assert_eq!(out, b"x");
    node.signal(d, SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));

    with_compose(
        &node,
        "compose:\n  - name: disk\n    module: no_such_module\n",
    );
    let d = node.spawn(&[]);
    let st = node.wait_exit(d, Duration::from_secs(10));
    assert_eq!(st.code(), Some(78), "{}", node.stderr_of(d));
    let err = node.stderr_of(d);
    assert!(
        err.contains("compose[0] (line ") && err.contains(".module: no module \"no_such_module\""),
        "{err}"
    );
    assert!(
        node.segments_present().is_empty(),
        "a refused start leaves nothing"
    );
}

#[test]
fn pool_commands_create_list_and_destroy_by_name_and_id() {
    let mut node = Node::new("poolcli");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let run = |args: &[&str]| {
        let out = node.output(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let params = r#"{"kind":"ram","size":"1M"}"#;
    let (code, out, err) = run(&["pool", "create", "disk0", "bdev", "--params", params]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "pool disk0 (id 1, module bdev)");
    // Get-or-create: the same pool again.
    let (code, out, _) = run(&["pool", "create", "disk0", "bdev", "--params", params]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "pool disk0 (id 1, module bdev)")
    );
    // The same parameters written otherwise are the same pool too.
    let (code, out, _) = run(&[
        "pool",
        "create",
        "disk0",
        "bdev",
        "--params",
        r#"{ "size": "1M", "kind": "ram" }"#,
    ]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "pool disk0 (id 1, module bdev)")
    );
    // Other parameters, or another module, under its name: refused, both shown.
    let (code, _, err) = run(&[
        "pool",
        "create",
        "disk0",
        "bdev",
        "--params",
        r#"{"kind":"ram","size":"2M"}"#,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(r#"exists with module bdev and params {"kind":"ram","size":"1M"}, not module bdev and params {"kind":"ram","size":"2M"}"#),
        "{err}"
    );
    let (code, _, err) = run(&["pool", "create", "disk0", "admin"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not module admin"), "{err}");
    // One name rule for the command line, the client API and compose.
    let (code, _, err) = run(&["pool", "create", "bad name!", "bdev", "--params", params]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in pool name"), "{err}");
    let (code, out, _) = run(&["pool", "create", "disk1", "bdev", "--params", params]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), "pool disk1 (id 2, module bdev)")
    );
    let (_, out, _) = run(&["pool", "list"]);
    assert_eq!(out, "0\tadmin\tadmin\n1\tdisk0\tbdev\n2\tdisk1\tbdev\n");
    let (code, _, err) = run(&[
        "pool",
        "create",
        "bad",
        "bdev",
        "--params",
        r#"{"kind":"tape"}"#,
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("kind"), "{err}");
    let (code, _, err) = run(&["pool", "create", "x", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no module \"nosuch\""), "{err}");

    let (code, out, _) = run(&["pool", "destroy", "disk0"]);
    assert_eq!((code, out.trim()), (Some(0), "destroyed pool disk0 (id 1)"));
    let (code, out, _) = run(&["pool", "destroy", "2"]);
    assert_eq!((code, out.trim()), (Some(0), "destroyed pool disk1 (id 2)"));
    let (code, _, err) = run(&["pool", "destroy", "disk0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no pool named \"disk0\""), "{err}");
    let (_, out, _) = run(&["pool", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"id": 0, "name": "admin", "module": "admin"}])
    );
    node.signal(d, SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}
