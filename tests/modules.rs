//! A module of one's own: examples/kv_module.rs is built by `cargo test`,
//! run as a daemon, and called from a client.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chimaera::client::{ClientError, Task};
use common::Node;

/// The example binary `cargo test` built beside this test.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/modules-<hash> → target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples (run the suite with cargo test)",
        path.display()
    );
    path
}

/// The example's daemon, killed if the test fails before it stops it.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an example's daemon on `node` (stderr to `stderr.<tag>`) and waits
/// until `status` says it runs.
fn start_example(node: &Node, bin: &std::path::Path, tag: &str) -> Daemon {
    let err = std::fs::File::create(node.dir.path().join(format!("stderr.{tag}"))).unwrap();
    let mut child = Daemon(
        node.command(bin.to_str().unwrap(), &["run"])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while node.output(&["status"]).status.code() != Some(0) {
        assert!(child.0.try_wait().unwrap().is_none(), "{}", node.log());
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never ready: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn append(node: &Node, yaml: &str) {
    let mut text = std::fs::read_to_string(node.config_path()).unwrap();
    text.push_str(yaml);
    std::fs::write(node.config_path(), text).unwrap();
}

#[test]
fn an_example_module_runs_in_its_own_runtime_and_serves_a_client() {
    let bin = example("kv_module");
    let node = Node::new("kvmod");
    append(
        &node,
        "compose:\n  - name: sessions\n    module: kv\n    params:\n      capacity: 2\n",
    );
    let mut child = start_example(&node, &bin, "kv");
    let client = node.client();
    let pools = client.list_pools().unwrap();
    let sessions = pools.iter().find(|p| p.name == "sessions").unwrap();
    assert_eq!(sessions.module, "kv");
    let call = |method, input: &[u8]| client.call(&Task::new(sessions.id, method, input));
    // Method numbers of examples/kv_module.rs.
    let (put, get, delete, count) = (0, 1, 2, 3);
    assert_eq!(call(put, b"alice\0online").unwrap(), b"");
    assert_eq!(call(put, b"alice\0away").unwrap(), b"online");
    assert_eq!(call(get, b"alice").unwrap(), b"away");
    call(put, b"bob\0online").unwrap();
    let full = call(put, b"carol\0online").unwrap_err();
    assert!(
        full.to_string().contains("the pool is full (2 keys)"),
        "{full}"
    );
    assert_eq!(call(count, &[]).unwrap(), 2u64.to_le_bytes());
    assert_eq!(call(delete, b"bob").unwrap(), b"online");
    let missing = call(get, b"bob").unwrap_err();
    assert!(
        matches!(&missing, ClientError::Module { message, .. } if message.contains("no key \"bob\"")),
        "{missing}"
    );
    assert!(matches!(
        call(9, &[]).unwrap_err(),
        ClientError::Module { .. }
    ));

    // A second pool from the client, and its params checked by the module.
    let other = client
        .create_pool("cache", "kv", r#"{"capacity": 5}"#)
        .unwrap();
    assert_ne!(other.id, sessions.id);
    let bad = client
        .create_pool("bad", "kv", r#"{"capacity": 0}"#)
        .unwrap_err();
    assert!(
        bad.to_string().contains("capacity must be at least 1"),
        "{bad}"
    );
    let bad = client
        .create_pool("bad", "kv", r#"{"size": 1}"#)
        .unwrap_err();
    assert!(bad.to_string().contains("unknown field `size`"), "{bad}");

    // The stock binary has no `kv`: the same configuration is refused, by
    // the checks before anything is made, so even while the example's
    // runtime holds the segments it is the configuration that is named.
    let stock = node.output(&["run"]);
    assert_eq!(stock.status.code(), Some(78), "{stock:?}");
    assert!(
        String::from_utf8_lossy(&stock.stderr).contains("no module \"kv\" in this runtime"),
        "{stock:?}"
    );
    let out = node.output(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let stock = node.output(&["run"]);
    assert_eq!(stock.status.code(), Some(78), "{stock:?}");
    assert!(
        String::from_utf8_lossy(&stock.stderr).contains("no module \"kv\" in this runtime"),
        "{stock:?}"
    );
}

#[test]
fn a_module_name_may_not_shadow_another() {
    use chimaera::module::{Container, Module, PoolInfo};
    use std::sync::Arc;
    struct Named(&'static str);
    impl Module for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn create_container(&self, _: &PoolInfo, _: &[u8]) -> Result<Arc<dyn Container>, String> {
            Err("never made".into())
        }
    }
    let b = chimaera::RuntimeBuilder::new()
        .module(Named("x"))
        .module(Named("x"));
    let err = b.registry().err().expect("refused");
    assert!(err.contains("taken by another module"), "{err}");
    let b = chimaera::RuntimeBuilder::new().module(Named("admin"));
    assert!(b.registry().is_err());
    let b = chimaera::RuntimeBuilder::new().module(Named("y"));
    assert!(b.registry().unwrap().get("y").is_some());
}

/// A quick method that blocks (examples/stall_module.rs) holds the network
/// thread, as a stuck task holds a worker: the systemd watchdog pings stop,
/// the log says why, and they come back when it returns.
#[test]
fn a_blocking_quick_method_withholds_the_watchdog() {
    let bin = example("stall_module");
    let node = Node::new("stall");
    append(&node, "compose:\n  - name: stall\n    module: stall\n");
    let mut ns = common::NotifySocket::new(node.dir.path());
    let err = std::fs::File::create(node.dir.path().join("stderr.stall")).unwrap();
    let mut child = Daemon(
        node.command(bin.to_str().unwrap(), &["run"])
            .env("NOTIFY_SOCKET", &ns.path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    ns.wait_for("READY=1", Duration::from_secs(20));
    // An idle network thread sleeps up to a heartbeat interval: that is
    // not being stuck, and the pings go on every 100 ms.
    let start = Instant::now();
    for _ in 0..3 {
        ns.wait_for("WATCHDOG=1", Duration::from_secs(2));
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}: {}",
        start.elapsed(),
        node.log()
    );
    assert!(!node.log().contains("stuck"), "{}", node.log());
    let client = node.client();
    let pool = client
        .list_pools()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "stall")
        .unwrap();
    // A broadcast's leg for this node runs on the network thread.
    let ms = 1200u64.to_le_bytes();
    let task = Task::new(pool.id, 0, &ms).on_all_nodes();
    let stuck = client.submit(&task).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    // Pings sent before the thread got stuck may still wait in the socket.
    let pings = ns.heard_after_drain("WATCHDOG=1", Duration::from_millis(500));
    assert!(
        pings.is_empty(),
        "no ping while the network thread is stuck: {pings:?}"
    );
    assert!(
        node.log()
            .contains("the network thread is stuck in a peer's task"),
        "{}",
        node.log()
    );
    let replies = chimaera::client::decode_broadcast(&stuck.wait().unwrap()).unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 0);
    ns.wait_for("WATCHDOG=1", Duration::from_secs(2));
    let out = node.output(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// A module that panics (examples/faulty_module.rs) fails its own task with
/// the panic's message; the daemon, the pool and other clients' tasks go
/// on, and the daemon stops cleanly afterwards.
#[test]
fn a_panicking_module_fails_only_its_task() {
    let bin = example("faulty_module");
    let node = Node::new("faulty");
    append(&node, "compose:\n  - name: f\n    module: faulty\n");
    let mut child = start_example(&node, &bin, "faulty");
    let client = node.client();
    let pool = client
        .list_pools()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "f")
        .unwrap();
    // Another client's stream of tasks runs on while the module panics.
    let other = node.client();
    let pings = std::thread::spawn(move || {
        for _ in 0..2000 {
            other.ping().unwrap();
        }
    });
    for round in 0..20 {
        let e = client
            .call(&Task::new(pool.id, 0, format!("boom {round}").as_bytes()))
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Module { message, .. }
                if message == &format!("module faulty panicked: boom {round}")),
            "{e}"
        );
        let e = client.call(&Task::new(pool.id, 1, b"x")).unwrap_err();
        assert!(
            e.to_string()
                .contains("module faulty panicked: index out of bounds"),
            "{e}"
        );
        assert_eq!(
            client.call(&Task::new(pool.id, 2, b"still here")).unwrap(),
            b"still here"
        );
    }
    pings.join().unwrap();
    assert!(child.0.try_wait().unwrap().is_none(), "the daemon lives");
    let stderr = std::fs::read_to_string(node.dir.path().join("stderr.faulty")).unwrap();
    assert!(
        stderr.contains("module code panicked on chi-worker-") && stderr.contains("boom 0"),
        "{stderr}"
    );
    let out = node.output(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// Containing a module's panic needs unwinding in every profile the daemon
/// ships with (engine::guard aborts for the daemon's own panics instead).
#[test]
fn every_profile_unwinds() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .unwrap();
    let value: toml::Value = toml::from_str(&manifest).unwrap();
    if let Some(profiles) = value.get("profile").and_then(|p| p.as_table()) {
        for (name, p) in profiles {
            assert_ne!(
                p.get("panic").and_then(|v| v.as_str()),
                Some("abort"),
                "profile {name} aborts on panic: a module's panic would take the daemon down"
            );
        }
    }
}
