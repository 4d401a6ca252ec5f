//! `chimaera bench cluster`: N daemons on loopback ports (one worker and
//! small segments each, one hostfile), and for each N: the broadcast round
//! trip against a single remote round trip measured in the same run, the
//! CPU an idle daemon spends with N-1 peers heartbeating, and how long the
//! others take to see one of them gone.
//!
//! Beside the daemons, the same shape in plain ZeroMQ, measured in
//! alternation with them: N-1 echo processes (a ROUTER each, in a context
//! of its own, so each has its own I/O thread as a daemon has) and DEALERs
//! to all of them in this process. Its broadcast over its single round trip
//! is the floor a transport on ZeroMQ meets on the machine: a message on
//! ZeroMQ crosses three threads on the side that answers it (the I/O
//! thread receiving, the thread answering, the I/O thread sending), so on
//! a machine with fewer CPUs than legs the legs queue for the CPUs.

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchDaemon, free_port, percentile, remote};
use crate::modules::admin;
use chimaera_client::{Client, Task};
use chimaera_proto::sync::now_ns;

/// Small segments: 16 daemons fit in a few hundred MiB of /dev/shm.
const MEMORY: &str = "  main_segment_size: 16M\n  client_data_segment_size: 4M\n  runtime_data_segment_size: 4M\n  shm_size: 24M\n";

#[derive(Debug, Serialize)]
pub struct ClusterPoint {
    pub nodes: u32,
    /// A broadcast ping from node 0's client until every node answered.
    pub broadcast_rtt_p50_ns: u64,
    pub broadcast_rtt_p99_ns: u64,
    /// A ping routed to node 1, in the same run.
    pub remote_rtt_p50_ns: u64,
    /// broadcast p50 / remote p50 (target at 16 nodes: within 4).
    pub broadcast_over_remote: f64,
    /// CPU of each daemon over the idle period, % of one core: the mean
    /// and the highest (target: under 1).
    pub idle_cpu_pct_mean: f64,
    pub idle_cpu_pct_max: f64,
    /// From killing the last node until every other node marked it down,
    /// in heartbeat intervals: the slowest node (target: within 3).
    pub loss_seen_heartbeats_max: f64,
    pub loss_seen_heartbeats_min: f64,
    /// Plain ZeroMQ in the same run (see the module's doc): a request to
    /// N-1 echo processes and every answer back, and one to a single one.
    pub raw_zmq_broadcast_rtt_p50_ns: u64,
    pub raw_zmq_remote_rtt_p50_ns: u64,
    pub raw_zmq_broadcast_over_remote: f64,
    /// Our broadcast p50 over plain ZeroMQ's.
    pub broadcast_over_raw_zmq: f64,
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub points: Vec<ClusterPoint>,
    pub heartbeat_interval_ms: u64,
    pub idle_secs: f64,
    pub broadcast_samples: usize,
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th after it.
    let rest = &stat[stat.rfind(')').ok_or("malformed /proc stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "malformed /proc stat".to_string())
    };
    Ok(num(11)? + num(12)?)
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Whether `client`'s node sees `node` in `state`.
fn sees(client: &Client, node: u32, state: &str) -> bool {
    client
        .stats()
        .ok()
        .and_then(|s| s.cluster)
        .is_some_and(|c| {
            c.peers
                .iter()
                .find(|p| p.node == node)
                .is_some_and(|p| p.state == state)
        })
}

/// Plain ZeroMQ in the cluster's shape (see the module's doc).
struct RawCluster {
    echoes: Vec<std::process::Child>,
    dealers: Vec<zmq::Socket>,
    req: Vec<u8>,
    _ctx: zmq::Context,
}

impl RawCluster {
    /// `peers` echo processes, each answering with our reply's size.
    fn start(peers: u32) -> Result<RawCluster, String> {
        let (req_len, rep_len) = remote::frame_sizes();
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let ctx = zmq::Context::new();
        let mut raw = RawCluster {
            echoes: Vec::new(),
            dealers: Vec::new(),
            req: vec![1u8; req_len],
            _ctx: ctx.clone(),
        };
        let zerr = |e: zmq::Error| e.to_string();
        for _ in 0..peers {
            let port = free_port()?;
            let child = std::process::Command::new(&exe)
                .arg0(ZMQ_ECHO_ARG0)
                .arg(port.to_string())
                .arg(rep_len.to_string())
                .arg(std::process::id().to_string())
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            raw.echoes.push(child);
            let d = ctx.socket(zmq::DEALER).map_err(zerr)?;
            d.set_linger(0).map_err(zerr)?;
            // Connecting before the echo binds is fine: ZeroMQ retries.
            d.connect(&format!("tcp://127.0.0.1:{port}"))
                .map_err(zerr)?;
            raw.dealers.push(d);
        }
        Ok(raw)
    }

    fn remote(&self) -> Result<u64, String> {
        let t = now_ns();
        let d = &self.dealers[0];
        d.send(&self.req[..], 0).map_err(|e| e.to_string())?;
        d.recv_bytes(0).map_err(|e| e.to_string())?;
        Ok(now_ns() - t)
    }

    fn broadcast(&self) -> Result<u64, String> {
        let t = now_ns();
        for d in &self.dealers {
            d.send(&self.req[..], 0).map_err(|e| e.to_string())?;
        }
        for d in &self.dealers {
            d.recv_bytes(0).map_err(|e| e.to_string())?;
        }
        Ok(now_ns() - t)
    }
}

impl Drop for RawCluster {
    fn drop(&mut self) {
        for c in &mut self.echoes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The name (`argv[0]`) an echo process of [`RawCluster`] is started
/// under, with its port, reply size and parent's pid as arguments.
pub const ZMQ_ECHO_ARG0: &str = "chimaera-bench-zmq-echo";

/// An echo process's `main`: its exit status.
pub fn zmq_echo_main(args: &[std::ffi::OsString]) -> u8 {
    let nums: Option<Vec<u64>> = args
        .iter()
        .map(|a| a.to_str().and_then(|a| a.parse().ok()))
        .collect();
    let [port, reply_len, parent] = nums.as_deref().unwrap_or_default() else {
        eprintln!(
            "usage: {ZMQ_ECHO_ARG0} PORT REPLY_LEN PARENT_PID (started by `chimaera bench cluster`)"
        );
        return crate::exit::USAGE;
    };
    match (u16::try_from(*port), u32::try_from(*parent)) {
        (Ok(port), Ok(parent)) => match zmq_echo(port, *reply_len as usize, parent) {
            Ok(()) => crate::exit::OK,
            Err(e) => {
                eprintln!("{ZMQ_ECHO_ARG0}: {e}");
                crate::exit::SOFTWARE
            }
        },
        _ => {
            eprintln!("{ZMQ_ECHO_ARG0}: port or pid out of range");
            crate::exit::USAGE
        }
    }
}

/// One echo process of [`RawCluster`], until its parent is gone or kills
/// it.
fn zmq_echo(port: u16, reply_len: usize, parent: u32) -> Result<(), String> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The parent may have gone before the line above took effect.
    if std::os::unix::process::parent_id() != parent {
        return Ok(());
    }
    let zerr = |e: zmq::Error| e.to_string();
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).map_err(zerr)?;
    router.set_linger(0).map_err(zerr)?;
    router
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .map_err(zerr)?;
    let reply = vec![0u8; reply_len];
    loop {
        let parts = router.recv_multipart(0).map_err(zerr)?;
        if let [id, _] = &parts[..] {
            router
                .send_multipart([&id[..], &reply[..]], 0)
                .map_err(zerr)?;
        }
    }
}

fn point(
    n: u32,
    heartbeat_ms: u64,
    idle: Duration,
    samples: usize,
) -> Result<ClusterPoint, String> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let hostfile = std::env::temp_dir().join(format!(
        "chimaera-bench-{}-cluster{n}-hostfile",
        std::process::id()
    ));
    let lines: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, lines).map_err(|e| format!("{}: {e}", hostfile.display()))?;
    let runtime = format!("  heartbeat_interval: {heartbeat_ms}\n");
    let mut daemons = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let network = format!("  hostfile: {}\n  node_id: {i}\n", hostfile.display());
        daemons.push(BenchDaemon::start_sized(
            &format!("c{n}n{i}"),
            1,
            *port,
            &network,
            MEMORY,
            &runtime,
            // The loss the bench causes is logged as a warning by every node.
            "error",
        )?);
    }
    let clients: Vec<Client> = daemons
        .iter_mut()
        .map(|d| d.connect())
        .collect::<Result<_, _>>()?;
    let _ = std::fs::remove_file(&hostfile);
    // Everyone sees everyone up: heartbeats answered both ways.
    let deadline =
        Instant::now() + Duration::from_secs(30) + Duration::from_millis(20 * heartbeat_ms);
    for (i, c) in clients.iter().enumerate() {
        for j in 0..n {
            while j != i as u32 && !sees(c, j, "up") {
                if Instant::now() > deadline {
                    return Err(format!("node {i} never saw node {j} up"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let c0 = &clients[0];
    let to_one = Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(1);
    let everyone = Task::new(admin::POOL_ID, admin::method::PING, &[]);
    let raw = RawCluster::start(n - 1)?;
    for _ in 0..200 {
        c0.call(&to_one).map_err(|e| e.to_string())?;
        c0.broadcast(&everyone).map_err(|e| e.to_string())?;
        raw.remote()?;
        raw.broadcast()?;
    }
    // Alternate, so that all see the same machine.
    let (mut remote, mut bcast) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let (mut raw_remote, mut raw_bcast) =
        (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        raw_remote.push(raw.remote()?);
        raw_bcast.push(raw.broadcast()?);
        let t = now_ns();
        c0.call(&to_one).map_err(|e| e.to_string())?;
        remote.push(now_ns() - t);
        let t = now_ns();
        let replies = c0.broadcast(&everyone).map_err(|e| e.to_string())?;
        bcast.push(now_ns() - t);
        if replies.len() != n as usize || replies.iter().any(|r| r.status != 0) {
            return Err(format!("a broadcast did not reach all {n} nodes"));
        }
    }
    drop(raw);
    for v in [&mut remote, &mut bcast, &mut raw_remote, &mut raw_bcast] {
        v.sort_unstable();
    }

    // Idle: nothing but heartbeats.
    let pids: Vec<u32> = daemons.iter().map(|d| d.pid()).collect();
    let before: Vec<u64> = pids
        .iter()
        .map(|p| cpu_ticks(*p))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let secs = t.elapsed().as_secs_f64();
    let after: Vec<u64> = pids
        .iter()
        .map(|p| cpu_ticks(*p))
        .collect::<Result<_, _>>()?;
    let pct: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / ticks_per_s() / secs * 100.0)
        .collect();

    // Loss: the last node dies; how long until each other one says so.
    let victim = n - 1;
    let killed = Instant::now();
    daemons[victim as usize].kill();
    let limit = Duration::from_millis(10 * heartbeat_ms);
    let mut seen = vec![None; (n - 1) as usize];
    while seen.iter().any(Option::is_none) {
        for (i, c) in clients.iter().take((n - 1) as usize).enumerate() {
            if seen[i].is_none() && sees(c, victim, "down") {
                seen[i] = Some(killed.elapsed());
            }
        }
        if killed.elapsed() > limit {
            return Err(format!(
                "node {victim}'s loss not seen by every node within 10 heartbeats"
            ));
        }
        std::thread::sleep(Duration::from_millis(heartbeat_ms.clamp(1, 50) / 5 + 1));
    }
    let beats: Vec<f64> = seen
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0 / heartbeat_ms as f64)
        .collect();
    drop(clients);
    drop(daemons);
    let p50 = |v: &[u64]| percentile(v, 0.5);
    Ok(ClusterPoint {
        nodes: n,
        broadcast_rtt_p50_ns: p50(&bcast),
        broadcast_rtt_p99_ns: percentile(&bcast, 0.99),
        remote_rtt_p50_ns: p50(&remote),
        broadcast_over_remote: p50(&bcast) as f64 / p50(&remote).max(1) as f64,
        idle_cpu_pct_mean: pct.iter().sum::<f64>() / pct.len() as f64,
        idle_cpu_pct_max: pct.iter().copied().fold(0.0, f64::max),
        loss_seen_heartbeats_max: beats.iter().copied().fold(0.0, f64::max),
        loss_seen_heartbeats_min: beats.iter().copied().fold(f64::MAX, f64::min),
        raw_zmq_broadcast_rtt_p50_ns: p50(&raw_bcast),
        raw_zmq_remote_rtt_p50_ns: p50(&raw_remote),
        raw_zmq_broadcast_over_remote: p50(&raw_bcast) as f64 / p50(&raw_remote).max(1) as f64,
        broadcast_over_raw_zmq: p50(&bcast) as f64 / p50(&raw_bcast).max(1) as f64,
    })
}

/// Runs the bench for each cluster size in `sizes` (2 to 16 nodes).
pub fn cluster(sizes: &[u32], heartbeat_ms: u64, idle: Duration) -> Result<ClusterReport, String> {
    if let Some(bad) = sizes.iter().find(|n| !(2..=16).contains(*n)) {
        return Err(format!("--nodes {bad}: a cluster of 2 to 16 nodes"));
    }
    let samples = 500;
    let points = sizes
        .iter()
        .map(|n| point(*n, heartbeat_ms, idle, samples))
        .collect::<Result<_, _>>()?;
    Ok(ClusterReport {
        points,
        heartbeat_interval_ms: heartbeat_ms,
        idle_secs: idle.as_secs_f64(),
        broadcast_samples: samples,
    })
}
