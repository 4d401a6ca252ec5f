//! [`Arena`], the allocator itself: `format` and `attach` (writing and
//! checking the arena header), the operations `alloc`, `free`, `capacity`,
//! `ptr` and `usage` (with its [`Usage`] snapshot), and under them what
//! they share: reaching the control block, a block header or a bitmap word
//! by offset, checking an offset handed in (`lookup`), the per-class
//! Treiber stacks (`pop`, `release`) and carving at the cursor (`carve`).
//! Reclaiming a dead owner's blocks is in `reclaim.rs`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::AllocError;
use super::layout::{
    ARENA_MAGIC, ARENA_VERSION, BLOCK_ALIGN, BLOCK_MAGIC, BlockHeader, Control, HDR, Layout,
    STATE_ALLOCATED, STATE_FREE, STATE_KIND_MASK, UNIT_BITS, UNIT_MASK, UNIT_SHIFT, class_cap,
    class_of,
};
use super::region::{Region, check_base};

/// A snapshot of an arena's occupancy.
///
/// The figures are read one after another while others may allocate, so
/// under concurrency they are approximate; at rest they are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Usable bytes (capacities) of the blocks currently allocated.
    pub allocated_bytes: u64,
    /// Blocks currently allocated.
    pub allocated_blocks: u64,
    /// Bytes ever carved from the data area, block headers included (the
    /// high-water mark: freed blocks are reused, never returned).
    pub carved_bytes: u64,
    /// Bytes of the data area, headers of future blocks included.
    pub capacity_bytes: u64,
}

/// An allocator arena over a [`Region`]. Cheap to clone; every clone (and
/// every process attached to the same memory) works on the same state.
#[derive(Debug, Clone)]
pub struct Arena {
    pub(super) region: Region,
    pub(super) layout: Layout,
}

impl Arena {
    /// Writes a fresh arena over the region: header (magic, version, sizes),
    /// an empty bitmap and empty free lists. The runtime calls it once at
    /// start, before any other process attaches; anything the region held is
    /// forgotten. The region must be at least
    /// [`MIN_REGION_LEN`](super::MIN_REGION_LEN) bytes, at most
    /// [`MAX_REGION_LEN`](super::MAX_REGION_LEN), and its base 64-byte aligned.
    pub fn format(region: Region) -> Result<Arena, AllocError> {
        check_base(region)?;
        let layout = Layout::for_len(region.len)?;
        let arena = Arena { region, layout };
        let c = arena.control();
        // Withdraw any previous arena first, so nobody attaches half-way.
        c.header.magic.store(0, Ordering::Release);
        // SAFETY: the bitmap lies inside the region (Layout::for_len puts it
        // before data_off <= len), nobody else uses the region during format
        // (caller contract), and zero is a valid AtomicU64.
        unsafe {
            std::ptr::write_bytes(
                region.base.add(layout.bitmap_off as usize),
                0,
                (layout.data_off - layout.bitmap_off) as usize,
            );
        }
        c.cursor.cursor.store(layout.data_off, Ordering::Relaxed);
        for class in &c.classes {
            class.head.store(0, Ordering::Relaxed);
            class.allocated.store(0, Ordering::Relaxed);
        }
        let h = &c.header;
        h.version.store(ARENA_VERSION.into(), Ordering::Relaxed);
        h.region_len.store(region.len as u64, Ordering::Relaxed);
        h.bitmap_off.store(layout.bitmap_off, Ordering::Relaxed);
        h.data_off.store(layout.data_off, Ordering::Relaxed);
        h.data_end.store(layout.data_end, Ordering::Relaxed);
        h.num_classes
            .store(layout.num_classes.into(), Ordering::Relaxed);
        h.magic.store(ARENA_MAGIC, Ordering::Release);
        Ok(arena)
    }

    /// Attaches to an arena another process (or this one) formatted over the
    /// same memory, possibly mapped at another address. Checks the magic, the
    /// version and that the header describes a region of this length.
    pub fn attach(region: Region) -> Result<Arena, AllocError> {
        check_base(region)?;
        let layout = Layout::for_len(region.len)?;
        let arena = Arena { region, layout };
        let h = &arena.control().header;
        let magic = h.magic.load(Ordering::Acquire);
        if magic != ARENA_MAGIC {
            return Err(AllocError::NotFormatted { found: magic });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != u64::from(ARENA_VERSION) {
            return Err(AllocError::VersionMismatch {
                found: version as u32,
                expected: ARENA_VERSION,
            });
        }
        let found_len = h.region_len.load(Ordering::Relaxed);
        if found_len != region.len as u64 {
            return Err(AllocError::Corrupt {
                why: format!(
                    "it was formatted for {found_len} bytes, the region is {} bytes",
                    region.len
                ),
            });
        }
        let found = Layout {
            bitmap_off: h.bitmap_off.load(Ordering::Relaxed),
            data_off: h.data_off.load(Ordering::Relaxed),
            data_end: h.data_end.load(Ordering::Relaxed),
            num_classes: h.num_classes.load(Ordering::Relaxed) as u32,
        };
        if found != layout {
            return Err(AllocError::Corrupt {
                why: format!("header layout {found:?}, expected {layout:?}"),
            });
        }
        Ok(arena)
    }

    /// Allocates at least `size` bytes for `owner`, a nonzero id (a client
    /// slot) that [`Arena::reclaim_owner`] uses to free a dead client's
    /// blocks. Returns the offset of the usable bytes from the region base
    /// (64-byte aligned), or `None` when no block of a fitting class is free
    /// and the region has no room left to carve one (also for `size == 0`,
    /// `owner == 0`, or a size larger than the largest class).
    ///
    /// Lock-free; safe from many threads in many processes.
    #[inline]
    pub fn alloc(&self, size: usize, owner: u32) -> Option<u64> {
        if size == 0 || owner == 0 {
            return None;
        }
        let class = class_of(size);
        if class >= self.layout.num_classes as usize {
            return None;
        }
        let state = STATE_ALLOCATED | u64::from(owner);
        if let Some(block) = self.pop(class) {
            return Some(self.hand_out(block, class, state));
        }
        if let Some(block) = self.carve(class, state) {
            return Some(block + HDR);
        }
        // The region is exhausted: take a free block of a larger class whole.
        for bigger in class + 1..self.layout.num_classes as usize {
            if let Some(block) = self.pop(bigger) {
                return Some(self.hand_out(block, bigger, state));
            }
        }
        None
    }

    /// Frees the block whose usable bytes start at `offset`, as returned by
    /// [`Arena::alloc`]. An offset that is not the start of a block, or a
    /// block that is already free, is refused with an error and changes
    /// nothing.
    #[inline]
    pub fn free(&self, offset: u64) -> Result<(), AllocError> {
        let (block, class) = self.lookup(offset)?;
        let hdr = self.header_at(block);
        let mut s = hdr.state.load(Ordering::Relaxed);
        loop {
            match s & STATE_KIND_MASK {
                STATE_ALLOCATED => {}
                STATE_FREE => return Err(AllocError::DoubleFree { offset }),
                _ => {
                    return Err(AllocError::BadOffset {
                        offset,
                        why: "the block's state word is corrupt",
                    });
                }
            }
            match hdr.state.compare_exchange_weak(
                s,
                STATE_FREE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.release(block, class);
        Ok(())
    }

    /// Usable capacity of the allocated block at `offset` (at least the size
    /// that was asked for; a power of two, at least 64).
    pub fn capacity(&self, offset: u64) -> Result<usize, AllocError> {
        let (block, class) = self.lookup(offset)?;
        match self.header_at(block).state.load(Ordering::Acquire) & STATE_KIND_MASK {
            STATE_ALLOCATED => Ok(class_cap(class) as usize),
            STATE_FREE => Err(AllocError::BadOffset {
                offset,
                why: "the block is free",
            }),
            _ => Err(AllocError::BadOffset {
                offset,
                why: "the block's state word is corrupt",
            }),
        }
    }

    /// Address of the usable bytes at `offset` in this process. Computing it
    /// is always safe; writing through it is sound only for the capacity of
    /// a block the caller allocated and has not freed. For an offset read
    /// from shared memory, use [`Arena::span`] or [`Arena::owned_span`].
    #[inline]
    pub fn ptr(&self, offset: u64) -> *mut u8 {
        self.region.base.wrapping_add(offset as usize)
    }

    /// The address of `len` bytes at `offset` if they lie inside the data
    /// area (no overflow, no byte outside it); None otherwise. One compare
    /// against bounds this process computed, so cheap enough per task.
    #[inline]
    pub fn span(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        (offset >= self.layout.data_off && end <= self.layout.data_end).then(|| self.ptr(offset))
    }

    /// As [`Arena::span`], and the bytes must lie in one block allocated to
    /// `owner`, from the start of its payload: what a task's input must be.
    /// The error says what is wrong.
    pub fn owned_span(&self, offset: u64, len: u64, owner: u32) -> Result<*mut u8, AllocError> {
        let (block, class) = self.lookup(offset)?;
        if len > class_cap(class) {
            return Err(AllocError::BadOffset {
                offset,
                why: "the length runs past the block",
            });
        }
        if self.header_at(block).state.load(Ordering::Acquire) != STATE_ALLOCATED | u64::from(owner)
        {
            return Err(AllocError::BadOffset {
                offset,
                why: "the block is not allocated to the task's owner",
            });
        }
        self.span(offset, len).ok_or(AllocError::BadOffset {
            offset,
            why: "outside the arena's data area",
        })
    }

    /// As [`Arena::free`], only if the block is allocated to `owner`: the
    /// runtime frees a client's input only from that client's blocks.
    pub fn free_owned(&self, offset: u64, owner: u32) -> Result<(), AllocError> {
        let (block, class) = self.lookup(offset)?;
        let want = STATE_ALLOCATED | u64::from(owner);
        if self
            .header_at(block)
            .state
            .compare_exchange(want, STATE_FREE, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Err(AllocError::BadOffset {
                offset,
                why: "the block is not allocated to this owner",
            });
        }
        self.release(block, class);
        Ok(())
    }

    /// Bytes and blocks currently allocated (free-listed blocks are not
    /// counted), bytes ever carved (the high-water mark) and the size of the
    /// data area.
    pub fn usage(&self) -> Usage {
        let c = self.control();
        let mut allocated_bytes = 0u64;
        let mut allocated_blocks = 0u64;
        for (k, class) in c.classes[..self.layout.num_classes as usize]
            .iter()
            .enumerate()
        {
            let n = class.allocated.load(Ordering::Relaxed);
            allocated_blocks = allocated_blocks.wrapping_add(n);
            allocated_bytes = allocated_bytes.wrapping_add(n.wrapping_mul(class_cap(k)));
        }
        let cursor = c.cursor.cursor.load(Ordering::Relaxed);
        Usage {
            allocated_bytes,
            allocated_blocks,
            carved_bytes: cursor
                .min(self.layout.data_end)
                .saturating_sub(self.layout.data_off),
            capacity_bytes: self.layout.data_end - self.layout.data_off,
        }
    }

    // ----- internals -------------------------------------------------------

    pub(super) fn control(&self) -> &Control {
        // SAFETY: the region is at least MIN_REGION_LEN (> size_of::<Control>)
        // bytes, 64-byte aligned (checked by format/attach), mapped for the
        // life of `self` (Region::new contract), and Control is made only of
        // atomics, valid for any bit pattern and meant for shared access.
        unsafe { &*self.region.base.cast::<Control>() }
    }

    /// The header of the block starting at `block` (an offset from the base).
    /// Callers pass only offsets in `data_off..data_end - HDR` that are
    /// multiples of 64; the debug assertion checks it.
    #[inline]
    pub(super) fn header_at(&self, block: u64) -> &BlockHeader {
        debug_assert!(block >= self.layout.data_off && block + HDR <= self.layout.data_end);
        debug_assert!(block.is_multiple_of(BLOCK_ALIGN as u64));
        // SAFETY: `block..block + 64` lies in the data area of the mapped,
        // 64-byte-aligned region, so the pointer is aligned and in bounds;
        // BlockHeader is all atomics, valid for any bit pattern.
        unsafe { &*self.region.base.add(block as usize).cast::<BlockHeader>() }
    }

    #[inline]
    pub(super) fn bitmap_word(&self, w: u64) -> &AtomicU64 {
        debug_assert!(self.layout.bitmap_off + w * 8 + 8 <= self.layout.data_off);
        // SAFETY: word `w` covers units below len / 64, so it lies inside
        // the bitmap (bitmap_off..data_off) of the mapped region, 8-aligned
        // because bitmap_off is 64-aligned; any bit pattern is a valid AtomicU64.
        unsafe {
            &*self
                .region
                .base
                .add((self.layout.bitmap_off + w * 8) as usize)
                .cast::<AtomicU64>()
        }
    }

    /// Maps a payload offset to (block offset, class), checking that it is
    /// the start of a carved block's payload. Does not look at the state.
    #[inline]
    fn lookup(&self, offset: u64) -> Result<(u64, usize), AllocError> {
        let bad = |why| Err(AllocError::BadOffset { offset, why });
        if !offset.is_multiple_of(BLOCK_ALIGN as u64) {
            return bad("not 64-byte aligned");
        }
        if offset < self.layout.data_off + HDR || offset >= self.layout.data_end {
            return bad("outside the arena's data area");
        }
        let block = offset - HDR;
        let unit = block >> UNIT_SHIFT;
        if self.bitmap_word(unit / 64).load(Ordering::Acquire) & (1 << (unit % 64)) == 0 {
            return bad("not the start of a block");
        }
        let meta = self.header_at(block).meta.load(Ordering::Relaxed);
        let class = (meta & 0xFF) as usize;
        if meta >> 8 != BLOCK_MAGIC
            || class >= self.layout.num_classes as usize
            || block + HDR + class_cap(class) > self.layout.data_end
        {
            return bad("the block header is corrupt");
        }
        Ok((block, class))
    }

    /// Marks a block just popped from `class`'s list as allocated.
    #[inline]
    fn hand_out(&self, block: u64, class: usize, state: u64) -> u64 {
        let hdr = self.header_at(block);
        // Count before the state says "allocated", so a concurrent reclaim's
        // decrement can never run ahead of this increment.
        self.control().classes[class]
            .allocated
            .fetch_add(1, Ordering::Relaxed);
        hdr.state.store(state, Ordering::Release);
        block + HDR
    }

    /// After a block's state went from allocated to free: uncount it and put
    /// it on its class's free list.
    #[inline]
    pub(super) fn release(&self, block: u64, class: usize) {
        let line = &self.control().classes[class];
        line.allocated.fetch_sub(1, Ordering::Relaxed);
        let unit = block >> UNIT_SHIFT;
        let hdr = self.header_at(block);
        let mut head = line.head.load(Ordering::Relaxed);
        loop {
            hdr.next.store(head & UNIT_MASK, Ordering::Relaxed);
            let new = next_tag(head) | unit;
            match line
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Pops a free block of `class`; returns its block offset.
    #[inline]
    fn pop(&self, class: usize) -> Option<u64> {
        let line = &self.control().classes[class];
        let mut head = line.head.load(Ordering::Acquire);
        loop {
            let unit = head & UNIT_MASK;
            if unit == 0 {
                return None;
            }
            let block = unit << UNIT_SHIFT;
            if !self.is_block_of(block, class) {
                // Only a head or link someone wrote over gets here: drop the
                // list (its blocks are lost) rather than follow it.
                let _ = line.head.compare_exchange(
                    head,
                    next_tag(head),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                return None;
            }
            // The block may be popped and reused under us, making `next`
            // stale; then the tag in `head` has moved on and the CAS fails.
            let next = self.header_at(block).next.load(Ordering::Relaxed) & UNIT_MASK;
            match line.head.compare_exchange_weak(
                head,
                next_tag(head) | next,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(block),
                Err(now) => head = now,
            }
        }
    }

    /// Whether `block` is the start of a carved block of `class` that lies
    /// whole inside the data area: a free-list entry must be, whoever wrote it.
    #[inline]
    fn is_block_of(&self, block: u64, class: usize) -> bool {
        if block < self.layout.data_off
            || block
                .checked_add(HDR + class_cap(class))
                .is_none_or(|end| end > self.layout.data_end)
        {
            return false;
        }
        let unit = block >> UNIT_SHIFT;
        self.bitmap_word(unit / 64).load(Ordering::Acquire) & (1 << (unit % 64)) != 0
            && self.header_at(block).meta.load(Ordering::Relaxed)
                == (BLOCK_MAGIC << 8) | class as u64
    }

    /// Carves a fresh block of `class` from the cursor, already marked with
    /// `state`, and publishes it in the bitmap. Returns its block offset.
    fn carve(&self, class: usize, state: u64) -> Option<u64> {
        let c = self.control();
        let need = HDR + class_cap(class);
        let mut cur = c.cursor.cursor.load(Ordering::Relaxed);
        loop {
            // A cursor someone wrote over (behind the data area, unaligned,
            // past its end) carves nothing.
            if cur < self.layout.data_off
                || !cur.is_multiple_of(BLOCK_ALIGN as u64)
                || cur
                    .checked_add(need)
                    .is_none_or(|end| end > self.layout.data_end)
            {
                return None;
            }
            match c.cursor.cursor.compare_exchange_weak(
                cur,
                cur + need,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let hdr = self.header_at(cur);
        hdr.meta
            .store((BLOCK_MAGIC << 8) | class as u64, Ordering::Relaxed);
        hdr.next.store(0, Ordering::Relaxed);
        hdr.state.store(state, Ordering::Relaxed);
        c.classes[class].allocated.fetch_add(1, Ordering::Relaxed);
        let unit = cur >> UNIT_SHIFT;
        // Release: whoever sees the bit sees the header written above.
        self.bitmap_word(unit / 64)
            .fetch_or(1 << (unit % 64), Ordering::Release);
        Some(cur)
    }
}

/// The tag part of a free-list head, advanced by one.
#[inline]
fn next_tag(head: u64) -> u64 {
    ((head >> UNIT_BITS).wrapping_add(1)) << UNIT_BITS
}
