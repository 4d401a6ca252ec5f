//! The three POSIX shared-memory segments, as their creator sees them:
//! creation, the liveness lock, reclaim and probing. Their header is
//! `chimaera_proto::header`, which clients read too.
//!
//! Lessons taken from the original runtime and from iceoryx2:
//! - liveness is an exclusive flock on the main segment, which the kernel
//!   releases when the runtime dies however it dies: a pid alone can be reused.
//!   A runtime that finds the lock free reclaims what a dead one left; one that
//!   finds it held refuses to start.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapMut;

pub use chimaera_proto::header::{
    HEADER_SIZE, HeaderError, HeaderInfo, LAYOUT_VERSION, MAGIC, READY, SHM_DIR, SegmentHeader,
    SegmentKind, SegmentNames,
};

use crate::sys::{self, LockState};

#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error(
        "already running (pid {pid}): segment {segment} is held by a live runtime; stop it first or give this one other segment names"
    )]
    AlreadyRunning { pid: u32, segment: String },
    #[error(
        "cannot {action} shared-memory segment {segment}: {source}{}",
        advice(source)
    )]
    Io {
        segment: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Header(#[from] HeaderError),
}

fn advice(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (it belongs to another user: use other segment names, or run as that user)"
        }
        Some(libc::ENOSPC) | Some(libc::ENOMEM) => {
            " (/dev/shm is full: free space or lower the segment sizes)"
        }
        Some(libc::ENOENT) => " (no runtime has created it: is chimaera running?)",
        _ => "",
    }
}

fn io_err<'a>(segment: &'a str, action: &'static str) -> impl FnOnce(io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        segment: segment.to_string(),
        action,
        source,
    }
}

/// Who may use the segments: owner only (0600), or a group too (0660).
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub gid: Option<u32>,
}

impl Access {
    pub fn mode(&self) -> u32 {
        if self.gid.is_some() { 0o660 } else { 0o600 }
    }
}

/// A segment this process created and maps.
pub struct Segment {
    name: String,
    kind: SegmentKind,
    // Held open for the segment's life: on the main segment its descriptor
    // carries the lock that tells others this runtime is alive.
    _file: File,
    map: MmapMut,
    /// The mapping's address in this process, taken while we had it mutably.
    base: *mut u8,
}

// SAFETY: `base` points into `map`, which is Send and Sync; the segment's
// contents are shared memory reached through atomics and handoff protocols.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> SegmentKind {
        self.kind
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The mapping's first byte in this process.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// The bytes after the header, where the segment's structures live.
    pub fn data_region(&self) -> chimaera_proto::alloc::Region {
        // SAFETY: the map spans len() bytes from base and outlives users of
        // the region (the runtime drops its engine before its segments).
        unsafe {
            chimaera_proto::alloc::Region::new(
                self.base.add(HEADER_SIZE as usize),
                self.map.len() - HEADER_SIZE as usize,
            )
        }
    }

    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: the map is at least HEADER_SIZE bytes, page-aligned, and the
        // header is plain integers and an atomic, valid for any bit pattern.
        unsafe { &*self.map.as_ptr().cast::<SegmentHeader>() }
    }

    fn init(
        file: File,
        name: &str,
        kind: SegmentKind,
        size: u64,
        access: Access,
    ) -> Result<Segment, ShmError> {
        file.set_len(0).map_err(io_err(name, "clear"))?;
        file.set_len(size).map_err(io_err(name, "size"))?;
        if let Some(gid) = access.gid {
            sys::fchown_group(file.as_fd(), gid).map_err(io_err(name, "give to its group"))?;
        }
        use std::os::unix::fs::PermissionsExt;
        // shm_open's mode is filtered by the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(access.mode()))
            .map_err(io_err(name, "set permissions of"))?;
        // SAFETY: the mapping is shared memory other processes may write; this
        // crate only reaches it through the header's atomics and, later,
        // through structures designed for concurrent access.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(name, "map"))?;
        let header = SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            kind: kind as u32,
            size,
            data_offset: HEADER_SIZE,
            owner_pid: sys::pid(),
            owner_uid: sys::euid(),
            created_unix_ms: chimaera_proto::unix_ms(),
            ready: AtomicU32::new(0),
            _reserved: 0,
        };
        // SAFETY: the map is page-aligned, writable and longer than the header;
        // nobody reads it before `ready` is set below.
        unsafe { std::ptr::write(map.as_mut_ptr().cast::<SegmentHeader>(), header) };
        let base = map.as_mut_ptr();
        Ok(Segment {
            name: name.to_string(),
            kind,
            _file: file,
            map,
            base,
        })
    }
}

/// What the start found and cleared away, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    pub segment: String,
    pub previous_pid: Option<u32>,
}

/// The runtime's three segments. Dropping them unlinks them: an error on the
/// way up leaves nothing behind, and so does a clean stop.
pub struct Segments {
    pub main: Segment,
    pub client_data: Segment,
    pub runtime_data: Segment,
    pub reclaimed: Vec<Reclaimed>,
}

impl Segments {
    /// Creates the segments, reclaiming those of a dead runtime and refusing
    /// when a live one holds them.
    pub fn create(
        names: &SegmentNames,
        sizes: [u64; 3],
        access: Access,
    ) -> Result<Segments, ShmError> {
        let mut reclaimed = Vec::new();
        let main_file = lock_main(&names.main, access, &mut reclaimed)?;
        let main = Segment::init(main_file, &names.main, SegmentKind::Main, sizes[0], access)?;
        // From here on we own the names: a half-built set is unlinked by Drop.
        let mut guard = PartialSet(vec![names.main.clone()]);
        let client_data = create_data(
            &names.client_data,
            SegmentKind::ClientData,
            sizes[1],
            access,
            &mut reclaimed,
        )?;
        guard.0.push(names.client_data.clone());
        let runtime_data = create_data(
            &names.runtime_data,
            SegmentKind::RuntimeData,
            sizes[2],
            access,
            &mut reclaimed,
        )?;
        guard.0.clear();
        Ok(Segments {
            main,
            client_data,
            runtime_data,
            reclaimed,
        })
    }

    pub fn all(&self) -> [&Segment; 3] {
        [&self.main, &self.client_data, &self.runtime_data]
    }

    /// Sets the ready words, data segments first: clients wait for the
    /// main segment's, so everything it leads to is in place by then.
    pub fn publish(&self) {
        for seg in [&self.client_data, &self.runtime_data, &self.main] {
            seg.header().ready.store(READY, Ordering::Release);
        }
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        // Data segments first: the main segment's lock is what says "ours".
        for seg in [&self.runtime_data, &self.client_data, &self.main] {
            let _ = sys::shm_unlink(&seg.name);
        }
    }
}

struct PartialSet(Vec<String>);

impl Drop for PartialSet {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = sys::shm_unlink(name);
        }
    }
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(name)
}

/// Opens (or creates) the main segment and takes its exclusive lock.
fn lock_main(name: &str, access: Access, reclaimed: &mut Vec<Reclaimed>) -> Result<File, ShmError> {
    // A runtime that stops unlinks the name before it lets the lock go, so the
    // descriptor we lock may be of an object no longer under the name: then
    // try again with the new one. Four rounds cover a stale segment and any
    // real interleaving with another starting runtime.
    for _ in 0..4 {
        let fd: OwnedFd = sys::shm_open(name, libc::O_RDWR | libc::O_CREAT, access.mode())
            .map_err(io_err(name, "open"))?;
        let file = File::from(fd);
        match sys::try_flock(file.as_fd(), true).map_err(io_err(name, "lock"))? {
            LockState::HeldElsewhere => {
                let pid = wait_for_owner(&file);
                return Err(ShmError::AlreadyRunning {
                    pid,
                    segment: name.to_string(),
                });
            }
            LockState::Acquired => {}
        }
        let ours = file.metadata().map_err(io_err(name, "inspect"))?;
        match std::fs::metadata(shm_path(name)) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            _ => continue,
        }
        if ours.len() > 0 {
            // A dead runtime's segment. Clients of that runtime may still map
            // it; rebuilding it in place would pull their pages away (SIGBUS).
            // Unlink it instead: they keep the old object until they notice
            // the runtime is gone, and we start over with a fresh one.
            let info = HeaderInfo::read(&file).ok().flatten();
            reclaimed.push(Reclaimed {
                segment: name.to_string(),
                previous_pid: info.filter(|i| i.magic_ok).map(|i| i.owner_pid),
            });
            sys::shm_unlink(name).map_err(io_err(name, "remove stale"))?;
            continue;
        }
        return Ok(file);
    }
    Err(ShmError::Io {
        segment: name.to_string(),
        action: "lock",
        source: io::Error::other(
            "the segment kept being replaced while starting; is another runtime starting and stopping?",
        ),
    })
}

/// The pid in a live runtime's header; it may still be writing it.
fn wait_for_owner(file: &File) -> u32 {
    for _ in 0..50 {
        if let Ok(Some(info)) = HeaderInfo::read(file)
            && info.ready
        {
            return info.owner_pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    HeaderInfo::read(file)
        .ok()
        .flatten()
        .map_or(0, |i| i.owner_pid)
}

fn create_data(
    name: &str,
    kind: SegmentKind,
    size: u64,
    access: Access,
    reclaimed: &mut Vec<Reclaimed>,
) -> Result<Segment, ShmError> {
    // We hold the main lock, so whatever is under this name is a dead runtime's.
    if let Ok(old) = sys::shm_open(name, libc::O_RDONLY, 0) {
        let info = HeaderInfo::read(&File::from(old)).ok().flatten();
        sys::shm_unlink(name).map_err(io_err(name, "remove stale"))?;
        reclaimed.push(Reclaimed {
            segment: name.to_string(),
            previous_pid: info.filter(|i| i.magic_ok).map(|i| i.owner_pid),
        });
    }
    let fd = sys::shm_open(
        name,
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        access.mode(),
    )
    .map_err(io_err(name, "create"))?;
    Segment::init(File::from(fd), name, kind, size, access)
}

/// What a client or `chimaera status` learns about a runtime's main segment.
#[derive(Debug)]
pub enum Liveness {
    /// The lock is held: a runtime is alive. The file is kept open so that a
    /// caller can wait on the same object for the runtime to go.
    Alive {
        header: Option<HeaderInfo>,
        file: File,
    },
    /// The segment exists but nobody holds it: its runtime died.
    Dead { header: Option<HeaderInfo> },
    /// No such segment.
    Absent,
    /// The segment is there but we may not open it (another user's).
    NoAccess,
}

/// Looks at a main segment without disturbing its owner.
pub fn probe(name: &str) -> Result<Liveness, ShmError> {
    let fd = match sys::shm_open(name, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Liveness::Absent),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(Liveness::NoAccess),
        Err(e) => return Err(io_err(name, "open")(e)),
    };
    let file = File::from(fd);
    let header = HeaderInfo::read(&file).ok().flatten();
    match sys::try_flock(file.as_fd(), false).map_err(io_err(name, "probe the lock of"))? {
        LockState::HeldElsewhere => Ok(Liveness::Alive { header, file }),
        LockState::Acquired => {
            sys::unlock(file.as_fd());
            Ok(Liveness::Dead { header })
        }
    }
}

/// True once nobody holds the lock of this open main segment any more.
pub fn released(file: &File) -> bool {
    match sys::try_flock(file.as_fd(), false) {
        Ok(LockState::Acquired) => {
            sys::unlock(file.as_fd());
            true
        }
        _ => false,
    }
}
