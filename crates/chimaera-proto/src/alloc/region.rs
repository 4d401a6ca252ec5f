//! [`Region`]: the range of shared memory an arena lives in, as this process
//! maps it (other processes may map it elsewhere), and the check
//! `Arena::format` and `Arena::attach` both make of its base address.

use super::AllocError;
use super::layout::BLOCK_ALIGN;

/// A region of shared memory: its base address in *this* process and its
/// length. Other processes may map the same memory at other addresses.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub(super) base: *mut u8,
    pub(super) len: usize,
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
    /// mapped for as long as this `Region` or any [`Arena`](super::Arena)
    /// built on it (or a copy of either) is used. Other than through the
    /// arena, nothing may write the region except the payload bytes of blocks
    /// the writer owns.
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

/// Refuses a region whose base is not [`BLOCK_ALIGN`]-aligned; `format` and
/// `attach` call it first. (The length is checked by `Layout::for_len`.)
pub(super) fn check_base(region: Region) -> Result<(), AllocError> {
    let base = region.base as usize;
    if !base.is_multiple_of(BLOCK_ALIGN) {
        return Err(AllocError::Misaligned {
            base,
            align: BLOCK_ALIGN,
        });
    }
    Ok(())
}
