//! The record protocol both sides follow: how a task's record is filled and
//! published, where its payloads live, who frees them, and how a lane's
//! sleeping consumer is woken. Clients and the runtime share these functions,
//! so a record always means the same thing to both.

use std::cell::UnsafeCell;
use std::sync::atomic::Ordering;

use crate::alloc::Arena;
use crate::lane::Lane;
use crate::record::{INLINE, INLINE_BYTES, TaskRecord};
use crate::sync::{coarse_now_ns, futex_wake};

/// Task input lives in the runtime data segment (a subtask's), not the client's.
pub const FLAG_IN_RUNTIME_ARENA: u32 = 1;
/// The task's coroutine is parked on a worker (set before the worker stops
/// showing the record as running).
pub const FLAG_PARKED: u32 = 1 << 31;
/// The task was handed to the network thread (set before the worker stops
/// showing the record as running), which now holds its runtime reference.
pub const FLAG_FORWARDED: u32 = 1 << 30;
/// `waker` of records the network thread submitted: their completion is
/// posted to it instead of waking a worker.
pub const NET_WAKER: u32 = u32::MAX;
/// The id of the executor the network thread runs peers' quick tasks on
/// (the daemon's `Worker::for_network`). Their subtasks name `id + 1`, the network
/// thread's waker, so that a subtask's completion wakes that thread.
pub const NETWORK_EXECUTOR: u32 = NET_WAKER - 1;

/// Payload bytes: in the record when `off` is INLINE, else in `arena`;
/// None when the offset and length (words in shared memory) do not lie
/// inside the record or the arena's data area. The caller holds a reference
/// to the record and has acquired the state that published the bytes.
///
/// This is the client's view of its own task's output, lent in place
/// (`TaskHandle::wait_with`): a client trusts the runtime it submits to.
/// The runtime never borrows what a client wrote; it copies it.
pub fn payload<'r>(
    arena: &'r Arena,
    inline: &'r UnsafeCell<[u8; INLINE_BYTES]>,
    off: u64,
    len: u32,
) -> Option<&'r [u8]> {
    let len = len as usize;
    if off == INLINE {
        // SAFETY: written before the publishing store the caller acquired.
        (len <= INLINE_BYTES).then(|| unsafe { &(&*inline.get())[..len] })
    } else {
        let p = arena.span(off, len as u64)?;
        // SAFETY: p..p+len lies inside the arena's mapped data area.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }
}

/// A completed task's output, where the completer put it (valid once DONE
/// was acquired and while a reference to the record is held); None when
/// the record's words point outside where outputs live.
pub fn output_bytes<'r>(runtime_arena: &'r Arena, rec: &'r TaskRecord) -> Option<&'r [u8]> {
    payload(
        runtime_arena,
        &rec.inline_out,
        rec.out_offset.load(Ordering::Relaxed),
        rec.out_len.load(Ordering::Relaxed),
    )
}

/// Frees a record's payload blocks; runs once, when its last reference goes.
pub fn free_payloads(client_arena: &Arena, runtime_arena: &Arena, rec: &TaskRecord) {
    let inp = rec.in_offset.load(Ordering::Relaxed);
    if inp != INLINE {
        let arena = if rec.flags.load(Ordering::Relaxed) & FLAG_IN_RUNTIME_ARENA != 0 {
            runtime_arena
        } else {
            client_arena
        };
        let _ = arena.free(inp);
    }
    let out = rec.out_offset.load(Ordering::Relaxed);
    if out != INLINE {
        let _ = runtime_arena.free(out);
    }
}

/// Records carry payload lengths in 32 bits: a longer one is refused, not
/// cut short.
pub fn check_payload_len(len: usize, what: &str) -> Result<(), String> {
    if u32::try_from(len).is_err() {
        return Err(format!(
            "a task's {what} is at most 4 GiB - 1 bytes; this one has {len}: split it into several tasks"
        ));
    }
    Ok(())
}

/// Writes a task into an allocated, unpublished record: header, deadline
/// and input (inline when small, else a block of `arena` owned by `owner`).
/// The error is the input length that found no room. Clients and the
/// runtime share this, so a record always means the same thing.
#[allow(clippy::too_many_arguments)]
pub fn fill_record(
    task_timeout_ns: u64,
    arena: &Arena,
    rec: &TaskRecord,
    pool: u32,
    method: u32,
    input: &[u8],
    owner: u32,
    flags: u32,
) -> Result<(), usize> {
    debug_assert!(
        check_payload_len(input.len(), "input").is_ok(),
        "callers check the length"
    );
    rec.pool_id.store(pool, Ordering::Relaxed);
    rec.method.store(method, Ordering::Relaxed);
    rec.flags.store(flags, Ordering::Relaxed);
    let now = coarse_now_ns();
    rec.submit_ns.store(now, Ordering::Relaxed);
    rec.deadline_ns
        .store(now + task_timeout_ns, Ordering::Relaxed);
    if input.len() <= INLINE_BYTES {
        // SAFETY: the record is allocated to the caller and not yet published.
        unsafe { (&mut *rec.inline_in.get())[..input.len()].copy_from_slice(input) };
    } else {
        let off = arena.alloc(input.len(), owner).ok_or(input.len())?;
        // SAFETY: the fresh block holds at least input.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), arena.ptr(off), input.len()) };
        rec.in_offset.store(off, Ordering::Relaxed);
    }
    rec.in_len.store(input.len() as u32, Ordering::Relaxed);
    Ok(())
}

/// Wakes a lane's worker if it announced sleep. Producers call this after
/// every push; the common case is one load of a shared cache line.
#[inline]
pub fn ring_lane(lane: &Lane<'_>) {
    if take_doorbell(lane) {
        futex_wake(&lane.header.doorbell, 1);
    }
}

/// True for the one producer that finds the lane's consumer asleep (or
/// about to be) and must wake it; the load first keeps the common case, an
/// awake consumer, free of a locked instruction.
pub fn take_doorbell(lane: &Lane<'_>) -> bool {
    lane.header.doorbell.load(Ordering::SeqCst) == 1
        && lane.header.doorbell.swap(0, Ordering::SeqCst) == 1
}

pub fn ring_lane_force(lane: &Lane<'_>) {
    lane.header.doorbell.store(0, Ordering::SeqCst);
    futex_wake(&lane.header.doorbell, 1);
}

/// A live process's start time in clock ticks since boot (field 22 of
/// /proc/PID/stat); with the pid it names a process uniquely. None for a
/// process that is gone, or a zombie (dead, only not yet waited for).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Fields after the command: state is field 3, starttime field 22.
    if matches!(fields.next(), Some("Z") | Some("X") | None) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Where the input of a task's record lies, checked as the runtime must
/// before it reads a byte of it: inline within the record's room, or in one
/// block of `arena` allocated to `owner`, from its payload's start, no byte
/// past it. `rec`'s words are read once each (anyone may change them
/// meanwhile; the span returned was valid when checked, and lies in mapped
/// memory whatever happens after). The error says what is wrong.
pub fn input_span(
    rec: &TaskRecord,
    arena: &Arena,
    owner: u32,
    segment: &str,
) -> Result<(*const u8, usize), String> {
    let off = rec.in_offset.load(Ordering::Relaxed);
    let len = rec.in_len.load(Ordering::Relaxed) as usize;
    if off == INLINE {
        return if len <= INLINE_BYTES {
            Ok((rec.inline_in.get().cast::<u8>().cast_const(), len))
        } else {
            Err(format!(
                "bad input: an inline input holds at most {INLINE_BYTES} bytes, the record says {len}"
            ))
        };
    }
    arena
        .owned_span(off, len as u64, owner)
        .map(|p| (p.cast_const(), len))
        .map_err(|e| {
            format!("bad input: {len} bytes at offset {off} of the {segment} segment: {e}")
        })
}
