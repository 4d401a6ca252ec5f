//! The runtime side of the engine: shared state ([`RuntimeCore`]), the
//! pinned worker threads and the reaper threads.
//!
//! A worker owns one lane. Each pass it pops up to [`BATCH`] records, runs
//! each task's method on a pooled stackful coroutine (`performance.stack_size`
//! bytes), and resumes parked coroutines whose wait is over. A pass that
//! took several records and caught up with the producers is followed by a
//! short pause away from the lane ([`STREAM_PAUSE_NS`]), so that a stream
//! of tasks is taken in batches. With nothing to do it spins for
//! [`SPIN_NS`], then announces sleep on the lane's doorbell and
//! futex-waits on it; producers that see the doorbell set wake it. An idle
//! daemon therefore costs nothing but a wake-up a second per worker.
//!
//! Reaper threads watch client slots: a client whose (pid, start time) is gone
//! has its records' client references dropped and, once its in-flight tasks
//! finish, its payload blocks reclaimed and its slot freed. Reaper 0 is also
//! the timekeeper: it completes with a timeout the tasks that outlive
//! `runtime.task_timeout` while their worker is busy elsewhere or stuck.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use slog::{info, warn};

use chimaera_module::{Container, Subtask, TaskContext, TaskError, TaskHost, TaskInfo};
use chimaera_proto::alloc::Arena;
use chimaera_proto::lane::Lane;
use chimaera_proto::layout::{self, View, WorkerSlot};
use chimaera_proto::protocol::{
    FLAG_FORWARDED, FLAG_IN_RUNTIME_ARENA, FLAG_PARKED, NET_WAKER, NETWORK_EXECUTOR,
    check_payload_len, fill_record, free_payloads, output_bytes, payload, process_start_time,
    ring_lane, ring_lane_force,
};
use chimaera_proto::record::{
    self, Completion, INLINE, INLINE_BYTES, REF_CLIENT, REF_RUNTIME, TaskRecord, status,
};
use chimaera_proto::sync::{
    coarse_now_ns, futex_wait, futex_wake, now_ns, prefetch_for_write, relax,
};

use super::meter::{Meter, Slots, TaskMetrics, WorkerMeter};
use super::pools::{Pool, PoolTable, Registry};
use super::remote::{Decision, Note, Remote};

/// Why a task's coroutine gave up its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspend {
    /// Run again on the next pass.
    Yield,
    /// Run again when this record is done.
    Wait(u32),
}

/// Records a worker takes per pass before it looks at parked tasks.
pub const BATCH: usize = 32;
/// How many queued records a worker fetches ahead of the one it runs.
const PREFETCH_AHEAD: u64 = 8;
/// How long an idle worker spins before it sleeps.
pub const SPIN_NS: u64 = 50_000;
/// A pass that took at least this many records means tasks arrive faster
/// than one at a time: a pipelining client, or several. A synchronous
/// caller's tasks come one a pass.
const STREAM_MIN: usize = 2;
/// How long a worker leaves its lane alone after such a pass when it caught
/// up with the producers, so that it next takes a batch (docs/ARCHITECTURE.md,
/// Workers, has the figures). Longer pauses give more throughput still, but
/// a task that arrives during one waits for it: at 3 µs two synchronous
/// callers sharing a worker saw their p99 go from 0.7 to 1.2 µs.
const STREAM_PAUSE_NS: u64 = 1_500;
/// Stacks a worker keeps for reuse.
const STACK_POOL: usize = 64;

pub struct RuntimeCore {
    pub view: View,
    pub client_arena: Arena,
    pub runtime_arena: Arena,
    pub(crate) pools: PoolTable,
    pub registry: Registry,
    pub stack_size: usize,
    pub task_timeout_ns: u64,
    pub log: slog::Logger,
    pub(crate) stop: AtomicBool,
    rr: AtomicU32,
    /// The network layer, once the daemon attached one.
    pub(crate) net: OnceLock<Arc<dyn Remote>>,
    /// Tasks per pool and method, and their latencies, counted by the
    /// workers for the metrics endpoint.
    pub metrics: TaskMetrics,
}

// SAFETY: the view's references point into shared memory that lives as long
// as the core (the owner keeps the segments alive beside it) and is only
// reached through atomics and the record handoff protocol.
unsafe impl Send for RuntimeCore {}
// SAFETY: as above.
unsafe impl Sync for RuntimeCore {}

impl RuntimeCore {
    pub fn new(
        view: View,
        client_arena: Arena,
        runtime_arena: Arena,
        registry: Registry,
        stack_size: usize,
        task_timeout_ns: u64,
        log: slog::Logger,
    ) -> RuntimeCore {
        let metrics = TaskMetrics::new(view.lanes.len());
        RuntimeCore {
            view,
            client_arena,
            runtime_arena,
            pools: PoolTable::default(),
            registry,
            stack_size,
            task_timeout_ns,
            log,
            stop: AtomicBool::new(false),
            rr: AtomicU32::new(0),
            net: OnceLock::new(),
            metrics,
        }
    }

    fn arena_of(&self, rec: &TaskRecord) -> &Arena {
        if rec.flags.load(Ordering::Relaxed) & FLAG_IN_RUNTIME_ARENA != 0 {
            &self.runtime_arena
        } else {
            &self.client_arena
        }
    }

    /// The task's input, where its submitter put it (valid while the
    /// task runs: the submitter wrote it before publishing SUBMITTED).
    pub fn input_of<'r>(&'r self, rec: &'r TaskRecord) -> &'r [u8] {
        payload(
            self.arena_of(rec),
            &rec.inline_in,
            rec.in_offset.load(Ordering::Relaxed),
            rec.in_len.load(Ordering::Relaxed),
        )
    }

    /// The task's output (valid once DONE was acquired).
    pub fn output_of<'r>(&'r self, rec: &'r TaskRecord) -> &'r [u8] {
        output_bytes(&self.runtime_arena, rec)
    }

    pub(crate) fn set_output(&self, rec: &TaskRecord, bytes: &[u8]) -> Result<(), TaskError> {
        check_payload_len(bytes.len(), "output").map_err(TaskError::Failed)?;
        let old = rec.out_offset.swap(INLINE, Ordering::Relaxed);
        if old != INLINE {
            let _ = self.runtime_arena.free(old);
        }
        if bytes.len() <= INLINE_BYTES {
            // SAFETY: only the task's runner writes the output, before DONE.
            unsafe { (&mut *rec.inline_out.get())[..bytes.len()].copy_from_slice(bytes) };
        } else {
            let owner = rec.owner.load(Ordering::Relaxed);
            let off = self.runtime_arena.alloc(bytes.len(), owner).ok_or_else(|| {
                TaskError::Failed(format!(
                    "the runtime data segment has no room for {} bytes of output: raise memory.runtime_data_segment_size",
                    bytes.len()
                ))
            })?;
            // SAFETY: the fresh block holds at least bytes.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    self.runtime_arena.ptr(off),
                    bytes.len(),
                )
            };
            rec.out_offset.store(off, Ordering::Relaxed);
        }
        rec.out_len.store(bytes.len() as u32, Ordering::Relaxed);
        Ok(())
    }

    /// Makes room for a task's output of `len` bytes to be written in
    /// place: in the record when small, else a fresh block of the runtime
    /// data segment (old bytes until written). Replaces any output set
    /// before. The pointer is valid for `len` bytes until the output is
    /// replaced or the record freed; only the task's runner may write it,
    /// before DONE.
    pub(crate) fn output_buffer(&self, rec: &TaskRecord, len: usize) -> Result<*mut u8, TaskError> {
        let len32 = u32::try_from(len).map_err(|_| {
            TaskError::Failed(format!(
                "an output of {len} bytes is more than a task can return (4 GiB)"
            ))
        })?;
        let old = rec.out_offset.swap(INLINE, Ordering::Relaxed);
        if old != INLINE {
            let _ = self.runtime_arena.free(old);
        }
        let ptr = if len <= INLINE_BYTES {
            rec.inline_out.get().cast::<u8>()
        } else {
            let owner = rec.owner.load(Ordering::Relaxed);
            let off = self.runtime_arena.alloc(len, owner).ok_or_else(|| {
                TaskError::Failed(format!(
                    "the runtime data segment has no room for {len} bytes of output: raise memory.runtime_data_segment_size"
                ))
            })?;
            rec.out_offset.store(off, Ordering::Relaxed);
            self.runtime_arena.ptr(off)
        };
        rec.out_len.store(len32, Ordering::Relaxed);
        Ok(ptr)
    }

    /// Drops a reference to a record; the last one frees its payloads too.
    pub fn release(&self, idx: u32, which: u32) {
        self.view.records.release(idx, which, |r| {
            free_payloads(&self.client_arena, &self.runtime_arena, r)
        });
    }

    /// Wakes worker `w` if it sleeps.
    #[inline]
    pub fn ring(&self, w: u32) {
        ring_lane(&self.view.lanes[w as usize]);
    }

    /// Completes a task (unless someone did first): `message` becomes its
    /// output (errors), `drop_runtime` gives up the runtime's reference in
    /// the same step (the worker, done with the record). Wakes the client and
    /// a parent task's worker. Returns whether this call completed it.
    pub(crate) fn finish(
        &self,
        idx: u32,
        st: i32,
        message: Option<&str>,
        drop_runtime: bool,
    ) -> bool {
        self.finish_with(idx, st, message.map(str::as_bytes), drop_runtime)
    }

    /// [`RuntimeCore::finish`] with any output bytes (a remote task's
    /// result). Output that finds no room turns the task into an error.
    pub(crate) fn finish_with(
        &self,
        idx: u32,
        mut st: i32,
        output: Option<&[u8]>,
        drop_runtime: bool,
    ) -> bool {
        let rec = self.view.records.get(idx);
        if let Some(m) = output
            && rec.phase() == record::SUBMITTED
            && let Err(e) = self.set_output(rec, m)
        {
            // The full message needs the room that is missing: this one fits inline.
            debug_assert!(
                e.to_string()
                    .contains("raise memory.runtime_data_segment_size")
            );
            st = status::MODULE_ERROR;
            let _ = self.set_output(
                rec,
                b"no room for the output; raise memory.runtime_data_segment_size",
            );
        }
        // Read before the CAS: once it lands the record may be freed.
        let waker = rec.waker.load(Ordering::Relaxed);
        match rec.complete(st, drop_runtime) {
            Completion::Lost => {
                if drop_runtime {
                    self.release(idx, REF_RUNTIME);
                }
                false
            }
            Completion::Won { waiter, last } => {
                if last {
                    free_payloads(&self.client_arena, &self.runtime_arena, rec);
                    self.view.records.free(idx);
                } else if waiter {
                    futex_wake(&rec.state, i32::MAX);
                }
                if waker == NET_WAKER {
                    if let Some(net) = self.net.get() {
                        net.post(Note::Done(idx));
                    }
                } else if waker != record::NO_WAKER {
                    self.ring(waker - 1);
                }
                true
            }
        }
    }

    /// Fills a record the runtime allocated for itself (a subtask, a peer's
    /// task), its input in the runtime data segment. Without room, the
    /// record is given back and the error says what to raise.
    pub(crate) fn fill_runtime_record(
        &self,
        idx: u32,
        pool: u32,
        method: u32,
        input: &[u8],
    ) -> Result<(), String> {
        if let Err(e) = check_payload_len(input.len(), "input") {
            self.release(idx, REF_CLIENT);
            return Err(e);
        }
        let rec = self.view.records.get(idx);
        fill_record(
            self.view.header,
            &self.runtime_arena,
            rec,
            pool,
            method,
            input,
            record::RUNTIME_OWNER,
            FLAG_IN_RUNTIME_ARENA,
        )
        .map_err(|len| {
            self.release(idx, REF_CLIENT);
            format!(
                "the runtime data segment has no room for {len} bytes of task input: raise memory.runtime_data_segment_size"
            )
        })
    }

    /// Submits a task from inside a running task (a subtask). A full lane or
    /// an exhausted pool makes the caller yield, never block its worker.
    pub(crate) fn submit_internal(
        &self,
        worker: u32,
        pool: u32,
        method: u32,
        input: &[u8],
        local: bool,
        yielder: &Yielder<(), Suspend>,
    ) -> Result<u32, TaskError> {
        let idx = loop {
            if let Some(i) = self.view.records.alloc(record::RUNTIME_OWNER) {
                break i;
            }
            yielder.suspend(Suspend::Yield);
        };
        self.fill_runtime_record(idx, pool, method, input)
            .map_err(TaskError::Failed)?;
        let rec = self.view.records.get(idx);
        rec.waker.store(worker + 1, Ordering::Relaxed);
        let lanes = self.view.lanes.len() as u32;
        // The network executor has no lane of its own.
        let lane = if local && worker < lanes {
            worker
        } else {
            self.rr.fetch_add(1, Ordering::Relaxed) % lanes
        };
        rec.lane.store(lane, Ordering::Relaxed);
        rec.mark_submitted();
        while self.view.lanes[lane as usize].push(idx).is_err() {
            yielder.suspend(Suspend::Yield);
        }
        self.ring(lane);
        Ok(idx)
    }

    pub fn pools(&self) -> Vec<chimaera_module::PoolInfo> {
        self.pools.list()
    }

    /// The network layer's view of the cluster, when one is attached.
    pub fn cluster_stats(&self) -> Option<chimaera_proto::admin::ClusterStats> {
        self.net.get().map(|n| n.cluster_stats())
    }

    /// Attaches a network layer: tasks with a route reach other nodes from
    /// here on. The first one stays.
    pub(crate) fn attach_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.net.set(remote);
    }

    /// Asks every worker to finish and wakes them all.
    pub fn request_stop(&self) {
        self.view
            .header
            .state
            .store(layout::RUNTIME_STOPPING, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        for w in 0..self.view.lanes.len() as u32 {
            ring_lane_force(&self.view.lanes[w as usize]);
        }
    }
}

/// A running task, as its module reaches the runtime (through
/// [`TaskContext`]): the record it runs, its worker's yielder and the
/// subtasks it submitted, whose references it gives back when it ends.
struct EngineTask<'a> {
    core: &'a RuntimeCore,
    worker: u32,
    rec: &'a TaskRecord,
    yielder: &'a Yielder<(), Suspend>,
    subtasks: Vec<u32>,
}

impl TaskHost for EngineTask<'_> {
    fn input(&self) -> &[u8] {
        self.core.input_of(self.rec)
    }

    fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.core.set_output(self.rec, bytes)
    }

    fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        let ptr = self.core.output_buffer(self.rec, len)?;
        // SAFETY: the output holds `len` bytes and stays allocated until it
        // is replaced (which takes `&mut self`, so not while this slice
        // lives) or the record is freed (not before this task completes);
        // this task's runner is the only one that touches it before DONE.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    fn yield_now(&self) {
        self.yielder.suspend(Suspend::Yield);
    }

    fn submit(
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
        Ok(Subtask::new(idx))
    }

    fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError> {
        // Only this task's own subtasks hold a reference that keeps their
        // record from being reused while it is read.
        if !self.subtasks.contains(&sub.id()) {
            return Err(TaskError::Failed(format!(
                "subtask {} was not submitted by this task",
                sub.id()
            )));
        }
        let rec = self.core.view.records.get(sub.id());
        while rec.phase() != record::DONE {
            self.yielder.suspend(Suspend::Wait(sub.id()));
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
}

impl Drop for EngineTask<'_> {
    fn drop(&mut self) {
        for idx in self.subtasks.drain(..) {
            self.core.release(idx, record::REF_CLIENT);
        }
    }
}

type TaskCoroutine = Coroutine<(), Suspend, Result<(), TaskError>, DefaultStack>;

struct Parked {
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
                    Some(i) => prefetch_for_write(records.get(i)),
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
                            Some(next) => prefetch_for_write(records.get(next)),
                            None => at_tail = true,
                        }
                        self.start(idx, now);
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
        if rec.phase() != record::SUBMITTED {
            // Completed while queued (timed out): only our reference is left to drop.
            core.release(idx, REF_RUNTIME);
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
            };
            container.run(&mut TaskContext::new(info, &mut host))
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
        let result = coro.resume(());
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

/// One reaper thread: clients with `slot % count == index`; index 0 also
/// keeps time.
pub fn run_reaper(core: Arc<RuntimeCore>, index: u32, count: u32, stop: mpsc::Receiver<()>) {
    let tick_ns = (core.task_timeout_ns / 4).clamp(1_000_000, 100_000_000);
    let tick = Duration::from_nanos(tick_ns);
    let mut last_progress: Vec<u64> = vec![0; core.view.workers.len()];
    let mut liveness_due = 0u64;
    let mut reclaiming_since: Vec<u64> = vec![0; core.view.clients.len()];
    loop {
        match stop.recv_timeout(tick) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = coarse_now_ns();
        if index == 0 {
            timekeep(&core, now, &mut last_progress);
        }
        if now >= liveness_due {
            liveness_due = now + 100_000_000;
            for (i, slot) in core.view.clients.iter().enumerate() {
                if i as u32 % count != index {
                    continue;
                }
                reap_slot(&core, i, slot, now, &mut reclaiming_since[i]);
            }
        }
    }
}

fn timekeep(core: &RuntimeCore, now: u64, last_progress: &mut [u64]) {
    for (w, slot) in core.view.workers.iter().enumerate() {
        let running = slot.running.load(Ordering::Relaxed);
        if running != record::NONE {
            let rec = core.view.records.get(running);
            if now > rec.deadline_ns.load(Ordering::Relaxed) {
                core.finish(running, status::TIMED_OUT, None, false);
            }
        }
        // A worker that made no pass since the last tick is stuck in one
        // task: time out what waits in its lane, too.
        let progress = slot.progress.load(Ordering::Relaxed);
        let stuck = progress == last_progress[w] && running != record::NONE;
        last_progress[w] = progress;
        if stuck {
            for idx in core.view.lanes[w].queued() {
                let rec = core.view.records.get(idx);
                if now > rec.deadline_ns.load(Ordering::Relaxed) {
                    core.finish(idx, status::TIMED_OUT, None, false);
                }
            }
        }
    }
}

/// Takes a client slot from `from` to RECLAIMING; false if it moved on.
fn begin_reclaim(slot: &layout::ClientSlot, from: u32) -> bool {
    slot.state
        .compare_exchange(
            from,
            layout::CLIENT_RECLAIMING,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

fn reap_slot(core: &RuntimeCore, i: usize, slot: &layout::ClientSlot, now: u64, since: &mut u64) {
    let state = slot.state.load(Ordering::Acquire);
    let pid = slot.pid.load(Ordering::Relaxed);
    if state == layout::CLIENT_ACTIVE {
        let started = slot.start_time.load(Ordering::Relaxed);
        if process_start_time(pid) == Some(started) {
            return;
        }
        if !begin_reclaim(slot, layout::CLIENT_ACTIVE) {
            return;
        }
        *since = now;
        info!(
            core.log,
            "client pid {} is gone; reclaiming what it held", pid
        );
    } else if state == layout::CLIENT_CLAIMING {
        // A connect takes a few stores from claiming to active; a slot still
        // claiming a second later belongs to a client that died connecting.
        if *since == 0 {
            *since = now;
            return;
        }
        if now.saturating_sub(*since) < 1_000_000_000
            || !begin_reclaim(slot, layout::CLIENT_CLAIMING)
        {
            return;
        }
        info!(
            core.log,
            "client slot {} was left half-claimed; reclaiming it", i
        );
    } else if state != layout::CLIENT_RECLAIMING && state != layout::CLIENT_LEAVING {
        *since = 0;
        return;
    }
    let leaving = state == layout::CLIENT_LEAVING;
    if *since == 0 {
        *since = now;
    }
    let owner = i as u32 + 1;
    let records = core.view.records;
    let carved = (records.header.carved.load(Ordering::Acquire) as usize).min(records.owners.len());
    let mut left = Vec::new();
    for idx in 0..carved as u32 {
        // The state first, then the owner: if the index was freed and reused
        // in between, the generation in `seen` no longer matches and the
        // checked release leaves the new owner's record alone.
        let seen = records.get(idx).state.load(Ordering::Acquire);
        if records.owners[idx as usize].load(Ordering::Acquire) != owner {
            continue;
        }
        records.release_checked(idx, REF_CLIENT, Some(seen), |r| {
            free_payloads(&core.client_arena, &core.runtime_arena, r)
        });
        if records.owners[idx as usize].load(Ordering::Acquire) != owner {
            continue;
        }
        let now_state = records.get(idx).state.load(Ordering::Acquire);
        if now_state & record::CLIENT_FREEING != 0 && records.finish_abandoned_free(idx, now_state)
        {
            continue;
        }
        left.push(idx);
    }
    if !left.is_empty() {
        // A client killed between marking a record submitted and pushing it
        // leaves a runtime reference nobody will drop. A live task is always
        // in a lane (the network's included), shown as running by a worker
        // (set before it leaves the lane), or parked or forwarded to the
        // network (both marked before it stops showing as running, or leaves
        // the network lane); so,
        // read in that order, a SUBMITTED record in none of them is held by
        // nobody.
        let queued: HashSet<u32> = core
            .view
            .lanes
            .iter()
            .chain([&core.view.net_lane])
            .flat_map(|l| l.queued().collect::<Vec<_>>())
            .collect();
        let running: HashSet<u32> = core
            .view
            .workers
            .iter()
            .map(|w| w.running.load(Ordering::Acquire))
            .collect();
        left.retain(|&idx| {
            let rec = records.get(idx);
            let orphan = !queued.contains(&idx)
                && !running.contains(&idx)
                && rec.flags.load(Ordering::Acquire) & (FLAG_PARKED | FLAG_FORWARDED) == 0
                && rec.phase() == record::SUBMITTED;
            if orphan {
                core.release(idx, REF_RUNTIME);
            }
            !orphan
        });
    }
    if left.is_empty() {
        let blocks =
            core.client_arena.reclaim_owner(owner) + core.runtime_arena.reclaim_owner(owner);
        slot.state.store(layout::CLIENT_FREE, Ordering::Release);
        *since = 0;
        if leaving {
            slog::debug!(core.log, "client pid {} left; slot {} free", pid, i);
        } else {
            info!(
                core.log,
                "reclaimed client pid {}: slot {} free, {} stray buffer(s)", pid, i, blocks
            );
        }
    } else if now.saturating_sub(*since) > 10_000_000_000 {
        warn!(
            core.log,
            "client pid {} still has {} task(s) in flight after 10 s",
            pid,
            left.len()
        );
        *since = now;
    }
}

#[cfg(test)]
mod payload_tests {
    use super::check_payload_len;

    #[test]
    fn payloads_over_32_bits_are_refused_not_cut() {
        assert!(check_payload_len(u32::MAX as usize, "input").is_ok());
        let e = check_payload_len(u32::MAX as usize + 1, "output").unwrap_err();
        assert!(
            e.contains("output is at most 4 GiB") && e.contains("4294967296"),
            "{e}"
        );
    }
}
