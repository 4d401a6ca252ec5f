//! What the arena writes in the region, byte for byte: the constants, the
//! `#[repr(C)]` structures at the region's start (the arena header, the
//! cursor line and one line per size class, together the `Control` block)
//! and in front of every block (`BlockHeader`, with its state word), the
//! offsets derived from a region's length (`Layout`), and the size classes.
//!
//! Nothing here reads or writes the region; `arena.rs` does. Every process
//! mapping a segment must agree on all of it, so any change of shape here
//! bumps [`ARENA_VERSION`].

use std::sync::atomic::AtomicU64;

use super::AllocError;

/// The smallest region [`Arena::format`](super::Arena::format) accepts.
pub const MIN_REGION_LEN: usize = 64 << 10;
/// The largest region the 36-bit block index of a free-list head can cover.
pub const MAX_REGION_LEN: usize = 1 << (UNIT_BITS + UNIT_SHIFT);
/// Alignment of the region base, of every block and of every payload.
pub const BLOCK_ALIGN: usize = 64;
/// Smallest usable capacity of a block.
pub const MIN_BLOCK: usize = 64;

/// "CHIALLOC", little-endian.
pub(super) const ARENA_MAGIC: u64 = u64::from_le_bytes(*b"CHIALLOC");
/// Bumped whenever the in-region layout changes shape.
pub const ARENA_VERSION: u32 = 1;
/// Marks a block header that the allocator wrote ("BLOK" + "CHI").
pub(super) const BLOCK_MAGIC: u64 = 0x0042_4C4F_4B43_4849;

/// log2 of the unit everything is measured in (64 bytes).
pub(super) const UNIT_SHIFT: u32 = 6;
/// Bits of a free-list head holding the block index; the rest is the ABA tag.
pub(super) const UNIT_BITS: u32 = 36;
pub(super) const UNIT_MASK: u64 = (1 << UNIT_BITS) - 1;
/// Classes 64 B .. 2^42 B: enough for the largest region.
const MAX_CLASSES: usize = UNIT_BITS as usize + 1;
/// Size of a block header: one unit, so payloads stay 64-byte aligned.
pub(super) const HDR: u64 = size_of::<BlockHeader>() as u64;

// A block's state word (`BlockHeader::state`): free, or allocated with the
// owner id in the low 32 bits.
pub(super) const STATE_FREE: u64 = 1 << 32;
pub(super) const STATE_ALLOCATED: u64 = 2 << 32;
pub(super) const STATE_KIND_MASK: u64 = !0xFFFF_FFFF;

/// The arena header at the start of the region. All fields are atomics so
/// that a reader never races a writer in Rust's sense; after `format` only
/// the cursor and the class lines change.
#[repr(C, align(64))]
pub(super) struct ArenaHeader {
    /// [`ARENA_MAGIC`] once the arena is ready; stored last, with Release.
    pub(super) magic: AtomicU64,
    /// [`ARENA_VERSION`].
    pub(super) version: AtomicU64,
    /// Region length at format time.
    pub(super) region_len: AtomicU64,
    /// Offset of the block-start bitmap.
    pub(super) bitmap_off: AtomicU64,
    /// Offset of the first block.
    pub(super) data_off: AtomicU64,
    /// End of the data area (64-byte aligned).
    pub(super) data_end: AtomicU64,
    /// Number of size classes in use.
    pub(super) num_classes: AtomicU64,
}

/// The bump cursor, alone on its cache line.
#[repr(C, align(64))]
pub(super) struct CursorLine {
    /// Offset (from the region base) of the first byte never carved.
    pub(super) cursor: AtomicU64,
}

/// One size class, alone on its cache line.
#[repr(C, align(64))]
pub(super) struct ClassLine {
    /// Treiber stack head: ABA tag << 36 | block index (0 = empty).
    pub(super) head: AtomicU64,
    /// Blocks of this class currently allocated.
    pub(super) allocated: AtomicU64,
}

/// Everything before the bitmap.
#[repr(C)]
pub(super) struct Control {
    pub(super) header: ArenaHeader,
    pub(super) cursor: CursorLine,
    pub(super) classes: [ClassLine; MAX_CLASSES],
}

/// The 64 bytes in front of every payload.
#[repr(C, align(64))]
pub(super) struct BlockHeader {
    /// `STATE_FREE`, or `STATE_ALLOCATED | owner`.
    pub(super) state: AtomicU64,
    /// Free-list link: index of the next free block of the class (0 = none).
    pub(super) next: AtomicU64,
    /// `BLOCK_MAGIC << 8 | class`; written once when the block is carved.
    pub(super) meta: AtomicU64,
    _reserved: [AtomicU64; 5],
}

const _: () = assert!(size_of::<BlockHeader>() == BLOCK_ALIGN);
const _: () = assert!(size_of::<ArenaHeader>() == 64);
const _: () = assert!(size_of::<ClassLine>() == 64);
const _: () = assert!(align_of::<Control>() == BLOCK_ALIGN);

/// Offsets derived from a region length; `format` writes them, `attach`
/// recomputes them and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) bitmap_off: u64,
    pub(super) data_off: u64,
    pub(super) data_end: u64,
    pub(super) num_classes: u32,
}

impl Layout {
    pub(super) fn for_len(len: usize) -> Result<Layout, AllocError> {
        if len < MIN_REGION_LEN {
            return Err(AllocError::TooSmall {
                len,
                min: MIN_REGION_LEN,
            });
        }
        if len > MAX_REGION_LEN {
            return Err(AllocError::TooLarge {
                len,
                max: MAX_REGION_LEN,
            });
        }
        let len = len as u64;
        let bitmap_off = size_of::<Control>() as u64;
        let units = len >> UNIT_SHIFT;
        let bitmap_bytes = units.div_ceil(64) * 8;
        let data_off = (bitmap_off + bitmap_bytes).next_multiple_of(BLOCK_ALIGN as u64);
        let data_end = len & !(BLOCK_ALIGN as u64 - 1);
        let room = data_end - data_off;
        // Largest class whose block (header + payload) fits the data area.
        let mut num_classes = 0u32;
        while (num_classes as usize) < MAX_CLASSES && HDR + class_cap(num_classes as usize) <= room
        {
            num_classes += 1;
        }
        Ok(Layout {
            bitmap_off,
            data_off,
            data_end,
            num_classes,
        })
    }
}

/// Usable capacity of class `k`.
#[inline]
pub(super) fn class_cap(k: usize) -> u64 {
    (MIN_BLOCK as u64) << k
}

/// The class serving `size` bytes (size > 0).
#[inline]
pub(super) fn class_of(size: usize) -> usize {
    if size <= MIN_BLOCK {
        0
    } else {
        (usize::BITS - (size - 1).leading_zeros() - UNIT_SHIFT) as usize
    }
}
