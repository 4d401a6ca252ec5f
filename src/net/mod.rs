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
//! sleeps.
//!
//! A ZAP handler ([`zap`]) admits connections only from the hostfile's
//! addresses; the wire layer ([`crate::wire`]) authenticates frames when a
//! cluster key is configured.

pub mod transport;
pub mod zap;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::layout::WorkerSlot;
use crate::engine::record::status;
use crate::wire::Route;

pub use transport::{Net, NetConfig};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "network.zmq_port {port} is already in use on this host: stop what holds it or choose another port (CHI_ZMQ_PORT)"
    )]
    PortInUse { port: u16 },
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
    /// Unix ms of the last valid frame from it (0: never).
    pub last_heard_ms: AtomicU64,
    /// Round trip of its last heartbeat answer, ns.
    pub rtt_ns: AtomicU64,
    /// Its epoch (start time, Unix ns), learnt from its heartbeats.
    pub epoch: AtomicU64,
}

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// What the transport counted since the start.
        #[derive(Default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        /// [`Counters`], read once.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct CounterValues {
            $(#[doc = $doc] #[serde(default)] pub $name: u64,)*
        }

        impl Counters {
            pub fn read(&self) -> CounterValues {
                CounterValues { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    frames_in: "Frames accepted.",
    frames_out: "Frames sent.",
    tasks_forwarded: "Tasks of this node's clients sent to another node (each broadcast leg counts).",
    tasks_served: "Tasks run here for another node.",
    dropped_bad_frame: "Messages that are not a valid frame (garbage, wrong version, malformed).",
    dropped_missing_tag: "Frames without a tag while a cluster key is configured.",
    dropped_bad_tag: "Frames whose tag does not verify (another key, or tampered).",
    dropped_unexpected_tag: "Tagged frames while no cluster key is configured.",
    dropped_wrong_node: "Frames whose source or destination is not what the connection says.",
    dropped_replay: "Frames refused by the replay window (duplicates, too old, stale epoch).",
    dropped_late_reply: "Replies that came after their task timed out or failed.",
    zap_denied: "Connections refused because their address is not in the hostfile.",
    send_failed: "Frames that could not be handed to ZeroMQ (peer not connected, queue full).",
}

/// Where a task with a route runs, decided by the worker that pops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Local,
    Remote(u32),
    Broadcast,
    /// Completes at once with this status and message.
    Fail(i32, String),
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

/// Work for the network thread.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Note {
    /// A local client's task to send on (the thread now holds its runtime
    /// reference).
    Forward(u32),
    /// A task the thread submitted (for a peer, or a broadcast's local leg)
    /// is done.
    Done(u32),
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
                last_heard_ms: AtomicU64::new(0),
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
    pub fn decide(&self, route: Route) -> Decision {
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
            let ago = crate::unix_ms().saturating_sub(peer.last_heard_ms.load(Ordering::Relaxed));
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
    pub(crate) fn post(&self, note: Note) {
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
        let now = crate::unix_ms();
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
                    let heard = p.last_heard_ms.load(Ordering::Relaxed);
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStats {
    pub node: u32,
    pub addr: String,
    /// "up", "down" or "unknown" (never heard from).
    pub state: String,
    pub last_heard_ms_ago: Option<u64>,
    /// Round trip of the last heartbeat, µs (0 before the first).
    pub rtt_us: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    pub node_id: u32,
    pub nodes: u32,
    /// Whether frames are authenticated with a cluster key.
    pub authenticated: bool,
    pub heartbeat_interval_ms: u64,
    /// Every other node of the hostfile.
    pub peers: Vec<PeerStats>,
    pub counters: CounterValues,
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

/// One node's part of a broadcast's aggregated output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReply {
    pub node: u32,
    /// The task's status on that node (0 ok; see `engine::record::status`).
    pub status: i32,
    /// Its output, or the error message when the status is not 0.
    pub output: Vec<u8>,
}

/// Encodes a broadcast's replies: `count u32`, then per node `node u32,
/// status i32, len u32, bytes` (little-endian), in node order.
pub fn encode_broadcast(replies: &[NodeReply]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + replies.iter().map(|r| 12 + r.output.len()).sum::<usize>());
    out.extend_from_slice(&(replies.len() as u32).to_le_bytes());
    for r in replies {
        out.extend_from_slice(&r.node.to_le_bytes());
        out.extend_from_slice(&r.status.to_le_bytes());
        out.extend_from_slice(&(r.output.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.output);
    }
    out
}

/// Reads what [`encode_broadcast`] wrote; None if the bytes are not that.
pub fn decode_broadcast(mut b: &[u8]) -> Option<Vec<NodeReply>> {
    fn u32_at(b: &mut &[u8]) -> Option<u32> {
        let (h, t) = b.split_first_chunk::<4>()?;
        *b = t;
        Some(u32::from_le_bytes(*h))
    }
    let count = u32_at(&mut b)?;
    let mut out = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let node = u32_at(&mut b)?;
        let status = u32_at(&mut b)? as i32;
        let len = u32_at(&mut b)? as usize;
        if b.len() < len {
            return None;
        }
        let (o, t) = b.split_at(len);
        out.push(NodeReply {
            node,
            status,
            output: o.to_vec(),
        });
        b = t;
    }
    b.is_empty().then_some(out)
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
    fn broadcast_output_round_trips_and_refuses_truncation() {
        let r = vec![
            NodeReply {
                node: 0,
                status: 0,
                output: b"pong".to_vec(),
            },
            NodeReply {
                node: 2,
                status: status::NODE_UNAVAILABLE,
                output: b"down".to_vec(),
            },
        ];
        let b = encode_broadcast(&r);
        assert_eq!(decode_broadcast(&b), Some(r));
        for cut in 0..b.len() {
            assert_eq!(decode_broadcast(&b[..cut]), None, "cut at {cut}");
        }
    }
}
