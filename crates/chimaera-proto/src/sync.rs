//! Cross-process waiting: futexes on words in shared memory (never the
//! private variant, since the waker is another process), and a monotonic
//! clock that every process on the host reads alike.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-parameter; both clocks used here always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds of CLOCK_MONOTONIC: comparable across processes of one host,
/// unlike `Instant`, which cannot be shared.
#[inline]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_MONOTONIC in ms, never 0 (0 means "never" where it is stored):
/// for elapsed times (peer liveness, heartbeat deadlines), which a step of
/// the wall clock must not move.
#[inline]
pub fn mono_ms() -> u64 {
    now_ns() / 1_000_000 + 1
}

/// CLOCK_MONOTONIC_COARSE in ns: the same clock, read from the last tick
/// (a few ms of resolution) at a fraction of the cost. Task deadlines need
/// no more, and the submit path reads it once per task.
#[inline]
pub fn coarse_now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are
/// allowed; callers re-check their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: word is a live, aligned u32 for the duration of the call; the
    // kernel only reads it and the timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` waiters on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: word is a live, aligned u32; FUTEX_WAKE does not touch memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// Spin-loop hint used in bounded busy waits.
#[inline]
pub fn relax() {
    std::hint::spin_loop();
}

/// Asks for the cache line at `p`, for writing, ahead of use: a worker's
/// next records live in lines the client wrote last, and fetching several at
/// once overlaps the cross-core transfers that otherwise come one by one.
#[inline]
pub fn prefetch_for_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
