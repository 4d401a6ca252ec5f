//! Aligned heap buffers, and the small pool of them O_DIRECT I/O bounces
//! through when a request's offset, length or memory is not aligned. This is
//! raw allocation (`unsafe`), kept apart from the I/O logic that uses it.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Bounce buffers kept for reuse.
const BOUNCE_KEEP: usize = 4;

/// A heap buffer with a chosen alignment (O_DIRECT needs one).
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain heap memory owned by this value.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> Result<AlignedBuf, String> {
        let layout = Layout::from_size_align(len.max(1), align)
            .map_err(|e| format!("cannot lay out a {len}-byte buffer aligned to {align}: {e}"))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            NonNull::new(p).ok_or_else(|| format!("out of memory for a {len}-byte buffer"))?;
        Ok(AlignedBuf { ptr, layout })
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    pub(super) fn bytes(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.len());
        // SAFETY: the allocation holds layout.size() >= len initialized
        // (zeroed) bytes, and &mut self makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Reused aligned buffers for O_DIRECT requests that cannot go straight
/// to or from shared memory.
pub(super) struct BouncePool {
    pub(super) align: usize,
    pub(super) free: Mutex<Vec<AlignedBuf>>,
}

impl BouncePool {
    pub(super) fn take(&self, len: usize) -> Result<AlignedBuf, String> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = free.iter().position(|b| b.len() >= len) {
            return Ok(free.swap_remove(i));
        }
        drop(free);
        AlignedBuf::new(len.next_multiple_of(self.align), self.align)
    }

    pub(super) fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < BOUNCE_KEEP {
            free.push(buf);
        }
    }
}
