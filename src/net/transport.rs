//! The network thread: every socket, every frame, every heartbeat.
//!
//! Per peer it keeps one DEALER (connected at start, reconnected by ZeroMQ)
//! and two replay windows, one per direction of traffic: Task and Heartbeat
//! frames only arrive on the ROUTER, Reply, Error and HeartbeatAck only on
//! the DEALER, so a frame recorded on one connection cannot be replayed onto
//! the other. A task sent on is tracked until its reply, its deadline or its
//! peer going down, whichever comes first; a task received is submitted to a
//! lane as a runtime-owned record whose completion is posted back here.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slog::{info, warn};

use super::zap::{self, Allowlist, Zap};
use super::{NetError, NetShared, Note, PEER_DOWN, PEER_UP};
use crate::config::hostfile::HostEntry;
use crate::engine::runtime::{RuntimeCore, Worker};
use chimaera_proto::broadcast::NodeReply;
use chimaera_proto::record::{self, REF_CLIENT, REF_RUNTIME, status};
use chimaera_proto::sync::{coarse_now_ns, now_ns};
use chimaera_proto::wire::{
    self, ClusterKey, DecodeError, Frame, Header, HeaderFields, Kind, MAX_FRAME, Replay,
    ReplayWindow, Route, SeqCounter,
};

/// `waker` of records the network thread submitted: their completion is
/// posted to it instead of waking a worker.
pub const NET_WAKER: u32 = u32::MAX;
/// Heartbeats a peer may miss before it is marked down.
const MISSED_HEARTBEATS: u64 = 3;
/// How often pending tasks are checked against their deadlines.
const DEADLINE_SCAN: Duration = Duration::from_millis(5);
/// How long the thread keeps looking, yielding between looks, after its
/// last piece of work while tasks it sent are out.
const POLL_WHILE_OUT: Duration = Duration::from_millis(1);
/// ... if they are few: with more out, replies come in bursts and sleeping
/// between them costs less CPU than looking (measured: pipelined throughput
/// fell by a tenth).
const POLL_MAX_OUT: usize = 16;

pub struct NetConfig {
    pub node_id: u32,
    pub hosts: Vec<HostEntry>,
    pub zmq_port: u16,
    pub heartbeat: Duration,
    pub key: Option<ClusterKey>,
    /// Where to bind the socket clients wake the network thread through,
    /// with the access of the segments. None: clients' routed tasks go
    /// through the workers.
    pub wake: Option<(PathBuf, crate::shm::Access)>,
    /// Where this node keeps its last epoch, so the next start's is larger
    /// whatever the wall clock did meanwhile. None: the wall clock alone.
    pub epoch_file: Option<PathBuf>,
}

/// This run's epoch: the wall clock in ns, but above the last run's (read
/// from `file`, then written back). Peers order a node's runs by epoch and
/// its frames' sequence numbers start at it, so a run after a step of the
/// wall clock back must not reuse or go below the last one's: it would be
/// taken for a replay of it. (Without a file that survives, as after a
/// reboot with /run on tmpfs, the wall clock alone orders runs.)
pub(crate) fn next_epoch(file: Option<&Path>, log: &slog::Logger) -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let Some(file) = file else {
        return wall;
    };
    let last = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // A margin past the last run's epoch: its frames' sequence numbers
    // started there and went on one a frame.
    let epoch = wall.max(last.saturating_add(1 << 40));
    if epoch != wall {
        warn!(
            log,
            "the wall clock is behind this node's last run ({} ns < {} ns): the epoch goes on from that run's",
            wall,
            last
        );
    }
    let tmp = file.with_extension("epoch.tmp");
    if let Err(e) =
        std::fs::write(&tmp, format!("{epoch}\n")).and_then(|()| std::fs::rename(&tmp, file))
    {
        warn!(log, "cannot keep the epoch in {}: {}", file.display(), e);
    }
    epoch
}

/// The running transport. Stop it after the workers (it answers what they
/// finish) and before the segments go (it reads records).
pub struct Net {
    pub shared: Arc<NetShared>,
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    wake_path: Option<PathBuf>,
    _zap: Zap,
}

fn identity(node: u32) -> Vec<u8> {
    format!("chi-node-{node}").into_bytes()
}

fn endpoint(h: &HostEntry, zmq_port: u16) -> String {
    let port = h.port.unwrap_or(zmq_port);
    if h.host.contains(':') {
        format!("tcp://[{}]:{port}", h.host)
    } else {
        format!("tcp://{}:{port}", h.host)
    }
}

/// Binds the wake-up socket (a stale one of a dead runtime is replaced)
/// and gives it the segments' mode and group: clients need write access.
fn bind_wake(path: &Path, access: crate::shm::Access) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        chimaera_client::discovery::make_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let sock = UnixDatagram::bind(path)?;
    sock.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode()))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(sock)
}

impl Net {
    /// The wake-up socket clients use, if it could be made.
    pub fn wake_path(&self) -> Option<&Path> {
        self.wake_path.as_deref()
    }

    /// Binds the port, connects to every peer and starts the thread.
    pub fn start(
        core: Arc<RuntimeCore>,
        cfg: NetConfig,
        log: &slog::Logger,
    ) -> Result<Net, NetError> {
        let single = cfg.hosts.is_empty();
        let addrs: Vec<String> = if single {
            vec![format!("localhost:{}", cfg.zmq_port)]
        } else {
            cfg.hosts
                .iter()
                .map(|h| {
                    let e = endpoint(h, cfg.zmq_port);
                    e.trim_start_matches("tcp://").to_string()
                })
                .collect()
        };
        let shared = Arc::new(
            NetShared::new(
                cfg.node_id,
                addrs,
                cfg.key.is_some(),
                cfg.heartbeat.as_millis() as u64,
            )
            .map_err(|e| NetError::Setup(format!("eventfd: {e}")))?,
        );
        let ctx = zmq::Context::new();
        let zap = Zap::start(
            &ctx,
            Allowlist::new(&cfg.hosts, cfg.zmq_port),
            shared.clone(),
            log.clone(),
        )
        .map_err(|e| NetError::Setup(format!("the ZAP handler: {e}")))?;
        let router = ctx.socket(zmq::ROUTER).map_err(NetError::Socket)?;
        let setup = |s: &zmq::Socket| -> Result<(), zmq::Error> {
            s.set_linger(0)?;
            s.set_maxmsgsize(MAX_FRAME as i64)?;
            s.set_ipv6(true)?;
            s.set_sndhwm(100_000)?;
            s.set_rcvhwm(100_000)?;
            Ok(())
        };
        setup(&router).map_err(NetError::Socket)?;
        router
            .set_zap_domain(zap::DOMAIN)
            .map_err(NetError::Socket)?;
        // A restarted peer connects with the same routing id: let it take
        // the id over instead of being refused as a duplicate.
        router.set_router_handover(true).map_err(NetError::Socket)?;
        let port = cfg.zmq_port;
        router
            .bind(&format!("tcp://*:{port}"))
            .map_err(|e| match e {
                zmq::Error::EADDRINUSE => NetError::PortInUse { port },
                source => NetError::Bind { port, source },
            })?;
        let mut dealers = Vec::new();
        for (i, h) in cfg.hosts.iter().enumerate() {
            if i as u32 == cfg.node_id {
                dealers.push(None);
                continue;
            }
            let d = ctx.socket(zmq::DEALER).map_err(NetError::Socket)?;
            setup(&d).map_err(NetError::Socket)?;
            d.set_identity(&identity(cfg.node_id))
                .map_err(NetError::Socket)?;
            // Queue nothing for a peer that is not connected: a task for it
            // fails now rather than running whenever it comes back.
            d.set_immediate(true).map_err(NetError::Socket)?;
            d.set_reconnect_ivl(100).map_err(NetError::Socket)?;
            d.set_reconnect_ivl_max(1000).map_err(NetError::Socket)?;
            d.connect(&endpoint(h, cfg.zmq_port))
                .map_err(|e| NetError::Setup(format!("connect to node {i} ({h}): {e}")))?;
            dealers.push(Some(d));
        }
        let epoch = next_epoch(cfg.epoch_file.as_deref(), log);
        let wake = match &cfg.wake {
            Some((path, access)) => match bind_wake(path, *access) {
                Ok(s) => Some((s, path.clone())),
                Err(e) => {
                    warn!(
                        log,
                        "cannot make the wake-up socket {}: {}; clients' routed tasks go through the workers (one thread hand-off more)",
                        path.display(),
                        e
                    );
                    None
                }
            },
            None => None,
        };
        let wake_path = wake.as_ref().map(|(_, p)| p.clone());
        let n = shared.nodes as usize;
        let key_fingerprint = cfg.key.as_ref().map(ClusterKey::fingerprint);
        let stop = Arc::new(AtomicBool::new(false));
        let mut t = Transport {
            core,
            shared: shared.clone(),
            stop: stop.clone(),
            log: log.clone(),
            router,
            dealers,
            key: cfg.key,
            seq: SeqCounter::starting_at(epoch),
            epoch,
            router_windows: vec![ReplayWindow::new(); n],
            dealer_windows: vec![ReplayWindow::new(); n],
            next_id: 1,
            pending: HashMap::new(),
            serving: HashMap::new(),
            broadcasts: HashMap::new(),
            backlog: VecDeque::new(),
            arrived: Vec::new(),
            rr: 0,
            buf: Vec::with_capacity(4096),
            heartbeat_ns: cfg.heartbeat.as_nanos() as u64,
            drop_log: DropLog::default(),
            wake: wake.map(|(s, _)| s),
            _ctx: ctx,
        };
        let thread = std::thread::Builder::new()
            .name("chi-net".into())
            .spawn(move || t.run())
            .map_err(|e| NetError::Setup(format!("cannot start the network thread: {e}")))?;
        if !single {
            let auth = match &key_fingerprint {
                Some(f) => format!("authenticated with the cluster key (fingerprint {f})"),
                None => "NOT authenticated (no network.cluster_key_file)".into(),
            };
            info!(
                log,
                "cluster of {} nodes, heartbeat every {} ms; frames {}",
                shared.nodes,
                shared.heartbeat_ms,
                auth
            );
        }
        Ok(Net {
            shared,
            port,
            stop,
            thread: Some(thread),
            wake_path,
            _zap: zap,
        })
    }

    /// Fails what is still in flight (status STOPPING) and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.wake_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.halt();
    }
}

impl crate::engine::remote::Attached for Net {
    fn stop(self: Box<Self>) {
        Net::stop(*self);
    }
}

/// A task this node sent to a peer and waits on.
enum Pending {
    /// A local client's record.
    Single { idx: u32, node: u32, deadline: u64 },
    /// One leg of a broadcast.
    Leg { bid: u64, node: u32, deadline: u64 },
}

impl Pending {
    fn node(&self) -> u32 {
        match self {
            Pending::Single { node, .. } | Pending::Leg { node, .. } => *node,
        }
    }
    fn deadline(&self) -> u64 {
        match self {
            Pending::Single { deadline, .. } | Pending::Leg { deadline, .. } => *deadline,
        }
    }
}

/// A record this thread submitted locally, and who gets its result.
enum Serving {
    Peer { node: u32, task_id: u64 },
    Leg { bid: u64 },
}

struct Broadcast {
    idx: u32,
    replies: Vec<Option<NodeReply>>,
    left: usize,
}

/// Rate-limited reports of dropped frames: one line per 10 s.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    quiet: u64,
}

struct Transport {
    core: Arc<RuntimeCore>,
    shared: Arc<NetShared>,
    stop: Arc<AtomicBool>,
    log: slog::Logger,
    router: zmq::Socket,
    dealers: Vec<Option<zmq::Socket>>,
    key: Option<ClusterKey>,
    seq: SeqCounter,
    epoch: u64,
    router_windows: Vec<ReplayWindow>,
    dealer_windows: Vec<ReplayWindow>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    serving: HashMap<u32, Serving>,
    broadcasts: HashMap<u64, Broadcast>,
    /// Received tasks waiting for room in a lane.
    backlog: VecDeque<u32>,
    /// Tasks submitted here for peers (or a broadcast's local leg) this
    /// pass: quick ones run on this thread, the others go to the lanes.
    arrived: Vec<u32>,
    rr: u32,
    buf: Vec<u8>,
    heartbeat_ns: u64,
    drop_log: DropLog,
    /// Clients send a byte here when they push to the network lane while
    /// this thread sleeps (its doorbell set).
    wake: Option<UnixDatagram>,
    _ctx: zmq::Context,
}

impl Transport {
    fn run(&mut self) {
        // Made here: an executor stays on the thread that made it.
        let mut exec = Worker::for_network(self.core.clone(), self.shared.executor.clone());
        let mut passes = 0u64;
        let mut notes = Vec::with_capacity(256);
        let mut next_heartbeat = 0u64;
        let mut next_scan = 0u64;
        let mut next_check = 0u64;
        let alone = self.shared.nodes <= 1;
        let wake_fd = self.shared.wake.as_raw_fd();
        let mut last_work = now_ns();
        loop {
            passes += 1;
            self.shared
                .executor
                .progress
                .store(passes, Ordering::Relaxed);
            let now = coarse_now_ns();
            if now >= next_heartbeat {
                self.heartbeats();
                next_heartbeat = now + self.heartbeat_ns;
            }
            if now >= next_check {
                // Ten times a heartbeat, so that a peer is marked down right
                // after its third missed heartbeat, not up to one later.
                self.check_peers();
                next_check = now + self.heartbeat_ns / 10;
            }
            if now >= next_scan {
                self.expire(now);
                next_scan = now + DEADLINE_SCAN.as_nanos() as u64;
            }
            if !self.backlog.is_empty() {
                self.retry_backlog(now);
            }
            self.shared.take(&mut notes);
            let had_notes = !notes.is_empty();
            for note in notes.drain(..) {
                match note {
                    Note::Forward(idx) => self.forward(idx, now),
                    Note::Done(idx) => self.done(idx),
                }
            }
            let took = self.take_net_lane(now);
            let got = self.receive_all();
            let ran = self.run_arrived(&mut exec, now) | (exec.poll(now) > 0);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if had_notes || took || got || ran {
                last_work = now_ns();
                continue;
            }
            // While a reply is due, look again instead of sleeping: waking
            // from zmq_poll is a hand-off of 10-30 µs here, a tenth of a
            // loopback round trip. The yield gives the CPU to ZeroMQ's I/O
            // threads and the workers whenever they can run (a tight spin
            // cut pipelined throughput to a fifth); a node with nothing out
            // sleeps at once, so an idle one stays idle.
            if (1..=POLL_MAX_OUT).contains(&self.pending.len())
                && now_ns().saturating_sub(last_work) < POLL_WHILE_OUT.as_nanos() as u64
            {
                std::thread::yield_now();
                continue;
            }
            // Sleep until a socket, a note, a client or the next timer. Both
            // announcements before the last looks (SeqCst on both sides).
            let net_lane = self.core.view.net_lane;
            // As a worker does: put right what anyone wrote over in the lane.
            net_lane.repair();
            self.shared.sleeping.store(true, Ordering::SeqCst);
            if self.wake.is_some() {
                net_lane.header.doorbell.store(1, Ordering::SeqCst);
            }
            if !self
                .shared
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
                || net_lane.has_work()
            {
                self.shared.sleeping.store(false, Ordering::SeqCst);
                net_lane.header.doorbell.store(0, Ordering::SeqCst);
                continue;
            }
            // An idle single node wakes once a heartbeat interval, nothing more.
            let mut until = next_heartbeat;
            if !alone {
                until = until.min(next_check);
            }
            if !self.pending.is_empty() || !self.backlog.is_empty() || exec.has_parked() {
                until = until.min(next_scan);
            }
            let timeout_ms = (until.saturating_sub(coarse_now_ns()) / 1_000_000).max(1) as i64;
            let mut items = Vec::with_capacity(3 + self.dealers.len());
            items.push(self.router.as_poll_item(zmq::POLLIN));
            items.push(zmq::PollItem::from_fd(wake_fd, zmq::POLLIN));
            if let Some(w) = &self.wake {
                items.push(zmq::PollItem::from_fd(w.as_raw_fd(), zmq::POLLIN));
            }
            for d in self.dealers.iter().flatten() {
                items.push(d.as_poll_item(zmq::POLLIN));
            }
            let _ = zmq::poll(&mut items, timeout_ms);
            // Drained only when readable: a wake-up by a socket or a timer
            // costs no system call more (each is a VM exit here).
            let noted = items[1].is_readable();
            let rung = self.wake.is_some() && items[2].is_readable();
            drop(items);
            self.shared.sleeping.store(false, Ordering::SeqCst);
            net_lane.header.doorbell.store(0, Ordering::SeqCst);
            if noted {
                crate::sys::eventfd_drain(self.shared.wake.as_fd());
            }
            if rung && let Some(w) = &self.wake {
                let mut b = [0u8; 64];
                while w.recv(&mut b).is_ok() {}
            }
        }
        exec.abandon_parked();
        self.shutdown();
    }

    /// Takes what clients pushed to the network lane (bounded per pass) and
    /// sends it on; true if there was any.
    fn take_net_lane(&mut self, now: u64) -> bool {
        let lane = self.core.view.net_lane;
        let records = self.core.view.records;
        let mut took = false;
        for _ in 0..256 {
            // Marked forwarded before it leaves the lane, so that at no
            // instant is a live task in neither place (the reaper's orphan
            // rule). Only this thread pops the lane.
            let popped = lane.pop_then(|idx| {
                if let Some(rec) = records.checked(idx) {
                    rec.flags
                        .fetch_or(chimaera_proto::protocol::FLAG_FORWARDED, Ordering::AcqRel);
                }
            });
            let Some(idx) = popped else { break };
            took = true;
            self.forward(idx, now);
        }
        took
    }

    /// Runs the quick tasks that arrived, in order, and queues the others
    /// to the workers; true if there were any.
    fn run_arrived(&mut self, exec: &mut Worker, now: u64) -> bool {
        if self.arrived.is_empty() {
            return false;
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        for idx in arrived.drain(..) {
            if !exec.run_if_quick(idx, now) {
                self.hand_to_workers(idx);
            }
        }
        self.arrived = arrived;
        true
    }

    /// Reads everything waiting on every socket; true if anything was.
    fn receive_all(&mut self) -> bool {
        let mut any = false;
        // Bounded per pass so notes and timers are not starved.
        for _ in 0..256 {
            match self.router.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => {
                    any = true;
                    self.on_router(parts);
                }
                Err(_) => break,
            }
        }
        for node in 0..self.dealers.len() {
            for _ in 0..256 {
                let Some(d) = &self.dealers[node] else { break };
                match d.recv_bytes(zmq::DONTWAIT) {
                    Ok(bytes) => {
                        any = true;
                        self.on_dealer(node as u32, &bytes);
                    }
                    Err(_) => break,
                }
            }
        }
        any
    }

    fn next_header(&self, dst: u32) -> HeaderFields {
        HeaderFields {
            src_node: self.shared.node_id,
            dst_node: dst,
            seq: self.seq.next(),
            dst_epoch: self.shared.peers[dst as usize]
                .epoch
                .load(Ordering::Relaxed),
        }
    }

    /// Encodes `frame` for `dst` into the reusable buffer.
    fn encode(&mut self, frame: &Frame<'_>, dst: u32) -> Result<(), String> {
        let hdr = self.next_header(dst);
        self.buf.clear();
        wire::encode(frame, &hdr, self.key.as_ref(), &mut self.buf).map_err(|e| e.to_string())
    }

    /// Sends the buffer to `dst` on its DEALER (requests and heartbeats).
    fn send_to(&mut self, dst: u32) -> Result<(), String> {
        let Some(d) = &self.dealers[dst as usize] else {
            return Err("no connection to that node".into());
        };
        match d.send(&self.buf[..], zmq::DONTWAIT) {
            Ok(()) => {
                self.shared
                    .counters
                    .frames_out
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.shared
                    .counters
                    .send_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(match e {
                    zmq::Error::EAGAIN => "not connected, or its send queue is full".into(),
                    e => e.to_string(),
                })
            }
        }
    }

    /// Sends the buffer back to a peer through the ROUTER (answers).
    fn answer(&mut self, node: u32) {
        let id = identity(node);
        let parts: [&[u8]; 2] = [&id, &self.buf];
        match self.router.send_multipart(parts, zmq::DONTWAIT) {
            Ok(()) => {
                self.shared
                    .counters
                    .frames_out
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared
                    .counters
                    .send_failed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn heartbeats(&mut self) {
        for node in 0..self.dealers.len() as u32 {
            if self.dealers[node as usize].is_none() {
                continue;
            }
            let f = Frame::Heartbeat {
                epoch: self.epoch,
                sent_ns: now_ns(),
            };
            if self.encode(&f, node).is_ok() {
                let _ = self.send_to(node);
            }
        }
    }

    fn check_peers(&mut self) {
        let limit_ms = MISSED_HEARTBEATS * self.heartbeat_ns / 1_000_000;
        let now_ms = chimaera_proto::sync::mono_ms();
        for node in 0..self.shared.nodes {
            if node == self.shared.node_id {
                continue;
            }
            let peer = &self.shared.peers[node as usize];
            if peer.state.load(Ordering::Relaxed) != PEER_UP {
                continue;
            }
            let heard = peer.last_heard_mono_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(heard) > limit_ms {
                peer.state.store(PEER_DOWN, Ordering::Release);
                warn!(
                    self.log,
                    "node {} ({}) missed {} heartbeats: marked down; its tasks fail with \"node unavailable\"",
                    node,
                    peer.addr,
                    MISSED_HEARTBEATS
                );
                let msg = self.shared.unavailable(node, PEER_DOWN);
                self.fail_pending(node, &msg);
            }
        }
    }

    /// A valid frame from `node` arrived. Any frame shows it alive; only an
    /// answer on our own connection to it (`both_ways`) shows that tasks can
    /// reach it, so only that marks it up.
    fn heard(&self, node: u32, both_ways: bool) {
        let peer = &self.shared.peers[node as usize];
        peer.last_heard_mono_ms
            .store(chimaera_proto::sync::mono_ms(), Ordering::Relaxed);
        if !both_ways {
            return;
        }
        let was = peer.state.swap(PEER_UP, Ordering::AcqRel);
        if was != PEER_UP {
            info!(
                self.log,
                "node {} ({}) is {}",
                node,
                peer.addr,
                if was == PEER_DOWN { "up again" } else { "up" }
            );
        }
    }

    /// A peer's epoch from its heartbeat or ack. A newer one means it
    /// restarted: what it was running for us is lost, so those tasks fail
    /// now rather than at their timeout. An older one is a stray and ignored.
    fn learn_epoch(&mut self, node: u32, epoch: u64) {
        let peer = &self.shared.peers[node as usize];
        let old = peer.epoch.load(Ordering::Relaxed);
        if epoch <= old {
            return;
        }
        peer.epoch.store(epoch, Ordering::Relaxed);
        if old == 0 {
            return;
        }
        info!(
            self.log,
            "node {} ({}) restarted; tasks it was running for this node fail", node, peer.addr
        );
        let msg = format!(
            "node unavailable: node {node} ({}) restarted while running the task",
            peer.addr
        );
        self.fail_pending(node, &msg);
    }

    /// Fails every task waiting on `node` with NODE_UNAVAILABLE.
    fn fail_pending(&mut self, node: u32, msg: &str) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node() == node)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.settle(id, status::NODE_UNAVAILABLE, msg.as_bytes());
        }
    }

    /// Times out pending tasks and broadcasts whose deadline passed.
    fn expire(&mut self, now: u64) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now > p.deadline())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.settle(
                id,
                status::TIMED_OUT,
                b"timed out waiting for the remote node",
            );
        }
    }

    /// Gives a pending task its result: completes a local record, or fills
    /// a broadcast leg.
    fn settle(&mut self, id: u64, st: i32, output: &[u8]) {
        match self.pending.remove(&id) {
            Some(Pending::Single { idx, .. }) => {
                self.core.finish_with(idx, st, Some(output), true);
            }
            Some(Pending::Leg { bid, node, .. }) => self.leg_done(bid, node, st, output),
            None => {
                self.shared
                    .counters
                    .dropped_late_reply
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn leg_done(&mut self, bid: u64, node: u32, st: i32, output: &[u8]) {
        let Some(b) = self.broadcasts.get_mut(&bid) else {
            return;
        };
        let slot = &mut b.replies[node as usize];
        if slot.is_some() {
            return;
        }
        *slot = Some(NodeReply {
            node,
            status: st,
            output: output.to_vec(),
        });
        b.left -= 1;
        if b.left == 0 {
            let b = self.broadcasts.remove(&bid).expect("present");
            let replies: Vec<NodeReply> = b.replies.into_iter().flatten().collect();
            let out = chimaera_proto::broadcast::encode_broadcast(&replies);
            self.core.finish_with(b.idx, status::OK, Some(&out), true);
        }
    }

    /// A wire task id (or broadcast id) never used before by this node.
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A local client's task with a remote route: send it on (or fail it).
    fn forward(&mut self, idx: u32, now: u64) {
        let core = self.core.clone();
        // From the network lane, which any client may write: checked.
        let Some(rec) = core.view.records.checked(idx) else {
            core.rejected.record_index.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let state = rec.state.load(Ordering::Acquire);
        if state & record::PHASE_MASK != record::SUBMITTED {
            if state & record::PHASE_MASK == record::DONE && state & REF_RUNTIME != 0 {
                core.release(idx, REF_RUNTIME);
            } else {
                core.rejected.state.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let deadline = rec.deadline_ns.load(Ordering::Relaxed);
        let route = record::route_of(
            rec.flags.load(Ordering::Relaxed),
            rec.route_arg.load(Ordering::Relaxed),
        );
        let pool = rec.pool_id.load(Ordering::Relaxed);
        let method = rec.method.load(Ordering::Relaxed);
        let input = match core.input_copy(idx, rec) {
            Ok(input) => input,
            Err(m) => {
                core.rejected.payload.fetch_add(1, Ordering::Relaxed);
                core.finish(idx, status::BAD_INPUT, Some(&m), true);
                return;
            }
        };
        let input = &input[..];
        match self.shared.decide_route(route) {
            super::Decision::Remote(node) => {
                let id = self.fresh_id();
                match self.send_task(id, node, pool, method, route, deadline, now, input) {
                    Ok(()) => {
                        self.pending.insert(
                            id,
                            Pending::Single {
                                idx,
                                node,
                                deadline,
                            },
                        );
                    }
                    Err(e) => {
                        let msg = format!(
                            "node unavailable: cannot send to node {node} ({}): {e}",
                            self.shared.peers[node as usize].addr
                        );
                        core.finish_with(idx, status::NODE_UNAVAILABLE, Some(msg.as_bytes()), true);
                    }
                }
            }
            super::Decision::Broadcast => {
                let bid = self.fresh_id();
                let n = self.shared.nodes as usize;
                let b = Broadcast {
                    idx,
                    replies: vec![None; n],
                    left: n,
                };
                let mut immediate = Vec::new();
                for node in 0..n as u32 {
                    if node == self.shared.node_id {
                        match self.submit_local(pool, method, input, deadline, Serving::Leg { bid })
                        {
                            Ok(()) => {}
                            Err((st, m)) => immediate.push((node, st, m)),
                        }
                        continue;
                    }
                    let state = self.shared.peers[node as usize]
                        .state
                        .load(Ordering::Acquire);
                    if state != PEER_UP {
                        immediate.push((
                            node,
                            status::NODE_UNAVAILABLE,
                            self.shared.unavailable(node, state),
                        ));
                        continue;
                    }
                    let id = self.fresh_id();
                    match self.send_task(id, node, pool, method, route, deadline, now, input) {
                        Ok(()) => {
                            self.pending.insert(
                                id,
                                Pending::Leg {
                                    bid,
                                    node,
                                    deadline,
                                },
                            );
                        }
                        Err(e) => immediate.push((
                            node,
                            status::NODE_UNAVAILABLE,
                            format!("node unavailable: cannot send to node {node}: {e}"),
                        )),
                    }
                }
                // Registered before the immediate results: the last of them
                // may complete the broadcast.
                self.broadcasts.insert(bid, b);
                for (node, st, m) in immediate {
                    self.leg_done(bid, node, st, m.as_bytes());
                }
            }
            super::Decision::Local => {
                // A client's task whose route leads here (its hash, or its
                // own node): a worker runs it.
                self.hand_to_workers(idx);
            }
            super::Decision::Fail(st, m) => {
                core.finish_with(idx, st, Some(m.as_bytes()), true);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_task(
        &mut self,
        id: u64,
        node: u32,
        pool: u32,
        method: u32,
        route: Route,
        deadline: u64,
        now: u64,
        input: &[u8],
    ) -> Result<(), String> {
        let left_ms = deadline.saturating_sub(now) / 1_000_000;
        if left_ms == 0 {
            return Err("the task's time ran out before it was sent".into());
        }
        let f = Frame::Task {
            task_id: id,
            pool,
            method,
            route,
            timeout_ms: left_ms.min(u64::from(u32::MAX)) as u32,
            payload: input,
        };
        self.encode(&f, node)?;
        self.send_to(node)?;
        self.shared
            .counters
            .tasks_forwarded
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Submits a task here on behalf of a peer or a broadcast; its
    /// completion comes back as [`Note::Done`].
    fn submit_local(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        deadline: u64,
        serving: Serving,
    ) -> Result<(), (i32, String)> {
        let core = &*self.core;
        if core.stop.load(Ordering::Acquire) {
            return Err((status::STOPPING, "the node is stopping".into()));
        }
        let Some(idx) = core.view.records.alloc(record::RUNTIME_OWNER) else {
            return Err((
                status::MODULE_ERROR,
                "every task record of the node is in use: raise memory.main_segment_size".into(),
            ));
        };
        core.fill_runtime_record(idx, pool, method, input)
            .map_err(|e| (status::MODULE_ERROR, e))?;
        let rec = core.view.records.get(idx);
        let own = rec.deadline_ns.load(Ordering::Relaxed);
        rec.deadline_ns.store(own.min(deadline), Ordering::Relaxed);
        rec.waker.store(NET_WAKER, Ordering::Relaxed);
        self.serving.insert(idx, serving);
        rec.mark_submitted();
        self.arrived.push(idx);
        Ok(())
    }

    /// Hands a submitted record to a worker's lane, or to the backlog
    /// behind those already waiting (so that order is kept).
    fn hand_to_workers(&mut self, idx: u32) {
        if !self.backlog.is_empty() || !self.push_lane(idx) {
            self.backlog.push_back(idx);
        }
    }

    /// Pushes a submitted record to the next lane with room.
    fn push_lane(&mut self, idx: u32) -> bool {
        let core = &*self.core;
        let lanes = core.view.lanes.len() as u32;
        // A worker still spinning takes the task without a futex wake-up:
        // try such a lane first, then the others in turn.
        let awake = (0..lanes).map(|k| (self.rr + k) % lanes).find(|&l| {
            core.view.lanes[l as usize]
                .header
                .doorbell
                .load(Ordering::Relaxed)
                == 0
        });
        for k in 0..=lanes {
            let lane = match (k, awake) {
                (0, Some(l)) => l,
                (0, None) => continue,
                _ => (self.rr + k - 1) % lanes,
            };
            core.view
                .records
                .get(idx)
                .lane
                .store(lane, Ordering::Relaxed);
            if core.view.lanes[lane as usize].push(idx).is_ok() {
                core.ring(lane);
                self.rr = lane + 1;
                return true;
            }
        }
        false
    }

    fn retry_backlog(&mut self, now: u64) {
        while let Some(&idx) = self.backlog.front() {
            let rec = self.core.view.records.get(idx);
            if now > rec.deadline_ns.load(Ordering::Relaxed) {
                self.backlog.pop_front();
                // Never queued: completed here (a peer's task then posts
                // its Done note).
                self.core.finish_with(idx, status::TIMED_OUT, None, true);
                continue;
            }
            if !self.push_lane(idx) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// A record submitted here is done: answer whoever it ran for.
    fn done(&mut self, idx: u32) {
        let core = self.core.clone();
        let rec = core.view.records.get(idx);
        // A subtask of a task this thread runs posts its Done too, and its
        // parent may free it (and the index come back as a peer's task not
        // yet run) before that note is read: only a finished record counts.
        if rec.phase() != record::DONE {
            return;
        }
        let Some(s) = self.serving.remove(&idx) else {
            return;
        };
        let st = rec.status();
        let out = core
            .output_copy(rec)
            .unwrap_or_else(|e| format!("the output was lost: {e}").into_bytes());
        let out = &out[..];
        match s {
            Serving::Peer { node, task_id } => {
                let f = Frame::Reply {
                    task_id,
                    status: st,
                    payload: out,
                };
                if self.encode(&f, node).is_ok() {
                    self.answer(node);
                }
            }
            Serving::Leg { bid } => {
                let me = self.shared.node_id;
                self.leg_done(bid, me, st, out);
            }
        }
        core.release(idx, REF_CLIENT);
    }

    /// Decodes and checks a frame from `node` that came by `channel`.
    fn admit<'b>(
        &mut self,
        bytes: &'b [u8],
        from_router: bool,
        node: Option<u32>,
    ) -> Option<(Header, Frame<'b>)> {
        let c = &self.shared.counters;
        let (hdr, frame) = match wire::decode(bytes, self.key.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                let counter = match e {
                    DecodeError::MissingTag { .. } => &c.dropped_missing_tag,
                    DecodeError::BadTag { .. } => &c.dropped_bad_tag,
                    DecodeError::UnexpectedTag { .. } => &c.dropped_unexpected_tag,
                    _ => &c.dropped_bad_frame,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.report_drop(&e.to_string());
                return None;
            }
        };
        let me = self.shared.node_id;
        let src = hdr.src_node;
        let kind_ok = match hdr.kind {
            Kind::Task | Kind::Heartbeat => from_router,
            Kind::Reply | Kind::Error | Kind::HeartbeatAck => !from_router,
        };
        if hdr.dst_node != me
            || src >= self.shared.nodes
            || src == me
            || node.is_some_and(|n| n != src)
            || !kind_ok
        {
            c.dropped_wrong_node.fetch_add(1, Ordering::Relaxed);
            self.report_drop(&format!(
                "a {} frame claiming to be from node {src} to node {} came on the connection of {}: dropped",
                hdr.kind,
                hdr.dst_node,
                node.map_or("an unknown peer".to_string(), |n| format!("node {n}"))
            ));
            return None;
        }
        let windows = if from_router {
            &mut self.router_windows
        } else {
            &mut self.dealer_windows
        };
        if let Err(e) = windows[src as usize].admit(&hdr, self.epoch) {
            // A peer that restarted keeps sending our old epoch until our
            // heartbeat reaches it: not worth a line each time.
            if !matches!(e, Replay::StaleEpoch { .. }) {
                self.report_drop(&format!("from node {src}: {e}"));
            }
            self.shared
                .counters
                .dropped_replay
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.shared
            .counters
            .frames_in
            .fetch_add(1, Ordering::Relaxed);
        self.heard(src, !from_router);
        Some((hdr, frame))
    }

    fn report_drop(&mut self, why: &str) {
        let d = &mut self.drop_log;
        if d.last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            warn!(
                self.log,
                "dropped a frame: {} ({} more dropped since the last report; counts in `chimaera status --json`)",
                why,
                d.quiet
            );
            d.last = Some(Instant::now());
            d.quiet = 0;
        } else {
            d.quiet += 1;
        }
    }

    fn on_router(&mut self, parts: Vec<Vec<u8>>) {
        let [id, bytes] = parts.as_slice() else {
            self.shared
                .counters
                .dropped_bad_frame
                .fetch_add(1, Ordering::Relaxed);
            self.report_drop(&format!(
                "a message of {} parts, expected 1",
                parts.len().saturating_sub(1)
            ));
            return;
        };
        // The routing id names the node the connection claims to be; the
        // header must say the same.
        let claimed = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.strip_prefix("chi-node-"))
            .and_then(|n| n.parse::<u32>().ok());
        let Some(claimed) = claimed else {
            self.shared
                .counters
                .dropped_wrong_node
                .fetch_add(1, Ordering::Relaxed);
            self.report_drop("a message from a connection that did not name a node: dropped");
            return;
        };
        let Some((_, frame)) = self.admit(bytes, true, Some(claimed)) else {
            return;
        };
        let src = claimed;
        match frame {
            Frame::Heartbeat { epoch, sent_ns } => {
                self.learn_epoch(src, epoch);
                let ack = Frame::HeartbeatAck {
                    epoch: self.epoch,
                    echo_sent_ns: sent_ns,
                };
                if self.encode(&ack, src).is_ok() {
                    self.answer(src);
                }
            }
            Frame::Task {
                task_id,
                pool,
                method,
                route,
                timeout_ms,
                payload,
            } => {
                self.shared
                    .counters
                    .tasks_served
                    .fetch_add(1, Ordering::Relaxed);
                let me = self.shared.node_id;
                let result = match route {
                    Route::Direct(n) if n != me => Err((
                        status::BAD_INPUT,
                        format!("task for node {n} reached node {me}"),
                    )),
                    _ => {
                        let deadline = coarse_now_ns() + u64::from(timeout_ms) * 1_000_000;
                        self.submit_local(
                            pool,
                            method,
                            payload,
                            deadline,
                            Serving::Peer { node: src, task_id },
                        )
                    }
                };
                if let Err((st, message)) = result {
                    let f = Frame::Error {
                        task_id,
                        code: st as u16,
                        message: &message,
                    };
                    if self.encode(&f, src).is_ok() {
                        self.answer(src);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_dealer(&mut self, node: u32, bytes: &[u8]) {
        let Some((_, frame)) = self.admit(bytes, false, Some(node)) else {
            return;
        };
        match frame {
            Frame::HeartbeatAck {
                epoch,
                echo_sent_ns,
            } => {
                self.learn_epoch(node, epoch);
                self.shared.peers[node as usize]
                    .rtt_ns
                    .store(now_ns().saturating_sub(echo_sent_ns), Ordering::Relaxed);
            }
            Frame::Reply {
                task_id,
                status,
                payload,
            } => self.settle(task_id, status, payload),
            Frame::Error {
                task_id,
                code,
                message,
            } => self.settle(task_id, i32::from(code), message.as_bytes()),
            _ => {}
        }
    }

    /// The node stops: what waits on a peer fails with STOPPING; what runs
    /// here for a peer is let go (its peer times it out).
    fn shutdown(&mut self) {
        // Clients' tasks not sent yet, and tasks waiting for a lane (a
        // peer's get its Done note, handled below).
        let unsent = std::iter::from_fn(|| self.core.view.net_lane.pop()).collect::<Vec<_>>();
        for idx in unsent.into_iter().chain(self.backlog.drain(..)) {
            self.core
                .finish_with(idx, status::STOPPING, Some(b"the node is stopping"), true);
        }
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            self.settle(id, status::STOPPING, b"the node is stopping");
        }
        for (_, b) in self.broadcasts.drain() {
            self.core
                .finish_with(b.idx, status::STOPPING, Some(b"the node is stopping"), true);
        }
        let mut notes = Vec::new();
        self.shared.take(&mut notes);
        for note in notes {
            match note {
                Note::Forward(idx) => {
                    self.core.finish_with(
                        idx,
                        status::STOPPING,
                        Some(b"the node is stopping"),
                        true,
                    );
                }
                Note::Done(idx) => {
                    // Not one of ours: a subtask's note (see `done`).
                    if self.serving.remove(&idx).is_some() {
                        self.core.release(idx, REF_CLIENT);
                    }
                }
            }
        }
        for (idx, _) in self.serving.drain() {
            self.core.release(idx, REF_CLIENT);
        }
    }
}
