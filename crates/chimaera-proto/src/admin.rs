//! The admin pool's protocol (pool 0, "admin"): its method numbers and the
//! JSON of their inputs and outputs, which clients and the runtime share.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A pool as modules and clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub id: u32,
    pub name: String,
    pub module: String,
}

pub const POOL_ID: u32 = 0;
pub const POOL_NAME: &str = "admin";

/// What may name a pool: what `chimaera` prints and logs without quoting.
/// One rule for `compose:`, `chimaera pool create` and the client API; the
/// runtime checks it again.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "a pool name has 1 to 64 characters, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{c:?} in pool name {name:?}: use letters, digits, '_', '-' and '.'"
        ));
    }
    if name == POOL_NAME {
        return Err("\"admin\" is the runtime's own pool".into());
    }
    Ok(())
}

/// Method numbers of the admin pool.
pub mod method {
    /// Does nothing: the round trip is the runtime's latency.
    pub const PING: u32 = 0;
    /// Output: [`super::Stats`] as JSON.
    pub const STATS: u32 = 1;
    /// Stops the runtime gracefully (the same path as SIGTERM).
    pub const STOP: u32 = 2;
    /// Completes once every lane is empty and no other task runs.
    pub const FLUSH: u32 = 3;
    /// Input: [`super::CreatePool`] JSON. Output: the pool's [`PoolInfo`].
    /// Get-or-create: an existing pool of that name, module and params is
    /// returned; another module or other params under its name are refused.
    pub const CREATE_POOL: u32 = 4;
    /// Input: [`super::PoolRef`] JSON.
    pub const DESTROY_POOL: u32 = 5;
    /// Output: JSON list of [`PoolInfo`].
    pub const LIST_POOLS: u32 = 6;
    /// Output = input.
    pub const ECHO: u32 = 7;
    /// Input: u64 LE milliseconds. Sleeps by yielding: its worker runs others meanwhile.
    pub const SLEEP: u32 = 8;
    /// Input: u64 LE milliseconds. Busy-waits without yielding (a stuck module).
    pub const SPIN: u32 = 9;
    /// Input: u32 LE n. Submits n PING subtasks to its own lane and waits for
    /// each; output: u32 LE count completed.
    pub const FAN_OUT: u32 = 10;
}

/// Whether two pools' parameters say the same: equal JSON values (so key
/// order and spacing do not matter), else equal text; empty is `{}`.
pub fn same_params(a: &str, b: &str) -> bool {
    fn norm(p: &str) -> &str {
        if p.trim().is_empty() { "{}" } else { p }
    }
    let (a, b) = (norm(a), norm(b));
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePool {
    pub name: String,
    pub module: String,
    #[serde(default)]
    pub params: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PoolRef {
    Id { id: u32 },
    Name { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerStats {
    pub tasks_done: u64,
    pub lane_depth: u64,
    pub cpu: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub pid: u32,
    pub uptime_ms: u64,
    pub workers: Vec<WorkerStats>,
    /// Tasks clients handed to the network thread that it has not taken yet.
    #[serde(default)]
    pub network_lane_depth: u64,
    pub queue_depth: u32,
    pub records_in_use: u32,
    pub records_capacity: u32,
    pub clients: u32,
    pub pools: usize,
    pub client_data: crate::alloc::Usage,
    pub runtime_data: crate::alloc::Usage,
    /// This node's view of the cluster (absent when the runtime runs
    /// without its network layer).
    #[serde(default)]
    pub cluster: Option<ClusterStats>,
    /// Words read from shared memory that failed their checks.
    #[serde(default)]
    pub rejected: Rejected,
}

/// What the runtime refused of what it read from shared memory, by kind:
/// each was a task ended with BAD_INPUT or, where no task could be named,
/// dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Record indices out of range (in a lane cell, a worker slot).
    #[serde(default)]
    pub record_index: u64,
    /// Payload offsets or lengths outside the data region or the owner's block.
    #[serde(default)]
    pub payload: u64,
    /// Wakers naming no worker.
    #[serde(default)]
    pub waker: u64,
    /// Records in a lane that were not submitted (a corrupt state word, a
    /// record pushed twice).
    #[serde(default)]
    pub state: u64,
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
    messages_in: "ZeroMQ messages received from other nodes (each holds one frame or several).",
    messages_out: "ZeroMQ messages sent to other nodes (each holds one frame or several).",
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
