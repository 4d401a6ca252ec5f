//! [`Arena::reclaim_owner`]: frees the blocks a dead owner still holds. It
//! is the one operation that walks the region (the block-start bitmap, up
//! to the cursor) instead of working on a block it is handed, and the one
//! whose caller must know the owner is dead (see "What callers must
//! guarantee" in the module documentation).

use std::sync::atomic::Ordering;

use super::Arena;
use super::layout::{BLOCK_MAGIC, HDR, STATE_ALLOCATED, STATE_FREE, UNIT_SHIFT};

impl Arena {
    /// Frees every block currently allocated to `owner` (a dead client) and
    /// returns how many it freed. Safe while other threads and processes
    /// allocate and free: each block is taken only by a CAS from "allocated
    /// to `owner`" to free, so it never races a concurrent `free` into a
    /// double free, and other owners' blocks are never touched. It walks the
    /// block-start bitmap up to the cursor: O(carved bytes / 4 KiB) words.
    pub fn reclaim_owner(&self, owner: u32) -> usize {
        if owner == 0 {
            return 0;
        }
        let want = STATE_ALLOCATED | u64::from(owner);
        // The cursor is a word anyone may write: never walk past the data area.
        let end = self
            .control()
            .cursor
            .cursor
            .load(Ordering::Acquire)
            .min(self.layout.data_end);
        let first_unit = self.layout.data_off >> UNIT_SHIFT;
        let end_unit = end >> UNIT_SHIFT;
        let mut freed = 0;
        for w in first_unit / 64..end_unit.div_ceil(64) {
            let mut bits = self.bitmap_word(w).load(Ordering::Acquire);
            while bits != 0 {
                let unit = w * 64 + u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let block = unit << UNIT_SHIFT;
                if block < self.layout.data_off || block + HDR > self.layout.data_end {
                    continue;
                }
                let hdr = self.header_at(block);
                if hdr.state.load(Ordering::Relaxed) != want {
                    continue;
                }
                let meta = hdr.meta.load(Ordering::Relaxed);
                let class = (meta & 0xFF) as usize;
                if meta >> 8 != BLOCK_MAGIC || class >= self.layout.num_classes as usize {
                    continue;
                }
                if hdr
                    .state
                    .compare_exchange(want, STATE_FREE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    // The bitmap bit (read with Acquire) was published after
                    // the header was written, and `meta` never changes
                    // (unless someone wrote over it: checked above).
                    self.release(block, class);
                    freed += 1;
                }
            }
        }
        freed
    }
}
