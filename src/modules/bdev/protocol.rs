//! What a bdev client and a bdev pool agree on: the module name, the method
//! numbers and their input and output layouts, the extent encoding and the
//! stats. Both sides (`container` and `client`) use these and nothing of
//! each other, so they live apart from either.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::params::Kind;

/// The name pools give in `CreatePool::module`.
pub const MODULE_NAME: &str = "bdev";

/// Method numbers of a bdev pool. Integers are little-endian.
pub mod method {
    /// Input: u64 number of blocks. Output: the extents given, each a u64
    /// byte offset and a u64 byte length (16 bytes an extent), in order.
    pub const ALLOCATE: u32 = 0;
    /// Input: extents as ALLOCATE returns them (16 bytes each), block-aligned
    /// and all allocated; none is freed unless all can be.
    pub const FREE: u32 = 1;
    /// Input: the data, then its u64 device offset (the last 8 bytes), so
    /// the data starts the input buffer, 64-byte aligned.
    pub const WRITE: u32 = 2;
    /// Input: u64 device offset, u64 length. Output: the bytes.
    pub const READ: u32 = 3;
    /// fsync of the file and its allocation map; nothing to do for RAM.
    pub const FLUSH: u32 = 4;
    /// Output: [`super::BdevStats`] as JSON.
    pub const STATS: u32 = 5;
}

/// A range of device bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// Encodes extents as ALLOCATE returns and FREE takes them.
pub fn encode_extents(extents: &[Extent]) -> Vec<u8> {
    extents
        .iter()
        .flat_map(|e| [e.offset.to_le_bytes(), e.len.to_le_bytes()])
        .flatten()
        .collect()
}

/// Decodes extents (16 bytes each).
pub fn decode_extents(bytes: &[u8]) -> Result<Vec<Extent>, String> {
    if !bytes.len().is_multiple_of(16) {
        return Err(format!(
            "extents are 16 bytes each (u64 offset, u64 length), got {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| Extent {
            offset: u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
            len: u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
        })
        .collect())
}

/// What STATS returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BdevStats {
    pub kind: Kind,
    pub path: Option<PathBuf>,
    pub direct: bool,
    pub size: u64,
    pub block_size: u64,
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub blocks_free: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub writes: u64,
    pub reads: u64,
    pub allocates: u64,
    pub frees: u64,
    pub flushes: u64,
}
