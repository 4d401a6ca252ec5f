//! A lock-free allocator over a region of shared memory, shared by processes
//! that map it at different addresses.
//!
//! Task payloads too large for a task record's inline area live in the client
//! data segment (clients allocate) or the runtime data segment (the runtime
//! allocates). Every piece of allocator state lives inside the region itself
//! and refers to blocks by offset from the region's base, never by pointer,
//! so any process that maps the segment anywhere can allocate, free and
//! reclaim.
//!
//! # Layout
//!
//! ```text
//! region base (64-byte aligned)
//! +--------------------+ 0
//! | ArenaHeader        |  magic (written last), version, layout offsets
//! | cursor line        |  bump cursor (AtomicU64), its own cache line
//! | class lines x 37   |  per class: free-list head + allocated count
//! +--------------------+ bitmap_off
//! | block-start bitmap |  one bit per 64-byte unit of the region
//! +--------------------+ data_off
//! | block | block | .. |  carved contiguously, each 64 B header + payload
//! +--------------------+ cursor ... data_end (free, never carved yet)
//! ```
//!
//! # Design
//!
//! - **Size classes.** Class `k` has a usable capacity of `64 << k` bytes (64 B,
//!   128 B, 256 B, ... up to the largest power of two that fits the region).
//!   A block is a 64-byte [`BlockHeader`] followed by its payload, so every
//!   payload is 64-byte aligned. Blocks never change size: there is no
//!   splitting and no coalescing.
//! - **Carving.** A bump cursor (`AtomicU64`, advanced by CAS so it never
//!   passes the end) carves fresh blocks from the data area. The carver writes
//!   the block header, then publishes the block by setting its bit in the
//!   block-start bitmap (Release). The bitmap makes the region walkable
//!   without trusting any payload bytes, and it is how `free` tells a real
//!   block from an offset into the middle of one.
//! - **Free lists.** Each class has a Treiber stack. Its head packs a 28-bit
//!   ABA tag and a 36-bit block index (the block's offset / 64; 0 = empty)
//!   into one `AtomicU64`; the link to the next free block sits in the free
//!   block's header. `alloc` pops its class's list first, carves only when the
//!   list is empty, and when the region is exhausted it takes a free block of
//!   a larger class whole (its capacity is then larger than asked). So freed
//!   space is always reused and a full arena has room again once anything
//!   large enough is freed.
//! - **Block state.** One `AtomicU64` per block: `FREE`, or `ALLOCATED` with the
//!   owner id in the low 32 bits. `free` and [`Arena::reclaim_owner`] take a
//!   block only by a CAS from `ALLOCATED` to `FREE`, so exactly one of them
//!   wins and a double free is reported, never performed. A per-class count
//!   of allocated blocks (on the same cache line as the class's head, so it
//!   costs no extra cache miss) gives [`Arena::usage`] in O(classes).
//! - **Format.** [`Arena::format`] zeroes the header and the bitmap (1/512 of
//!   the region; payload pages are never touched, so they stay unbacked until
//!   used) and stores the magic last with Release; [`Arena::attach`] refuses
//!   a region whose magic, version or layout do not match.
//!
//! # Processes that die mid-operation
//!
//! Every change to shared structure is a single CAS, so a process killed at
//! any instruction leaves the free lists and the cursor consistent. What it
//! can leave behind is at most one *leaked* block per operation in flight:
//! - killed between popping a block and marking it allocated: the block is
//!   on no list and not allocated; it is lost until the arena is formatted
//!   again;
//! - killed between carving (cursor CAS) and publishing the block's bitmap
//!   bit: those bytes are lost the same way (and a block already marked for
//!   its owner but not yet published is not seen by `reclaim_owner`);
//! - killed between marking a block free and pushing it: the block is lost,
//!   and its class's allocated count stays one too high.
//!
//! These windows are a few instructions wide; the leak is bounded by the
//! number of deaths, and `usage().carved_bytes` never grows from them.
//!
//! # What callers must guarantee
//!
//! - `format` runs once, while no other process uses the region.
//! - `reclaim_owner(id)` runs only once the owner `id` is dead, and before the
//!   id is handed to a new client: it frees every block still allocated to
//!   `id`.
//! - A freed offset is not used again. Freeing a block twice is caught while
//!   the block stays free; freeing an offset whose block has since been
//!   allocated again frees the new allocation (offsets carry no generation).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The smallest region [`Arena::format`] accepts.
pub const MIN_REGION_LEN: usize = 64 << 10;
/// The largest region the 36-bit block index of a free-list head can cover.
pub const MAX_REGION_LEN: usize = 1 << (UNIT_BITS + UNIT_SHIFT);
/// Alignment of the region base, of every block and of every payload.
pub const BLOCK_ALIGN: usize = 64;
/// Smallest usable capacity of a block.
pub const MIN_BLOCK: usize = 64;

/// "CHIALLOC", little-endian.
const ARENA_MAGIC: u64 = u64::from_le_bytes(*b"CHIALLOC");
/// Bumped whenever the in-region layout changes shape.
pub const ARENA_VERSION: u32 = 1;
/// Marks a block header that the allocator wrote ("BLOK" + "CHI").
const BLOCK_MAGIC: u64 = 0x0042_4C4F_4B43_4849;

/// log2 of the unit everything is measured in (64 bytes).
const UNIT_SHIFT: u32 = 6;
/// Bits of a free-list head holding the block index; the rest is the ABA tag.
const UNIT_BITS: u32 = 36;
const UNIT_MASK: u64 = (1 << UNIT_BITS) - 1;
/// Classes 64 B .. 2^42 B: enough for the largest region.
const MAX_CLASSES: usize = UNIT_BITS as usize + 1;
/// Size of a block header: one unit, so payloads stay 64-byte aligned.
const HDR: u64 = size_of::<BlockHeader>() as u64;

const STATE_FREE: u64 = 1 << 32;
const STATE_ALLOCATED: u64 = 2 << 32;
const STATE_KIND_MASK: u64 = !0xFFFF_FFFF;

/// A region of shared memory: its base address in *this* process and its
/// length. Other processes may map the same memory at other addresses.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: a Region is an address range that `Region::new`'s caller promised
// stays mapped; the arena reaches it only through atomics (and payload bytes
// through raw pointers the caller owns), so sharing it between threads is fine.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only exposes the address and the length.
unsafe impl Sync for Region {}

impl Region {
    /// Describes `len` bytes of shared memory starting at `base`.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be mapped readable and writable, and stay
    /// mapped for as long as this `Region` or any [`Arena`] built on it (or a
    /// copy of either) is used. Other than through the arena, nothing may
    /// write the region except the payload bytes of blocks the writer owns.
    pub unsafe fn new(base: *mut u8, len: usize) -> Region {
        Region { base, len }
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address of the region in this process.
    pub fn base(&self) -> *mut u8 {
        self.base
    }
}

/// Why the arena refused an operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    /// `attach` found no arena (or one still being formatted).
    #[error(
        "the region holds no allocator arena (magic {found:#018x}); the runtime formats it at start, so it has not started or is still starting"
    )]
    NotFormatted {
        /// The first eight bytes found where the magic should be.
        found: u64,
    },
    /// `attach` found an arena of another layout version.
    #[error(
        "the allocator arena has layout version {found}, this build reads version {expected}; run a client built with the same chimaera version as the runtime"
    )]
    VersionMismatch {
        /// Version in the region.
        found: u32,
        /// Version this build writes and reads.
        expected: u32,
    },
    /// The region is smaller than an arena needs.
    #[error("the region is {len} bytes; an allocator arena needs at least {min} bytes")]
    TooSmall {
        /// Region length.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The region is larger than an arena can index.
    #[error("the region is {len} bytes; an allocator arena covers at most {max} bytes")]
    TooLarge {
        /// Region length.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The region's base address is not 64-byte aligned.
    #[error("the region starts at {base:#x}, which is not {align}-byte aligned")]
    Misaligned {
        /// Base address in this process.
        base: usize,
        /// Required alignment.
        align: usize,
    },
    /// The arena's header does not describe this region.
    #[error("the allocator arena's header is inconsistent with the region: {why}")]
    Corrupt {
        /// What did not match.
        why: String,
    },
    /// The offset is not one `alloc` returned.
    #[error("offset {offset:#x} is not an allocated block: {why}")]
    BadOffset {
        /// The offset passed in.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The block at the offset is already free.
    #[error("double free: the block at offset {offset:#x} is already free")]
    DoubleFree {
        /// The offset passed in.
        offset: u64,
    },
}

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

/// The arena header at the start of the region. All fields are atomics so
/// that a reader never races a writer in Rust's sense; after `format` only
/// the cursor and the class lines change.
#[repr(C, align(64))]
struct ArenaHeader {
    /// [`ARENA_MAGIC`] once the arena is ready; stored last, with Release.
    magic: AtomicU64,
    /// [`ARENA_VERSION`].
    version: AtomicU64,
    /// Region length at format time.
    region_len: AtomicU64,
    /// Offset of the block-start bitmap.
    bitmap_off: AtomicU64,
    /// Offset of the first block.
    data_off: AtomicU64,
    /// End of the data area (64-byte aligned).
    data_end: AtomicU64,
    /// Number of size classes in use.
    num_classes: AtomicU64,
}

/// The bump cursor, alone on its cache line.
#[repr(C, align(64))]
struct CursorLine {
    /// Offset (from the region base) of the first byte never carved.
    cursor: AtomicU64,
}

/// One size class, alone on its cache line.
#[repr(C, align(64))]
struct ClassLine {
    /// Treiber stack head: ABA tag << 36 | block index (0 = empty).
    head: AtomicU64,
    /// Blocks of this class currently allocated.
    allocated: AtomicU64,
}

/// Everything before the bitmap.
#[repr(C)]
struct Control {
    header: ArenaHeader,
    cursor: CursorLine,
    classes: [ClassLine; MAX_CLASSES],
}

/// The 64 bytes in front of every payload.
#[repr(C, align(64))]
struct BlockHeader {
    /// `STATE_FREE`, or `STATE_ALLOCATED | owner`.
    state: AtomicU64,
    /// Free-list link: index of the next free block of the class (0 = none).
    next: AtomicU64,
    /// `BLOCK_MAGIC << 8 | class`; written once when the block is carved.
    meta: AtomicU64,
    _reserved: [AtomicU64; 5],
}

const _: () = assert!(size_of::<BlockHeader>() == BLOCK_ALIGN);
const _: () = assert!(size_of::<ArenaHeader>() == 64);
const _: () = assert!(size_of::<ClassLine>() == 64);
const _: () = assert!(align_of::<Control>() == BLOCK_ALIGN);

/// Offsets derived from a region length; `format` writes them, `attach`
/// recomputes them and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    bitmap_off: u64,
    data_off: u64,
    data_end: u64,
    num_classes: u32,
}

impl Layout {
    fn for_len(len: usize) -> Result<Layout, AllocError> {
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
fn class_cap(k: usize) -> u64 {
    (MIN_BLOCK as u64) << k
}

/// The class serving `size` bytes (size > 0).
#[inline]
fn class_of(size: usize) -> usize {
    if size <= MIN_BLOCK {
        0
    } else {
        (usize::BITS - (size - 1).leading_zeros() - UNIT_SHIFT) as usize
    }
}

/// An allocator arena over a [`Region`]. Cheap to clone; every clone (and
/// every process attached to the same memory) works on the same state.
#[derive(Debug, Clone)]
pub struct Arena {
    region: Region,
    layout: Layout,
}

impl Arena {
    /// Writes a fresh arena over the region: header (magic, version, sizes),
    /// an empty bitmap and empty free lists. The runtime calls it once at
    /// start, before any other process attaches; anything the region held is
    /// forgotten. The region must be at least [`MIN_REGION_LEN`] bytes, at
    /// most [`MAX_REGION_LEN`], and its base 64-byte aligned.
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

    fn control(&self) -> &Control {
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
    fn header_at(&self, block: u64) -> &BlockHeader {
        debug_assert!(block >= self.layout.data_off && block + HDR <= self.layout.data_end);
        debug_assert!(block.is_multiple_of(BLOCK_ALIGN as u64));
        // SAFETY: `block..block + 64` lies in the data area of the mapped,
        // 64-byte-aligned region, so the pointer is aligned and in bounds;
        // BlockHeader is all atomics, valid for any bit pattern.
        unsafe { &*self.region.base.add(block as usize).cast::<BlockHeader>() }
    }

    #[inline]
    fn bitmap_word(&self, w: u64) -> &AtomicU64 {
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
    fn release(&self, block: u64, class: usize) {
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

fn check_base(region: Region) -> Result<(), AllocError> {
    let base = region.base as usize;
    if !base.is_multiple_of(BLOCK_ALIGN) {
        return Err(AllocError::Misaligned {
            base,
            align: BLOCK_ALIGN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A zeroed, 64-byte aligned heap buffer standing in for a segment.
    struct Buf {
        ptr: *mut u8,
        layout: std::alloc::Layout,
    }

    impl Buf {
        fn new(len: usize) -> Buf {
            let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: the layout has a nonzero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Buf { ptr, layout }
        }

        fn region(&self) -> Region {
            // SAFETY: the buffer lives as long as `self`, and every test
            // drops its arenas before the buffer.
            unsafe { Region::new(self.ptr, self.layout.size()) }
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            // SAFETY: allocated in Buf::new with this layout.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) };
        }
    }

    /// A small xorshift generator: deterministic and allocation-free (it is
    /// used in a forked child).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Walks the arena at rest and checks every invariant: blocks tile the
    /// carved area exactly as the bitmap says, every block is allocated or
    /// on exactly one free list of its own class, and the counters agree.
    fn check_consistency(a: &Arena) {
        let l = a.layout;
        let end = a.control().cursor.cursor.load(Ordering::Relaxed);
        let mut at = l.data_off;
        let mut free_blocks = HashSet::new();
        let mut allocated = vec![0u64; l.num_classes as usize];
        while at < end {
            let unit = at >> UNIT_SHIFT;
            assert!(
                a.bitmap_word(unit / 64).load(Ordering::Relaxed) & (1 << (unit % 64)) != 0,
                "block at {at:#x} not in the bitmap"
            );
            let h = a.header_at(at);
            let meta = h.meta.load(Ordering::Relaxed);
            assert_eq!(meta >> 8, BLOCK_MAGIC);
            let class = (meta & 0xFF) as usize;
            let s = h.state.load(Ordering::Relaxed);
            match s & STATE_KIND_MASK {
                STATE_FREE => {
                    free_blocks.insert((at, class));
                }
                STATE_ALLOCATED => allocated[class] += 1,
                _ => panic!("bad state {s:#x} at {at:#x}"),
            }
            let next = at + HDR + class_cap(class);
            // No bitmap bits inside the block.
            for u in (at >> UNIT_SHIFT) + 1..next >> UNIT_SHIFT {
                assert_eq!(
                    a.bitmap_word(u / 64).load(Ordering::Relaxed) & (1 << (u % 64)),
                    0,
                    "bitmap bit inside block at {at:#x}"
                );
            }
            at = next;
        }
        assert_eq!(at, end, "blocks do not tile the carved area");
        let mut listed = HashSet::new();
        for (k, line) in a.control().classes[..l.num_classes as usize]
            .iter()
            .enumerate()
        {
            let mut unit = line.head.load(Ordering::Relaxed) & UNIT_MASK;
            while unit != 0 {
                let block = unit << UNIT_SHIFT;
                assert!(listed.insert((block, k)), "block {block:#x} listed twice");
                unit = a.header_at(block).next.load(Ordering::Relaxed);
            }
            assert_eq!(
                line.allocated.load(Ordering::Relaxed),
                allocated[k],
                "allocated count of class {k}"
            );
        }
        assert_eq!(listed, free_blocks, "free-state blocks vs free lists");
    }

    #[test]
    fn format_checks_the_region() {
        let buf = Buf::new(MIN_REGION_LEN);
        // SAFETY: a prefix of a live buffer (refused before use).
        let small = unsafe { Region::new(buf.ptr, MIN_REGION_LEN - 64) };
        assert!(matches!(
            Arena::format(small),
            Err(AllocError::TooSmall { .. })
        ));
        // SAFETY: a sub-range of a live buffer (never used: refused first).
        let odd = unsafe { Region::new(buf.ptr.add(8), MIN_REGION_LEN - 64) };
        assert!(matches!(
            Arena::format(odd),
            Err(AllocError::Misaligned { .. })
        ));
        let err = Arena::attach(buf.region()).unwrap_err();
        assert_eq!(err, AllocError::NotFormatted { found: 0 });
        assert!(err.to_string().contains("no allocator arena"));
        let a = Arena::format(buf.region()).unwrap();
        let u = a.usage();
        assert_eq!(u.carved_bytes, 0);
        assert_eq!(u.allocated_blocks, 0);
        assert!(u.capacity_bytes > (MIN_REGION_LEN as u64) * 9 / 10);
        let b = Arena::attach(buf.region()).unwrap();
        let off = a.alloc(100, 1).unwrap();
        assert_eq!(b.capacity(off), Ok(128));
        // A different version is refused.
        a.control().header.version.store(99, Ordering::Relaxed);
        assert!(matches!(
            Arena::attach(buf.region()),
            Err(AllocError::VersionMismatch { found: 99, .. })
        ));
        // A different length is refused.
        a.control().header.version.store(1, Ordering::Relaxed);
        assert!(Arena::attach(buf.region()).is_ok());
        let big = Buf::new(2 * MIN_REGION_LEN);
        // SAFETY: a prefix of a live buffer.
        let prefix = unsafe { Region::new(big.ptr, MIN_REGION_LEN) };
        Arena::format(prefix).unwrap();
        let err = Arena::attach(big.region()).unwrap_err();
        assert!(matches!(err, AllocError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("formatted for 65536 bytes"),
            "{err}"
        );
    }

    #[test]
    fn sizes_capacity_alignment() {
        let buf = Buf::new(1 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let sizes = [1usize, 63, 64, 65, 100, 128, 129, 1000, 4096, 4097, 65536];
        let mut got = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let off = a.alloc(size, 1).unwrap();
            assert_eq!(off % 64, 0);
            assert_eq!(a.ptr(off) as usize % 64, 0);
            let cap = a.capacity(off).unwrap();
            assert!(cap >= size && cap.is_power_of_two() && cap >= 64);
            assert!(cap < 2 * size.max(64), "size {size} got capacity {cap}");
            // Fill the whole capacity with a pattern of our own.
            // SAFETY: we own `cap` bytes at this block.
            unsafe { std::ptr::write_bytes(a.ptr(off), i as u8 + 1, cap) };
            got.push((off, cap, i as u8 + 1));
        }
        for &(off, cap, pat) in &got {
            // SAFETY: still allocated, `cap` bytes.
            let s = unsafe { std::slice::from_raw_parts(a.ptr(off), cap) };
            assert!(s.iter().all(|&b| b == pat), "block {off:#x} overwritten");
        }
        assert_eq!(a.alloc(0, 1), None);
        assert_eq!(a.alloc(64, 0), None);
        assert_eq!(a.alloc(usize::MAX, 1), None);
        let u = a.usage();
        assert_eq!(u.allocated_blocks, sizes.len() as u64);
        assert_eq!(
            u.allocated_bytes,
            got.iter().map(|g| g.1 as u64).sum::<u64>()
        );
        check_consistency(&a);
        for &(off, ..) in &got {
            a.free(off).unwrap();
        }
        assert_eq!(a.usage().allocated_bytes, 0);
        check_consistency(&a);
    }

    #[test]
    fn freed_space_is_reused() {
        let buf = Buf::new(1 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let sizes = [24usize, 64, 200, 1000, 3000];
        let first: Vec<u64> = sizes.iter().map(|&s| a.alloc(s, 3).unwrap()).collect();
        for off in first {
            a.free(off).unwrap();
        }
        let carved = a.usage().carved_bytes;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..100_000 {
            let size = sizes[(rng.next() % sizes.len() as u64) as usize];
            let off = a.alloc(size, 3).unwrap();
            a.free(off).unwrap();
        }
        assert_eq!(a.usage().carved_bytes, carved);
        assert_eq!(a.usage().allocated_blocks, 0);
        check_consistency(&a);
    }

    #[test]
    fn double_free_and_bad_offsets_are_refused() {
        let buf = Buf::new(1 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let big = a.alloc(4096, 1).unwrap();
        let small = a.alloc(64, 1).unwrap();
        // Forge a copy of a real header inside the big block's payload and
        // point at the "payload" after it: the bitmap still refuses it.
        // SAFETY: both ranges are inside blocks we own / the arena, 64 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(a.ptr(small - HDR), a.ptr(big + 1024), 64);
        }
        let cases = [
            (0, "outside"),
            (a.layout.data_off, "outside"),
            (big + 1, "aligned"),
            (big + 1024 + 64, "start of a block"),
            (big + 64, "start of a block"),
            (
                a.usage().carved_bytes + a.layout.data_off + HDR,
                "start of a block",
            ),
            (buf.layout.size() as u64, "outside"),
            (u64::MAX - 63, "outside"),
        ];
        for (off, why) in cases {
            let err = a.free(off).unwrap_err();
            assert!(
                err.to_string().contains(why),
                "offset {off:#x}: {err} (wanted {why:?})"
            );
            assert!(a.capacity(off).is_err());
        }
        a.free(small).unwrap();
        assert_eq!(a.free(small), Err(AllocError::DoubleFree { offset: small }));
        assert!(a.capacity(small).is_err());
        a.free(big).unwrap();
        assert!(a.free(big).unwrap_err().to_string().contains("double free"));
        check_consistency(&a);
        // The arena is intact: the same blocks come back.
        let again = a.alloc(64, 2).unwrap();
        assert_eq!(again, small);
        assert_eq!(a.usage().allocated_blocks, 1);
    }

    #[test]
    fn full_arena_returns_none_and_freeing_makes_room() {
        let buf = Buf::new(MIN_REGION_LEN);
        let a = Arena::format(buf.region()).unwrap();
        let mut blocks = Vec::new();
        while let Some(off) = a.alloc(64, 1) {
            blocks.push(off);
        }
        let u = a.usage();
        assert!(blocks.len() as u64 >= u.capacity_bytes / 128 - 1);
        assert!(u.capacity_bytes - u.carved_bytes < 128);
        assert_eq!(a.alloc(1, 1), None);
        let freed = blocks.swap_remove(blocks.len() / 2);
        a.free(freed).unwrap();
        assert_eq!(a.alloc(50, 1), Some(freed));
        assert_eq!(a.alloc(50, 1), None);
        for off in blocks.drain(..) {
            a.free(off).unwrap();
        }
        a.free(freed).unwrap();
        assert_eq!(a.usage().allocated_blocks, 0);
        check_consistency(&a);

        // Large blocks, freed, serve small requests once nothing is left to carve.
        let buf = Buf::new(MIN_REGION_LEN);
        let a = Arena::format(buf.region()).unwrap();
        let mut big = Vec::new();
        while let Some(off) = a.alloc(1024, 1) {
            big.push(off);
        }
        let n = big.len();
        for off in big {
            a.free(off).unwrap();
        }
        let mut small = Vec::new();
        while let Some(off) = a.alloc(64, 1) {
            small.push(off);
        }
        assert!(small.len() >= n, "{} small from {n} large", small.len());
        check_consistency(&a);
    }

    #[test]
    fn reclaim_owner_frees_exactly_that_owners_blocks() {
        let buf = Buf::new(1 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let mut mine = Vec::new();
        let mut others = Vec::new();
        let mut rng = Rng(7);
        for i in 0..300u32 {
            let owner = 1 + i % 3;
            let size = 1 + (rng.next() % 2000) as usize;
            let off = a.alloc(size, owner).unwrap();
            let list = if owner == 2 { &mut mine } else { &mut others };
            list.push(off);
        }
        // Some of owner 2's blocks were already freed by it.
        for off in mine.drain(..10) {
            a.free(off).unwrap();
        }
        let before = a.usage();
        assert_eq!(a.reclaim_owner(2), mine.len());
        assert_eq!(a.reclaim_owner(2), 0);
        assert_eq!(a.reclaim_owner(0), 0);
        assert_eq!(a.reclaim_owner(9), 0);
        let after = a.usage();
        assert_eq!(
            after.allocated_blocks,
            before.allocated_blocks - mine.len() as u64
        );
        for &off in &mine {
            assert_eq!(a.free(off), Err(AllocError::DoubleFree { offset: off }));
        }
        for &off in &others {
            assert!(a.capacity(off).is_ok());
        }
        check_consistency(&a);
        for off in others {
            a.free(off).unwrap();
        }
        assert_eq!(a.usage().allocated_blocks, 0);
        check_consistency(&a);
    }

    /// Allocates, fills with a pattern unique to (thread, iteration), checks
    /// and frees; holds up to 16 blocks at once. Any overlap between two
    /// live blocks shows up as a pattern mismatch. Returns mismatches.
    fn churn(a: &Arena, owner: u32, sizes: (usize, usize), iters: u32, seed: u64) -> u32 {
        let mut rng = Rng(seed);
        let mut held: [(u64, usize, u8); 16] = [(0, 0, 0); 16];
        let mut bad = 0;
        let check_free = |(off, size, pat): (u64, usize, u8), bad: &mut u32| {
            if off == 0 {
                return;
            }
            // SAFETY: the block is ours, `size` <= its capacity.
            let s = unsafe { std::slice::from_raw_parts(a.ptr(off), size) };
            if s.iter().any(|&b| b != pat) {
                *bad += 1;
            }
            if a.free(off).is_err() {
                *bad += 1;
            }
        };
        for i in 0..iters {
            let slot = (rng.next() % 16) as usize;
            check_free(held[slot], &mut bad);
            held[slot] = (0, 0, 0);
            let size = sizes.0 + (rng.next() % (sizes.1 - sizes.0 + 1) as u64) as usize;
            if let Some(off) = a.alloc(size, owner) {
                let pat = (owner as u8).wrapping_mul(31).wrapping_add(i as u8) | 1;
                // SAFETY: we own at least `size` bytes at `off`.
                unsafe { std::ptr::write_bytes(a.ptr(off), pat, size) };
                held[slot] = (off, size, pat);
            }
        }
        for h in held {
            check_free(h, &mut bad);
        }
        bad
    }

    #[test]
    fn threads_stress_no_overlap() {
        let buf = Buf::new(4 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let threads: Vec<_> = (1..=4u32)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    churn(&a, t, (1, 3000), 20_000, 0x1234_5678 * u64::from(t))
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 0, "overlapping blocks or failed frees");
        }
        assert_eq!(a.usage().allocated_blocks, 0);
        check_consistency(&a);
    }

    #[test]
    fn reclaim_races_with_frees_without_double_frees() {
        let buf = Buf::new(4 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Owner 1 allocates and frees; a reaper keeps reclaiming owner 1, so
        // some of owner 1's frees find their block already reclaimed. The
        // bystander uses other size classes: a late free by owner 1 of a block
        // reclaimed *and reallocated* would free the bystander's block (offsets
        // carry no generation), which is the caller's bug, not under test.
        let victim = {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut refused = 0u32;
                for i in 0..20_000u32 {
                    let off = a.alloc(64 << (i % 4), 1).unwrap();
                    match a.free(off) {
                        Ok(()) => {}
                        Err(AllocError::DoubleFree { .. }) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                refused
            })
        };
        let bystander = {
            let a = a.clone();
            std::thread::spawn(move || churn(&a, 2, (1025, 3000), 20_000, 99))
        };
        let reaper = {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += a.reclaim_owner(1);
                }
                n
            })
        };
        let refused = victim.join().unwrap();
        assert_eq!(bystander.join().unwrap(), 0);
        stop.store(true, Ordering::Relaxed);
        let reclaimed = reaper.join().unwrap();
        // Every free the victim was refused is a block the reaper took.
        assert_eq!(refused as usize, reclaimed);
        assert_eq!(a.usage().allocated_blocks, 0);
        check_consistency(&a);
    }

    /// A memfd of `len` bytes, mapped shared twice.
    fn memfd_twice(len: usize) -> (libc::c_int, *mut u8, *mut u8) {
        // SAFETY: plain syscalls on a descriptor we own; the results are
        // checked before use.
        unsafe {
            let fd = libc::memfd_create(c"chimaera-alloc-test".as_ptr(), 0);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
            let map = || {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                p.cast::<u8>()
            };
            (fd, map(), map())
        }
    }

    #[test]
    fn two_mappings_at_different_addresses_share_the_arena() {
        let len = 1 << 20;
        let (fd, p1, p2) = memfd_twice(len);
        assert_ne!(p1, p2);
        // SAFETY: both mappings stay until the munmap at the end.
        let (r1, r2) = unsafe { (Region::new(p1, len), Region::new(p2, len)) };
        let a = Arena::format(r1).unwrap();
        let b = Arena::attach(r2).unwrap();
        let off = a.alloc(300, 5).unwrap();
        let msg = b"written through the first mapping";
        // SAFETY: we own 512 bytes at `off`.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), a.ptr(off), msg.len()) };
        // SAFETY: the same bytes, seen through the other mapping.
        let seen = unsafe { std::slice::from_raw_parts(b.ptr(off), msg.len()) };
        assert_eq!(seen, msg);
        assert_eq!(b.capacity(off), Ok(512));
        // Alloc through one, free through the other; reuse is shared too.
        let off2 = b.alloc(64, 6).unwrap();
        a.free(off2).unwrap();
        assert_eq!(b.free(off2), Err(AllocError::DoubleFree { offset: off2 }));
        assert_eq!(a.alloc(64, 7), Some(off2));
        assert_eq!(b.reclaim_owner(5), 1);
        assert_eq!(a.usage(), b.usage());
        assert_eq!(a.usage().allocated_blocks, 1);
        check_consistency(&b);
        // SAFETY: the mappings and descriptor are ours; nothing uses them
        // after this point.
        unsafe {
            libc::munmap(p1.cast(), len);
            libc::munmap(p2.cast(), len);
            libc::close(fd);
        }
    }

    #[test]
    fn two_processes_allocate_concurrently_and_a_dead_ones_blocks_are_reclaimed() {
        let len = 4 << 20;
        let (fd, p1, p2) = memfd_twice(len);
        // SAFETY: mapped until the munmap at the end.
        let (r1, r2) = unsafe { (Region::new(p1, len), Region::new(p2, len)) };
        let a = Arena::format(r1).unwrap();
        let baseline = a.usage();
        // SAFETY: fork; the child only runs allocator code (atomics, no heap,
        // no locks) and leaves with _exit, never returning into the harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Child: the arena through the *other* mapping.
            let b = match Arena::attach(r2) {
                Ok(b) => b,
                // SAFETY: _exit is async-signal-safe.
                Err(_) => unsafe { libc::_exit(2) },
            };
            let bad = churn(&b, 8, (1, 3000), 20_000, 4242);
            // Die holding some blocks of owner 9, as a killed client would.
            let mut leaked = 0;
            for i in 0..25 {
                if b.alloc(64 << (i % 5), 9).is_some() {
                    leaked += 1;
                }
            }
            let code = if bad == 0 && leaked == 25 { 0 } else { 1 };
            // SAFETY: as above.
            unsafe { libc::_exit(code) };
        }
        let bad = churn(&a, 1, (1, 3000), 20_000, 777);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(bad, 0);
        assert_eq!(a.usage().allocated_blocks, 25);
        assert_eq!(a.reclaim_owner(9), 25);
        let u = a.usage();
        assert_eq!(u.allocated_blocks, baseline.allocated_blocks);
        assert_eq!(u.allocated_bytes, baseline.allocated_bytes);
        check_consistency(&a);
        // SAFETY: ours, unused from here on.
        unsafe {
            libc::munmap(p1.cast(), len);
            libc::munmap(p2.cast(), len);
            libc::close(fd);
        }
    }

    /// `cargo test --release --lib alloc::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn bench_alloc_free_64() {
        let buf = Buf::new(1 << 20);
        let a = Arena::format(buf.region()).unwrap();
        let n = 10_000_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let off = a.alloc(64, 1).unwrap();
            a.free(std::hint::black_box(off)).unwrap();
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("alloc+free 64 B, uncontended: {ns:.1} ns");
    }
}
