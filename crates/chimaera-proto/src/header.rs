//! The header every segment starts with, and the segments' names.
//!
//! - nothing in a segment is a pointer; layouts are `#[repr(C)]` and refer to
//!   each other by offsets;
//! - a header carries a magic, a layout version and a ready word that the
//!   creator writes last, so an opener never reads a half-built segment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU32;

use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = *b"CHIMAERA";
/// Bumped whenever anything in a segment changes shape.
pub const LAYOUT_VERSION: u32 = 3;
/// The value of `ready` once the creator has finished.
pub const READY: u32 = 0x5245_4459;
/// Data starts one page in, so the header never shares a page with task data.
pub const HEADER_SIZE: u64 = 4096;
/// Where POSIX shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    Main = 1,
    ClientData = 2,
    RuntimeData = 3,
}

impl SegmentKind {
    pub fn label(self) -> &'static str {
        match self {
            SegmentKind::Main => "main",
            SegmentKind::ClientData => "client data",
            SegmentKind::RuntimeData => "runtime data",
        }
    }
}

/// The first bytes of every segment.
#[repr(C)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub layout_version: u32,
    /// A [`SegmentKind`] value.
    pub kind: u32,
    /// Total bytes of the segment, header included.
    pub size: u64,
    /// Offset of the first data byte.
    pub data_offset: u64,
    pub owner_pid: u32,
    pub owner_uid: u32,
    pub created_unix_ms: u64,
    /// [`READY`] once everything above is written; stored last, with Release.
    pub ready: AtomicU32,
    pub _reserved: u32,
}

/// A copy of a header as read by someone who does not own the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub magic_ok: bool,
    pub layout_version: u32,
    pub kind: u32,
    pub size: u64,
    pub owner_pid: u32,
    pub owner_uid: u32,
    pub created_unix_ms: u64,
    pub ready: bool,
}

impl HeaderInfo {
    /// Reads the header of an open segment without mapping it.
    pub fn read(file: &File) -> io::Result<Option<HeaderInfo>> {
        let mut buf = [0u8; size_of::<SegmentHeader>()];
        if file.metadata()?.len() < HEADER_SIZE {
            return Ok(None);
        }
        file.read_exact_at(&mut buf, 0)?;
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
        use std::mem::offset_of;
        Ok(Some(HeaderInfo {
            magic_ok: buf[..8] == MAGIC,
            layout_version: u32_at(offset_of!(SegmentHeader, layout_version)),
            kind: u32_at(offset_of!(SegmentHeader, kind)),
            size: u64_at(offset_of!(SegmentHeader, size)),
            owner_pid: u32_at(offset_of!(SegmentHeader, owner_pid)),
            owner_uid: u32_at(offset_of!(SegmentHeader, owner_uid)),
            created_unix_ms: u64_at(offset_of!(SegmentHeader, created_unix_ms)),
            ready: u32_at(offset_of!(SegmentHeader, ready)) == READY,
        }))
    }

    /// Refuses a segment this build cannot read.
    pub fn check(&self, name: &str) -> Result<(), HeaderError> {
        if !self.magic_ok {
            return Err(HeaderError::Foreign {
                segment: name.into(),
                why: "it does not start with the chimaera magic".into(),
            });
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(HeaderError::VersionMismatch {
                segment: name.into(),
                found: self.layout_version,
            });
        }
        Ok(())
    }
}

/// A segment this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error(
        "shared-memory segment {segment} is not a chimaera segment ({why}); remove /dev/shm/{segment} or choose another name"
    )]
    Foreign { segment: String, why: String },
    #[error(
        "shared-memory segment {segment} has layout version {found}, this chimaera uses {LAYOUT_VERSION}: run a client and runtime of the same release"
    )]
    VersionMismatch { segment: String, found: u32 },
}

/// The three segments' names, `${USER}` expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentNames {
    pub main: String,
    pub client_data: String,
    pub runtime_data: String,
}

impl SegmentNames {
    pub fn all(&self) -> [&str; 3] {
        [&self.main, &self.client_data, &self.runtime_data]
    }
}
