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
//!   A block is a 64-byte [`BlockHeader`](layout::BlockHeader) followed by
//!   its payload, so every payload is 64-byte aligned. Blocks never change
//!   size: there is no splitting and no coalescing.
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
//!
//! # Where the code lives
//!
//! - `region.rs`: [`Region`], the memory an arena lives in, as this process
//!   maps it, and the check of its base alignment.
//! - `layout.rs`: what the arena writes in the region, byte for byte: the
//!   constants, the `#[repr(C)]` structures (arena header, cursor line,
//!   class lines, block header), a block's state word, the offsets derived
//!   from the region's length, and the size classes. A change there is a
//!   change of the shared-memory layout ([`ARENA_VERSION`]).
//! - `error.rs`: [`AllocError`].
//! - `arena.rs`: [`Arena`]: `format` and `attach`, `alloc`, `free`,
//!   `capacity`, `usage` ([`Usage`]), and under them the free lists and the
//!   carving every operation shares.
//! - `reclaim.rs`: [`Arena::reclaim_owner`], the walk of the block-start
//!   bitmap that frees a dead owner's blocks.
//! - `tests.rs`: unit tests, with a walk that checks every invariant of an
//!   arena at rest; threads, two mappings and a forked process.

mod arena;
mod error;
mod layout;
mod reclaim;
mod region;
#[cfg(test)]
mod tests;

pub use arena::{Arena, Usage};
pub use error::AllocError;
pub use layout::{ARENA_VERSION, BLOCK_ALIGN, MAX_REGION_LEN, MIN_BLOCK, MIN_REGION_LEN};
pub use region::Region;
