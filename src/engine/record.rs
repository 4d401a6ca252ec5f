//! Task records: fixed-size slots in the main segment that carry one task
//! from submission to completion, and the lock-free pool they come from.
//!
//! A record is shared by two parties, each holding a reference bit: the
//! client (until it has read the result) and the runtime (from submission
//! until the worker is done with it). Whoever drops the last bit frees the
//! record and its payload blocks, so neither side frees memory the other may
//! still read, whatever order they finish in, and a timed-out task can keep
//! running without its record being reused under it.
//!
//! Completion is claimed: the worker (with a result) or the timekeeper (with
//! a timeout) moves the state to COMPLETING by CAS, writes status and output,
//! then stores DONE. Only one of them can win, so a client never sees a
//! timeout status with a half-written result or the reverse.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

pub const FREE: u32 = 0;
pub const ALLOCATED: u32 = 1;
pub const SUBMITTED: u32 = 2;
pub const RUNNING: u32 = 3;
pub const COMPLETING: u32 = 4;
pub const DONE: u32 = 5;
/// Set on the state word by a client that sleeps on it.
pub const WAITER: u32 = 0x100;
pub const STATE_MASK: u32 = 0xff;

pub const REF_CLIENT: u32 = 1;
pub const REF_RUNTIME: u32 = 2;

/// Payload offsets meaning "in the record itself".
pub const INLINE: u64 = u64::MAX;
/// Inline payload capacity, each way.
pub const INLINE_BYTES: usize = 64;

/// `owner` of records the runtime submits itself (subtasks).
pub const RUNTIME_OWNER: u32 = u32::MAX;
/// `waker` when nobody but the client waits.
pub const NO_WAKER: u32 = 0;
pub const NONE: u32 = u32::MAX;

/// Result status of a task, as stored in the record.
pub mod status {
    pub const OK: i32 = 0;
    pub const TIMED_OUT: i32 = 1;
    pub const MODULE_ERROR: i32 = 2;
    pub const NO_SUCH_POOL: i32 = 3;
    pub const NO_SUCH_METHOD: i32 = 4;
    pub const STOPPING: i32 = 5;
    pub const BAD_INPUT: i32 = 6;
}

/// One task, 256 bytes. Every field another process reads is an atomic or
/// is published by the state word's Release store and read after its
/// Acquire load.
#[repr(C, align(64))]
pub struct TaskRecord {
    pub state: AtomicU32,
    pub refs: AtomicU32,
    pub next_free: AtomicU32,
    /// Client slot + 1, or [`RUNTIME_OWNER`].
    pub owner: AtomicU32,
    pub status: AtomicI32,
    /// Worker id + 1 to wake when this task completes (a parent task waits).
    pub waker: AtomicU32,
    pub pool_id: AtomicU32,
    pub method: AtomicU32,
    pub task_id: AtomicU64,
    /// CLOCK_MONOTONIC deadline in ns (submission + task_timeout).
    pub deadline_ns: AtomicU64,
    pub submit_ns: AtomicU64,
    pub in_offset: AtomicU64,
    pub out_offset: AtomicU64,
    pub in_len: AtomicU32,
    pub out_len: AtomicU32,
    pub lane: AtomicU32,
    pub flags: AtomicU32,
    _pad: [u8; 40],
    pub inline_in: UnsafeCell<[u8; INLINE_BYTES]>,
    pub inline_out: UnsafeCell<[u8; INLINE_BYTES]>,
}

const _: () = assert!(size_of::<TaskRecord>() == 256);

// SAFETY: the UnsafeCell payloads are written by one party and read by the
// other only across the state word's Release/Acquire handoff.
unsafe impl Sync for TaskRecord {}

impl TaskRecord {
    #[inline]
    pub fn phase(&self) -> u32 {
        self.state.load(Ordering::Acquire) & STATE_MASK
    }

    /// Claims the right to complete the task if it is still `from` (queued
    /// or running). The waiter bit is kept.
    #[inline]
    pub fn claim_completion(&self, from: &[u32]) -> bool {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if !from.contains(&(s & STATE_MASK)) {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                (s & WAITER) | COMPLETING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Publishes DONE after a successful claim; true when a client sleeps on
    /// the state word and must be woken.
    #[inline]
    pub fn publish_done(&self) -> bool {
        self.state.swap(DONE, Ordering::AcqRel) & WAITER != 0
    }
}

/// The pool's control words, in the main segment.
#[repr(C, align(64))]
pub struct PoolHeader {
    /// Treiber stack head: ABA tag (high 32 bits) and record index + 1.
    pub free_head: AtomicU64,
    /// Records ever handed out from the never-used tail of the array.
    pub carved: AtomicU32,
    pub capacity: u32,
    /// Records currently allocated.
    pub in_use: AtomicU32,
    _pad: [u8; 44],
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
        self.header.in_use.store(0, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &'a TaskRecord {
        &self.records[idx as usize]
    }

    /// Takes a free record for `owner`, or None when all are in use. Freed
    /// records are reused before the untouched tail, so pages of the segment
    /// are only touched as the load needs them.
    #[inline]
    pub fn alloc(&self, owner: u32) -> Option<u32> {
        let idx = self.pop_free().or_else(|| {
            let c = self.header.carved.fetch_add(1, Ordering::Relaxed);
            if c < self.header.capacity {
                Some(c)
            } else {
                self.header.carved.fetch_sub(1, Ordering::Relaxed);
                None
            }
        })?;
        let r = self.get(idx);
        r.owner.store(owner, Ordering::Relaxed);
        self.owners[idx as usize].store(owner, Ordering::Relaxed);
        r.refs.store(REF_CLIENT, Ordering::Relaxed);
        r.waker.store(NO_WAKER, Ordering::Relaxed);
        r.in_offset.store(INLINE, Ordering::Relaxed);
        r.out_offset.store(INLINE, Ordering::Relaxed);
        r.in_len.store(0, Ordering::Relaxed);
        r.out_len.store(0, Ordering::Relaxed);
        r.flags.store(0, Ordering::Relaxed);
        r.status.store(0, Ordering::Relaxed);
        r.state.store(ALLOCATED, Ordering::Release);
        self.header.in_use.fetch_add(1, Ordering::Relaxed);
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
            let next = self.get(idx).next_free.load(Ordering::Relaxed);
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

    /// Returns a record to the pool. Callers go through [`Records::release`].
    fn free(&self, idx: u32) {
        let r = self.get(idx);
        self.owners[idx as usize].store(0, Ordering::Relaxed);
        r.owner.store(0, Ordering::Relaxed);
        r.state.store(FREE, Ordering::Release);
        self.header.in_use.fetch_sub(1, Ordering::Relaxed);
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
        let r = self.get(idx);
        let prev = r.refs.fetch_and(!which, Ordering::AcqRel);
        if prev & which == 0 {
            // Already dropped (the reaper and a late client can both try).
            return false;
        }
        if prev == which {
            on_free(r);
            self.free(idx);
            true
        } else {
            false
        }
    }

    pub fn in_use(&self) -> u32 {
        self.header.in_use.load(Ordering::Relaxed)
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
            let mut header: Box<PoolHeader> = Box::new(unsafe { std::mem::zeroed() });
            header.capacity = n;
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
        r.get(i).refs.fetch_or(REF_RUNTIME, Ordering::Relaxed);
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
    fn completion_is_claimed_once() {
        let o = OwnedRecords::new(1);
        let r = o.view();
        let rec = r.get(r.alloc(1).unwrap());
        rec.state.store(RUNNING | WAITER, Ordering::Relaxed);
        assert!(rec.claim_completion(&[SUBMITTED, RUNNING]));
        assert!(
            !rec.claim_completion(&[SUBMITTED, RUNNING]),
            "the timekeeper loses after the worker"
        );
        assert!(rec.publish_done(), "the waiter bit survives the claim");
        assert_eq!(rec.phase(), DONE);
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
                            assert_eq!(rec.task_id.swap(u64::from(t) + 1, Ordering::AcqRel), 0);
                            rec.task_id.store(0, Ordering::Release);
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
