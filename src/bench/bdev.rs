//! `chimaera bench bdev`: block I/O through a RAM bdev pool against memcpy,
//! measured in one run so the ratio means something on a noisy machine.
//!
//! A private daemon with one worker (pinned to the first allowed CPU) holds
//! a 64 MiB RAM pool; this thread (pinned to the last) keeps a window of
//! writes or reads in flight, cycling through the pool. A write copies the
//! client's buffer into shared memory and the worker copies it into the
//! device; a read is the same in reverse, ending in a buffer of the
//! client's. The two copies run on two cores at once, so throughput is
//! bounded by the slower copy plus the task round trip.
//!
//! memcpy_gbps is the baseline: 1 MiB copies from one buffer into
//! successive 1 MiB slots of a buffer as large as the pool (the same cache
//! footprint as the device); memcpy_hot_gbps, 1 MiB into 1 MiB, both in
//! cache, is there for reference. GB/s are 10^9 bytes of I/O payload a
//! second.
//!
//! Every figure is the best of [`TRIALS`] short trials: on a shared machine
//! other work takes a core now and then, and the I/O path needs two at once
//! where memcpy needs one, so a single long average would measure the
//! neighbours more than the path.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchDaemon, free_port};
use crate::modules::bdev::{BdevClient, IoBuf};
use chimaera_client::TaskHandle;

#[derive(Debug, Serialize)]
pub struct BdevReport {
    pub write_4k_gbps: f64,
    pub read_4k_gbps: f64,
    pub write_1m_gbps: f64,
    pub read_1m_gbps: f64,
    pub memcpy_gbps: f64,
    pub memcpy_hot_gbps: f64,
    pub write_1m_over_memcpy: f64,
    pub read_1m_over_memcpy: f64,
    pub write_4k_iops: f64,
    pub read_4k_iops: f64,
    pub pool_bytes: u64,
    pub window_4k: usize,
    pub window_1m: usize,
    pub workers: u32,
    /// Each figure is the best of this many trials ...
    pub trials: u32,
    /// ... of this many seconds each.
    pub seconds_per_trial: f64,
}

const POOL: u64 = 64 << 20;
const MIB: usize = 1 << 20;
const KIB4: usize = 4096;
/// 1 MiB writes take 2 MiB input blocks (the data plus its offset): 4 in
/// flight use 8 of the bench daemon's 32 MiB client data segment. More do
/// not go faster: two already keep both copies busy.
const WINDOW_1M: usize = 4;
const WINDOW_4K: usize = 64;
/// Trials per figure, and how long each runs.
const TRIALS: u32 = 5;
const TRIAL: Duration = Duration::from_millis(200);

/// The best of [`TRIALS`] runs of `f` (each a rate).
fn best_of(mut f: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    let mut best = 0.0f64;
    for _ in 0..TRIALS {
        best = best.max(f()?);
    }
    Ok(best)
}

/// Byte `x` of the device is `pattern(x % 4096)`, whichever phase wrote it,
/// so any read can be checked against the same buffer.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % KIB4) as u8).wrapping_mul(37) ^ 0x5A)
        .collect()
}

/// GB/s of 1 MiB copies from `src` into successive 1 MiB slots of `dst`.
fn memcpy_rate(src: &[u8], dst: &mut [u8], time: Duration) -> f64 {
    let slots = dst.len() / src.len();
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut i = 0;
    while start.elapsed() < time {
        for _ in 0..16 {
            let slot = &mut dst[(i % slots) * src.len()..][..src.len()];
            slot.copy_from_slice(black_box(src));
            black_box(&*slot);
            i += 1;
            bytes += src.len() as u64;
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Writes of `io` bytes, `window` in flight, cycling through the pool, for
/// `time` (or one pass when `time` is None). Returns bytes per second.
fn writes(
    dev: &BdevClient<'_>,
    base: u64,
    io: usize,
    window: usize,
    time: Option<Duration>,
) -> Result<f64, String> {
    let mut buf = IoBuf::from_slice(&pattern(io));
    let slots = POOL / io as u64;
    let mut inflight: VecDeque<TaskHandle<'_>> = VecDeque::with_capacity(window);
    let start = Instant::now();
    let mut n = 0u64;
    let done = |n: u64| match time {
        Some(t) => n.is_multiple_of(64) && start.elapsed() >= t,
        None => n == slots,
    };
    while !done(n) {
        if inflight.len() == window {
            let h = inflight.pop_front().expect("the window is full");
            h.wait().map_err(|e| format!("write: {e}"))?;
        }
        let off = base + (n % slots) * io as u64;
        inflight.push_back(
            dev.submit_write(off, &mut buf)
                .map_err(|e| format!("write: {e}"))?,
        );
        n += 1;
    }
    for h in inflight {
        h.wait().map_err(|e| format!("write: {e}"))?;
    }
    Ok(n as f64 * io as f64 / start.elapsed().as_secs_f64())
}

/// Waits for a read and copies its output (in shared memory) into `dst`.
fn take_read(h: TaskHandle<'_>, dst: &mut [u8]) -> Result<(), String> {
    h.wait_with(|out| {
        if out.len() == dst.len() {
            dst.copy_from_slice(out);
            Ok(())
        } else {
            Err(format!(
                "read returned {} bytes of {}",
                out.len(),
                dst.len()
            ))
        }
    })
    .map_err(|e| format!("read: {e}"))?
}

/// Reads of `io` bytes into a buffer of ours, like [`writes`]; checks the
/// last one against the pattern (outside the timing's hot loop).
fn reads(
    dev: &BdevClient<'_>,
    base: u64,
    io: usize,
    window: usize,
    time: Duration,
) -> Result<f64, String> {
    let mut dst = vec![0u8; io];
    let slots = POOL / io as u64;
    let mut inflight: VecDeque<TaskHandle<'_>> = VecDeque::with_capacity(window);
    let start = Instant::now();
    let mut n = 0u64;
    while !(n.is_multiple_of(64) && start.elapsed() >= time) {
        if inflight.len() == window {
            take_read(inflight.pop_front().expect("the window is full"), &mut dst)?;
        }
        let off = base + (n % slots) * io as u64;
        inflight.push_back(
            dev.submit_read(off, io as u64)
                .map_err(|e| format!("read: {e}"))?,
        );
        n += 1;
    }
    for h in inflight {
        take_read(h, &mut dst)?;
    }
    let rate = n as f64 * io as f64 / start.elapsed().as_secs_f64();
    if dst != pattern(io) {
        return Err(format!(
            "a {io}-byte read returned other bytes than were written"
        ));
    }
    Ok(rate)
}

pub fn bdev() -> Result<BdevReport, String> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    // The daemon pins its worker to the first allowed CPU; this thread takes
    // the last (the daemon is started before, so it does not inherit this).
    let workers = 1;
    let mut daemon = BenchDaemon::start_with("bdev", workers, free_port()?, "")?;
    let client = daemon.connect()?;
    if let Some(c) = ids.last() {
        core_affinity::set_for_current(*c);
    }
    let src = pattern(MIB);
    let mut dst = vec![0u8; POOL as usize];
    // Touch every page first: page faults are not memcpy.
    memcpy_rate(&src, &mut dst, Duration::from_millis(100));
    let memcpy_gbps = best_of(|| Ok(memcpy_rate(&src, &mut dst, TRIAL)))?;
    let memcpy_hot_gbps = best_of(|| Ok(memcpy_rate(&src, &mut dst[..MIB], TRIAL)))?;
    drop(dst);

    let params = format!(r#"{{"kind":"ram","size":{POOL},"block_size":4096}}"#);
    let dev = BdevClient::create(&client, "bench", &params).map_err(|e| e.to_string())?;
    let extents = dev
        .allocate(POOL / 4096)
        .map_err(|e| format!("allocate: {e}"))?;
    let base = match extents.as_slice() {
        [e] if e.len == POOL => e.offset,
        other => return Err(format!("a fresh pool gave {other:?} for all its blocks")),
    };
    // One pass first: the device's pages and the segments' blocks are
    // faulted in before anything is timed.
    writes(&dev, base, MIB, WINDOW_1M, None)?;
    let write_1m = best_of(|| writes(&dev, base, MIB, WINDOW_1M, Some(TRIAL)))?;
    let read_1m = best_of(|| reads(&dev, base, MIB, WINDOW_1M, TRIAL))?;
    let write_4k = best_of(|| writes(&dev, base, KIB4, WINDOW_4K, Some(TRIAL)))?;
    let read_4k = best_of(|| reads(&dev, base, KIB4, WINDOW_4K, TRIAL))?;
    let stats = dev.stats().map_err(|e| e.to_string())?;
    if stats.blocks_used != POOL / 4096 || stats.writes == 0 || stats.reads == 0 {
        return Err(format!("the pool's stats do not add up: {stats:?}"));
    }
    drop(client);
    drop(daemon);
    let gbps = |bytes_per_s: f64| bytes_per_s / 1e9;
    Ok(BdevReport {
        write_4k_gbps: gbps(write_4k),
        read_4k_gbps: gbps(read_4k),
        write_1m_gbps: gbps(write_1m),
        read_1m_gbps: gbps(read_1m),
        memcpy_gbps,
        memcpy_hot_gbps,
        write_1m_over_memcpy: gbps(write_1m) / memcpy_gbps,
        read_1m_over_memcpy: gbps(read_1m) / memcpy_gbps,
        write_4k_iops: write_4k / KIB4 as f64,
        read_4k_iops: read_4k / KIB4 as f64,
        pool_bytes: POOL,
        window_4k: WINDOW_4K,
        window_1m: WINDOW_1M,
        workers,
        trials: TRIALS,
        seconds_per_trial: TRIAL.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_repeats_every_4k_so_any_phase_checks_against_it() {
        let big = pattern(MIB);
        let small = pattern(KIB4);
        assert!(big.chunks(KIB4).all(|c| c == small.as_slice()));
        assert_ne!(small[0], small[1]);
    }

    #[test]
    fn memcpy_rate_counts_the_bytes_it_copies() {
        let src = vec![7u8; 4096];
        let mut dst = vec![0u8; 4 * 4096];
        let rate = memcpy_rate(&src, &mut dst, Duration::from_millis(20));
        assert!(rate > 0.0);
        assert!(dst.iter().all(|&b| b == 7), "every slot was written");
    }
}
