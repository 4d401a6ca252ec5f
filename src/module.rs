//! Modules ("ChiMods"): what runs tasks. A module creates one container per
//! pool; a task names its pool and a method, and the pool's container runs it
//! on a coroutine of its own, through a [`TaskContext`].
//!
//! ```
//! use std::sync::Arc;
//! use chimaera::module::{Container, Module, PoolInfo, TaskContext, TaskError};
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use corosensei::Yielder;
use serde::{Deserialize, Serialize};

use crate::engine::record::{self, status};
use crate::engine::runtime::RuntimeCore;

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
    pub(crate) fn status(&self) -> i32 {
        match self {
            TaskError::NoSuchMethod(_) => status::NO_SUCH_METHOD,
            TaskError::BadInput(_) => status::BAD_INPUT,
            TaskError::Failed(_) => status::MODULE_ERROR,
        }
    }
}

/// A pool as modules and clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub id: u32,
    pub name: String,
    pub module: String,
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
}

pub(crate) struct Pool {
    pub info: PoolInfo,
    pub container: Arc<dyn Container>,
}

/// Pools by id. Workers keep a snapshot and refresh it when the generation
/// moves, so the hot path takes no lock.
#[derive(Default)]
pub(crate) struct PoolTable {
    pools: RwLock<Vec<Option<Arc<Pool>>>>,
    generation: AtomicU64,
}

impl PoolTable {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Vec<Option<Arc<Pool>>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn list(&self) -> Vec<PoolInfo> {
        self.snapshot()
            .into_iter()
            .flatten()
            .map(|p| p.info.clone())
            .collect()
    }

    pub fn find(&self, name: &str) -> Option<PoolInfo> {
        self.list().into_iter().find(|p| p.name == name)
    }

    /// Adds a pool with the next free id (or `id` when given).
    pub fn insert(
        &self,
        id: Option<u32>,
        name: &str,
        module: &str,
        make: impl FnOnce(&PoolInfo) -> Result<Arc<dyn Container>, String>,
    ) -> Result<PoolInfo, String> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        if pools.iter().flatten().any(|p| p.info.name == name) {
            return Err(format!("a pool named {name:?} exists"));
        }
        let id = id.unwrap_or_else(|| {
            pools
                .iter()
                .position(Option::is_none)
                .unwrap_or(pools.len()) as u32
        });
        let info = PoolInfo {
            id,
            name: name.to_string(),
            module: module.to_string(),
        };
        let container = make(&info)?;
        if pools.len() <= id as usize {
            pools.resize(id as usize + 1, None);
        }
        pools[id as usize] = Some(Arc::new(Pool {
            info: info.clone(),
            container,
        }));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(info)
    }

    pub fn remove(&self, id: u32) -> Option<PoolInfo> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        let pool = pools.get_mut(id as usize)?.take()?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(pools);
        pool.container.destroy();
        Some(pool.info.clone())
    }
}

/// Modules by name.
#[derive(Default, Clone)]
pub struct Registry {
    modules: HashMap<String, Arc<dyn Module>>,
}

impl Registry {
    pub fn register(&mut self, module: Arc<dyn Module>) {
        self.modules.insert(module.name().to_string(), module);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Module>> {
        self.modules.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.modules.keys().cloned().collect();
        n.sort();
        n
    }
}

/// Why a task's coroutine gave up its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// Run again on the next pass.
    Yield,
    /// Run again when this record is done.
    Wait(u32),
}

/// A task the current task submitted and may wait for.
pub struct Subtask {
    pub(crate) idx: u32,
}

/// What a module sees of the task it runs.
pub struct TaskContext<'a> {
    pub(crate) core: &'a RuntimeCore,
    pub(crate) worker: u32,
    pub(crate) idx: u32,
    pub(crate) rec: &'a record::TaskRecord,
    pub(crate) yielder: &'a Yielder<(), Suspend>,
    pub(crate) subtasks: Vec<u32>,
}

impl<'a> TaskContext<'a> {
    pub fn method(&self) -> u32 {
        self.rec.method.load(Ordering::Relaxed)
    }

    pub fn pool_id(&self) -> u32 {
        self.rec.pool_id.load(Ordering::Relaxed)
    }

    /// The worker running this task, or
    /// [`crate::engine::runtime::NETWORK_EXECUTOR`] for another node's
    /// [`Container::quick`] task run by the network thread.
    pub fn worker(&self) -> u32 {
        self.worker
    }

    /// The task's input bytes, where the client put them (no copy).
    pub fn input(&self) -> &[u8] {
        self.core.input_of(self.rec)
    }

    /// Sets the task's output: in the record when small, else in the
    /// runtime data segment, where the client reads it without a copy.
    pub fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.core.set_output(self.rec, bytes)
    }

    /// An output of `len` bytes for the task to fill in place, where its
    /// client reads it (no copy); its bytes are unspecified until written.
    /// Replaces output set before; calling this or `set_output` again ends
    /// the borrow.
    pub fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        let ptr = self.core.output_buffer(self.rec, len)?;
        // SAFETY: the output holds `len` bytes and stays allocated until it
        // is replaced (which takes `&mut self`, so not while this slice
        // lives) or the record is freed (not before this task completes);
        // this task's runner is the only one that touches it before DONE.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    /// Lets other tasks of this worker run; this one goes on at the next pass.
    pub fn yield_now(&self) {
        self.yielder.suspend(Suspend::Yield);
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
        let idx =
            self.core
                .submit_internal(self.worker, pool, method, input, local, self.yielder)?;
        self.subtasks.push(idx);
        Ok(Subtask { idx })
    }

    /// Suspends this task until `sub` completes; its worker runs other tasks
    /// meanwhile. Returns the subtask's status and output.
    pub fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError> {
        let rec = self.core.view.records.get(sub.idx);
        while rec.phase() != record::DONE {
            self.yielder.suspend(Suspend::Wait(sub.idx));
        }
        match rec.status() {
            status::OK => Ok(self.core.output_of(rec).to_vec()),
            status::TIMED_OUT => Err(TaskError::Failed("subtask timed out".into())),
            s => Err(TaskError::Failed(format!(
                "subtask failed (status {s}): {}",
                String::from_utf8_lossy(self.core.output_of(rec))
            ))),
        }
    }

    /// CLOCK_MONOTONIC ns after which the task's client gets a timeout.
    pub fn deadline_ns(&self) -> u64 {
        self.rec.deadline_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn runtime(&self) -> &RuntimeCore {
        self.core
    }
}

impl Drop for TaskContext<'_> {
    fn drop(&mut self) {
        for idx in self.subtasks.drain(..) {
            self.core.release(idx, record::REF_CLIENT);
        }
    }
}
