//! [`AllocError`]: why an arena refused to format or attach over a region,
//! or refused an offset handed to `free` or `capacity`. (`alloc` has no
//! error: it returns `None` when nothing fits.)

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
