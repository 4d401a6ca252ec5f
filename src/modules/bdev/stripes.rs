//! The striped reader-writer locks that order overlapping I/O on a device:
//! which locks an extent takes, and in what order. The locking discipline
//! (ascending order, never held across a yield) is the device's concurrency
//! argument, so it is kept in one small file.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bytes one stripe lock covers.
const STRIPE_SHIFT: u32 = 16;
/// Most stripe locks a device has; stripes beyond wrap around onto them.
const MAX_STRIPES: u64 = 1024;

/// Reader-writer locks over 64 KiB stripes of the device (wrapping onto at
/// most [`MAX_STRIPES`] locks). An operation takes its stripes in ascending
/// lock order, so two operations never wait on each other in a cycle, and it
/// never yields while it holds them.
pub(super) struct Stripes {
    locks: Box<[RwLock<()>]>,
}

impl Stripes {
    pub(super) fn new(size: u64) -> Stripes {
        let n = size.div_ceil(1 << STRIPE_SHIFT).clamp(1, MAX_STRIPES);
        Stripes {
            locks: (0..n).map(|_| RwLock::new(())).collect(),
        }
    }

    /// The lock indices covering `off..off+len` (len > 0), ascending, as
    /// two ranges (the second empty unless the stripes wrap).
    fn indices(&self, off: u64, len: u64) -> [std::ops::Range<usize>; 2] {
        let n = self.locks.len() as u64;
        let first = off >> STRIPE_SHIFT;
        let last = (off + len - 1) >> STRIPE_SHIFT;
        if last - first + 1 >= n {
            return [0..n as usize, 0..0];
        }
        let (a, b) = ((first % n) as usize, (last % n) as usize);
        if a <= b {
            [a..b + 1, 0..0]
        } else {
            [0..b + 1, a..n as usize]
        }
    }

    pub(super) fn read(&self, off: u64, len: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        self.indices(off, len)
            .into_iter()
            .flatten()
            .map(|i| self.locks[i].read().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    pub(super) fn write(&self, off: u64, len: u64) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.indices(off, len)
            .into_iter()
            .flatten()
            .map(|i| self.locks[i].write().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
