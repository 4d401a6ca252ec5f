//! Helpers for memory other processes write. A reference to a struct in a
//! segment is sound only when every byte another process may write is inside
//! an `UnsafeCell` (an atomic, or [`Pad`]); plain fields that are written
//! once before the segment is published are copied out with a raw read and
//! never read through a reference.

use std::cell::UnsafeCell;

/// Padding or reserved bytes of a shared struct: any process may scribble
/// on them, so they are not plain bytes to Rust.
#[repr(transparent)]
pub struct Pad<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: nobody reads or writes a Pad's bytes through it; it exists so that
// a shared reference to the struct around it claims nothing about them.
unsafe impl<const N: usize> Sync for Pad<N> {}

impl<const N: usize> Default for Pad<N> {
    fn default() -> Pad<N> {
        Pad(UnsafeCell::new([0; N]))
    }
}

/// A copy of the `len` bytes at `p`, read raw: bytes another process may
/// write at any moment are copied, never borrowed.
///
/// # Safety
/// `p..p + len` must be mapped and readable (checked to lie in a segment or
/// a record).
pub unsafe fn copy_out(p: *const u8, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: per the contract; `v` is ours and `len` bytes long.
    unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) };
    v
}

/// Reads a `T` at `p` without forming a reference to it: a copy of bytes
/// another process may write at any moment (torn values are checked by the
/// caller, as any input is).
///
/// # Safety
/// `p` must be valid for reads of `size_of::<T>()` bytes and aligned, and
/// every bit pattern must be a valid `T` (plain integers and arrays of them).
pub unsafe fn read_shared<T: Copy>(p: *const T) -> T {
    // SAFETY: per the contract; volatile, so the read happens once, here.
    unsafe { std::ptr::read_volatile(p) }
}
