//! Task records: fixed-size slots in the main segment that carry one task
//! from submission to completion, and the lock-free pool they come from.
//!
//! Everything that changes hands lives in one 32-bit state word: the phase
//! (allocated, submitted, done), the result status, a waiter bit, an
//! allocation generation, and two reference bits, one for the client (until it has read the result) and
//! one for the runtime (from submission until the worker is done). Whoever
//! drops the last reference frees the record and its payload blocks, so
//! neither side frees memory the other may still read, whatever order they
//! finish in, and a timed-out task can keep running without its record being
//! reused under it.
//!
//! Completion is one CAS from SUBMITTED to DONE carrying the status (and,
//! for the worker, dropping its reference in the same step). The worker and
//! the timekeeper race for it and exactly one wins. The client spins on this
//! word, so the worker touching it once per task, not four times, is what
//! keeps the round trip near the hardware floor.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shared::Pad;

pub const FREE: u32 = 0;
pub const ALLOCATED: u32 = 1;
pub const SUBMITTED: u32 = 2;
pub const DONE: u32 = 3;
pub const PHASE_MASK: u32 = 0xff;
/// Set by a client that sleeps on the state word.
pub const WAITER: u32 = 1 << 8;
pub const REF_CLIENT: u32 = 1 << 9;
pub const REF_RUNTIME: u32 = 1 << 10;
const REFS: u32 = REF_CLIENT | REF_RUNTIME;
/// Set by a client dropping the last reference: it is freeing the record.
/// If it dies before it finishes, the reaper finishes the free.
pub const CLIENT_FREEING: u32 = 1 << 11;
const STATUS_SHIFT: u32 = 16;
/// Bits 24..32: the record's allocation generation, so that the reaper can
/// act on "the record it checked" and not on a reuse of the same index.
const GEN_SHIFT: u32 = 24;
pub const GEN_MASK: u32 = 0xff << GEN_SHIFT;

/// Payload offsets meaning "in the record itself".
pub const INLINE: u64 = u64::MAX;
/// Inline payload capacity, each way.
pub const INLINE_BYTES: usize = 64;

/// `owner` of records the runtime submits itself (subtasks).
pub const RUNTIME_OWNER: u32 = u32::MAX;
/// `waker` when nobody but the client waits.
pub const NO_WAKER: u32 = 0;
pub const NONE: u32 = u32::MAX;

/// Result status of a task, as carried in the state word (0..=255).
pub mod status {
    pub const OK: i32 = 0;
    pub const TIMED_OUT: i32 = 1;
    pub const MODULE_ERROR: i32 = 2;
    pub const NO_SUCH_POOL: i32 = 3;
    pub const NO_SUCH_METHOD: i32 = 4;
    pub const STOPPING: i32 = 5;
    pub const BAD_INPUT: i32 = 6;
    /// The node the task was routed to is down or unknown.
    pub const NODE_UNAVAILABLE: i32 = 7;
}

/// Bits 8..10 of a record's `flags`: where the task runs. 0 (local) is what
/// every record without a route has.
pub const ROUTE_SHIFT: u32 = 8;
pub const ROUTE_MASK: u32 = 0b11 << ROUTE_SHIFT;
pub const ROUTE_LOCAL: u32 = 0;
pub const ROUTE_DIRECT: u32 = 1;
pub const ROUTE_HASH: u32 = 2;
pub const ROUTE_BROADCAST: u32 = 3;

/// The `flags` bits and `route_arg` value that carry `route`.
pub fn route_flags(route: crate::wire::Route) -> (u32, u64) {
    use crate::wire::Route;
    let (kind, arg) = match route {
        Route::Local => (ROUTE_LOCAL, 0),
        Route::Direct(n) => (ROUTE_DIRECT, u64::from(n)),
        Route::Hash(k) => (ROUTE_HASH, k),
        Route::Broadcast => (ROUTE_BROADCAST, 0),
    };
    (kind << ROUTE_SHIFT, arg)
}

/// The route a record's `flags` and `route_arg` describe.
pub fn route_of(flags: u32, arg: u64) -> crate::wire::Route {
    use crate::wire::Route;
    match (flags & ROUTE_MASK) >> ROUTE_SHIFT {
        ROUTE_LOCAL => Route::Local,
        ROUTE_DIRECT => Route::Direct(arg as u32),
        ROUTE_HASH => Route::Hash(arg),
        _ => Route::Broadcast,
    }
}

/// One task, 256 bytes. Every field another process reads is an atomic or
/// is published by the state word's Release store and read after its
/// Acquire load.
#[repr(C, align(64))]
pub struct TaskRecord {
    // First cache line: all a worker touches to run a task.
    pub state: AtomicU32,
    pub pool_id: AtomicU32,
    pub method: AtomicU32,
    /// Worker id + 1 to wake when this task completes (a parent task waits).
    pub waker: AtomicU32,
    pub in_len: AtomicU32,
    pub out_len: AtomicU32,
    pub flags: AtomicU32,
    /// Client slot + 1, or [`RUNTIME_OWNER`].
    pub owner: AtomicU32,
    /// CLOCK_MONOTONIC deadline in ns (submission + task_timeout).
    pub deadline_ns: AtomicU64,
    pub in_offset: AtomicU64,
    pub out_offset: AtomicU64,
    // Second line: the submitter's bookkeeping.
    pub next_free: AtomicU32,
    pub lane: AtomicU32,
    /// Record index (high half) and allocation generation (low half).
    pub task_id: AtomicU64,
    pub submit_ns: AtomicU64,
    /// Argument of the task's route (node id or hash key); the route's kind
    /// is in `flags` (see [`route_flags`]) so that local tasks never read it.
    pub route_arg: AtomicU64,
    _pad: Pad<40>,
    pub inline_in: UnsafeCell<[u8; INLINE_BYTES]>,
    pub inline_out: UnsafeCell<[u8; INLINE_BYTES]>,
}

const _: () = assert!(size_of::<TaskRecord>() == 256);

// SAFETY: the UnsafeCell payloads are written by one party and read by the
// other only across the state word's Release/Acquire handoff.
unsafe impl Sync for TaskRecord {}

/// Who completed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Someone else completed it first (a timeout, or the worker).
    Lost,
    /// We did; `waiter` says a client sleeps on the word, `last` that no
    /// reference is left (the caller frees the record).
    Won { waiter: bool, last: bool },
}

impl TaskRecord {
    #[inline]
    pub fn phase(&self) -> u32 {
        self.state.load(Ordering::Acquire) & PHASE_MASK
    }

    /// The result status; meaningful once the phase is DONE.
    #[inline]
    pub fn status(&self) -> i32 {
        ((self.state.load(Ordering::Acquire) >> STATUS_SHIFT) & 0xff) as i32
    }

    /// Publishes a filled record for a worker: it now holds a runtime
    /// reference too. Plain store: nobody else can see the record yet.
    #[inline]
    pub fn mark_submitted(&self) {
        let generation = self.state.load(Ordering::Relaxed) & GEN_MASK;
        self.state
            .store(generation | SUBMITTED | REFS, Ordering::Release);
    }

    /// Takes back a submission that never reached a lane.
    #[inline]
    pub fn unmark_submitted(&self) {
        let generation = self.state.load(Ordering::Relaxed) & GEN_MASK;
        self.state
            .store(generation | ALLOCATED | REF_CLIENT, Ordering::Release);
    }

    /// Completes a submitted task with `status` in one CAS, keeping the
    /// waiter bit; `drop_runtime` also drops the runtime's reference.
    #[inline]
    pub fn complete(&self, status: i32, drop_runtime: bool) -> Completion {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & PHASE_MASK != SUBMITTED {
                return Completion::Lost;
            }
            let mut refs = s & REFS;
            if drop_runtime {
                refs &= !REF_RUNTIME;
            }
            let new =
                (s & (GEN_MASK | WAITER)) | DONE | refs | ((status as u32 & 0xff) << STATUS_SHIFT);
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Completion::Won {
                        waiter: s & WAITER != 0,
                        last: refs == 0,
                    };
                }
                Err(now) => s = now,
            }
        }
    }
}

/// The pool's control words, in the main segment.
#[repr(C, align(64))]
pub struct PoolHeader {
    /// Treiber stack head: ABA tag (high 32 bits) and record index + 1.
    pub free_head: AtomicU64,
    /// Records ever handed out from the never-used tail of the array.
    pub carved: AtomicU32,
    /// For other readers; this process's record slice has its own length,
    /// which is what bounds every index here.
    pub capacity: AtomicU32,
    _r: Pad<4>,
    _pad: Pad<44>,
}

/// The record array and its pool, as mapped in one process.
#[derive(Clone, Copy)]
pub struct Records<'a> {
    pub header: &'a PoolHeader,
    pub records: &'a [TaskRecord],
    /// Owner of each record, compact, so the reaper scans 4 bytes a record.
    pub owners: &'a [AtomicU32],
}

impl<'a> Records<'a> {
    pub fn init(&self) {
        self.header.free_head.store(0, Ordering::Relaxed);
        self.header.carved.store(0, Ordering::Relaxed);
    }

    /// The record at `idx`, which this process allocated or checked.
    #[inline]
    pub fn get(&self, idx: u32) -> &'a TaskRecord {
        &self.records[idx as usize]
    }

    /// The record at `idx` if there is one: for an index read from shared
    /// memory (a lane cell, a free-list link), which anyone may have written.
    #[inline]
    pub fn checked(&self, idx: u32) -> Option<&'a TaskRecord> {
        self.records.get(idx as usize)
    }

    /// Records in the array (this process's bound, not the segment's word).
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.records.len() as u32
    }

    /// Takes a free record for `owner`, or None when all are in use. Freed
    /// records are reused before the untouched tail, so pages of the segment
    /// are only touched as the load needs them.
    #[inline]
    pub fn alloc(&self, owner: u32) -> Option<u32> {
        let idx = self.pop_free().or_else(|| {
            let c = self.header.carved.fetch_add(1, Ordering::Relaxed);
            if c < self.capacity() {
                Some(c)
            } else {
                self.header.carved.fetch_sub(1, Ordering::Relaxed);
                None
            }
        })?;
        let r = self.get(idx);
        // Unique over the record's lifetimes without a shared counter.
        let generation = (r.task_id.load(Ordering::Relaxed) as u32).wrapping_add(1);
        r.task_id.store(
            (u64::from(idx) << 32) | u64::from(generation),
            Ordering::Relaxed,
        );
        r.owner.store(owner, Ordering::Relaxed);
        self.owners[idx as usize].store(owner, Ordering::Relaxed);
        r.waker.store(NO_WAKER, Ordering::Relaxed);
        r.in_offset.store(INLINE, Ordering::Relaxed);
        r.out_offset.store(INLINE, Ordering::Relaxed);
        r.in_len.store(0, Ordering::Relaxed);
        r.out_len.store(0, Ordering::Relaxed);
        r.flags.store(0, Ordering::Relaxed);
        let generation = (r.state.load(Ordering::Relaxed) & GEN_MASK).wrapping_add(1 << GEN_SHIFT);
        r.state
            .store(generation | ALLOCATED | REF_CLIENT, Ordering::Release);
        Some(idx)
    }

    fn pop_free(&self) -> Option<u32> {
        let mut head = self.header.free_head.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                return None;
            }
            let idx = top - 1;
            // A link someone scribbled on: the list is lost to us (its
            // records stay unused) rather than a wild index followed.
            let next = self.checked(idx)?.next_free.load(Ordering::Relaxed);
            if next > self.capacity() {
                return None;
            }
            let tag = (head >> 32).wrapping_add(1);
            match self.header.free_head.compare_exchange_weak(
                head,
                (tag << 32) | u64::from(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(idx),
                Err(now) => head = now,
            }
        }
    }

    /// Returns a record to the pool, once no reference is left.
    pub fn free(&self, idx: u32) {
        let r = self.get(idx);
        self.owners[idx as usize].store(0, Ordering::Relaxed);
        r.owner.store(0, Ordering::Relaxed);
        let generation = r.state.load(Ordering::Relaxed) & GEN_MASK;
        r.state.store(generation | FREE, Ordering::Release);
        let mut head = self.header.free_head.load(Ordering::Acquire);
        loop {
            r.next_free.store(head as u32, Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match self.header.free_head.compare_exchange_weak(
                head,
                (tag << 32) | u64::from(idx + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Drops one party's reference; the last one frees the record after
    /// `on_free` has released its payload blocks. Returns whether it freed.
    #[inline]
    pub fn release(&self, idx: u32, which: u32, on_free: impl FnOnce(&TaskRecord)) -> bool {
        self.release_checked(idx, which, None, on_free)
    }

    /// As [`Records::release`], but only while the record is still in the
    /// allocation generation of `seen` (a state word the caller read and
    /// judged): the reaper must not drop a reference of the index's next
    /// owner. The client side marks the last drop [`CLIENT_FREEING`].
    pub fn release_checked(
        &self,
        idx: u32,
        which: u32,
        seen: Option<u32>,
        on_free: impl FnOnce(&TaskRecord),
    ) -> bool {
        let r = self.get(idx);
        let mut s = r.state.load(Ordering::Acquire);
        let last = loop {
            if s & which == 0 || seen.is_some_and(|seen| seen & GEN_MASK != s & GEN_MASK) {
                // Already dropped (the reaper and a late client can both
                // try), or no longer the record the caller looked at.
                return false;
            }
            let last = s & REFS == which;
            let mut new = s & !which;
            if last && which == REF_CLIENT {
                new |= CLIENT_FREEING;
            }
            match r
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break last,
                Err(now) => s = now,
            }
        };
        if last {
            on_free(r);
            self.free(idx);
        }
        last
    }

    /// A record whose client died while freeing it (references gone,
    /// [`CLIENT_FREEING`] set, still in generation `seen`): finish the free.
    /// Its payload blocks are the dead owner's, reclaimed with the rest.
    pub fn finish_abandoned_free(&self, idx: u32, seen: u32) -> bool {
        let r = self.get(idx);
        let s = r.state.load(Ordering::Acquire);
        if s != seen || s & CLIENT_FREEING == 0 || s & REFS != 0 {
            return false;
        }
        // Claim it (clear the mark) so that only one reaper frees it.
        if r.state
            .compare_exchange(s, s & !CLIENT_FREEING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.free(idx);
        true
    }

    /// Records currently allocated, counted from the owner array: for stats
    /// and tests, off the hot path (a shared counter would make every
    /// submission of every client contend for one cache line).
    pub fn in_use(&self) -> u32 {
        let carved = (self.header.carved.load(Ordering::Acquire) as usize).min(self.owners.len());
        self.owners[..carved]
            .iter()
            .filter(|o| o.load(Ordering::Relaxed) != 0)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) struct OwnedRecords {
        header: Box<PoolHeader>,
        records: Vec<TaskRecord>,
        owners: Vec<AtomicU32>,
    }

    impl OwnedRecords {
        pub(crate) fn new(n: u32) -> OwnedRecords {
            // SAFETY: both types are atomics, bytes and padding; zero is valid.
            let header: Box<PoolHeader> = Box::new(unsafe { std::mem::zeroed() });
            header.capacity.store(n, Ordering::Relaxed);
            OwnedRecords {
                header,
                // SAFETY: as above.
                records: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
                owners: (0..n).map(|_| AtomicU32::new(0)).collect(),
            }
        }
        pub(crate) fn view(&self) -> Records<'_> {
            Records {
                header: &self.header,
                records: &self.records,
                owners: &self.owners,
            }
        }
    }

    #[test]
    fn alloc_free_reuse_and_exhaustion() {
        let o = OwnedRecords::new(4);
        let r = o.view();
        let got: Vec<u32> = (0..4).map(|_| r.alloc(1).unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(r.alloc(1), None);
        assert!(r.release(2, REF_CLIENT, |_| {}));
        assert_eq!(r.in_use(), 3);
        assert_eq!(r.alloc(1), Some(2), "freed records are reused");
        assert_eq!(r.header.carved.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn last_reference_frees_once() {
        let o = OwnedRecords::new(2);
        let r = o.view();
        let i = r.alloc(7).unwrap();
        r.get(i).mark_submitted();
        let mut freed = 0;
        assert!(!r.release(i, REF_RUNTIME, |_| freed += 1));
        assert!(
            !r.release(i, REF_RUNTIME, |_| freed += 1),
            "second drop of the same bit is ignored"
        );
        assert!(r.release(i, REF_CLIENT, |_| freed += 1));
        assert!(!r.release(i, REF_CLIENT, |_| freed += 1));
        assert_eq!(freed, 1);
        assert_eq!(r.owners[i as usize].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn completion_is_won_once_and_carries_the_status() {
        let o = OwnedRecords::new(1);
        let r = o.view();
        let idx = r.alloc(1).unwrap();
        let rec = r.get(idx);
        rec.mark_submitted();
        rec.state.fetch_or(WAITER, Ordering::Relaxed);
        assert_eq!(
            rec.complete(status::TIMED_OUT, false),
            Completion::Won {
                waiter: true,
                last: false
            }
        );
        assert_eq!(
            rec.complete(status::OK, true),
            Completion::Lost,
            "the worker loses after the timekeeper"
        );
        assert_eq!((rec.phase(), rec.status()), (DONE, status::TIMED_OUT));
        // The loser drops its reference separately; the client's is last.
        assert!(!r.release(idx, REF_RUNTIME, |_| {}));
        assert!(r.release(idx, REF_CLIENT, |_| {}));
        assert_eq!(r.in_use(), 0);
    }

    #[test]
    fn a_worker_completing_an_abandoned_task_frees_it() {
        let o = OwnedRecords::new(1);
        let r = o.view();
        let idx = r.alloc(1).unwrap();
        let rec = r.get(idx);
        rec.mark_submitted();
        assert!(
            !r.release(idx, REF_CLIENT, |_| {}),
            "the client gave up its handle"
        );
        assert_eq!(
            rec.complete(status::OK, true),
            Completion::Won {
                waiter: false,
                last: true
            }
        );
    }

    #[test]
    fn a_checked_release_leaves_a_reused_index_alone() {
        let o = OwnedRecords::new(1);
        let r = o.view();
        let idx = r.alloc(1).unwrap();
        let seen = r.get(idx).state.load(Ordering::Acquire);
        // Freed and handed to owner 2 between the reaper's look and its act.
        assert!(r.release(idx, REF_CLIENT, |_| {}));
        assert_eq!(r.alloc(2), Some(idx));
        assert!(
            !r.release_checked(idx, REF_CLIENT, Some(seen), |_| {}),
            "another generation"
        );
        assert_eq!(
            r.get(idx).state.load(Ordering::Acquire) & REF_CLIENT,
            REF_CLIENT,
            "owner 2 keeps its reference"
        );
    }

    #[test]
    fn a_free_abandoned_by_a_dead_client_is_finished() {
        let o = OwnedRecords::new(2);
        let r = o.view();
        let idx = r.alloc(1).unwrap();
        let rec = r.get(idx);
        // The client's last drop, then death before free(): simulate by
        // dropping the bit the way release does, without freeing.
        let s = rec.state.load(Ordering::Acquire);
        rec.state
            .store((s & !REF_CLIENT) | CLIENT_FREEING, Ordering::Release);
        let seen = rec.state.load(Ordering::Acquire);
        assert!(r.finish_abandoned_free(idx, seen));
        assert!(!r.finish_abandoned_free(idx, seen), "only once");
        assert_eq!(r.in_use(), 0);
        assert_eq!(r.alloc(3), Some(idx), "back in the pool");
    }

    #[test]
    fn concurrent_alloc_free_never_hands_out_a_record_twice() {
        let o = std::sync::Arc::new(OwnedRecords::new(64));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let o = o.clone();
                std::thread::spawn(move || {
                    let r = o.view();
                    for _ in 0..20_000 {
                        if let Some(i) = r.alloc(t + 1) {
                            let rec = r.get(i);
                            // Claim it: a record handed out twice trips this.
                            assert_eq!(rec.submit_ns.swap(u64::from(t) + 1, Ordering::AcqRel), 0);
                            rec.submit_ns.store(0, Ordering::Release);
                            r.release(i, REF_CLIENT, |_| {});
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(o.view().in_use(), 0);
    }
}
