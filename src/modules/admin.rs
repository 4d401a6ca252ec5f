//! The admin module: the runtime's own pool (id 0, "admin"). Liveness, stats,
//! stop, flush, pool management, and a few diagnostic methods that the
//! tests and `chimaera bench` lean on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};
use chimaera_proto::record;
use chimaera_proto::sync::now_ns;
use serde::{Deserialize, Serialize};

use crate::engine::runtime::RuntimeCore;

use chimaera_proto::admin::{check_pool_name, same_params};

pub use chimaera_proto::admin::{
    CreatePool, POOL_ID, POOL_NAME, PoolRef, Stats, WorkerStats, method,
};

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

/// The admin pool's container. It is the one module that manages the
/// runtime itself (its pools, stats, stop), so it holds the engine's core;
/// weakly, since the core holds it (through the pool table).
pub(crate) struct Admin {
    core: Weak<RuntimeCore>,
}

impl Admin {
    fn core(&self) -> Result<Arc<RuntimeCore>, TaskError> {
        self.core
            .upgrade()
            .ok_or_else(|| TaskError::Failed("the runtime is stopping".into()))
    }
}

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
                let stats = stats(&*self.core()?);
                json_output(ctx, &stats)
            }
            method::STOP => {
                // The daemon's signal loop does the rest, exactly as for SIGTERM.
                crate::sys::send_signal(std::process::id(), libc::SIGTERM)
                    .map_err(|e| TaskError::Failed(format!("cannot stop: {e}")))
            }
            method::FLUSH => flush(&*self.core()?, ctx),
            method::CREATE_POOL => {
                let req: CreatePool = json_input(ctx)?;
                let info = create_pool(&*self.core()?, &req)?;
                json_output(ctx, &info)
            }
            method::DESTROY_POOL => {
                let req: PoolRef = json_input(ctx)?;
                let core = self.core()?;
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
                let pools = self.core()?.pools();
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

pub(crate) fn create_pool(core: &RuntimeCore, req: &CreatePool) -> Result<PoolInfo, TaskError> {
    check_pool_name(&req.name).map_err(TaskError::BadInput)?;
    if let Some((existing, params)) = core.pools.find_with_params(&req.name) {
        // The same pool asked for again: it is this one (get-or-create).
        // Another module or other parameters under its name: refused, with
        // both, rather than an answer that ignores what was asked.
        return if existing.module == req.module && same_params(&params, &req.params) {
            Ok(existing)
        } else {
            let shown = |p: &str| {
                if p.trim().is_empty() {
                    "{}".to_string()
                } else {
                    p.to_string()
                }
            };
            Err(TaskError::Failed(format!(
                "pool {:?} exists with module {} and params {}, not module {} and params {}: destroy it first (chimaera pool destroy {}) or choose another name",
                req.name,
                existing.module,
                shown(&params),
                req.module,
                shown(&req.params),
                req.name
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
        .insert(None, &req.name, &req.module, &req.params, |info| {
            module.create_container(info, req.params.as_bytes())
        })
        .map_err(TaskError::Failed)
}

fn stats(core: &RuntimeCore) -> Stats {
    let v = &core.view;
    Stats {
        pid: std::process::id(),
        uptime_ms: (now_ns() - v.info.started_ns) / 1_000_000,
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
        queue_depth: v.info.layout.queue_depth,
        records_in_use: v.records.in_use(),
        records_capacity: v.info.layout.num_records,
        clients: v
            .clients
            .iter()
            .filter(|c| c.state.load(Ordering::Relaxed) == chimaera_proto::layout::CLIENT_ACTIVE)
            .count() as u32,
        pools: core.pools.list().len(),
        client_data: core.client_arena.usage(),
        runtime_data: core.runtime_arena.usage(),
        cluster: core.cluster_stats(),
        rejected: core.rejected.read(),
    }
}

fn flush(core: &RuntimeCore, ctx: &TaskContext<'_>) -> Result<(), TaskError> {
    let me = ctx.record();
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
pub struct AdminModule {
    core: Weak<RuntimeCore>,
}

impl AdminModule {
    /// The admin module of the engine whose core `core` will be.
    pub fn new(core: Weak<RuntimeCore>) -> AdminModule {
        AdminModule { core }
    }
}

impl Module for AdminModule {
    fn name(&self) -> &str {
        POOL_NAME
    }

    fn create_container(
        &self,
        _pool: &PoolInfo,
        _params: &[u8],
    ) -> Result<Arc<dyn Container>, String> {
        Ok(Arc::new(Admin {
            core: self.core.clone(),
        }))
    }
}
