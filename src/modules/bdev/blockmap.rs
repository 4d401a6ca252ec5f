//! The block allocator's bitmap, in memory only: which blocks are allocated,
//! first-fit allocation and all-or-nothing freeing. Keeping it free of files
//! and locks lets it be tested on its own; the device holds it under a mutex
//! and `mapfile` mirrors it on disk.

/// Blocks `start..start + count`, as (start, count).
pub(super) type Run = (u64, u64);
/// The bitmap words a change touched, as (first, last).
pub(super) type Touched = (usize, usize);

/// One bit per block, set when allocated. First fit: ALLOCATE is not the
/// data path, and a scan of the bitmap (32 KiB for 1 GiB of 4 KiB blocks)
/// costs microseconds.
#[derive(Debug)]
pub(super) struct BlockMap {
    pub(super) words: Vec<u64>,
    pub(super) blocks: u64,
    pub(super) used: u64,
}

impl BlockMap {
    pub(super) fn new(blocks: u64) -> BlockMap {
        BlockMap {
            words: vec![0; blocks.div_ceil(64) as usize],
            blocks,
            used: 0,
        }
    }

    fn is_set(&self, b: u64) -> bool {
        self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// The first block at or after `from` whose bit is `set`, or `blocks`.
    fn find(&self, from: u64, set: bool) -> u64 {
        let mut b = from;
        while b < self.blocks {
            let w = self.words[(b / 64) as usize];
            let w = if set { w } else { !w };
            let masked = w & (u64::MAX << (b % 64));
            if masked != 0 {
                return (b - b % 64 + u64::from(masked.trailing_zeros())).min(self.blocks);
            }
            b = b - b % 64 + 64;
        }
        self.blocks
    }

    /// Sets or clears blocks `start..start+n`; returns the words touched.
    pub(super) fn mark(&mut self, start: u64, n: u64, set: bool) -> Touched {
        for b in start..start + n {
            let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
            if set {
                self.words[w] |= bit;
            } else {
                self.words[w] &= !bit;
            }
        }
        if set {
            self.used += n;
        } else {
            self.used -= n;
        }
        ((start / 64) as usize, ((start + n - 1) / 64) as usize)
    }

    /// `n` blocks as runs (start, count): one run when a free run is long
    /// enough, else the first free runs in order. None when fewer are free.
    pub(super) fn allocate(&mut self, n: u64) -> Option<(Vec<Run>, Touched)> {
        if n == 0 || n > self.blocks - self.used {
            return None;
        }
        let mut runs = Vec::new();
        let mut at = 0;
        loop {
            let start = self.find(at, false);
            if start >= self.blocks {
                break;
            }
            let end = self.find(start, true);
            if end - start >= n {
                runs = vec![(start, n)];
                break;
            }
            at = end;
        }
        if runs.is_empty() {
            let mut left = n;
            let mut at = 0;
            while left > 0 {
                let start = self.find(at, false);
                let end = self.find(start, true);
                let take = (end - start).min(left);
                runs.push((start, take));
                left -= take;
                at = end;
            }
        }
        let mut touched = (usize::MAX, 0);
        for &(s, c) in &runs {
            let (lo, hi) = self.mark(s, c, true);
            touched = (touched.0.min(lo), touched.1.max(hi));
        }
        Some((runs, touched))
    }

    /// Frees runs (start, count) if every block of each is allocated and no
    /// two overlap; otherwise changes nothing and says why.
    pub(super) fn free(&mut self, runs: &[Run]) -> Result<Touched, String> {
        let mut sorted = runs.to_vec();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if pair[0].0 + pair[0].1 > pair[1].0 {
                return Err(format!(
                    "the extents at blocks {} and {} overlap",
                    pair[0].0, pair[1].0
                ));
            }
        }
        for &(s, c) in &sorted {
            if let Some(b) = (s..s + c).find(|&b| !self.is_set(b)) {
                return Err(format!("block {b} is not allocated"));
            }
        }
        let mut touched = (usize::MAX, 0);
        for &(s, c) in &sorted {
            let (lo, hi) = self.mark(s, c, false);
            touched = (touched.0.min(lo), touched.1.max(hi));
        }
        Ok(touched)
    }
}

#[cfg(test)]
mod tests;
