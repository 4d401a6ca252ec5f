//! The cluster transport: this node's ZeroMQ sockets, the peers it knows,
//! and where a task with a route runs.
//!
//! One network thread ([`transport`]) owns every socket (ZeroMQ sockets are
//! not thread-safe): a ROUTER bound on `network.zmq_port` that peers' tasks
//! and heartbeats arrive on, and one DEALER per peer, connected once and kept,
//! that this node's tasks and heartbeats leave by. Replies go back the way
//! the request came. Workers hand the thread tasks to forward, and report
//! completions of tasks it submitted on a peer's behalf, through
//! [`NetShared`]: a short queue and an eventfd, written only when the thread
//! sleeps. The engine sees it only as its `engine::remote::Remote`: the
//! network layer sits above the engine and is attached to it at start.
//!
//! A ZAP handler ([`zap`]) admits connections only from the hostfile's
//! addresses; the wire layer ([`chimaera_proto::wire`]) authenticates frames when a
//! cluster key is configured.

pub mod transport;
pub mod zap;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chimaera_proto::admin::{ClusterStats, Counters, PeerStats};
use chimaera_proto::layout::WorkerSlot;
use chimaera_proto::record::status;
use chimaera_proto::wire::Route;

use crate::engine::remote::Remote;
pub use crate::engine::remote::{Decision, Note};

pub use transport::{Net, NetConfig};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Listen(#[from] crate::preflight::ListenError),
    #[error("cannot bind the ZeroMQ socket on port {port}: {source}")]
    Bind { port: u16, source: zmq::Error },
    #[error("cannot create a ZeroMQ socket: {0}")]
    Socket(zmq::Error),
    #[error("cannot start the network: {0}")]
    Setup(String),
}

/// A peer's state as this node sees it.
pub const PEER_UNKNOWN: u8 = 0;
pub const PEER_UP: u8 = 1;
pub const PEER_DOWN: u8 = 2;

pub fn peer_state_name(s: u8) -> &'static str {
    match s {
        PEER_UP => "up",
        PEER_DOWN => "down",
        _ => "unknown",
    }
}

/// One hostfile node, as the network thread last saw it.
pub struct Peer {
    pub node: u32,
    /// `host:port` as this node reaches it.
    pub addr: String,
    pub state: AtomicU8,
    /// CLOCK_MONOTONIC ms of the last valid frame from it (0: never): an
    /// elapsed time, which a step of the wall clock (NTP) must not move.
    pub last_heard_mono_ms: AtomicU64,
    /// Round trip of its last heartbeat answer, ns.
    pub rtt_ns: AtomicU64,
    /// Its epoch (start time, Unix ns), learnt from its heartbeats.
    pub epoch: AtomicU64,
}

/// What workers and the admin module share with the network thread.
pub struct NetShared {
    pub node_id: u32,
    pub nodes: u32,
    pub authenticated: bool,
    pub heartbeat_ms: u64,
    pub peers: Vec<Peer>,
    pub counters: Counters,
    outbox: Mutex<Vec<Note>>,
    sleeping: AtomicBool,
    wake: OwnedFd,
    /// The network thread's executor (quick tasks of peers): its `progress`
    /// moves every pass of the thread's loop, and the systemd watchdog reads
    /// it as it reads the workers'.
    pub executor: Arc<WorkerSlot>,
}

impl NetShared {
    fn new(
        node_id: u32,
        addrs: Vec<String>,
        authenticated: bool,
        heartbeat_ms: u64,
    ) -> std::io::Result<NetShared> {
        let peers = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| Peer {
                node: i as u32,
                addr,
                state: AtomicU8::new(if i as u32 == node_id {
                    PEER_UP
                } else {
                    PEER_UNKNOWN
                }),
                last_heard_mono_ms: AtomicU64::new(0),
                rtt_ns: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
            })
            .collect::<Vec<_>>();
        Ok(NetShared {
            node_id,
            nodes: peers.len() as u32,
            authenticated,
            heartbeat_ms,
            peers,
            counters: Counters::default(),
            outbox: Mutex::new(Vec::with_capacity(256)),
            sleeping: AtomicBool::new(false),
            wake: crate::sys::eventfd()?,
            executor: Arc::new(WorkerSlot::default()),
        })
    }

    /// Where a task routed `route` runs. Only peers heard from within the
    /// last three heartbeats are sent to: anything else fails at once.
    pub fn decide_route(&self, route: Route) -> Decision {
        let node = match route {
            Route::Local => return Decision::Local,
            Route::Broadcast => return Decision::Broadcast,
            Route::Hash(key) => jump_hash(key, self.nodes),
            Route::Direct(n) => n,
        };
        if node == self.node_id {
            return Decision::Local;
        }
        let Some(peer) = self.peers.get(node as usize) else {
            return Decision::Fail(
                status::BAD_INPUT,
                format!(
                    "no node {node}: the hostfile lists {} node(s), ids 0 to {}",
                    self.nodes,
                    self.nodes - 1
                ),
            );
        };
        match peer.state.load(Ordering::Acquire) {
            PEER_UP => Decision::Remote(node),
            s => Decision::Fail(status::NODE_UNAVAILABLE, self.unavailable(node, s)),
        }
    }

    /// The "node unavailable" message for a peer in state `s`.
    pub(crate) fn unavailable(&self, node: u32, s: u8) -> String {
        let peer = &self.peers[node as usize];
        if s == PEER_DOWN {
            let ago = chimaera_proto::sync::mono_ms()
                .saturating_sub(peer.last_heard_mono_ms.load(Ordering::Relaxed));
            format!(
                "node unavailable: node {node} ({}) is down, last heard {ago} ms ago",
                peer.addr
            )
        } else {
            format!(
                "node unavailable: node {node} ({}) has not been heard from since this node started",
                peer.addr
            )
        }
    }

    /// Hands a record to the network thread.
    pub(crate) fn post_note(&self, note: Note) {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(note);
        // Pairs with the thread's SeqCst store of `sleeping` before its last
        // look at the outbox: either it sees our note or we see it asleep.
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            crate::sys::eventfd_signal(self.wake.as_fd());
        }
    }

    pub(crate) fn take(&self, into: &mut Vec<Note>) {
        let mut q = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *q, into);
    }

    /// Wakes the network thread (to stop, or to look at its queue).
    pub(crate) fn wake(&self) {
        crate::sys::eventfd_signal(self.wake.as_fd());
    }

    /// Peer states and counters, for the admin stats and `chimaera status`.
    pub fn snapshot(&self) -> ClusterStats {
        let now = chimaera_proto::sync::mono_ms();
        ClusterStats {
            node_id: self.node_id,
            nodes: self.nodes,
            authenticated: self.authenticated,
            heartbeat_interval_ms: self.heartbeat_ms,
            peers: self
                .peers
                .iter()
                .filter(|p| p.node != self.node_id)
                .map(|p| {
                    let heard = p.last_heard_mono_ms.load(Ordering::Relaxed);
                    PeerStats {
                        node: p.node,
                        addr: p.addr.clone(),
                        state: peer_state_name(p.state.load(Ordering::Relaxed)).into(),
                        last_heard_ms_ago: (heard != 0).then(|| now.saturating_sub(heard)),
                        rtt_us: p.rtt_ns.load(Ordering::Relaxed) as f64 / 1e3,
                    }
                })
                .collect(),
            counters: self.counters.read(),
        }
    }
}

impl Remote for NetShared {
    fn decide(&self, route: Route) -> Decision {
        self.decide_route(route)
    }

    fn post(&self, note: Note) {
        self.post_note(note)
    }

    fn cluster_stats(&self) -> ClusterStats {
        self.snapshot()
    }
}

/// Jump consistent hash (Lamping and Veach, 2014): a key's node among
/// `nodes`, moving only 1/n of the keys when a node is added.
pub fn jump_hash(mut key: u64, nodes: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(nodes) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_spreads_and_is_stable() {
        let mut counts = [0u32; 3];
        for k in 0..30_000u64 {
            let n = jump_hash(k, 3);
            assert_eq!(n, jump_hash(k, 3));
            counts[n as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        // Growing 3 → 4 nodes moves keys only onto the new node.
        for k in 0..10_000u64 {
            let (a, b) = (jump_hash(k, 3), jump_hash(k, 4));
            assert!(a == b || b == 3, "key {k}: {a} → {b}");
        }
        assert_eq!(jump_hash(42, 1), 0);
    }

    #[test]
    fn an_epoch_goes_on_from_the_last_run_whatever_the_wall_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n.epoch");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let first = super::transport::next_epoch(Some(&file), &log);
        let second = super::transport::next_epoch(Some(&file), &log);
        assert!(second > first, "{second} after {first}");
        // The last run's epoch lies far in the future: as after the wall
        // clock was stepped back by a day.
        let ahead = first + 86_400 * 1_000_000_000;
        std::fs::write(&file, format!("{ahead}\n")).unwrap();
        let third = super::transport::next_epoch(Some(&file), &log);
        assert!(third > ahead, "{third} must exceed the last run's {ahead}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            third.to_string()
        );
    }
}
