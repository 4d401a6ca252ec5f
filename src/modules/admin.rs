//! The admin module: the runtime's own pool (id 0, "admin"). Liveness, stats,
//! stop, flush, pool management, and a few diagnostic methods that the
//! tests and `chimaera bench` lean on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::engine::record;
use crate::engine::sync::now_ns;
use crate::module::{Container, Module, PoolInfo, TaskContext, TaskError};

pub const POOL_ID: u32 = 0;
pub const POOL_NAME: &str = "admin";

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
    /// Input: [`super::CreatePool`] JSON. Output: the pool's [`crate::module::PoolInfo`].
    /// Get-or-create: an existing pool of that name and module is returned.
    pub const CREATE_POOL: u32 = 4;
    /// Input: [`super::PoolRef`] JSON.
    pub const DESTROY_POOL: u32 = 5;
    /// Output: JSON list of [`crate::module::PoolInfo`].
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
    pub cluster: Option<crate::net::ClusterStats>,
}

fn json_input<T: for<'de> Deserialize<'de>>(ctx: &TaskContext<'_>) -> Result<T, TaskError> {
    serde_json::from_slice(ctx.input()).map_err(|e| TaskError::BadInput(e.to_string()))
}

fn json_output<T: Serialize>(ctx: &mut TaskContext<'_>, value: &T) -> Result<(), TaskError> {
    let bytes = serde_json::to_vec(value).map_err(|e| TaskError::Failed(e.to_string()))?;
    ctx.set_output(&bytes)
}

fn u64_input(ctx: &TaskContext<'_>) -> Result<u64, TaskError> {
    let b: [u8; 8] = ctx
        .input()
        .try_into()
        .map_err(|_| TaskError::BadInput("expected 8 bytes (u64 little-endian)".into()))?;
    Ok(u64::from_le_bytes(b))
}

pub(crate) struct Admin;

impl Container for Admin {
    fn quick(&self, method: u32) -> bool {
        // FAN_OUT parks while its subtasks run, which blocks no thread.
        // STATS and LIST_POOLS read the pool table, whose lock a pool being
        // created holds through its file I/O; FLUSH waits for the lanes;
        // STOP signals; SLEEP and SPIN are slow on purpose.
        matches!(method, method::PING | method::ECHO | method::FAN_OUT)
    }

    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match ctx.method() {
            method::PING => Ok(()),
            method::STATS => {
                let stats = stats(ctx);
                json_output(ctx, &stats)
            }
            method::STOP => {
                // The daemon's signal loop does the rest, exactly as for SIGTERM.
                crate::sys::send_signal(std::process::id(), libc::SIGTERM)
                    .map_err(|e| TaskError::Failed(format!("cannot stop: {e}")))
            }
            method::FLUSH => flush(ctx),
            method::CREATE_POOL => {
                let req: CreatePool = json_input(ctx)?;
                let info = create_pool(ctx, &req)?;
                json_output(ctx, &info)
            }
            method::DESTROY_POOL => {
                let req: PoolRef = json_input(ctx)?;
                let core = ctx.runtime();
                let id = match req {
                    PoolRef::Id { id } => id,
                    PoolRef::Name { name } => {
                        core.pools
                            .find(&name)
                            .ok_or_else(|| TaskError::Failed(format!("no pool named {name:?}")))?
                            .id
                    }
                };
                if id == POOL_ID {
                    return Err(TaskError::BadInput(
                        "the admin pool cannot be destroyed".into(),
                    ));
                }
                let info = core
                    .pools
                    .remove(id)
                    .ok_or_else(|| TaskError::Failed(format!("no pool with id {id}")))?;
                json_output(ctx, &info)
            }
            method::LIST_POOLS => {
                let pools = ctx.runtime().pools();
                json_output(ctx, &pools)
            }
            method::ECHO => {
                let input = ctx.input().to_vec();
                ctx.set_output(&input)
            }
            method::SLEEP => {
                let until = now_ns() + u64_input(ctx)? * 1_000_000;
                while now_ns() < until {
                    ctx.yield_now();
                }
                Ok(())
            }
            method::SPIN => {
                let until = now_ns() + u64_input(ctx)? * 1_000_000;
                while now_ns() < until {
                    std::hint::spin_loop();
                }
                Ok(())
            }
            method::FAN_OUT => {
                let b: [u8; 4] = ctx.input().try_into().map_err(|_| {
                    TaskError::BadInput("expected 4 bytes (u32 little-endian)".into())
                })?;
                let n = u32::from_le_bytes(b);
                let pool = ctx.pool_id();
                let subs = (0..n)
                    .map(|_| ctx.submit(pool, method::PING, &[], true))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut done = 0u32;
                for s in &subs {
                    ctx.wait(s)?;
                    done += 1;
                }
                ctx.set_output(&done.to_le_bytes())
            }
            m => Err(TaskError::NoSuchMethod(m)),
        }
    }
}

pub(crate) fn create_pool(ctx: &TaskContext<'_>, req: &CreatePool) -> Result<PoolInfo, TaskError> {
    let core = ctx.runtime();
    if let Some(existing) = core.pools.find(&req.name) {
        return if existing.module == req.module {
            Ok(existing)
        } else {
            Err(TaskError::Failed(format!(
                "pool {:?} exists with module {:?}, not {:?}",
                req.name, existing.module, req.module
            )))
        };
    }
    let module = core.registry.get(&req.module).ok_or_else(|| {
        TaskError::BadInput(format!(
            "no module {:?}; this runtime has: {}",
            req.module,
            core.registry.names().join(", ")
        ))
    })?;
    core.pools
        .insert(None, &req.name, &req.module, |info| {
            module.create_container(info, req.params.as_bytes())
        })
        .map_err(TaskError::Failed)
}

fn stats(ctx: &TaskContext<'_>) -> Stats {
    let core = ctx.runtime();
    let v = &core.view;
    Stats {
        pid: std::process::id(),
        uptime_ms: (now_ns() - v.header.started_ns) / 1_000_000,
        workers: v
            .workers
            .iter()
            .zip(&v.lanes)
            .map(|(w, l)| WorkerStats {
                tasks_done: w.tasks_done.load(Ordering::Relaxed),
                lane_depth: l.depth_now(),
                cpu: w.cpu.load(Ordering::Relaxed),
            })
            .collect(),
        network_lane_depth: v.net_lane.depth_now(),
        queue_depth: v.header.layout.queue_depth,
        records_in_use: v.records.in_use(),
        records_capacity: v.header.layout.num_records,
        clients: v
            .clients
            .iter()
            .filter(|c| c.state.load(Ordering::Relaxed) == crate::engine::layout::CLIENT_ACTIVE)
            .count() as u32,
        pools: core.pools.list().len(),
        client_data: core.client_arena.usage(),
        runtime_data: core.runtime_arena.usage(),
        cluster: core.net.get().map(|n| n.snapshot()),
    }
}

fn flush(ctx: &TaskContext<'_>) -> Result<(), TaskError> {
    let core = ctx.runtime();
    let me = ctx.idx;
    loop {
        let lanes_empty = core.view.lanes.iter().all(|l| l.depth_now() == 0);
        let others_idle = core.view.workers.iter().all(|w| {
            let r = w.running.load(Ordering::Relaxed);
            (r == record::NONE || r == me) && w.suspended.load(Ordering::Relaxed) == 0
        });
        if lanes_empty && others_idle {
            return Ok(());
        }
        if now_ns() > ctx.deadline_ns() {
            return Err(TaskError::Failed(
                "work was still arriving when the flush timed out".into(),
            ));
        }
        ctx.yield_now();
    }
}

/// The admin module; the runtime creates pool 0 from it at start.
pub struct AdminModule;

impl Module for AdminModule {
    fn name(&self) -> &str {
        POOL_NAME
    }

    fn create_container(
        &self,
        _pool: &PoolInfo,
        _params: &[u8],
    ) -> Result<Arc<dyn Container>, String> {
        Ok(Arc::new(Admin))
    }
}
