//! The task engine: workers, reapers, pools and the runtime side of tasks.
//!
//! The protocol it serves (lanes, records, layout) is `chimaera_proto`'s;
//! [`Engine`] puts it in the segments and runs the threads. Modules are
//! above it (the admin module is handed in by whoever starts the engine),
//! and so is the network layer, which it reaches through [`remote::Remote`].

pub mod guard;
pub mod meter;
pub mod pools;
pub mod remote;
pub mod runtime;

// The protocol's parts under the names they had when they lived here.
pub use chimaera_proto::{lane, layout, record, sync};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use slog::{info, warn};

use chimaera_module::Module;
use chimaera_proto::admin;
use chimaera_proto::alloc::Arena;

use crate::config::{LaneMapPolicy, Loaded, WorkerCount};
use crate::shm::{HEADER_SIZE, Segments};
use layout::{Layout, View};
use pools::Registry;
use remote::{Attached, Remote};
use runtime::{RuntimeCore, Worker};

pub fn lane_policy_code(p: LaneMapPolicy) -> u32 {
    match p {
        LaneMapPolicy::RoundRobin => layout::LANE_ROUND_ROBIN,
        LaneMapPolicy::Random => layout::LANE_RANDOM,
        LaneMapPolicy::MapByPidTid => layout::LANE_MAP_BY_PID_TID,
    }
}

/// The running engine: its core, threads and the segments under them.
pub struct Engine {
    pub core: Arc<RuntimeCore>,
    workers: Vec<JoinHandle<()>>,
    reapers: Vec<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// The network layer, stopped in its place in [`Engine::stop`].
    net: Option<Box<dyn Attached>>,
    segments: Option<Segments>,
}

impl Engine {
    /// Lays out the segments, creates the admin pool (pool 0, from the
    /// module `admin` makes for this engine) and starts the workers
    /// (`loaded.workers` of them, pinned, one per allowed CPU in turn) and
    /// reapers.
    pub fn start(
        loaded: &Loaded,
        segments: Segments,
        mut registry: Registry,
        admin: impl FnOnce(Weak<RuntimeCore>) -> Arc<dyn Module>,
        log: &slog::Logger,
    ) -> Result<Engine, String> {
        let config = &loaded.config;
        let workers = loaded.workers;
        let main = &segments.main;
        let layout = Layout::compute(
            main.len(),
            HEADER_SIZE,
            workers,
            config.performance.queue_depth,
        )?;
        let timeout_ns = config.runtime.task_timeout * 1_000_000;
        // SAFETY: the main segment is mapped for main.len() bytes, is fresh
        // (zeroed) and not yet published; `segments` lives in the Engine
        // beside the core and is dropped after it.
        let view = unsafe {
            View::format(
                main.base(),
                main.len() as usize,
                HEADER_SIZE,
                &layout,
                timeout_ns,
                lane_policy_code(config.performance.lane_map_policy),
            )
        }?;
        let client_arena =
            Arena::format(segments.client_data.data_region()).map_err(|e| e.to_string())?;
        let runtime_arena =
            Arena::format(segments.runtime_data.data_region()).map_err(|e| e.to_string())?;
        let stack_size = config.performance.stack_size as usize;
        let core = Arc::new_cyclic(|weak| {
            registry.register(admin(weak.clone()));
            RuntimeCore::new(
                view,
                client_arena,
                runtime_arena,
                registry,
                stack_size,
                timeout_ns,
                log.clone(),
            )
        });
        let admin_module = core
            .registry
            .get(admin::POOL_NAME)
            .ok_or_else(|| format!("the admin module is not named {:?}", admin::POOL_NAME))?;
        core.pools.insert(
            Some(admin::POOL_ID),
            admin::POOL_NAME,
            admin::POOL_NAME,
            "",
            |info| admin_module.create_container(info, &[]),
        )?;

        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        let limit = &loaded.cpu;
        if config.workers.sched_threads == WorkerCount::Auto {
            info!(
                log,
                "workers.sched_threads is auto: {} worker(s), one per CPU this process may use: {}",
                workers,
                limit.explain()
            );
        }
        if cpus.is_empty() {
            warn!(
                log,
                "cannot read the allowed CPU set; workers are not pinned"
            );
        } else if (workers as usize) > cpus.len() {
            warn!(
                log,
                "{} workers on {} allowed CPU(s): workers share cores",
                workers,
                cpus.len()
            );
        } else if let Some(q) = limit.quota.as_ref().filter(|q| workers > q.cpus()) {
            // The CPU set has room, but the cgroup hands out less time than
            // the workers would use: they take turns (throttled each period).
            warn!(
                log,
                "{} workers, but the cgroup CPU quota ({}) allows {} CPU(s): workers share CPU time; set workers.sched_threads to auto or at most {}",
                workers,
                q,
                q.cpus(),
                q.cpus()
            );
        }
        let drain = Duration::from_millis(config.runtime.task_timeout.min(5000));
        let mut engine = Engine {
            core: core.clone(),
            workers: Vec::new(),
            reapers: Vec::new(),
            net: None,
            segments: Some(segments),
        };
        for id in 0..workers {
            let cpu = (!cpus.is_empty()).then(|| cpus[id as usize % cpus.len()]);
            let c = core.clone();
            let slot_cpu = &core.view.workers[id as usize].cpu;
            slot_cpu.store(cpu.map_or(u32::MAX, |c| c.id as u32), Ordering::Relaxed);
            let handle = std::thread::Builder::new()
                .name(format!("chi-worker-{id}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        core_affinity::set_for_current(c);
                    }
                    Worker::new(c, id).run(drain)
                })
                .map_err(|e| format!("cannot start worker thread {id}: {e}"))?;
            engine.workers.push(handle);
        }
        let reapers = config.workers.process_reaper_threads;
        for i in 0..reapers {
            let (tx, rx) = mpsc::channel();
            let c = core.clone();
            let handle = std::thread::Builder::new()
                .name(format!("chi-reaper-{i}"))
                .spawn(move || runtime::run_reaper(c, i, reapers, rx))
                .map_err(|e| format!("cannot start reaper thread {i}: {e}"))?;
            engine.reapers.push((tx, handle));
        }
        core.view
            .state
            .store(layout::RUNTIME_RUNNING, Ordering::Release);
        info!(
            log,
            "task engine up: {} worker(s), lanes of {} tasks, {} task records, {} reaper(s)",
            workers,
            layout.queue_depth,
            layout.num_records,
            reapers
        );
        Ok(engine)
    }

    /// Creates the pools of the configuration's `compose:` section, in
    /// order (so every node of a cluster with the same file gives them the
    /// same ids). The error names the entry and its line: a module this
    /// binary does not have, or parameters its module refuses.
    pub fn compose(
        &self,
        specs: &[crate::config::PoolSpec],
    ) -> Result<Vec<chimaera_module::PoolInfo>, String> {
        let mut made = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let at = spec.at(i);
            let module = self.core.registry.get(&spec.module).ok_or_else(|| {
                format!(
                    "{at}.module: no module {:?} in this runtime; it has: {}",
                    spec.module,
                    self.core.registry.names().join(", ")
                )
            })?;
            let info = self
                .core
                .pools
                .insert(None, &spec.name, &spec.module, &spec.params, |info| {
                    module.create_container(info, spec.params.as_bytes())
                })
                .map_err(|e| format!("{at}: pool {:?} ({}): {e}", spec.name, spec.module))?;
            made.push(info);
        }
        Ok(made)
    }

    /// Attaches a network layer started on this engine: tasks with a route
    /// reach other nodes from here on, and [`Engine::stop`] stops `layer`
    /// after the workers drained.
    pub fn attach_network(&mut self, remote: Arc<dyn Remote>, layer: Box<dyn Attached>) {
        self.core.attach_remote(remote);
        self.net = Some(layer);
    }

    /// The segments, for publishing and for the discovery file.
    pub fn segments(&self) -> &Segments {
        self.segments.as_ref().expect("segments live until stop")
    }

    /// Stops taking tasks, lets the workers drain (bounded), stops the
    /// reapers, and hands back the segments for removal.
    pub fn stop(mut self) -> Segments {
        self.core.request_stop();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // After the workers (it answers peers for what they finished), before
        // the segments (it reads records).
        if let Some(net) = self.net.take() {
            net.stop();
        }
        for (tx, _) in &self.reapers {
            let _ = tx.send(());
        }
        for (_, r) in self.reapers.drain(..) {
            let _ = r.join();
        }
        let segments = self.segments.take().expect("segments live until stop");
        // The core's views point into the segments: it goes first.
        drop(self);
        segments
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.core.request_stop();
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
        drop(self.net.take());
        for (tx, r) in self.reapers.drain(..) {
            let _ = tx.send(());
            let _ = r.join();
        }
    }
}
