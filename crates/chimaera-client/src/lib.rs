//! The client library: attach to the runtime on this host and run tasks.
//!
//! ```no_run
//! use std::time::Duration;
//! use chimaera_client::{Client, Task};
//! use chimaera_proto::admin;
//!
//! let client = Client::connect()?;                 // finds the runtime through its discovery file
//! let rtt = client.ping()?;                        // an admin no-op, round trip
//! println!("runtime answers in {rtt:?}");
//!
//! // One task, synchronously.
//! let echo = client.call(&Task::new(admin::POOL_ID, admin::method::ECHO, b"hello"))?;
//! assert_eq!(echo, b"hello");
//!
//! // Many, pipelined: submit returns a handle at once; wait later.
//! let handles = client.submit_batch((0..100).map(|_| Task::new(admin::POOL_ID, admin::method::PING, &[])))?;
//! for h in handles {
//!     h.wait_timeout(Duration::from_secs(1))?;
//! }
//! # Ok::<(), chimaera_client::ClientError>(())
//! ```
//!
//! Every wait is bounded: by the caller's timeout, by the runtime's
//! `task_timeout` (the runtime completes an overdue task with a timeout), and
//! by the runtime's life: a client waiting on a runtime that dies gets
//! [`ClientError::RuntimeGone`] within [`LIVENESS_CHECK`].

use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

mod connect;
pub mod discovery;
mod handle;
pub mod locate;
mod submit;

use connect::*;
use handle::Ticket;
pub use handle::{OwnedTaskHandle, TaskHandle};

use chimaera_proto::admin::{self, PoolInfo};
use chimaera_proto::alloc::{Arena, Region};
use chimaera_proto::header::{HEADER_SIZE, HeaderError, HeaderInfo, LAYOUT_VERSION};
use chimaera_proto::layout::{self, View};
use chimaera_proto::protocol::{
    check_payload_len, fill_record, free_payloads, output_bytes, process_start_time, ring_lane,
    take_doorbell,
};
use chimaera_proto::record::{self, REF_CLIENT, status};
use chimaera_proto::sync::{futex_wait, now_ns, relax};
use chimaera_proto::sys::{self, LockState};

pub use chimaera_proto::broadcast::{NodeReply, decode_broadcast};
pub use chimaera_proto::wire::Route;
use discovery::Discovery;
pub use locate::{Env, LoadOptions, Locator};

thread_local! {
    /// Handles this thread made and has not dropped yet (a hint: a handle
    /// dropped on another thread is counted off there, saturating at 0).
    static OUTSTANDING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A handle was made on this thread.
fn handle_made() {
    OUTSTANDING.with(|c| c.set(c.get().saturating_add(1)));
}

/// A handle was dropped on this thread.
fn handle_dropped() {
    OUTSTANDING.with(|c| c.set(c.get().saturating_sub(1)));
}

/// How often a sleeping waiter checks that the runtime still lives.
pub const LIVENESS_CHECK: Duration = Duration::from_millis(100);
/// How long past its deadline a client waits for a task the runtime never
/// completed (its record or lane cell was written over): the runtime itself
/// times out every task it still sees at the deadline.
pub const LOST_TASK_GRACE: Duration = Duration::from_millis(500);
/// `lane` of a record pushed to the network lane.
const NET_LANE: u32 = u32::MAX;
/// How long a waiter spins before it sleeps on the futex.
const SPIN: Duration = Duration::from_micros(20);
/// The same for a task with a route: a few loopback round trips here, so
/// that a reply usually finds its waiter awake.
const ROUTED_SPIN: Duration = Duration::from_micros(500);
/// ... but only while the client has at most this many such tasks out.
const ROUTED_SPIN_MAX_OUT: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the chimaera runtime is not running: {0}")]
    NotRunning(String),
    #[error(
        "the runtime uses shared-memory layout {found}, this client {LAYOUT_VERSION}: use a client of the runtime's release ({runtime_version})"
    )]
    VersionMismatch { found: u32, runtime_version: String },
    #[error(
        "the lane is full (or every task record is in use): retry later or use the blocking submit"
    )]
    QueueFull,
    #[error("timed out waiting for the task")]
    TimedOut,
    #[error("the runtime went away (pid {0}) before the task completed")]
    RuntimeGone(u32),
    #[error("the runtime is stopping and takes no more tasks")]
    Stopping,
    #[error("no pool with id {0}")]
    NoSuchPool(u32),
    /// The task's node is down, unknown or unreachable ("node unavailable: ...").
    #[error("{0}")]
    NodeUnavailable(String),
    /// The task ran and its module (or the engine, for a bad input) failed
    /// it: `status` is the record's status code, `message` its reason.
    #[error("{}", task_failure(*status, message))]
    Module { status: i32, message: String },
    #[error("not allowed to use the runtime: {0}")]
    PermissionDenied(String),
    #[error("all {0} client slots are taken")]
    TooManyClients(u32),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
}

/// A failed task in words: the reason, prefixed only where the reason does
/// not say what kind of failure it is.
fn task_failure(status: i32, message: &str) -> String {
    use chimaera_proto::record::status as st;
    let kind = match status {
        st::NO_SUCH_METHOD => "no such method",
        st::BAD_INPUT => "bad input",
        st::TIMED_OUT => "timed out",
        _ => "task failed",
    };
    if message.is_empty() {
        kind.to_string()
    } else if message.starts_with(kind) || status == st::NO_SUCH_METHOD {
        message.to_string()
    } else {
        format!("{kind}: {message}")
    }
}

/// A task to submit: its pool, method, input bytes and where it runs.
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    pub pool: u32,
    pub method: u32,
    pub input: &'a [u8],
    /// Where the task runs; [`Route::Local`] (this node) unless set.
    pub route: Route,
}

impl<'a> Task<'a> {
    pub fn new(pool: u32, method: u32, input: &'a [u8]) -> Task<'a> {
        Task {
            pool,
            method,
            input,
            route: Route::Local,
        }
    }

    /// Runs the task on node `node` (its hostfile line); this node's own id
    /// runs it here.
    pub fn on_node(mut self, node: u32) -> Task<'a> {
        self.route = Route::Direct(node);
        self
    }

    /// Runs the task on the node `key` hashes to (jump consistent hash over
    /// the hostfile's nodes): the same key always lands on the same node.
    pub fn by_key(mut self, key: u64) -> Task<'a> {
        self.route = Route::Hash(key);
        self
    }

    /// Runs the task on every node; the output is every node's reply, read
    /// with [`decode_broadcast`] (or use [`Client::broadcast`]).
    pub fn on_all_nodes(mut self) -> Task<'a> {
        self.route = Route::Broadcast;
        self
    }
}

/// A connection to the runtime. Cheap to clone; usable from many threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}
