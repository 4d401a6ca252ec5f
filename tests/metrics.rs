//! The Prometheus endpoint of a real daemon, scraped over real HTTP and
//! checked with `promtool check metrics` (Debian: `apt-get install
//! prometheus`, which scripts/deps.sh --test does).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chimaera::client::Task;
use chimaera::modules::admin;
use common::{Node, free_port};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A node whose config turns the endpoint on at a port of its own.
fn node_with_metrics(name: &str, extra: &str) -> (Node, u16) {
    let node = Node::new(name);
    let mut port = free_port();
    while port == node.port {
        port = free_port();
    }
    node.write_config(
        "info",
        &format!("monitoring:\n  metrics_port: {port}\n{extra}"),
    );
    (node, port)
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` as is and reads the whole answer (the server closes).
fn http(port: u16, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn scrape(port: u16) -> String {
    let r = http(
        port,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert_eq!(r.header("Content-Type"), Some(CONTENT_TYPE), "{}", r.head);
    assert_eq!(
        r.header("Content-Length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    r.body
}

type Labels = BTreeMap<String, String>;

/// The samples of an exposition: name, labels, value. Panics on a line
/// that is not a comment or a sample (promtool checks the rest).
fn samples(text: &str) -> Vec<(String, Labels, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Labels::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?}")),
        };
        out.push((name, labels, value));
    }
    out
}

fn value(s: &[(String, Labels, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

fn all(s: &[(String, Labels, f64)], name: &str) -> Vec<(Labels, f64)> {
    s.iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, l, v)| (l.clone(), *v))
        .collect()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "`promtool` is needed by this test: apt-get install prometheus (scripts/deps.sh --test)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- exposition ---\n{text}",
        out.status
    );
}

/// The TCP addresses process `pid` listens on, from /proc: its socket
/// inodes matched against the kernel's tables of listening sockets.
fn listening(pid: u32) -> Vec<SocketAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A: LISTEN), inode.
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            let (addr, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            // The kernel prints each 32-bit word of the address as a number
            // in host order.
            let words: Vec<[u8; 4]> = (0..addr.len() / 8)
                .map(|i| {
                    u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16)
                        .unwrap()
                        .to_ne_bytes()
                })
                .collect();
            let ip = match words.len() {
                1 => IpAddr::V4(Ipv4Addr::from(words[0])),
                _ => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(words.concat()).unwrap(),
                )),
            };
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

#[test]
fn scrape_counts_the_tasks_sent_and_passes_promtool() {
    let (mut node, port) = node_with_metrics("scrape", "");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let client = node.client();
    let before = samples(&scrape(port));

    let echoes = 40;
    let pings = 25;
    for i in 0..echoes {
        let input = format!("echo {i}");
        let out = client
            .call(&Task::new(
                admin::POOL_ID,
                admin::method::ECHO,
                input.as_bytes(),
            ))
            .unwrap();
        assert_eq!(out, input.as_bytes());
    }
    for _ in 0..pings {
        client.ping().unwrap();
    }
    // A method the admin module lacks still ran its method (to an error).
    let err = client.call(&Task::new(admin::POOL_ID, 777, b""));
    assert!(err.is_err());

    let text = scrape(port);
    promtool_check(&text);
    let after = samples(&text);

    let tasks = |s: &[(String, Labels, f64)], method: &str| {
        value(
            s,
            "chimaera_tasks_total",
            &[("module", "admin"), ("pool", "admin"), ("method", method)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(tasks(&after, "7") - tasks(&before, "7"), echoes as f64);
    assert_eq!(tasks(&after, "0") - tasks(&before, "0"), pings as f64);
    assert_eq!(tasks(&after, "other") - tasks(&before, "other"), 1.0);
    let worker_sum = |s: &[(String, Labels, f64)]| {
        all(s, "chimaera_worker_tasks_total")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(
        worker_sum(&after) - worker_sum(&before),
        (echoes + pings + 1) as f64,
        "every task counted by its worker"
    );

    // Histograms: whole, cumulative, +Inf equal to the count.
    let counts = all(&after, "chimaera_task_duration_seconds_count");
    assert!(!counts.is_empty(), "{text}");
    for (labels, count) in &counts {
        let mut buckets: Vec<(f64, f64)> = all(&after, "chimaera_task_duration_seconds_bucket")
            .into_iter()
            .filter(|(l, _)| l["module"] == labels["module"] && l["method"] == labels["method"])
            .map(|(l, v)| {
                let le = match l["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    x => x.parse().unwrap(),
                };
                (le, v)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
        assert_eq!(
            buckets.last().unwrap().1,
            *count,
            "+Inf = _count for {labels:?}"
        );
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    }
    let echo = [("module", "admin"), ("method", "7")];
    let timed = value(&after, "chimaera_task_duration_seconds_count", &echo).unwrap();
    // At least the first echo is timed (the first of each worker in each
    // coarse-clock tick is).
    assert!(
        (1.0..=echoes as f64).contains(&timed),
        "{timed} timed echoes"
    );
    let sum = value(&after, "chimaera_task_duration_seconds_sum", &echo).unwrap();
    assert!(
        sum > 0.0 && sum < timed * 5.0,
        "sum {sum}s over {timed} echoes"
    );

    // One row per worker (the config's 8), and the rest of the state.
    assert_eq!(all(&after, "chimaera_lane_depth").len(), 8);
    assert_eq!(all(&after, "chimaera_worker_tasks_total").len(), 8);
    assert_eq!(value(&after, "chimaera_network_lane_depth", &[]), Some(0.0));
    for seg in ["main", "client_data", "runtime_data"] {
        let used = value(
            &after,
            "chimaera_segment_bytes",
            &[("segment", seg), ("state", "used")],
        )
        .unwrap();
        let cap = value(
            &after,
            "chimaera_segment_bytes",
            &[("segment", seg), ("state", "capacity")],
        )
        .unwrap();
        assert!(used <= cap && cap > 0.0, "{seg}: {used} of {cap}");
    }
    assert_eq!(
        value(
            &after,
            "chimaera_segment_bytes",
            &[("segment", "main"), ("state", "capacity")]
        ),
        Some(4.0 * 1024.0 * 1024.0),
        "the test config's main segment"
    );
    assert!(value(&after, "chimaera_task_records", &[("state", "capacity")]).unwrap() > 64.0);
    assert_eq!(value(&after, "chimaera_clients", &[]), Some(1.0));
    assert!(value(&after, "chimaera_uptime_seconds", &[]).unwrap() > 0.0);
    assert_eq!(value(&after, "chimaera_cluster_nodes", &[]), Some(1.0));
    assert_eq!(
        all(&after, "chimaera_transport_frames_dropped_total").len(),
        7,
        "every drop reason, zero or not"
    );
    assert!(
        all(&after, "chimaera_peer_up").is_empty(),
        "a single node has no peers"
    );

    node.signal(d, libc::SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the endpoint is gone with the daemon"
    );
    assert!(node.log().contains(&format!(
        "serving metrics on http://127.0.0.1:{port}/metrics"
    )));
}

#[test]
fn the_endpoint_is_off_by_default() {
    let mut node = Node::new("nometrics");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let ports: Vec<u16> = listening(node.pid(d)).iter().map(|a| a.port()).collect();
    assert_eq!(ports, vec![node.port], "only the ZeroMQ port listens");
    assert!(!node.log().contains("serving metrics"), "{}", node.log());
    node.signal(d, libc::SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn loopback_by_default_and_garbage_is_refused_without_harm() {
    let (mut node, port) = node_with_metrics("garbage", "");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let ours: Vec<SocketAddr> = listening(node.pid(d))
        .into_iter()
        .filter(|a| a.port() == port)
        .collect();
    assert_eq!(
        ours,
        vec![SocketAddr::from(([127, 0, 0, 1], port))],
        "bound to loopback only"
    );

    let cases: [(&[u8], u16); 7] = [
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"BLAH\r\n\r\n", 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (b"\x00\xff\x13\x37garbage\r\n\r\n", 400),
        (&[b'A'; 20_000], 431),
    ];
    for (req, status) in cases {
        let r = http(port, req);
        assert_eq!(
            r.status,
            status,
            "{:?}: {}",
            String::from_utf8_lossy(&req[..req.len().min(40)]),
            r.head
        );
        assert!(
            !r.body.contains("chimaera_"),
            "no metrics for a refused request"
        );
    }
    // Half a request, then the client goes quiet: answered with a timeout.
    let t = Instant::now();
    let mut quiet = TcpStream::connect(("127.0.0.1", port)).unwrap();
    quiet.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    quiet
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    quiet.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A connection closed without a word gets nothing and harms nothing.
    drop(TcpStream::connect(("127.0.0.1", port)).unwrap());

    // The daemon and the endpoint carry on.
    node.client().ping().unwrap();
    let text = scrape(port);
    promtool_check(&text);
    node.signal(d, libc::SIGTERM);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn a_taken_metrics_port_is_named_and_nothing_is_left() {
    let (mut node, port) = node_with_metrics("takenmetrics", "");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let d = node.spawn(&[]);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(69));
    let err = node.stderr_of(d);
    assert!(
        err.contains(&format!(
            "monitoring.metrics_port {port} is already in use on 127.0.0.1"
        )),
        "{err}"
    );
    assert!(
        node.segments_present().is_empty(),
        "segments undone on failure"
    );
    assert!(!node.discovery_path().exists());
}

#[test]
fn an_address_of_another_host_is_refused() {
    // 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    let (mut node, _) = node_with_metrics("foreignaddr", "  metrics_address: 192.0.2.1\n");
    let d = node.spawn(&[]);
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(69));
    let err = node.stderr_of(d);
    assert!(
        err.contains("monitoring.metrics_address 192.0.2.1 is not an address of this host"),
        "{err}"
    );
}

/// Scrapes until `want` holds of the samples, at most `limit`.
fn scrape_until(
    port: u16,
    limit: Duration,
    want: impl Fn(&[(String, Labels, f64)]) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(port);
        if want(&samples(&text)) {
            return text;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn peers_up_and_down_and_routed_tasks() {
    let (mut a, port) = node_with_metrics("peera", "");
    let mut b = Node::new("peerb");
    let hostfile = a.dir.path().join("hostfile");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", a.port, b.port),
    )
    .unwrap();
    let cluster = format!(
        "network:\n  hostfile: {}\nruntime:\n  heartbeat_interval: 200\n",
        hostfile.display()
    );
    a.write_config(
        "info",
        &format!("{cluster}monitoring:\n  metrics_port: {port}\n"),
    );
    b.write_config("info", &cluster);
    let da = a.spawn(&[]);
    let db = b.spawn(&[]);
    a.wait_running(da);
    b.wait_running(db);
    let peer = [("node", "1"), ("addr", &*format!("127.0.0.1:{}", b.port))];
    scrape_until(port, Duration::from_secs(10), |s| {
        value(s, "chimaera_peer_up", &peer) == Some(1.0)
    });

    let client = a.client();
    for _ in 0..5 {
        client
            .call(&Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(1))
            .unwrap();
    }
    let text = scrape(port);
    promtool_check(&text);
    let s = samples(&text);
    let forwarded = [("direction", "forwarded")];
    assert_eq!(
        value(&s, "chimaera_transport_tasks_total", &forwarded),
        Some(5.0)
    );
    assert_eq!(value(&s, "chimaera_cluster_nodes", &[]), Some(2.0));
    assert!(value(&s, "chimaera_peer_rtt_seconds", &peer).unwrap() > 0.0);
    assert!(
        value(
            &s,
            "chimaera_transport_frames_total",
            &[("direction", "out")]
        )
        .unwrap()
            >= 5.0
    );
    // Every message carries at least one frame.
    let messages_out = value(
        &s,
        "chimaera_transport_messages_total",
        &[("direction", "out")],
    )
    .unwrap();
    assert!(messages_out >= 1.0);
    assert!(
        messages_out
            <= value(
                &s,
                "chimaera_transport_frames_total",
                &[("direction", "out")]
            )
            .unwrap()
    );
    // Node 0's own pings ran on node 1: none counted here by a module.
    assert_eq!(
        value(
            &s,
            "chimaera_tasks_total",
            &[("module", "admin"), ("method", "0")]
        ),
        None
    );

    b.signal(db, libc::SIGTERM);
    assert_eq!(b.wait_exit(db, Duration::from_secs(10)).code(), Some(0));
    scrape_until(port, Duration::from_secs(10), |s| {
        value(s, "chimaera_peer_up", &peer) == Some(0.0)
    });
    a.signal(da, libc::SIGTERM);
    assert_eq!(a.wait_exit(da, Duration::from_secs(10)).code(), Some(0));
}
