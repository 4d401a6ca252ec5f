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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    check_payload_len, fill_record, input_span, process_start_time, ring_lane, ring_lane_force,
};
use chimaera_proto::record::{
    self, Completion, INLINE, INLINE_BYTES, REF_CLIENT, REF_RUNTIME, TaskRecord, status,
};
use chimaera_proto::sync::{
    coarse_now_ns, futex_wait, futex_wake, now_ns, prefetch_for_write, relax,
};

mod reaper;
mod task;
mod worker;

pub use reaper::run_reaper;
pub use worker::Worker;

use chimaera_proto::shared::copy_out;

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
    /// What failed the checks of words read from shared memory.
    pub rejected: RejectCounters,
    /// One bit per record: filled by the runtime itself.
    runtime_owned: Box<[AtomicU64]>,
}

/// Counts of [`chimaera_proto::admin::Rejected`], as they happen.
#[derive(Default)]
pub struct RejectCounters {
    pub record_index: AtomicU64,
    pub payload: AtomicU64,
    pub waker: AtomicU64,
    pub state: AtomicU64,
}

impl RejectCounters {
    pub fn read(&self) -> chimaera_proto::admin::Rejected {
        chimaera_proto::admin::Rejected {
            record_index: self.record_index.load(Ordering::Relaxed),
            payload: self.payload.load(Ordering::Relaxed),
            waker: self.waker.load(Ordering::Relaxed),
            state: self.state.load(Ordering::Relaxed),
        }
    }
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
        let runtime_owned = (0..view.records.capacity().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
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
            rejected: RejectCounters::default(),
            runtime_owned,
        }
    }

    /// Marks record `idx` as filled by the runtime itself (its input is in
    /// the runtime data segment), or clears the mark; returns the old one.
    /// The mark lives here, not in the record: a client could set a flag in
    /// its own record to have the runtime read or free runtime blocks.
    fn set_runtime_owned(&self, idx: u32, owned: bool) -> bool {
        let word = &self.runtime_owned[idx as usize / 64];
        let bit = 1u64 << (idx % 64);
        let old = if owned {
            word.fetch_or(bit, Ordering::AcqRel)
        } else {
            word.fetch_and(!bit, Ordering::AcqRel)
        };
        old & bit != 0
    }

    fn is_runtime_owned(&self, idx: u32) -> bool {
        self.runtime_owned[idx as usize / 64].load(Ordering::Acquire) & (1u64 << (idx % 64)) != 0
    }

    /// Where the input of record `idx` lies, checked: inline within the
    /// record's room, or in one block of the right data segment allocated
    /// to the record's owner. The error says what is wrong; the task then
    /// ends with BAD_INPUT and nothing of it is read.
    pub(crate) fn input_span(
        &self,
        idx: u32,
        rec: &TaskRecord,
    ) -> Result<(*const u8, usize), String> {
        if self.is_runtime_owned(idx) {
            return input_span(
                rec,
                &self.runtime_arena,
                record::RUNTIME_OWNER,
                "runtime data",
            );
        }
        let owner = rec.owner.load(Ordering::Relaxed);
        if (owner == 0 || owner > self.view.info.max_clients)
            && rec.in_offset.load(Ordering::Relaxed) != INLINE
        {
            return Err(format!(
                "bad input: the record names no client (owner {owner})"
            ));
        }
        input_span(rec, &self.client_arena, owner, "client data")
    }

    /// Whether record `idx`, just taken from a lane, is a task to run: it
    /// must be SUBMITTED. One completed while queued (timed out) has only
    /// our reference left, which is dropped; anything else (pushed twice, a
    /// state word written over) is left alone and counted.
    pub(crate) fn take_queued(&self, idx: u32, rec: &TaskRecord) -> bool {
        let state = rec.state.load(Ordering::Acquire);
        if state & record::PHASE_MASK == record::SUBMITTED {
            return true;
        }
        if state & record::PHASE_MASK == record::DONE && state & REF_RUNTIME != 0 {
            self.release(idx, REF_RUNTIME);
        } else {
            self.rejected.state.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    /// A copy of the input of record `idx` (checked as [`Self::input_span`]).
    pub fn input_copy(&self, idx: u32, rec: &TaskRecord) -> Result<Vec<u8>, String> {
        let (p, len) = self.input_span(idx, rec)?;
        // SAFETY: input_span checked that p..p+len lies in a mapped segment
        // (or the record).
        Ok(unsafe { copy_out(p, len) })
    }

    /// A copy of a done task's output, which the runtime wrote: checked all
    /// the same, since its offset and length lie in shared memory.
    pub fn output_copy(&self, rec: &TaskRecord) -> Result<Vec<u8>, String> {
        let off = rec.out_offset.load(Ordering::Relaxed);
        let len = rec.out_len.load(Ordering::Relaxed) as usize;
        let p = if off == INLINE {
            if len > INLINE_BYTES {
                return Err(format!(
                    "an inline output of {len} bytes (at most {INLINE_BYTES})"
                ));
            }
            rec.inline_out.get().cast::<u8>().cast_const()
        } else {
            self.runtime_arena
                .span(off, len as u64)
                .ok_or_else(|| format!("an output of {len} bytes at offset {off} lies outside the runtime data segment"))?
                .cast_const()
        };
        // SAFETY: p..p+len lies in the record or the runtime data segment
        // (checked above).
        Ok(unsafe { copy_out(p, len) })
    }

    /// Frees the payload blocks of record `idx`, whose last reference is
    /// gone: its input from the segment it was checked against, its output
    /// from the runtime's. Offsets someone wrote over are refused by the
    /// arenas (and the blocks lost), never followed.
    pub(crate) fn free_payloads_of(&self, idx: u32, rec: &TaskRecord) {
        // A load first: most records are clients', and a locked
        // instruction per task is not free.
        let runtime = self.is_runtime_owned(idx) && self.set_runtime_owned(idx, false);
        let inp = rec.in_offset.load(Ordering::Relaxed);
        if inp != INLINE {
            let _ = if runtime {
                self.runtime_arena.free(inp)
            } else {
                self.client_arena
                    .free_owned(inp, rec.owner.load(Ordering::Relaxed))
            };
        }
        let out = rec.out_offset.load(Ordering::Relaxed);
        if out != INLINE {
            let _ = self.runtime_arena.free(out);
        }
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

    /// Drops a reference to a record; the last one frees its payloads too.
    pub fn release(&self, idx: u32, which: u32) {
        self.view
            .records
            .release(idx, which, |r| self.free_payloads_of(idx, r));
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
                    self.free_payloads_of(idx, rec);
                    self.view.records.free(idx);
                } else if waiter {
                    futex_wake(&rec.state, i32::MAX);
                }
                if waker == NET_WAKER {
                    if let Some(net) = self.net.get() {
                        net.post(Note::Done(idx));
                    }
                } else if waker != record::NO_WAKER {
                    // A parent task's worker; anything else is a word
                    // someone wrote over.
                    if ((waker - 1) as usize) < self.view.lanes.len() {
                        self.ring(waker - 1);
                    } else {
                        self.rejected.waker.fetch_add(1, Ordering::Relaxed);
                    }
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
        self.set_runtime_owned(idx, true);
        fill_record(
            self.view.info.task_timeout_ns,
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
            .state
            .store(layout::RUNTIME_STOPPING, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        for w in 0..self.view.lanes.len() as u32 {
            ring_lane_force(&self.view.lanes[w as usize]);
        }
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
