//! The module API of chimaera ("ChiMods"): what runs tasks. A module creates
//! one container per pool; a task names its pool and a method, and the pool's
//! container runs it on a coroutine of its own, through a [`TaskContext`].
//!
//! The context reaches the runtime through [`TaskHost`], which the engine
//! implements: a module author builds against this crate and the shared
//! protocol types, not against the daemon.
//!
//! ```
//! use std::sync::Arc;
//! use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};
//!
//! /// Replies with its input reversed.
//! struct Reverse;
//! impl Container for Reverse {
//!     fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
//!         match ctx.method() {
//!             0 => {
//!                 let out: Vec<u8> = ctx.input().iter().rev().copied().collect();
//!                 ctx.set_output(&out)
//!             }
//!             m => Err(TaskError::NoSuchMethod(m)),
//!         }
//!     }
//! }
//! struct ReverseModule;
//! impl Module for ReverseModule {
//!     fn name(&self) -> &str { "reverse" }
//!     fn create_container(&self, _pool: &PoolInfo, _params: &[u8]) -> Result<Arc<dyn Container>, String> {
//!         Ok(Arc::new(Reverse))
//!     }
//! }
//! ```

use std::sync::Arc;

pub mod abi;
pub mod export;

pub use chimaera_proto::admin::PoolInfo;
pub use chimaera_proto::record::status;

/// The text a panic carried (its `&str` or `String` payload): what a
/// contained module panic reports, in the daemon and in a plugin alike.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".into()
    }
}

/// The rule for a module's name, as `modules.load` writes it and a plugin's
/// descriptor declares it: letters, digits, `_`, `-` and `.`, not empty.
pub fn check_module_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{name:?} has {c:?}; a module name has letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// Why a task did not succeed, as a module says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("no method {0} in this module")]
    NoSuchMethod(u32),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("{0}")]
    Failed(String),
}

impl TaskError {
    /// The status a task that failed this way completes with.
    pub fn status(&self) -> i32 {
        match self {
            TaskError::NoSuchMethod(_) => status::NO_SUCH_METHOD,
            TaskError::BadInput(_) => status::BAD_INPUT,
            TaskError::Failed(_) => status::MODULE_ERROR,
        }
    }
}

/// One pool's share of a module: it runs the pool's tasks. Several workers
/// may run tasks of one pool at once, so a container is `Sync` and guards its
/// own state.
pub trait Container: Send + Sync + 'static {
    /// Runs the task `ctx` describes. An `Err` completes the task with that
    /// error for its client; output set before is discarded.
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError>;

    /// True if `method` never blocks its thread (no I/O, no lock that may
    /// be held for long, no sleep, no long computation). A task of another
    /// node for such a method runs on this node's network thread as it
    /// arrives, instead of going to a worker and its result coming back:
    /// two thread hand-offs fewer on the remote round trip. A "quick"
    /// method that blocks stalls the node's network, heartbeats included,
    /// so the default is false. Waiting for subtasks or yielding is fine:
    /// the task is parked and resumed by the network thread.
    fn quick(&self, _method: u32) -> bool {
        false
    }

    /// Called once when the pool is destroyed.
    fn destroy(&self) {}
}

/// A kind of container, registered under a name.
pub trait Module: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Creates the container of a new pool; `params` come from the client.
    fn create_container(
        &self,
        pool: &PoolInfo,
        params: &[u8],
    ) -> Result<Arc<dyn Container>, String>;

    /// Checks the parameters of a pool named `pool_name` without making
    /// anything: `chimaera config check` and the daemon's start run it on
    /// every `compose:` entry before anything exists, so that a typo is
    /// refused there, not after the segments are made. The default accepts
    /// everything (the pool's creation still checks).
    fn check_params(&self, _pool_name: &str, _params: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// A task the current task submitted and may wait for.
#[derive(Debug)]
pub struct Subtask {
    id: u32,
}

impl Subtask {
    /// Made by a [`TaskHost`]; `id` is whatever lets it find the subtask again.
    pub fn new(id: u32) -> Subtask {
        Subtask { id }
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

/// What the runtime does for a running task: the engine implements it, and
/// a module reaches it only through [`TaskContext`]. Everything here may
/// suspend the task's coroutine (`yield_now`, `wait`, a `submit` into a full
/// lane), never the worker's thread.
pub trait TaskHost {
    /// The task's input bytes (a copy: the client's are in shared memory).
    fn input(&self) -> &[u8];
    /// The input's length.
    fn input_len(&self) -> usize;
    /// Copies input bytes from `at` into `dst`; returns how many (fewer at
    /// the end of the input). For large inputs read once: no copy is kept.
    fn read_input(&self, at: usize, dst: &mut [u8]) -> usize;
    /// Sets the task's output (replacing any set before).
    fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError>;
    /// An output of `len` bytes to fill in place (replacing any set before).
    fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError>;
    /// Lets other tasks run; this one goes on at its worker's next pass.
    fn yield_now(&self);
    /// Submits a subtask; the host releases it when the task ends.
    fn submit(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        local: bool,
    ) -> Result<Subtask, TaskError>;
    /// Suspends the task until `sub` completes; its output or why it failed.
    fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError>;
    /// Writes `msg` to the runtime's log at `level` (one of
    /// [`abi::level`]). A host without a log drops it.
    fn log(&self, _level: u32, _msg: &str) {}
}

/// Who a task is: read once by the engine when it starts the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    pub pool_id: u32,
    pub method: u32,
    /// The worker running it (see [`TaskContext::worker`]).
    pub worker: u32,
    /// CLOCK_MONOTONIC ns after which the task's client gets a timeout.
    pub deadline_ns: u64,
    /// The task's record in the main segment, for diagnostics.
    pub record: u32,
}

/// What a module sees of the task it runs.
pub struct TaskContext<'a> {
    info: TaskInfo,
    host: &'a mut dyn TaskHost,
}

impl<'a> TaskContext<'a> {
    /// The context the engine hands a container for one task.
    pub fn new(info: TaskInfo, host: &'a mut dyn TaskHost) -> TaskContext<'a> {
        TaskContext { info, host }
    }

    pub fn method(&self) -> u32 {
        self.info.method
    }

    pub fn pool_id(&self) -> u32 {
        self.info.pool_id
    }

    /// The worker running this task, or `chimaera_proto::protocol::NETWORK_EXECUTOR`
    /// for another node's [`Container::quick`] task run by the network thread.
    pub fn worker(&self) -> u32 {
        self.info.worker
    }

    /// The index of the task's record in the main segment.
    pub fn record(&self) -> u32 {
        self.info.record
    }

    /// The task's input bytes. They are copied out of shared memory on
    /// first use (the client's copy may change under a reader); a module
    /// that streams a large input elsewhere can use [`Self::read_input`].
    pub fn input(&self) -> &[u8] {
        self.host.input()
    }

    /// The input's length, without copying it.
    pub fn input_len(&self) -> usize {
        self.host.input_len()
    }

    /// Copies input bytes from `at` into `dst` (straight from shared
    /// memory, no intermediate copy); returns how many were copied.
    pub fn read_input(&self, at: usize, dst: &mut [u8]) -> usize {
        self.host.read_input(at, dst)
    }

    /// Sets the task's output: in the record when small, else in the
    /// runtime data segment, where the client reads it without a copy.
    pub fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.host.set_output(bytes)
    }

    /// An output of `len` bytes for the task to fill, zeroed; it becomes the
    /// task's output when the task returns `Ok` (copied into shared memory
    /// then: a buffer the client can write is never lent to a module).
    /// Replaces output set before; calling this or `set_output` again ends
    /// the borrow.
    pub fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        self.host.output_buffer(len)
    }

    /// Lets other tasks of this worker run; this one goes on at the next pass.
    pub fn yield_now(&self) {
        self.host.yield_now()
    }

    /// Submits a task to `pool` from inside this one. It goes to the
    /// worker's own lane when `local`, else to the next lane round-robin.
    pub fn submit(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        local: bool,
    ) -> Result<Subtask, TaskError> {
        self.host.submit(pool, method, input, local)
    }

    /// Suspends this task until `sub` completes; its worker runs other tasks
    /// meanwhile. Returns the subtask's status and output.
    pub fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError> {
        self.host.wait(sub)
    }

    /// CLOCK_MONOTONIC ns after which the task's client gets a timeout.
    pub fn deadline_ns(&self) -> u64 {
        self.info.deadline_ns
    }

    /// Writes a line to the runtime's log at `level` (one of
    /// [`abi::level`]), tagged with the task's pool and method.
    pub fn log(&self, level: u32, msg: &str) {
        self.host.log(level, msg)
    }
}
