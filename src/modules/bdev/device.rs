//! One pool's device, [`Bdev`]: what it is made of (RAM mapping or file,
//! stripe locks, allocation map, bounce buffers, counters), opening it, and
//! the methods off the data path (ALLOCATE, FREE, FLUSH, STATS). The data
//! path itself (WRITE, READ) is in `io`; how a task reaches these methods is
//! in `container`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::config::size::human;
use crate::sys::{self, LockState};
use chimaera_module::TaskError;

use super::blockmap::{BlockMap, Touched};
use super::bounce::BouncePool;
use super::mapfile::{MAP_HEADER, open_map};
use super::params::{BdevParams, Kind};
use super::protocol::{BdevStats, Extent};
use super::stripes::Stripes;

pub(super) enum Backing {
    /// Anonymous memory; `base` is the mapping's start, reached only under
    /// the stripe locks.
    Ram { _map: MmapMut, base: *mut u8 },
    File {
        file: File,
        map_file: File,
        /// O_DIRECT offset/length alignment (0 for buffered files).
        io_align: u64,
        /// O_DIRECT memory alignment.
        mem_align: usize,
    },
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) bytes_written: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) reads: AtomicU64,
    pub(super) allocates: AtomicU64,
    pub(super) frees: AtomicU64,
    pub(super) flushes: AtomicU64,
}

/// One pool's device.
pub struct Bdev {
    params: BdevParams,
    pub(super) backing: Backing,
    pub(super) stripes: Stripes,
    map: Mutex<BlockMap>,
    pub(super) bounce: BouncePool,
    pub(super) counters: Counters,
    pub(super) destroyed: AtomicBool,
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("params", &self.params)
            .finish()
    }
}

// SAFETY: `base` points into the mapping the device owns for its whole life;
// every access to those bytes holds the stripe locks covering them (readers
// shared, writers exclusive), so threads never race on them.
unsafe impl Send for Bdev {}
// SAFETY: as above; everything else is atomics, locks or files.
unsafe impl Sync for Bdev {}

/// Direct I/O alignment of an open file: (offset alignment, memory
/// alignment), from statx; None when the kernel or file system does not say.
fn dio_alignment(file: &File) -> Result<Option<(u64, usize)>, std::io::Error> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open, the path is an empty C string used
    // with AT_EMPTY_PATH, and `stx` is a valid buffer for the result.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(None);
    }
    Ok(Some((
        u64::from(stx.stx_dio_offset_align),
        stx.stx_dio_mem_align as usize,
    )))
}

impl Bdev {
    /// Opens the device the params describe: maps RAM, or opens (creating
    /// when missing) the file and its allocation map.
    pub fn open(params: BdevParams) -> Result<Bdev, String> {
        let (backing, map, align) = match params.kind {
            Kind::Ram => {
                let mut map = MmapOptions::new()
                    .len(params.size as usize)
                    .no_reserve_swap()
                    .map_anon()
                    .map_err(|e| {
                        format!("size: cannot map {} of memory: {e}", human(params.size))
                    })?;
                let base = map.as_mut_ptr();
                (
                    Backing::Ram { _map: map, base },
                    BlockMap::new(params.blocks()),
                    64,
                )
            }
            Kind::File => Bdev::open_file(&params)?,
        };
        Ok(Bdev {
            stripes: Stripes::new(params.size),
            map: Mutex::new(map),
            bounce: BouncePool {
                align,
                free: Mutex::new(Vec::new()),
            },
            counters: Counters::default(),
            destroyed: AtomicBool::new(false),
            params,
            backing,
        })
    }

    fn open_file(params: &BdevParams) -> Result<(Backing, BlockMap, usize), String> {
        let path = params
            .path
            .as_deref()
            .expect("checked: a file pool has a path");
        let existed = path.exists();
        let mut opts = OpenOptions::new();
        opts.read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600);
        if params.direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let file = opts.open(path).map_err(|e| {
            if params.direct && e.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "direct: the file system holding {} does not support O_DIRECT (open: {e}); use \"direct\": false or a path on a disk file system",
                    path.display()
                )
            } else {
                format!("path: cannot open {}: {e}", path.display())
            }
        })?;
        let meta = file
            .metadata()
            .map_err(|e| format!("path: {}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("path: {} is not a regular file", path.display()));
        }
        match sys::try_flock(std::os::fd::AsFd::as_fd(&file), true) {
            Ok(LockState::Acquired) => {}
            Ok(LockState::HeldElsewhere) => {
                return Err(format!(
                    "path: {} is in use by another bdev pool or process (it holds a lock on it)",
                    path.display()
                ));
            }
            Err(e) => return Err(format!("path: cannot lock {}: {e}", path.display())),
        }
        if meta.len() > params.size {
            return Err(format!(
                "size: {} holds {} bytes, more than size {}; refusing to cut it short (give a size of at least {})",
                path.display(),
                meta.len(),
                params.size,
                meta.len()
            ));
        }
        if meta.len() < params.size {
            // Sparse: blocks never written cost no disk and read as zeros.
            file.set_len(params.size).map_err(|e| {
                format!(
                    "size: cannot grow {} to {}: {e}",
                    path.display(),
                    params.size
                )
            })?;
        }
        let (io_align, mem_align) = if params.direct {
            match dio_alignment(&file) {
                Ok(Some((0, _))) => {
                    return Err(format!(
                        "direct: the file system holding {} does not support O_DIRECT on it; use \"direct\": false",
                        path.display()
                    ));
                }
                Ok(Some((off, mem))) => (off, mem.max(1)),
                // Not reported: assume the block size and a page.
                Ok(None) | Err(_) => (params.block_size, 4096),
            }
        } else {
            (0, 1)
        };
        if params.direct && !params.block_size.is_multiple_of(io_align) {
            return Err(format!(
                "block_size: {} needs O_DIRECT I/O aligned to {io_align} bytes; use a block_size that is a multiple of it",
                path.display()
            ));
        }
        let (map_file, map) = open_map(params, path, !existed)?;
        let align = mem_align.max(64).max(io_align as usize);
        Ok((
            Backing::File {
                file,
                map_file,
                io_align,
                mem_align,
            },
            map,
            align,
        ))
    }

    pub fn params(&self) -> &BdevParams {
        &self.params
    }

    pub(super) fn check_open(&self) -> Result<(), TaskError> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(TaskError::Failed("the pool was destroyed".into()));
        }
        Ok(())
    }

    pub(super) fn check_range(&self, what: &str, off: u64, len: u64) -> Result<(), TaskError> {
        match off.checked_add(len) {
            Some(end) if end <= self.params.size => Ok(()),
            _ => Err(TaskError::BadInput(format!(
                "{what}: extent of {len} bytes at offset {off} is outside the device ({} bytes)",
                self.params.size
            ))),
        }
    }

    /// Allocates `n` blocks: one extent when a free run is long enough.
    pub fn allocate(&self, n: u64) -> Result<Vec<Extent>, TaskError> {
        self.check_open()?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let free = map.blocks - map.used;
        let Some((runs, touched)) = map.allocate(n) else {
            return Err(if n == 0 {
                TaskError::BadInput("ALLOCATE: asked for 0 blocks".into())
            } else {
                TaskError::Failed(format!(
                    "ALLOCATE: no space for {n} blocks: {free} of {} are free",
                    map.blocks
                ))
            });
        };
        if let Err(e) = self.persist(&map, touched) {
            // The map file could not follow: undo, so memory and file agree.
            for &(s, c) in &runs {
                map.mark(s, c, false);
            }
            return Err(e);
        }
        drop(map);
        self.counters.allocates.fetch_add(1, Ordering::Relaxed);
        let bs = self.params.block_size;
        Ok(runs
            .into_iter()
            .map(|(s, c)| Extent {
                offset: s * bs,
                len: c * bs,
            })
            .collect())
    }

    /// Frees extents (block-aligned, allocated): all of them or none.
    pub fn free(&self, extents: &[Extent]) -> Result<(), TaskError> {
        self.check_open()?;
        let bs = self.params.block_size;
        let mut runs = Vec::with_capacity(extents.len());
        for e in extents {
            self.check_range("FREE", e.offset, e.len)?;
            if !e.offset.is_multiple_of(bs) || !e.len.is_multiple_of(bs) || e.len == 0 {
                return Err(TaskError::BadInput(format!(
                    "FREE: extent of {} bytes at offset {} is not a whole number of {bs}-byte blocks",
                    e.len, e.offset
                )));
            }
            runs.push((e.offset / bs, e.len / bs));
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let touched = map
            .free(&runs)
            .map_err(|e| TaskError::BadInput(format!("FREE: {e}; nothing was freed")))?;
        if let Err(e) = self.persist(&map, touched) {
            for &(s, c) in &runs {
                map.mark(s, c, true);
            }
            return Err(e);
        }
        drop(map);
        self.counters.frees.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the bitmap words `lo..=hi` to a file pool's map (the caller
    /// holds the map lock, so writes land in the order they were made).
    fn persist(&self, map: &BlockMap, (lo, hi): Touched) -> Result<(), TaskError> {
        let Backing::File { map_file, .. } = &self.backing else {
            return Ok(());
        };
        let bytes: Vec<u8> = map.words[lo..=hi]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        map_file
            .write_all_at(&bytes, MAP_HEADER + lo as u64 * 8)
            .map_err(|e| TaskError::Failed(format!("cannot update the allocation map: {e}")))
    }

    /// fsync of a file pool's data and map.
    pub fn flush(&self) -> Result<(), TaskError> {
        self.check_open()?;
        if let Backing::File { file, map_file, .. } = &self.backing {
            file.sync_all()
                .map_err(|e| TaskError::Failed(format!("FLUSH: fsync of the data: {e}")))?;
            map_file.sync_all().map_err(|e| {
                TaskError::Failed(format!("FLUSH: fsync of the allocation map: {e}"))
            })?;
        }
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> BdevStats {
        let (blocks, used) = {
            let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            (m.blocks, m.used)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BdevStats {
            kind: self.params.kind.clone(),
            path: self.params.path.clone(),
            direct: self.params.direct,
            size: self.params.size,
            block_size: self.params.block_size,
            blocks_total: blocks,
            blocks_used: used,
            blocks_free: blocks - used,
            bytes_written: get(&c.bytes_written),
            bytes_read: get(&c.bytes_read),
            writes: get(&c.writes),
            reads: get(&c.reads),
            allocates: get(&c.allocates),
            frees: get(&c.frees),
            flushes: get(&c.flushes),
        }
    }
}

#[cfg(test)]
mod tests;
