//! The network thread: every socket, every frame, every heartbeat.
//!
//! Per peer it keeps one DEALER (connected at start, reconnected by ZeroMQ
//! when a connection drops, and by us when the peer restarted or reaches us
//! while our connection to it stays unanswered, as after a refused
//! handshake, which libzmq does not retry) and two replay windows, one per
//! direction of traffic: Task and Heartbeat frames only arrive on the
//! ROUTER, Reply, Error and HeartbeatAck only on the DEALER, so a frame
//! recorded on one connection cannot be replayed onto the other. A task
//! sent on is tracked until its reply, its deadline or its peer going down,
//! whichever comes first; a task received is submitted to a lane as a
//! runtime-owned record whose completion is posted back here.
//!
//! This file holds [`Net`] (start and stop), [`NetConfig`], the thread's
//! state (`Transport`) and its main loop, and what it does on stopping.
//! The rest of the thread's work is split by concern, each file adding its
//! own `impl Transport`:
//!
//! - `socket`: setting up the ROUTER, the DEALERs and the wake-up socket;
//!   encoding a frame and putting it on a socket.
//! - `outbound`: sending this node's tasks to peers (single and broadcast)
//!   and the bookkeeping of those pending: replies, deadlines, failures.
//! - `inbound`: reading the sockets, checking each frame (kind, nodes,
//!   replay) and acting on it.
//! - `serve`: running tasks here for peers (and a broadcast's local leg):
//!   submitting them, handing them to the workers' lanes, answering.
//! - `batch`: gathering what goes to a peer in one pass into one message.
//! - `ready`: which sockets to read, from one epoll set of their `ZMQ_FD`s.
//! - `heartbeat`: heartbeats, peer epochs, peers going up and down.

mod batch;
mod heartbeat;
mod inbound;
mod outbound;
mod ready;
mod serve;
mod socket;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use slog::{info, warn};

use self::batch::Batch;
use self::heartbeat::Dial;
use self::inbound::DropLog;
use self::outbound::{Broadcast, Pending};
use self::serve::Serving;
use super::zap::{Allowlist, Zap};
use super::{NetError, NetShared, Note};
use crate::config::hostfile::HostEntry;
use crate::engine::runtime::{RuntimeCore, Worker};
use chimaera_proto::record::{REF_CLIENT, status};
use chimaera_proto::sync::{coarse_now_ns, now_ns};
use chimaera_proto::wire::{ClusterKey, ReplayWindow, SeqCounter};

/// `waker` of records the network thread submitted: their completion is
/// posted to it instead of waking a worker.
pub const NET_WAKER: u32 = u32::MAX;
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

/// This run's epoch: the wall clock in ns, but above the highest sequence
/// number the last run used (kept in `file`: written at start and with
/// every round of heartbeats, see [`keep_epoch`]). Peers order a node's runs
/// by epoch and its frames' sequence numbers start at it, so a run after a
/// step of the wall clock back must not reuse the last one's numbers: its
/// frames would be taken for replays. A run sends fewer frames than
/// nanoseconds pass, so its numbers stay below the wall clock unless that
/// stepped back. (Without a file that survives, as after a reboot with /run
/// on tmpfs, the wall clock alone orders runs.)
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
    // Past what the last run may have used before its last write: the
    // frames of one round of heartbeats and what came with them.
    let floor = last.saturating_add(1 << 24);
    let epoch = if last == 0 || wall > floor {
        wall
    } else {
        warn!(
            log,
            "the wall clock ({} ns) is behind this node's last run (numbers up to {} ns): this run goes on from there",
            wall,
            last
        );
        floor
    };
    if let Err(e) = keep_epoch(file, epoch) {
        warn!(log, "cannot keep the epoch in {}: {}", file.display(), e);
    }
    epoch
}

/// Writes the highest sequence number used so far where the next run reads
/// it ([`next_epoch`]).
pub(crate) fn keep_epoch(file: &Path, high_water: u64) -> std::io::Result<()> {
    let tmp = file.with_extension("epoch.tmp");
    std::fs::write(&tmp, format!("{high_water}\n"))?;
    std::fs::rename(&tmp, file)
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
                    let e = socket::endpoint(h, cfg.zmq_port);
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
        let port = cfg.zmq_port;
        let router = socket::open_router(&ctx, port, cfg.heartbeat)?;
        let dealers = socket::connect_dealers(&ctx, &cfg)?;
        let mut ready = socket::readiness(&router, &dealers)?;
        let epoch = next_epoch(cfg.epoch_file.as_deref(), log);
        let wake = match &cfg.wake {
            Some((path, access)) => match socket::bind_wake(path, *access) {
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
        let noted = ready.watch(shared.wake.as_raw_fd())?;
        let rung = match &wake {
            Some((s, _)) => Some(ready.watch(s.as_raw_fd())?),
            None => None,
        };
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
            hosts: cfg.hosts.clone(),
            zmq_port: cfg.zmq_port,
            key: cfg.key,
            seq: SeqCounter::starting_at(epoch),
            epoch,
            epoch_file: cfg.epoch_file.clone(),
            router_windows: vec![ReplayWindow::new(); n],
            dealer_windows: vec![ReplayWindow::new(); n],
            dialed: vec![Dial::new(chimaera_proto::sync::mono_ms()); n],
            to_dealer: (0..n).map(|_| Batch::default()).collect(),
            to_router: (0..n).map(|_| Batch::default()).collect(),
            ready,
            noted,
            rung,
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

/// The network thread's state: its sockets, what it sent and waits on, what
/// it runs for peers.
struct Transport {
    core: Arc<RuntimeCore>,
    shared: Arc<NetShared>,
    stop: Arc<AtomicBool>,
    log: slog::Logger,
    router: zmq::Socket,
    dealers: Vec<Option<zmq::Socket>>,
    /// The hostfile, for connecting a DEALER again ([`Transport::reconnect`]).
    hosts: Vec<HostEntry>,
    zmq_port: u16,
    key: Option<ClusterKey>,
    seq: SeqCounter,
    epoch: u64,
    /// Where the sequence numbers' high-water mark is kept (see
    /// [`next_epoch`]).
    epoch_file: Option<PathBuf>,
    router_windows: Vec<ReplayWindow>,
    dealer_windows: Vec<ReplayWindow>,
    /// Per peer: when our connection to it last carried an answer, and when
    /// it was last connected anew (see [`Transport::redial_if_one_way`]).
    dialed: Vec<Dial>,
    /// What goes out at the end of this pass, per peer: on our DEALER to it,
    /// and back through the ROUTER (see `batch`).
    to_dealer: Vec<Batch>,
    to_router: Vec<Batch>,
    /// Which sockets to read (see `ready`).
    ready: ready::Ready,
    /// `ready`'s numbers for the descriptors that wake the thread: the
    /// eventfd of notes, and the clients' wake-up socket.
    noted: usize,
    rung: Option<usize>,
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
                // When the first up peer would be due: a loss is seen on
                // time, and an idle node wakes for nothing else.
                let due_ms = self.check_peers().unwrap_or(self.heartbeat_ns / 1_000_000);
                next_check = now + due_ms * 1_000_000;
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
            self.flush();
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if had_notes || took || got || ran {
                last_work = now_ns();
                continue;
            }
            // While a reply is due, look again instead of sleeping: waking
            // from epoll_wait is a hand-off of 10-30 µs here, a tenth of a
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
            // A socket that must be read whatever its descriptor says: the
            // next pass reads it, or its message would wait.
            if self.ready.any_pending() {
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
            self.ready.sleep(timeout_ms.min(i64::from(i32::MAX)) as i32);
            // Drained only when readable: a wake-up by a socket or a timer
            // costs no system call more (each is a VM exit here).
            let noted = self.ready.fired(self.noted);
            let rung = self.rung.is_some_and(|k| self.ready.fired(k));
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
                    // Not one of ours: a subtask's note (see `done`, serve.rs).
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
