//! Three real daemons on 127.0.0.1, each on its own port, talking ZeroMQ:
//! routing, heartbeats and failures, and what the transport refuses.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chimaera::client::{ClientError, Task};
use chimaera::engine::record::status;
use chimaera::modules::admin;
use chimaera::wire::{self, ClusterKey, Frame, HeaderFields};
use common::Node;

const HEARTBEAT_MS: u64 = 200;

/// `n` nodes sharing one hostfile (and a cluster key, if given).
struct Cluster {
    nodes: Vec<Node>,
    /// The `run` child of each node currently running.
    daemons: Vec<Option<usize>>,
}

impl Cluster {
    fn new(name: &str, n: usize, key: Option<&[u8]>) -> Cluster {
        Cluster::with_spare(name, n, key, 0)
    }

    /// `spare` more hostfile lines on ports where no daemon runs (yet).
    fn with_spare(name: &str, n: usize, key: Option<&[u8]>, spare: usize) -> Cluster {
        let nodes: Vec<Node> = (0..n).map(|i| Node::new(&format!("{name}{i}"))).collect();
        let hostfile = nodes[0].dir.path().join("hostfile");
        let lines: Vec<String> = nodes
            .iter()
            .map(|nd| nd.port)
            .chain((0..spare).map(|_| common::free_port()))
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        std::fs::write(
            &hostfile,
            format!("# nodes on loopback\n{}\n", lines.join("\n")),
        )
        .unwrap();
        let mut extra = format!(
            "network:\n  hostfile: {}\nruntime:\n  heartbeat_interval: {HEARTBEAT_MS}\n  task_timeout: 5000\n",
            hostfile.display()
        );
        if let Some(k) = key {
            let path = write_key(&nodes[0], "cluster.key", k);
            extra.push_str(&format!(
                "network:\n  cluster_key_file: {}\n",
                path.display()
            ));
        }
        for nd in &nodes {
            nd.write_config("info", &extra);
        }
        Cluster {
            daemons: vec![None; n],
            nodes,
        }
    }

    fn start(&mut self, i: usize) {
        let d = self.nodes[i].spawn(&[]);
        self.nodes[i].wait_running(d);
        self.daemons[i] = Some(d);
    }

    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            let d = self.nodes[i].spawn(&[]);
            self.daemons[i] = Some(d);
        }
        for i in 0..self.nodes.len() {
            let d = self.daemons[i].unwrap();
            self.nodes[i].wait_running(d);
        }
    }

    fn kill(&mut self, i: usize) {
        let d = self.daemons[i].take().unwrap();
        self.nodes[i].signal(d, libc::SIGKILL);
        self.nodes[i].wait_exit(d, Duration::from_secs(5));
    }

    fn pid(&self, i: usize) -> u32 {
        self.nodes[i].pid(self.daemons[i].unwrap())
    }

    /// The state node `from` gives node `of` in `status --json`.
    fn peer_state(&self, from: usize, of: usize) -> String {
        let out = self.nodes[from].output(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["node"] == of as u64))
            .and_then(|p| p["state"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    /// Waits (bounded) until `from` sees `of` in `state`; the time it took.
    fn wait_state(&self, from: usize, of: usize, state: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        loop {
            if self.peer_state(from, of) == state {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "node {from} does not see node {of} {state} after {limit:?}: {}",
                self.nodes[from].log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_all_up(&self) {
        let n = self.nodes.len();
        for from in 0..n {
            for of in (0..n).filter(|&o| o != from) {
                self.wait_state(from, of, "up", Duration::from_secs(10));
            }
        }
    }
}

fn write_key(node: &Node, name: &str, key: &[u8]) -> PathBuf {
    let path = node.dir.path().join(name);
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn stats_of(out: &[u8]) -> admin::Stats {
    serde_json::from_slice(out).expect("admin stats JSON")
}

#[test]
fn direct_hash_and_broadcast_tasks_run_where_they_are_routed() {
    let mut c = Cluster::new("route", 3, None);
    c.start_all();
    c.wait_all_up();
    let client = c.nodes[0].client();
    let pids: Vec<u32> = (0..3).map(|i| c.pid(i)).collect();

    // Direct: the stats come from the node asked, whichever node submits.
    for target in 0..3u32 {
        let out = client
            .call(&Task::new(admin::POOL_ID, admin::method::STATS, &[]).on_node(target))
            .unwrap();
        let s = stats_of(&out);
        assert_eq!(s.pid, pids[target as usize], "node {target}");
        assert_eq!(s.cluster.unwrap().node_id, target);
    }
    // A payload bigger than a record's inline area, both ways.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let echo = client
        .call(&Task::new(admin::POOL_ID, admin::method::ECHO, &big).on_node(2))
        .unwrap();
    assert!(echo == big, "the 200 kB echo from node 2 differs");

    // Hash: a key always lands on the node the jump hash names.
    for key in 0..24u64 {
        let out = client
            .call(&Task::new(admin::POOL_ID, admin::method::STATS, &[]).by_key(key))
            .unwrap();
        let want = chimaera::net::jump_hash(key, 3);
        assert_eq!(stats_of(&out).pid, pids[want as usize], "key {key}");
    }

    // Broadcast: one reply per node, in node order, from that node.
    let replies = client
        .broadcast(&Task::new(admin::POOL_ID, admin::method::STATS, &[]))
        .unwrap();
    assert_eq!(replies.len(), 3);
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.node, i as u32);
        assert_eq!(
            r.status,
            status::OK,
            "{}",
            String::from_utf8_lossy(&r.output)
        );
        assert_eq!(stats_of(&r.output).pid, pids[i]);
    }
    let echoes = c.nodes[1]
        .client()
        .broadcast(&Task::new(
            admin::POOL_ID,
            admin::method::ECHO,
            b"all of you",
        ))
        .unwrap();
    assert!(
        echoes.iter().all(|r| r.output == b"all of you"),
        "{echoes:?}"
    );

    // Errors of the remote module come back as they are.
    let err = client.call(&Task::new(77, 0, &[]).on_node(1)).unwrap_err();
    assert!(matches!(err, ClientError::NoSuchPool(77)), "{err}");
    let err = client
        .call(&Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(9))
        .unwrap_err();
    assert!(err.to_string().contains("no node 9"), "{err}");

    // Many in flight at once, over every route.
    let handles: Vec<_> = (0..300u32)
        .map(|i| {
            let t = Task::new(admin::POOL_ID, admin::method::PING, &[]);
            let t = match i % 3 {
                0 => t.on_node(i % 3 + 1),
                1 => t.by_key(u64::from(i)),
                _ => t.on_node(2),
            };
            client.submit(&t).unwrap()
        })
        .collect();
    for h in handles {
        h.wait_timeout(Duration::from_secs(10)).unwrap();
    }

    // The CLI: per-node round trips.
    let out = c.nodes[2].output(&["ping", "--all", "--count", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in 0..3 {
        assert!(text.contains(&format!("node {n}: 3 ping(s)")), "{text}");
        // As ping(8): a line per reply, then the node's summary.
        let replies = text
            .lines()
            .filter(|l| l.starts_with(&format!("node {n}: ")) && l.ends_with(" us"))
            .count();
        assert_eq!(replies, 3, "{text}");
    }
    let out = c.nodes[1].output(&["ping", "--broadcast", "-n", "3"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("broadcast to 3 node(s): 3 ping(s)"),
        "{out:?}"
    );
    let out = c.nodes[0].output(&["ping", "--node", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"][0]["node"], 1);
    assert_eq!(v["nodes"][0]["ok"], true, "{v}");
    assert!(v["nodes"][0]["p50_ns"].as_u64().unwrap() > 0);

    // Counters and peers in status --json.
    let out = c.nodes[0].output(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["peers"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["cluster"]["counters"]["tasks_forwarded"]
            .as_u64()
            .unwrap()
            >= 200,
        "{v}"
    );
    assert!(v["peers"][0]["rtt_us"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["cluster"]["counters"]["dropped_bad_frame"], 0, "{v}");
}

#[test]
fn a_killed_node_is_marked_down_fails_fast_and_rejoins_when_restarted() {
    let mut c = Cluster::new("down", 3, None);
    c.start_all();
    c.wait_all_up();
    let client = c.nodes[0].client();
    // A task running on node 2 when it dies.
    let sleeper_input = 4000u64.to_le_bytes();
    let sleeper = client
        .submit(&Task::new(admin::POOL_ID, admin::method::SLEEP, &sleeper_input).on_node(2))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let killed = Instant::now();
    c.kill(2);
    let hb = Duration::from_millis(HEARTBEAT_MS);
    let seen0 = c.wait_state(0, 2, "down", 10 * hb);
    let seen1 = killed.elapsed().max(c.wait_state(1, 2, "down", 10 * hb));
    eprintln!("node 2 marked down {seen0:?} (node 0) and {seen1:?} (node 1) after kill -9");
    // Three heartbeats, plus what it takes `status` to ask.
    for seen in [seen0, seen1] {
        assert!(seen < 3 * hb + Duration::from_millis(150), "{seen:?}");
    }
    assert!(
        c.nodes[0]
            .log()
            .contains("missed 3 heartbeats: marked down")
    );

    // The task in flight failed when its node went down, not at its timeout.
    let err = sleeper.wait_timeout(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, ClientError::NodeUnavailable(_)), "{err}");
    // New tasks for it fail at once.
    let t = Instant::now();
    let err = client.ping_node(2).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert!(
        err.to_string().contains("node unavailable: node 2"),
        "{err}"
    );
    // The others still serve each other.
    client.ping_node(1).unwrap();
    let replies = client
        .broadcast(&Task::new(admin::POOL_ID, admin::method::PING, &[]))
        .unwrap();
    let st: Vec<i32> = replies.iter().map(|r| r.status).collect();
    assert_eq!(st, [status::OK, status::OK, status::NODE_UNAVAILABLE]);
    let out = c.nodes[0].output(&["ping", "--all"]);
    assert_eq!(
        out.status.code(),
        Some(69),
        "a down node makes ping --all fail"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("node 2: node unavailable"));
    let out = c.nodes[1].output(&["ping", "--broadcast", "--json"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["nodes"].as_u64(), v["ok"].as_bool()),
        (Some(3), Some(false)),
        "{v}"
    );
    assert_eq!(v["failed"][0]["node"], 2, "{v}");

    // Restarted, it rejoins and serves.
    c.start(2);
    c.wait_state(0, 2, "up", Duration::from_secs(10));
    c.wait_state(2, 0, "up", Duration::from_secs(10));
    assert!(
        c.nodes[0].log().contains("is up again"),
        "{}",
        c.nodes[0].log()
    );
    let out = client
        .call(&Task::new(admin::POOL_ID, admin::method::STATS, &[]).on_node(2))
        .unwrap();
    assert_eq!(stats_of(&out).pid, c.pid(2));
    c.nodes[2].client().ping_node(0).unwrap();
}

#[test]
fn remote_tasks_are_bounded_by_task_timeout() {
    let mut c = Cluster::new("tmo", 2, None);
    for nd in &c.nodes {
        let hostfile = c.nodes[0].dir.path().join("hostfile");
        nd.write_config(
            "info",
            &format!(
                "network:\n  hostfile: {}\nruntime:\n  heartbeat_interval: {HEARTBEAT_MS}\n  task_timeout: 500\n",
                hostfile.display()
            ),
        );
    }
    c.start_all();
    c.wait_all_up();
    let client = c.nodes[0].client();
    let t = Instant::now();
    let input = 3000u64.to_le_bytes();
    let err = client
        .call(&Task::new(admin::POOL_ID, admin::method::SLEEP, &input).on_node(1))
        .unwrap_err();
    assert!(matches!(err, ClientError::TimedOut), "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // The peer stays up and serves.
    client.ping_node(1).unwrap();
}

/// Sends `frames` to `port` from `source` as a DEALER claiming to be `node`.
fn intrude(source: &str, port: u16, node: u32, frames: &[Vec<u8>]) {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(200).unwrap();
    s.set_identity(format!("chi-node-{node}").as_bytes())
        .unwrap();
    s.connect(&format!("tcp://{source}:0;127.0.0.1:{port}"))
        .unwrap();
    for f in frames {
        s.send(&f[..], 0).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
}

fn heartbeat(key: Option<&ClusterKey>, src: u32, seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let hdr = HeaderFields {
        src_node: src,
        dst_node: 0,
        seq,
        dst_epoch: 0,
    };
    wire::encode(
        &Frame::Heartbeat {
            epoch: 1,
            sent_ns: 1,
        },
        &hdr,
        key,
        &mut out,
    )
    .unwrap();
    out
}

fn counters(node: &Node) -> serde_json::Value {
    let out = node.output(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["cluster"]["counters"].clone()
}

fn wait_counter(node: &Node, name: &str, at_least: u64) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let c = counters(node);
        if c[name].as_u64().unwrap_or(0) >= at_least {
            return c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{name} stays below {at_least}: {c}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unlisted_peers_wrong_keys_replays_and_garbage_are_refused() {
    let secret = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    // Node 3 is listed but never runs: the intruders below claim to be it,
    // so that what they get accepted cannot disturb the real nodes.
    let mut c = Cluster::with_spare("auth", 3, Some(secret), 1);
    c.start_all();
    c.wait_all_up();
    let port = c.nodes[0].port;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let key = ClusterKey::from_bytes(&hex(secret)).unwrap();
    let wrong = ClusterKey::from_bytes(&[7u8; 32]).unwrap();
    assert!(
        c.nodes[0]
            .log()
            .contains("authenticated with the cluster key (fingerprint")
    );

    // 127.0.0.2 is loopback too, but not in the hostfile: ZAP refuses the
    // connection before any frame is read, even one with the right key.
    intrude("127.0.0.2", port, 3, &[heartbeat(Some(&key), 3, now_ns)]);
    let v = wait_counter(&c.nodes[0], "zap_denied", 1);
    assert!(
        c.nodes[0]
            .log()
            .contains("refused a connection from 127.0.0.2"),
        "{v}\n{}",
        c.nodes[0].log()
    );

    // From a listed address: a wrong key, no key, garbage.
    intrude(
        "127.0.0.1",
        port,
        3,
        &[
            heartbeat(Some(&wrong), 3, now_ns),
            heartbeat(None, 3, now_ns + 1),
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            vec![0xff; 5000],
        ],
    );
    let v = wait_counter(&c.nodes[0], "dropped_bad_tag", 1);
    assert!(v["dropped_missing_tag"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["dropped_bad_frame"].as_u64().unwrap() >= 2, "{v}");

    // A frame with the right key, twice: the copy is a replay. One claiming
    // another node than its connection's is dropped too.
    let seq = now_ns + 100;
    let f = heartbeat(Some(&key), 3, seq);
    intrude(
        "127.0.0.1",
        port,
        3,
        &[f.clone(), f, heartbeat(Some(&key), 2, seq + 1)],
    );
    let v = wait_counter(&c.nodes[0], "dropped_replay", 1);
    assert!(v["dropped_wrong_node"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["frames_in"].as_u64().unwrap() >= 1,
        "the first copy was accepted: {v}"
    );

    // Raw bytes on the TCP port: not even a ZeroMQ greeting.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(&[0x5a; 65536]);
    }

    // Through all of it the cluster went on serving.
    let client = c.nodes[0].client();
    for n in 0..3 {
        client.ping_node(n).unwrap();
    }
    for from in 1..3 {
        assert_eq!(c.peer_state(from, 0), "up");
    }
}

#[test]
fn a_node_with_another_key_is_never_admitted() {
    let mut c = Cluster::new("key", 2, Some(&[b'x'; 40]));
    // Node 1 gets a key of its own.
    let other = write_key(&c.nodes[1], "other.key", &[b'y'; 40]);
    let hostfile = c.nodes[0].dir.path().join("hostfile");
    c.nodes[1].write_config(
        "info",
        &format!(
            "network:\n  hostfile: {}\n  cluster_key_file: {}\nruntime:\n  heartbeat_interval: {HEARTBEAT_MS}\n",
            hostfile.display(),
            other.display()
        ),
    );
    c.start_all();
    std::thread::sleep(Duration::from_millis(5 * HEARTBEAT_MS));
    assert_eq!(c.peer_state(0, 1), "unknown");
    assert_eq!(c.peer_state(1, 0), "unknown");
    assert!(counters(&c.nodes[0])["dropped_bad_tag"].as_u64().unwrap() >= 2);
    let err = c.nodes[0].client().ping_node(1).unwrap_err();
    assert!(matches!(err, ClientError::NodeUnavailable(_)), "{err}");
}

#[test]
fn a_single_node_routes_to_itself() {
    let mut node = Node::new("solo");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let client = node.client();
    client.ping_node(0).unwrap();
    let replies = client
        .broadcast(&Task::new(admin::POOL_ID, admin::method::ECHO, b"me"))
        .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].output, b"me");
    let out = client
        .call(&Task::new(admin::POOL_ID, admin::method::ECHO, b"k").by_key(99))
        .unwrap();
    assert_eq!(out, b"k");
    let err = client.ping_node(1).unwrap_err();
    assert!(err.to_string().contains("no node 1"), "{err}");
    let out = node.output(&["ping", "--all"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node 0: 1 ping(s)"));
}

/// The secret as the daemons decode it: the file holds hex.
fn hex(text: &[u8]) -> Vec<u8> {
    text.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn a_node_restarted_between_heartbeats_fails_what_it_was_running() {
    // Heartbeats far apart: the node is back long before it could be marked down.
    let mut c = Cluster::new("rst", 2, None);
    let hostfile = c.nodes[0].dir.path().join("hostfile");
    for nd in &c.nodes {
        nd.write_config(
            "info",
            &format!(
                "network:\n  hostfile: {}\nruntime:\n  heartbeat_interval: 2000\n  task_timeout: 20000\n",
                hostfile.display()
            ),
        );
    }
    c.start_all();
    c.wait_all_up();
    let client = c.nodes[0].client();
    let input = 15_000u64.to_le_bytes();
    let lost = client
        .submit(&Task::new(admin::POOL_ID, admin::method::SLEEP, &input).on_node(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    c.kill(1);
    c.start(1);
    let err = lost.wait_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(
        err.to_string().contains("restarted while running the task"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(
        c.nodes[0].log().contains("node 1 (127.0.0.1:"),
        "{}",
        c.nodes[0].log()
    );
    assert_eq!(c.peer_state(0, 1), "up");
}

/// Tasks done by node `cl`'s workers, as its admin STATS reports them.
fn worker_tasks(cl: &chimaera::client::Client) -> u64 {
    let out = cl
        .call(&Task::new(admin::POOL_ID, admin::method::STATS, &[]))
        .unwrap();
    stats_of(&out).workers.iter().map(|w| w.tasks_done).sum()
}

#[test]
fn a_peers_quick_tasks_run_on_the_network_thread_and_the_rest_on_workers() {
    let mut c = Cluster::new("quick", 2, None);
    c.start_all();
    c.wait_all_up();
    let c0 = c.nodes[0].client();
    let c1 = c.nodes[1].client();
    let before = worker_tasks(&c1);
    for i in 0..200u32 {
        let input = i.to_le_bytes();
        let task = Task::new(admin::POOL_ID, admin::method::ECHO, &input).on_node(1);
        assert_eq!(c0.call(&task).unwrap(), input);
    }
    // A quick task that waits: it parks on node 1's network thread while
    // its 10 subtasks run on node 1's workers, which wake it when done.
    let n = 10u32.to_le_bytes();
    let fan = Task::new(admin::POOL_ID, admin::method::FAN_OUT, &n).on_node(1);
    assert_eq!(c0.call(&fan).unwrap(), n);
    let after = worker_tasks(&c1);
    // The first STATS counts itself once done; then only the subtasks.
    assert_eq!(
        after - before,
        1 + 10,
        "node 1's workers ran more than the fan-out's subtasks"
    );
    // SLEEP is not quick: a worker of node 1 runs it.
    let ms = 1u64.to_le_bytes();
    let sleep = Task::new(admin::POOL_ID, admin::method::SLEEP, &ms).on_node(1);
    c0.call(&sleep).unwrap();
    assert_eq!(worker_tasks(&c1) - after, 1 + 1);
    // A broadcast's leg on the node that sent it runs on its network thread.
    let before0 = worker_tasks(&c0);
    let replies = c0
        .broadcast(&Task::new(admin::POOL_ID, admin::method::ECHO, b"all"))
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.status == 0 && r.output == b"all"));
    assert_eq!(worker_tasks(&c0) - before0, 1);
}

#[test]
fn routed_tasks_reach_the_network_with_or_without_its_wake_up_socket() {
    let mut c = Cluster::new("wake", 2, None);
    c.start_all();
    c.wait_all_up();
    let disc = c.nodes[0].client().discovery().clone();
    let sock = PathBuf::from(&disc.wake_socket);
    assert_eq!(
        sock,
        c.nodes[0]
            .run_dir()
            .join(format!("{}.wake", c.nodes[0].segment_names()[0])),
        "the wake-up socket lies beside the discovery file"
    );
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "no shared_memory.group: owner only, as the segments"
    );
    let before = c.nodes[0].client();
    assert!(before.uses_network_lane());
    let stats = stats_of(
        &before
            .call(&Task::new(admin::POOL_ID, admin::method::STATS, &[]))
            .unwrap(),
    );
    assert_eq!(stats.network_lane_depth, 0, "an idle network lane");
    // A client that cannot reach the socket routes through a worker.
    std::fs::remove_file(&sock).unwrap();
    let after = c.nodes[0].client();
    assert!(!after.uses_network_lane());
    // Both ways work, one after the other and interleaved; the client
    // connected before keeps its lane (its socket, connected before the
    // name went, still reaches the network thread).
    for i in 0..100u32 {
        let input = i.to_le_bytes();
        let task = Task::new(admin::POOL_ID, admin::method::ECHO, &input).on_node(1);
        let cl = if i % 2 == 0 { &before } else { &after };
        assert_eq!(cl.call(&task).unwrap(), input);
    }
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let cl = if i % 3 == 0 { &after } else { &before };
            cl.submit(&Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(1))
                .unwrap()
        })
        .collect();
    for h in handles {
        h.wait().unwrap();
    }
    // Its socket is gone, so stopping cannot fail on it; it stops clean.
    drop(before);
    drop(after);
    let d = c.daemons[0].take().unwrap();
    c.nodes[0].signal(d, libc::SIGTERM);
    assert_eq!(
        c.nodes[0].wait_exit(d, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// Pipelined tasks for a peer travel several to a ZeroMQ message, and so do
/// their answers; each still gets its own answer, authenticated and checked
/// against the replay window on its own.
#[test]
fn pipelined_remote_tasks_travel_in_batches_and_each_gets_its_answer() {
    let mut c = Cluster::new("batch", 2, Some(&[b'k'; 40]));
    c.start_all();
    c.wait_all_up();
    let client = c.nodes[0].client();
    let before = [counters(&c.nodes[0]), counters(&c.nodes[1])];
    let n = 4000u32;
    for window in (0..n).collect::<Vec<_>>().chunks(1000) {
        let handles: Vec<_> = window
            .iter()
            .map(|i| {
                let input = i.to_le_bytes();
                let task = Task::new(admin::POOL_ID, admin::method::ECHO, &input).on_node(1);
                (*i, client.submit(&task).unwrap())
            })
            .collect();
        for (i, h) in handles {
            assert_eq!(h.wait().unwrap(), i.to_le_bytes(), "task {i}");
        }
    }
    let after = [counters(&c.nodes[0]), counters(&c.nodes[1])];
    let delta = |node: usize, name: &str| {
        after[node][name].as_u64().unwrap() - before[node][name].as_u64().unwrap()
    };
    for node in 0..2 {
        let (frames, messages) = (delta(node, "frames_out"), delta(node, "messages_out"));
        assert!(frames >= u64::from(n), "node {node}: {frames} frames out");
        assert!(
            messages * 2 < frames,
            "node {node} sent {frames} frames in {messages} messages: pipelined tasks and their answers should share messages"
        );
        let (frames_in, messages_in) = (delta(node, "frames_in"), delta(node, "messages_in"));
        assert!(
            messages_in * 2 < frames_in,
            "node {node}: {frames_in} frames in {messages_in} messages"
        );
    }
    // (A heartbeat sent before the peer was connected may have failed
    // earlier: only what happened during the run counts.)
    for (node, v) in after.iter().enumerate() {
        for bad in [
            "dropped_bad_frame",
            "dropped_bad_tag",
            "dropped_replay",
            "send_failed",
        ] {
            assert_eq!(delta(node, bad), 0, "node {node}: {bad} in {v}");
        }
    }
}

/// `chimaera bench cluster` at a size CI affords: every figure is there,
/// an idle daemon spends little CPU, and the loss of a node is seen by
/// every other within three heartbeats (plus the bench's own polling, a
/// few ms, which is why the bound is 3.1).
#[test]
fn bench_cluster_reports_broadcast_idle_cpu_and_loss() {
    let child = std::process::Command::new(common::BIN)
        .args([
            "bench",
            "cluster",
            "--nodes",
            "3",
            "--heartbeat-ms",
            "300",
            "--idle-secs",
            "2",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["points"][0];
    assert_eq!(p["nodes"], 3, "{v}");
    for k in [
        "broadcast_rtt_p50_ns",
        "broadcast_rtt_p99_ns",
        "remote_rtt_p50_ns",
        "raw_zmq_broadcast_rtt_p50_ns",
        "raw_zmq_remote_rtt_p50_ns",
    ] {
        assert!(p[k].as_u64().unwrap() > 0, "{k}: {v}");
    }
    // The ratios are what their parts give.
    let ratio = |a: &str, b: &str| p[a].as_f64().unwrap() / p[b].as_f64().unwrap();
    for (r, a, b) in [
        (
            "broadcast_over_remote",
            "broadcast_rtt_p50_ns",
            "remote_rtt_p50_ns",
        ),
        (
            "raw_zmq_broadcast_over_remote",
            "raw_zmq_broadcast_rtt_p50_ns",
            "raw_zmq_remote_rtt_p50_ns",
        ),
        (
            "broadcast_over_raw_zmq",
            "broadcast_rtt_p50_ns",
            "raw_zmq_broadcast_rtt_p50_ns",
        ),
    ] {
        let got = p[r].as_f64().unwrap();
        assert!((got - ratio(a, b)).abs() < 1e-6, "{r}: {v}");
    }
    let loss = p["loss_seen_heartbeats_max"].as_f64().unwrap();
    assert!(
        loss > 0.5 && loss < 3.1,
        "loss seen after {loss} heartbeats: {v}"
    );
    // Idle with two peers at 300 ms heartbeats: far below a core.
    assert!(p["idle_cpu_pct_max"].as_f64().unwrap() < 20.0, "{v}");
    let left = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("_c3n"))
        .count();
    assert_eq!(left, 0, "the bench left segments in /dev/shm");
    // Nor its plain ZeroMQ echo processes.
    let echoes = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.starts_with("chimaera-bench-zmq-echo\0") && c.ends_with(&format!("\0{pid}\0"))
        })
        .count();
    assert_eq!(echoes, 0, "the bench left its echo processes running");
}
