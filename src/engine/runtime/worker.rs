//! The pinned worker threads (and the network thread's executor, a worker
//! without a lane): popping records, running each task on a pooled
//! coroutine, parking and resuming, pausing after a stream, sleeping.

use super::task::EngineTask;
use super::*;
use crate::engine::guard;

pub(super) type TaskCoroutine = Coroutine<(), Suspend, Result<(), TaskError>, DefaultStack>;

pub(super) struct Parked {
    coro: TaskCoroutine,
    idx: u32,
    wait: Suspend,
    meter: Meter,
}

pub struct Worker {
    core: Arc<RuntimeCore>,
    id: u32,
    /// None for the network thread's executor, which is handed its records.
    lane: Option<Lane<'static>>,
    slot: &'static WorkerSlot,
    /// The network executor's slot (the main segment has one per worker
    /// only); `slot` points into it.
    _own_slot: Option<Arc<WorkerSlot>>,
    stacks: Vec<DefaultStack>,
    parked: Vec<Parked>,
    spare: Vec<Parked>,
    pools: Vec<Option<Arc<Pool>>>,
    /// Where each pool's tasks are counted, by pool id, refreshed with `pools`.
    pool_slots: Vec<Slots>,
    pools_gen: u64,
    /// Pool snapshots replaced while parked coroutines may borrow from them.
    retired: Vec<Vec<Option<Arc<Pool>>>>,
    tasks_done: u64,
    /// This worker's task counters (it is their only writer).
    meter: Arc<WorkerMeter>,
    /// The current pass ran something for a client of this node.
    local_pass: bool,
}

impl Worker {
    pub fn new(core: Arc<RuntimeCore>, id: u32) -> Worker {
        let lane = core.view.lanes[id as usize];
        let slot = &core.view.workers[id as usize];
        let meter = core.metrics.meter(id);
        Worker::with(core, id, Some(lane), slot, None, meter)
    }

    /// The executor of the network thread: it runs the tasks of peers whose
    /// method is [`Container::quick`] as they arrive, which saves the two
    /// thread hand-offs (to a worker and back) of a remote round trip.
    pub(crate) fn for_network(core: Arc<RuntimeCore>, own: Arc<WorkerSlot>) -> Worker {
        // SAFETY: the Arc is kept in `_own_slot` for the worker's whole life
        // and never replaced, so the allocation outlives every use of
        // `slot` (the worker's; the watchdog reads the slot through its own
        // Arc); it does not move with the worker.
        let slot: &'static WorkerSlot = unsafe { &*Arc::as_ptr(&own) };
        let meter = core.metrics.network_meter();
        Worker::with(core, NETWORK_EXECUTOR, None, slot, Some(own), meter)
    }

    fn with(
        core: Arc<RuntimeCore>,
        id: u32,
        lane: Option<Lane<'static>>,
        slot: &'static WorkerSlot,
        own_slot: Option<Arc<WorkerSlot>>,
        meter: Arc<WorkerMeter>,
    ) -> Worker {
        Worker {
            core,
            id,
            lane,
            slot,
            _own_slot: own_slot,
            stacks: Vec::new(),
            parked: Vec::new(),
            spare: Vec::new(),
            pools: Vec::new(),
            pool_slots: Vec::new(),
            pools_gen: u64::MAX,
            retired: Vec::new(),
            tasks_done: 0,
            meter,
            local_pass: false,
        }
    }

    /// Runs the submitted record `idx` here and now if its method is quick
    /// (it may park, see [`Worker::poll`]); false leaves it to the caller.
    pub(crate) fn run_if_quick(&mut self, idx: u32, now: u64) -> bool {
        let rec = self.core.view.records.get(idx);
        let pool = rec.pool_id.load(Ordering::Relaxed);
        let method = rec.method.load(Ordering::Relaxed);
        let Some((container, _)) = self.container(pool) else {
            return false;
        };
        // SAFETY: the container comes from this worker's pool snapshot,
        // which outlives this call.
        if !unsafe { &*container }.quick(method) {
            return false;
        }
        self.start(idx, now);
        true
    }

    /// Resumes parked tasks whose wait is over; how many ran.
    pub(crate) fn poll(&mut self, now: u64) -> usize {
        if self.parked.is_empty() {
            return 0;
        }
        self.poll_parked(now)
    }

    pub(crate) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The container of pool `id`, from the worker's snapshot of the pool
    /// table, and where its tasks are counted. No reference count moves per
    /// task: a snapshot replaced while coroutines that borrow from it are
    /// parked is kept until they finish.
    fn container(&mut self, id: u32) -> Option<(*const dyn Container, Slots)> {
        let generation = self.core.pools.generation();
        if generation != self.pools_gen {
            let old = std::mem::replace(&mut self.pools, self.core.pools.snapshot());
            if !self.parked.is_empty() {
                self.retired.push(old);
            }
            // The slot lookup takes a lock: once per change of the pool
            // table, never per task.
            let metrics = &self.core.metrics;
            self.pool_slots = self
                .pools
                .iter()
                .map(|p| {
                    p.as_ref().map_or(Slots::OTHER, |p| {
                        metrics.slots(&p.info.name, &p.info.module)
                    })
                })
                .collect();
            self.pools_gen = generation;
        }
        let pool = self.pools.get(id as usize)?.as_ref()?;
        Some((Arc::as_ptr(&pool.container), self.pool_slots[id as usize]))
    }

    /// The worker's loop; returns when the runtime stops and its work is done
    /// (or `drain` has passed since the stop).
    pub fn run(mut self, drain: Duration) {
        let lane = self.lane.expect("a worker with a lane");
        let mut idle_since: Option<u64> = None;
        let mut stop_deadline: Option<u64> = None;
        let mut passes = 0u64;
        // Whether idling starts with a spin (see below).
        let mut spin = true;
        let mut spins = 0u32;
        loop {
            passes += 1;
            self.slot.progress.store(passes, Ordering::Relaxed);
            // One cheap clock read a pass: deadlines are checked against it.
            let now = coarse_now_ns();
            let mut did = 0;
            let mut took = 0;
            let records = self.core.view.records;
            // Set once a look meets an empty cell: this pass caught up with
            // the producers.
            let mut at_tail = false;
            for k in 0..PREFETCH_AHEAD {
                match lane.peek(k) {
                    Some(i) => {
                        prefetch_for_write(records.records.as_ptr().wrapping_add(i as usize))
                    }
                    None => {
                        at_tail = true;
                        break;
                    }
                }
            }
            while took < BATCH {
                // The worker shows the record as its own before the record
                // leaves the lane, so that at no instant is a live task in
                // neither place (the reaper's orphan rule).
                let slot = self.slot;
                match lane.pop_then(|idx| slot.running.store(idx, Ordering::Release)) {
                    Some(idx) => {
                        match lane.peek(PREFETCH_AHEAD - 1) {
                            Some(next) => prefetch_for_write(
                                records.records.as_ptr().wrapping_add(next as usize),
                            ),
                            None => at_tail = true,
                        }
                        if records.checked(idx).is_some() {
                            self.start(idx, now);
                        } else {
                            // A cell someone wrote over: no task to end.
                            self.core
                                .rejected
                                .record_index
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        self.slot.running.store(record::NONE, Ordering::Release);
                        took += 1;
                    }
                    None => {
                        at_tail = true;
                        break;
                    }
                }
            }
            did += took;
            if took >= STREAM_MIN && at_tail && self.local_pass {
                // Tasks are streaming in and this pass caught up with them:
                // stay off the lane for a moment so that producers fill
                // whole cache lines of cells. A worker that looks again at
                // once reads the very line a producer writes next, and each
                // push then waits for that line to come back from this core
                // (async throughput halves).
                let until = now_ns() + STREAM_PAUSE_NS;
                while now_ns() < until {
                    relax();
                }
            }
            if !self.parked.is_empty() {
                did += self.poll_parked(now);
            }
            if did > 0 {
                // Spin after local work only. A worker whose pass only handed
                // tasks to the network or ran a peer's tasks expects nothing
                // for a network round trip (100 µs and more), and on a small
                // machine its spin would take the core that the network
                // thread and ZeroMQ's I/O threads need to bring that back.
                spin = std::mem::take(&mut self.local_pass);
                idle_since = None;
                continue;
            }
            if self.core.stop.load(Ordering::Acquire) {
                if self.parked.is_empty() && !lane.has_work() {
                    break;
                }
                let deadline = *stop_deadline.get_or_insert(now + drain.as_nanos() as u64);
                if now > deadline {
                    self.abandon_parked();
                    break;
                }
            }
            let precise = now_ns();
            let since = *idle_since.get_or_insert(precise);
            if spin && precise - since < SPIN_NS {
                // Poll the lane between clock reads; a PAUSE only every few
                // polls (it costs ~24 ns, the worker's share of the latency).
                for i in 0..64 {
                    if lane.has_work() {
                        break;
                    }
                    if i % 8 == 7 {
                        relax();
                    }
                }
                // Every few µs, let another thread of this CPU run: a client
                // the scheduler placed beside this pinned worker can only
                // submit (or see its result) while the worker does not hold
                // the CPU (docs/ARCHITECTURE.md, Workers, has the figures).
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(8) {
                    std::thread::yield_now();
                }
                continue;
            }
            // The lane looks empty: put right what anyone wrote over in it
            // (a wiped cell, a tail set back), as that would look the same.
            lane.repair();
            // Announce sleep, then look once more: a producer either sees the
            // doorbell or we see its task (both sides use SeqCst).
            lane.header.doorbell.store(1, Ordering::SeqCst);
            if lane.has_work() || self.core.stop.load(Ordering::Acquire) && self.parked.is_empty() {
                lane.header.doorbell.store(0, Ordering::SeqCst);
                continue;
            }
            let timeout = if self.parked.is_empty() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(5)
            };
            futex_wait(&lane.header.doorbell, 1, timeout);
            lane.header.doorbell.store(0, Ordering::SeqCst);
            idle_since = None;
            spin = true;
        }
        self.slot.running.store(record::NONE, Ordering::Relaxed);
    }

    fn start(&mut self, idx: u32, now: u64) {
        // SAFETY: self.core is an Arc this worker holds and never replaces;
        // the reference does not outlive this call. (Cloning the Arc per task
        // would bounce its count between all workers' caches.)
        let core: &RuntimeCore = unsafe { &*Arc::as_ptr(&self.core) };
        let rec = core.view.records.get(idx);
        if !core.take_queued(idx, rec) {
            return;
        }
        if now > rec.deadline_ns.load(Ordering::Relaxed) {
            core.finish(idx, status::TIMED_OUT, None, true);
            self.count_done();
            return;
        }
        let flags = rec.flags.load(Ordering::Relaxed);
        if flags & record::ROUTE_MASK != 0 && Self::route_away(core, idx, rec, flags) {
            return;
        }
        if rec.waker.load(Ordering::Relaxed) != chimaera_proto::protocol::NET_WAKER {
            self.local_pass = true;
        }
        let input = match core.input_span(idx, rec) {
            Ok((p, len)) => (p as usize, len),
            Err(m) => {
                core.rejected.payload.fetch_add(1, Ordering::Relaxed);
                core.finish(idx, status::BAD_INPUT, Some(&m), true);
                self.count_done();
                return;
            }
        };
        let pool_id = rec.pool_id.load(Ordering::Relaxed);
        let Some((container, slots)) = self.container(pool_id) else {
            core.finish(
                idx,
                status::NO_SUCH_POOL,
                Some(&format!("no pool with id {pool_id}")),
                true,
            );
            self.count_done();
            return;
        };
        let stack = match self.stacks.pop() {
            Some(s) => s,
            None => match DefaultStack::new(core.stack_size) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("cannot allocate a {}-byte task stack: {e}", core.stack_size);
                    core.finish(idx, status::MODULE_ERROR, Some(&msg), true);
                    self.count_done();
                    return;
                }
            },
        };
        // `now` is the pass's coarse clock: a new tick times the task.
        let meter = self
            .meter
            .begin(slots, rec.method.load(Ordering::Relaxed), now);
        let core_addr = Arc::as_ptr(&self.core) as usize;
        let worker = self.id;
        let coro = Coroutine::with_stack(stack, move |yielder: &Yielder<(), Suspend>, ()| {
            // SAFETY: the worker holds an Arc to the core for longer than any
            // of its coroutines runs (abandoned ones are never resumed).
            let core = unsafe { &*(core_addr as *const RuntimeCore) };
            // SAFETY: the pool snapshot the container came from is kept (in
            // `retired` once replaced) while any of this worker's coroutines
            // lives.
            let container = unsafe { &*container };
            let rec = core.view.records.get(idx);
            let info = TaskInfo {
                pool_id: rec.pool_id.load(Ordering::Relaxed),
                method: rec.method.load(Ordering::Relaxed),
                worker,
                deadline_ns: rec.deadline_ns.load(Ordering::Relaxed),
                record: idx,
            };
            let mut host = EngineTask {
                core,
                worker,
                rec,
                yielder,
                subtasks: Vec::new(),
                input: (input.0 as *const u8, input.1),
                input_copy: std::cell::OnceCell::new(),
                out_buf: None,
            };
            guard::contain(|| container.run(&mut TaskContext::new(info, &mut host)))
                .unwrap_or_else(|m| {
                    Err(TaskError::Failed(format!(
                        "module {} panicked: {m}",
                        core.pools.module_of(info.pool_id).unwrap_or_default()
                    )))
                })
                .and_then(|()| host.flush_output())
        });
        self.drive(coro, idx, meter);
    }

    /// A task with a route: true if it does not run here (it was handed to
    /// the network thread, or failed at once: its node is down or unknown).
    fn route_away(core: &RuntimeCore, idx: u32, rec: &TaskRecord, flags: u32) -> bool {
        let route = record::route_of(flags, rec.route_arg.load(Ordering::Relaxed));
        let Some(net) = core.net.get() else {
            core.finish(
                idx,
                status::NODE_UNAVAILABLE,
                Some("node unavailable: this runtime runs without its network layer"),
                true,
            );
            return true;
        };
        match net.decide(route) {
            Decision::Local => false,
            Decision::Fail(st, m) => {
                core.finish(idx, st, Some(&m), true);
                true
            }
            Decision::Remote(_) | Decision::Broadcast => {
                // Marked before `running` lets go of it (the orphan rule).
                rec.flags.store(flags | FLAG_FORWARDED, Ordering::Release);
                net.post(Note::Forward(idx));
                true
            }
        }
    }

    fn drive(&mut self, mut coro: TaskCoroutine, idx: u32, meter: Meter) {
        self.slot.running.store(idx, Ordering::Release);
        let result = guard::in_module(|| coro.resume(()));
        match result {
            CoroutineResult::Return(result) => {
                if self.stacks.len() < STACK_POOL {
                    self.stacks.push(coro.into_stack());
                }
                match result {
                    Ok(()) => self.core.finish(idx, status::OK, None, true),
                    Err(e) => self
                        .core
                        .finish(idx, e.status(), Some(&e.to_string()), true),
                };
                // After the completion is published: a timed task's duration
                // includes waking its client.
                self.meter.end(meter);
                self.count_done();
            }
            CoroutineResult::Yield(wait) => {
                // Marked before `running` lets go of it (the reaper reads
                // them in the other order).
                let flags = &self.core.view.records.get(idx).flags;
                flags.store(
                    flags.load(Ordering::Relaxed) | FLAG_PARKED,
                    Ordering::Release,
                );
                self.parked.push(Parked {
                    coro,
                    idx,
                    wait,
                    meter,
                });
            }
        }
        self.slot.running.store(record::NONE, Ordering::Release);
    }

    /// A per-worker count, published without a locked instruction (this
    /// thread is its only writer).
    fn count_done(&mut self) {
        self.tasks_done += 1;
        self.slot
            .tasks_done
            .store(self.tasks_done, Ordering::Relaxed);
    }

    fn poll_parked(&mut self, now: u64) -> usize {
        let mut ran = 0;
        let mut parked = std::mem::take(&mut self.parked);
        for p in parked.drain(..) {
            let rec = self.core.view.records.get(p.idx);
            if now > rec.deadline_ns.load(Ordering::Relaxed) && rec.phase() == record::SUBMITTED {
                // The client gets its timeout now; the coroutine finishes
                // when its wait is over, its result discarded.
                self.core.finish(p.idx, status::TIMED_OUT, None, false);
            }
            let ready = match p.wait {
                Suspend::Yield => true,
                Suspend::Wait(sub) => self.core.view.records.get(sub).phase() == record::DONE,
            };
            if ready {
                self.local_pass = true;
                self.drive(p.coro, p.idx, p.meter);
                ran += 1;
            } else {
                self.spare.push(p);
            }
        }
        self.parked.append(&mut self.spare);
        self.spare = parked;
        self.slot
            .suspended
            .store(self.parked.len() as u32, Ordering::Relaxed);
        if self.parked.is_empty() {
            self.retired.clear();
        }
        ran
    }

    /// Stop has waited long enough: tell the clients and drop the stacks
    /// without unwinding them (release builds abort on panic).
    pub(crate) fn abandon_parked(&mut self) {
        for p in self.parked.drain(..) {
            self.core.finish(p.idx, status::STOPPING, None, false);
            std::mem::forget(p.coro);
        }
    }
}
