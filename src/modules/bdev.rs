//! The bdev module: a pool is a block device over RAM or over a file.
//!
//! A pool's `params` (JSON) choose the device:
//!
//! ```text
//! {"kind":"ram","size":"64M","block_size":4096}
//! {"kind":"file","path":"/abs/path","size":"1G","block_size":4096,"direct":false}
//! ```
//!
//! WRITE and READ address the device by byte offset; the block allocator
//! (ALLOCATE, FREE) hands out space for clients to use, as a file system's
//! allocator does on a disk: I/O is checked against the device's size, not
//! against what is allocated. Layouts, errors and what survives a restart:
//! `docs/BDEV.md`.
//!
//! The data path copies once on each side of shared memory: a write goes
//! from the task's input (already in the client data segment) straight into
//! device memory or `pwrite`; a read goes from device memory or `pread`
//! straight into the task's output. Overlapping requests are ordered by striped
//! reader-writer locks (64 KiB stripes), so disjoint extents proceed in
//! parallel on several workers and a read never sees part of a write.

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use memmap2::{MmapMut, MmapOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::size::{human, parse_size};
use crate::sys::{self, LockState};
use chimaera_client::{Client, ClientError, Task, TaskHandle};
use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};

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

/// Smallest and largest block sizes a pool accepts.
pub const MIN_BLOCK_SIZE: u64 = 512;
pub const MAX_BLOCK_SIZE: u64 = 16 << 20;
/// Block size when params give none.
pub const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// Bytes one stripe lock covers.
const STRIPE_SHIFT: u32 = 16;
/// Most stripe locks a device has; stripes beyond wrap around onto them.
const MAX_STRIPES: u64 = 1024;
/// Bounce buffers kept for reuse.
const BOUNCE_KEEP: usize = 4;

/// Where a pool's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ram,
    File,
}

/// A pool's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BdevParams {
    pub kind: Kind,
    pub size: u64,
    pub block_size: u64,
    /// The file (absolute) of a file pool.
    pub path: Option<PathBuf>,
    /// O_DIRECT (file pools only).
    pub direct: bool,
}

const FIELDS: [&str; 5] = ["kind", "size", "block_size", "path", "direct"];

fn size_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{name}: expected a whole number of bytes, got {n}")),
        Some(Value::String(s)) => parse_size(s).map(Some).map_err(|e| format!("{name}: {e}")),
        Some(other) => Err(format!(
            "{name}: expected a size such as \"64M\" or a number of bytes, got {other}"
        )),
    }
}

impl BdevParams {
    /// Parses and checks a pool's params; the error names the field.
    pub fn parse(text: &[u8]) -> Result<BdevParams, String> {
        let example = r#"{"kind":"ram","size":"64M","block_size":4096}"#;
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            format!(
                "expected a JSON object such as {example}, got {:?}: {e}",
                String::from_utf8_lossy(text)
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(format!(
                "expected a JSON object such as {example}, got {value}"
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "{unknown}: unknown field; known fields: {}",
                FIELDS.join(", ")
            ));
        }
        let kind = match obj.get("kind") {
            Some(Value::String(k)) if k == "ram" => Kind::Ram,
            Some(Value::String(k)) if k == "file" => Kind::File,
            Some(other) => return Err(format!("kind: expected \"ram\" or \"file\", got {other}")),
            None => return Err("kind: missing; \"ram\" or \"file\"".into()),
        };
        let size = size_field(&obj, "size")?.ok_or("size: missing; e.g. \"64M\"")?;
        let block_size = size_field(&obj, "block_size")?.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(format!(
                "block_size: expected a power of two from {} to {}, got {block_size}",
                human(MIN_BLOCK_SIZE),
                human(MAX_BLOCK_SIZE)
            ));
        }
        if size == 0 || !size.is_multiple_of(block_size) {
            return Err(format!(
                "size: expected a positive whole number of blocks of {block_size} bytes, got {size}"
            ));
        }
        if usize::try_from(size).is_err() || size > i64::MAX as u64 {
            return Err(format!(
                "size: {size} bytes is more than this machine can address"
            ));
        }
        let path = match obj.get("path") {
            None => None,
            Some(Value::String(p)) => {
                let p = PathBuf::from(p);
                if !p.is_absolute() {
                    return Err(format!(
                        "path: expected an absolute path (the daemon's working directory is not yours), got {}",
                        p.display()
                    ));
                }
                Some(p)
            }
            Some(other) => return Err(format!("path: expected a string, got {other}")),
        };
        let direct = match obj.get("direct") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("direct: expected true or false, got {other}")),
        };
        match kind {
            Kind::File if path.is_none() => {
                return Err("path: missing; a file pool needs the file's absolute path".into());
            }
            Kind::Ram if path.is_some() => {
                return Err("path: only a file pool has a path (kind is \"ram\")".into());
            }
            Kind::Ram if direct => {
                return Err("direct: only a file pool can use O_DIRECT (kind is \"ram\")".into());
            }
            _ => {}
        }
        Ok(BdevParams {
            kind,
            size,
            block_size,
            path,
            direct,
        })
    }

    pub fn blocks(&self) -> u64 {
        self.size / self.block_size
    }
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

// ----- block allocator ------------------------------------------------------

/// Blocks `start..start + count`, as (start, count).
type Run = (u64, u64);
/// The bitmap words a change touched, as (first, last).
type Touched = (usize, usize);

/// One bit per block, set when allocated. First fit: ALLOCATE is not the
/// data path, and a scan of the bitmap (32 KiB for 1 GiB of 4 KiB blocks)
/// costs microseconds.
#[derive(Debug)]
struct BlockMap {
    words: Vec<u64>,
    blocks: u64,
    used: u64,
}

impl BlockMap {
    fn new(blocks: u64) -> BlockMap {
        BlockMap {
            words: vec![0; blocks.div_ceil(64) as usize],
            blocks,
            used: 0,
        }
    }

    fn is_set(&self, b: u64) -> bool {
        self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// The first block at or after `from` whose bit is `set`, or `blocks`.
    fn find(&self, from: u64, set: bool) -> u64 {
        let mut b = from;
        while b < self.blocks {
            let w = self.words[(b / 64) as usize];
            let w = if set { w } else { !w };
            let masked = w & (u64::MAX << (b % 64));
            if masked != 0 {
                return (b - b % 64 + u64::from(masked.trailing_zeros())).min(self.blocks);
            }
            b = b - b % 64 + 64;
        }
        self.blocks
    }

    /// Sets or clears blocks `start..start+n`; returns the words touched.
    fn mark(&mut self, start: u64, n: u64, set: bool) -> Touched {
        for b in start..start + n {
            let (w, bit) = ((b / 64) as usize, 1u64 << (b % 64));
            if set {
                self.words[w] |= bit;
            } else {
                self.words[w] &= !bit;
            }
        }
        if set {
            self.used += n;
        } else {
            self.used -= n;
        }
        ((start / 64) as usize, ((start + n - 1) / 64) as usize)
    }

    /// `n` blocks as runs (start, count): one run when a free run is long
    /// enough, else the first free runs in order. None when fewer are free.
    fn allocate(&mut self, n: u64) -> Option<(Vec<Run>, Touched)> {
        if n == 0 || n > self.blocks - self.used {
            return None;
        }
        let mut runs = Vec::new();
        let mut at = 0;
        loop {
            let start = self.find(at, false);
            if start >= self.blocks {
                break;
            }
            let end = self.find(start, true);
            if end - start >= n {
                runs = vec![(start, n)];
                break;
            }
            at = end;
        }
        if runs.is_empty() {
            let mut left = n;
            let mut at = 0;
            while left > 0 {
                let start = self.find(at, false);
                let end = self.find(start, true);
                let take = (end - start).min(left);
                runs.push((start, take));
                left -= take;
                at = end;
            }
        }
        let mut touched = (usize::MAX, 0);
        for &(s, c) in &runs {
            let (lo, hi) = self.mark(s, c, true);
            touched = (touched.0.min(lo), touched.1.max(hi));
        }
        Some((runs, touched))
    }

    /// Frees runs (start, count) if every block of each is allocated and no
    /// two overlap; otherwise changes nothing and says why.
    fn free(&mut self, runs: &[Run]) -> Result<Touched, String> {
        let mut sorted = runs.to_vec();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if pair[0].0 + pair[0].1 > pair[1].0 {
                return Err(format!(
                    "the extents at blocks {} and {} overlap",
                    pair[0].0, pair[1].0
                ));
            }
        }
        for &(s, c) in &sorted {
            if let Some(b) = (s..s + c).find(|&b| !self.is_set(b)) {
                return Err(format!("block {b} is not allocated"));
            }
        }
        let mut touched = (usize::MAX, 0);
        for &(s, c) in &sorted {
            let (lo, hi) = self.mark(s, c, false);
            touched = (touched.0.min(lo), touched.1.max(hi));
        }
        Ok(touched)
    }
}

// ----- allocation map file ---------------------------------------------------

/// "CHIBDEVM": the allocation map beside a file pool's data.
const MAP_MAGIC: [u8; 8] = *b"CHIBDEVM";
const MAP_VERSION: u32 = 1;
/// The map's header: magic, version, pad, size, block size, blocks; the
/// bitmap words (u64 LE) follow.
const MAP_HEADER: u64 = 64;

/// The allocation map of a file pool: `<path>.alloc`.
pub fn map_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".alloc");
    PathBuf::from(p)
}

fn map_header(p: &BdevParams) -> [u8; MAP_HEADER as usize] {
    let mut h = [0u8; MAP_HEADER as usize];
    h[..8].copy_from_slice(&MAP_MAGIC);
    h[8..12].copy_from_slice(&MAP_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&p.size.to_le_bytes());
    h[24..32].copy_from_slice(&p.block_size.to_le_bytes());
    h[32..40].copy_from_slice(&p.blocks().to_le_bytes());
    h
}

/// Opens (or creates) the map of a file pool and loads it. `fresh` says the
/// data file was just created, so an old map describes nothing and is reset.
fn open_map(p: &BdevParams, data: &Path, fresh: bool) -> Result<(File, BlockMap), String> {
    let path = map_path(data);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            format!(
                "path: cannot open the allocation map {}: {e}",
                path.display()
            )
        })?;
    let mut map = BlockMap::new(p.blocks());
    let want_len = MAP_HEADER + map.words.len() as u64 * 8;
    let len = file
        .metadata()
        .map_err(|e| format!("path: {}: {e}", path.display()))?
        .len();
    let io = |e: std::io::Error| format!("path: allocation map {}: {e}", path.display());
    if fresh || len == 0 {
        file.set_len(0).map_err(io)?;
        file.set_len(want_len).map_err(io)?;
        file.write_all_at(&map_header(p), 0).map_err(io)?;
        return Ok((file, map));
    }
    let mut header = [0u8; MAP_HEADER as usize];
    file.read_exact_at(&mut header, 0).map_err(io)?;
    if header[..8] != MAP_MAGIC || header[8..12] != MAP_VERSION.to_le_bytes() {
        return Err(format!(
            "path: {} is not a bdev allocation map (or another version of one); move it away to start over with every block free",
            path.display()
        ));
    }
    if header != map_header(p) {
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        return Err(format!(
            "size/block_size: {} was written for size {} and block_size {}, these params say {} and {}; give the same ones (or move the file and its map away to start over)",
            path.display(),
            word(16),
            word(24),
            p.size,
            p.block_size
        ));
    }
    if len != want_len {
        return Err(format!(
            "path: the allocation map {} is {len} bytes, expected {want_len}: it is damaged",
            path.display()
        ));
    }
    let mut bytes = vec![0u8; map.words.len() * 8];
    file.read_exact_at(&mut bytes, MAP_HEADER).map_err(io)?;
    for (w, b) in map.words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
    let tail = map.blocks % 64;
    if tail != 0 && map.words.last().is_some_and(|w| w >> tail != 0) {
        return Err(format!(
            "path: the allocation map {} marks blocks past the device's end: it is damaged",
            path.display()
        ));
    }
    map.used = map.words.iter().map(|w| u64::from(w.count_ones())).sum();
    Ok((file, map))
}

// ----- stripe locks -----------------------------------------------------------

/// Reader-writer locks over 64 KiB stripes of the device (wrapping onto at
/// most [`MAX_STRIPES`] locks). An operation takes its stripes in ascending
/// lock order, so two operations never wait on each other in a cycle, and it
/// never yields while it holds them.
struct Stripes {
    locks: Box<[RwLock<()>]>,
}

impl Stripes {
    fn new(size: u64) -> Stripes {
        let n = size.div_ceil(1 << STRIPE_SHIFT).clamp(1, MAX_STRIPES);
        Stripes {
            locks: (0..n).map(|_| RwLock::new(())).collect(),
        }
    }

    /// The lock indices covering `off..off+len` (len > 0), ascending, as
    /// two ranges (the second empty unless the stripes wrap).
    fn indices(&self, off: u64, len: u64) -> [std::ops::Range<usize>; 2] {
        let n = self.locks.len() as u64;
        let first = off >> STRIPE_SHIFT;
        let last = (off + len - 1) >> STRIPE_SHIFT;
        if last - first + 1 >= n {
            return [0..n as usize, 0..0];
        }
        let (a, b) = ((first % n) as usize, (last % n) as usize);
        if a <= b {
            [a..b + 1, 0..0]
        } else {
            [0..b + 1, a..n as usize]
        }
    }

    fn read(&self, off: u64, len: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        self.indices(off, len)
            .into_iter()
            .flatten()
            .map(|i| self.locks[i].read().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    fn write(&self, off: u64, len: u64) -> Vec<RwLockWriteGuard<'_, ()>> {
        self.indices(off, len)
            .into_iter()
            .flatten()
            .map(|i| self.locks[i].write().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }
}

// ----- buffers ------------------------------------------------------------------

/// A heap buffer with a chosen alignment (O_DIRECT needs one).
struct AlignedBuf {
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

    fn bytes(&mut self, len: usize) -> &mut [u8] {
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
struct BouncePool {
    align: usize,
    free: Mutex<Vec<AlignedBuf>>,
}

impl BouncePool {
    fn take(&self, len: usize) -> Result<AlignedBuf, String> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = free.iter().position(|b| b.len() >= len) {
            return Ok(free.swap_remove(i));
        }
        drop(free);
        AlignedBuf::new(len.next_multiple_of(self.align), self.align)
    }

    fn give(&self, buf: AlignedBuf) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < BOUNCE_KEEP {
            free.push(buf);
        }
    }
}

// ----- devices ------------------------------------------------------------------

enum Backing {
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
struct Counters {
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
    allocates: AtomicU64,
    frees: AtomicU64,
    flushes: AtomicU64,
}

/// One pool's device.
pub struct Bdev {
    params: BdevParams,
    backing: Backing,
    stripes: Stripes,
    map: Mutex<BlockMap>,
    bounce: BouncePool,
    counters: Counters,
    destroyed: AtomicBool,
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

fn io_err(what: &str, off: u64, len: usize, e: std::io::Error) -> TaskError {
    TaskError::Failed(format!("{what} of {len} bytes at offset {off}: {e}"))
}

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

    fn check_open(&self) -> Result<(), TaskError> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(TaskError::Failed("the pool was destroyed".into()));
        }
        Ok(())
    }

    fn check_range(&self, what: &str, off: u64, len: u64) -> Result<(), TaskError> {
        match off.checked_add(len) {
            Some(end) if end <= self.params.size => Ok(()),
            _ => Err(TaskError::BadInput(format!(
                "{what}: extent of {len} bytes at offset {off} is outside the device ({} bytes)",
                self.params.size
            ))),
        }
    }

    /// Writes `data` at device offset `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), TaskError> {
        self.check_open()?;
        let len = data.len() as u64;
        self.check_range("WRITE", off, len)?;
        if len == 0 {
            return Ok(());
        }
        let _guards = self.stripes.write(off, len);
        match &self.backing {
            Backing::Ram { base, .. } => {
                // SAFETY: off + len <= size (checked), so the range lies in
                // the mapping; the write locks over it exclude every other
                // access; `data` is task input, not device memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(off as usize), data.len())
                }
            }
            Backing::File {
                file, io_align: 0, ..
            } => file
                .write_all_at(data, off)
                .map_err(|e| io_err("WRITE", off, data.len(), e))?,
            Backing::File {
                file,
                io_align,
                mem_align,
                ..
            } => self.write_direct(file, *io_align, *mem_align, off, data)?,
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// O_DIRECT write: straight from `data` when offset, length and memory
    /// are aligned, else through an aligned bounce buffer, reading the
    /// partial first and last units first (read-modify-write; the stripe
    /// locks the caller holds cover those units).
    fn write_direct(
        &self,
        file: &File,
        align: u64,
        mem_align: usize,
        off: u64,
        data: &[u8],
    ) -> Result<(), TaskError> {
        let len = data.len() as u64;
        if off.is_multiple_of(align)
            && len.is_multiple_of(align)
            && data.as_ptr().addr().is_multiple_of(mem_align)
        {
            return file
                .write_all_at(data, off)
                .map_err(|e| io_err("WRITE (O_DIRECT)", off, data.len(), e));
        }
        let start = off - off % align;
        let end = (off + len).next_multiple_of(align);
        let span = (end - start) as usize;
        let mut buf = self.bounce.take(span).map_err(TaskError::Failed)?;
        let result = (|| {
            let b = buf.bytes(span);
            let unit = align as usize;
            if off != start {
                file.read_exact_at(&mut b[..unit], start)
                    .map_err(|e| io_err("READ (O_DIRECT, partial first unit)", start, unit, e))?;
            }
            if off + len != end && (end - align != start || off == start) {
                file.read_exact_at(&mut b[span - unit..], end - align)
                    .map_err(|e| {
                        io_err("READ (O_DIRECT, partial last unit)", end - align, unit, e)
                    })?;
            }
            let head = (off - start) as usize;
            b[head..head + data.len()].copy_from_slice(data);
            file.write_all_at(b, start)
                .map_err(|e| io_err("WRITE (O_DIRECT)", start, span, e))
        })();
        self.bounce.give(buf);
        result
    }

    /// Reads `buf.len()` bytes at device offset `off` into `buf`.
    pub fn read_into(&self, off: u64, buf: &mut [u8]) -> Result<(), TaskError> {
        self.check_open()?;
        let len = buf.len() as u64;
        self.check_range("READ", off, len)?;
        if len == 0 {
            return Ok(());
        }
        let _guards = self.stripes.read(off, len);
        match &self.backing {
            Backing::Ram { base, .. } => {
                // SAFETY: in range (checked) and under read locks, which
                // exclude writers; `buf` is the caller's, not device memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        base.add(off as usize),
                        buf.as_mut_ptr(),
                        buf.len(),
                    )
                }
            }
            Backing::File {
                file, io_align: 0, ..
            } => file
                .read_exact_at(buf, off)
                .map_err(|e| io_err("READ", off, buf.len(), e))?,
            Backing::File {
                file,
                io_align,
                mem_align,
                ..
            } => self.read_direct(file, *io_align, *mem_align, off, buf)?,
        }
        self.count_read(len);
        Ok(())
    }

    fn read_direct(
        &self,
        file: &File,
        align: u64,
        mem_align: usize,
        off: u64,
        out: &mut [u8],
    ) -> Result<(), TaskError> {
        let len = out.len() as u64;
        if off.is_multiple_of(align)
            && len.is_multiple_of(align)
            && out.as_ptr().addr().is_multiple_of(mem_align)
        {
            return file
                .read_exact_at(out, off)
                .map_err(|e| io_err("READ (O_DIRECT)", off, out.len(), e));
        }
        let start = off - off % align;
        let end = (off + len).next_multiple_of(align);
        let span = (end - start) as usize;
        let mut buf = self.bounce.take(span).map_err(TaskError::Failed)?;
        let b = buf.bytes(span);
        let result = file
            .read_exact_at(b, start)
            .map_err(|e| io_err("READ (O_DIRECT)", start, span, e));
        if result.is_ok() {
            let head = (off - start) as usize;
            out.copy_from_slice(&b[head..head + out.len()]);
        }
        self.bounce.give(buf);
        result
    }

    fn count_read(&self, len: u64) {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(len, Ordering::Relaxed);
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

fn u64_at(input: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(input[at..at + 8].try_into().expect("8 bytes"))
}

impl Container for Bdev {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match ctx.method() {
            method::WRITE => {
                let input = ctx.input();
                let Some(split) = input.len().checked_sub(8) else {
                    return Err(TaskError::BadInput(format!(
                        "WRITE: expected the data and then a u64 offset, got {} bytes",
                        input.len()
                    )));
                };
                let (data, off) = input.split_at(split);
                self.write(u64_at(off, 0), data)
            }
            method::READ => {
                let input = ctx.input();
                if input.len() != 16 {
                    return Err(TaskError::BadInput(format!(
                        "READ: expected 16 bytes (u64 offset, u64 length), got {}",
                        input.len()
                    )));
                }
                let (off, len) = (u64_at(input, 0), u64_at(input, 8));
                if len > u64::from(u32::MAX) {
                    return Err(TaskError::BadInput(format!(
                        "READ: {len} bytes is more than one task's output can hold (4 GiB)"
                    )));
                }
                // Checked before the output is allocated, so that a bad
                // extent is reported as such, not as a full segment.
                self.check_open()?;
                self.check_range("READ", off, len)?;
                let out = ctx.output_buffer(len as usize)?;
                self.read_into(off, out)
            }
            method::ALLOCATE => {
                let b: [u8; 8] = ctx.input().try_into().map_err(|_| {
                    TaskError::BadInput("ALLOCATE: expected 8 bytes (u64 number of blocks)".into())
                })?;
                let extents = self.allocate(u64::from_le_bytes(b))?;
                ctx.set_output(&encode_extents(&extents))
            }
            method::FREE => {
                let extents = decode_extents(ctx.input())
                    .map_err(|e| TaskError::BadInput(format!("FREE: {e}")))?;
                self.free(&extents)
            }
            method::FLUSH => self.flush(),
            method::STATS => {
                let json = serde_json::to_vec(&self.stats())
                    .map_err(|e| TaskError::Failed(e.to_string()))?;
                ctx.set_output(&json)
            }
            m => Err(TaskError::NoSuchMethod(m)),
        }
    }

    fn destroy(&self) {
        self.destroyed.store(true, Ordering::Release);
        // Workers may hold the container a little longer; the file's lock
        // goes now so that a pool created again over it can open it.
        if let Backing::File { file, .. } = &self.backing {
            sys::unlock(std::os::fd::AsFd::as_fd(file));
        }
    }
}

/// The bdev module: one device per pool.
pub struct BdevModule;

impl Module for BdevModule {
    fn name(&self) -> &str {
        MODULE_NAME
    }

    fn create_container(
        &self,
        pool: &PoolInfo,
        params: &[u8],
    ) -> Result<Arc<dyn Container>, String> {
        let dev = BdevParams::parse(params)
            .and_then(Bdev::open)
            .map_err(|e| format!("bdev pool {:?}: {e}", pool.name))?;
        Ok(Arc::new(dev))
    }
}

// ----- client ---------------------------------------------------------------------

/// A write buffer: the data with room after it for the offset, so a write
/// goes to shared memory in one copy (see [`BdevClient::write_buf`]).
pub struct IoBuf {
    bytes: Vec<u8>,
}

impl IoBuf {
    /// `len` zero bytes of data.
    pub fn new(len: usize) -> IoBuf {
        IoBuf {
            bytes: vec![0; len + 8],
        }
    }

    pub fn from_slice(data: &[u8]) -> IoBuf {
        let mut b = IoBuf::new(data.len());
        b.data_mut().copy_from_slice(data);
        b
    }

    pub fn len(&self) -> usize {
        self.bytes.len() - 8
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        let n = self.len();
        &mut self.bytes[..n]
    }

    /// The WRITE input for offset `off`.
    fn input(&mut self, off: u64) -> &[u8] {
        let n = self.len();
        self.bytes[n..].copy_from_slice(&off.to_le_bytes());
        &self.bytes
    }
}

/// A bdev pool as a client sees it.
#[derive(Clone, Copy)]
pub struct BdevClient<'c> {
    client: &'c Client,
    pool: u32,
}

impl<'c> BdevClient<'c> {
    /// Creates the pool `name` with `params` (JSON, see the module docs), or
    /// opens the existing one of that name.
    pub fn create(client: &'c Client, name: &str, params: &str) -> Result<Self, ClientError> {
        let info = client.create_pool(name, MODULE_NAME, params)?;
        Ok(BdevClient {
            client,
            pool: info.id,
        })
    }

    /// A pool known by id.
    pub fn new(client: &'c Client, pool: u32) -> Self {
        BdevClient { client, pool }
    }

    pub fn pool(&self) -> u32 {
        self.pool
    }

    fn call(&self, method: u32, input: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.client.call(&Task::new(self.pool, method, input))
    }

    pub fn allocate(&self, blocks: u64) -> Result<Vec<Extent>, ClientError> {
        let out = self.call(method::ALLOCATE, &blocks.to_le_bytes())?;
        decode_extents(&out).map_err(ClientError::Other)
    }

    pub fn free(&self, extents: &[Extent]) -> Result<(), ClientError> {
        self.call(method::FREE, &encode_extents(extents)).map(drop)
    }

    /// Writes `data` at `off`. Convenient, but copies `data` once more than
    /// [`BdevClient::write_buf`] does (to put the offset after it).
    pub fn write(&self, off: u64, data: &[u8]) -> Result<(), ClientError> {
        let mut input = Vec::with_capacity(data.len() + 8);
        input.extend_from_slice(data);
        input.extend_from_slice(&off.to_le_bytes());
        self.call(method::WRITE, &input).map(drop)
    }

    /// Writes `buf`'s data at `off`: one copy into shared memory, one into
    /// the device.
    pub fn write_buf(&self, off: u64, buf: &mut IoBuf) -> Result<(), ClientError> {
        self.submit_write(off, buf)?.wait().map(drop)
    }

    /// Submits a write of `buf`'s data at `off`; `buf` is free again as soon
    /// as this returns (its bytes are in shared memory).
    pub fn submit_write(&self, off: u64, buf: &mut IoBuf) -> Result<TaskHandle<'c>, ClientError> {
        self.client
            .submit(&Task::new(self.pool, method::WRITE, buf.input(off)))
    }

    /// Submits a read of `len` bytes at `off`; the handle's output is the
    /// bytes ([`TaskHandle::wait_with`] lends them without a copy).
    pub fn submit_read(&self, off: u64, len: u64) -> Result<TaskHandle<'c>, ClientError> {
        let mut input = [0u8; 16];
        input[..8].copy_from_slice(&off.to_le_bytes());
        input[8..].copy_from_slice(&len.to_le_bytes());
        self.client
            .submit(&Task::new(self.pool, method::READ, &input))
    }

    pub fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, ClientError> {
        self.submit_read(off, len)?.wait()
    }

    /// Reads `buf.len()` bytes at `off` into `buf` (one copy, from shared
    /// memory).
    pub fn read_into(&self, off: u64, buf: &mut [u8]) -> Result<(), ClientError> {
        let n = buf.len();
        self.submit_read(off, n as u64)?.wait_with(|out| {
            if out.len() == n {
                buf.copy_from_slice(out);
                Ok(())
            } else {
                Err(ClientError::Other(format!(
                    "READ returned {} bytes, asked for {n}",
                    out.len()
                )))
            }
        })?
    }

    pub fn flush(&self) -> Result<(), ClientError> {
        self.call(method::FLUSH, &[]).map(drop)
    }

    pub fn stats(&self) -> Result<BdevStats, ClientError> {
        let out = self.call(method::STATS, &[])?;
        serde_json::from_slice(&out)
            .map_err(|e| ClientError::Other(format!("bad bdev stats from the runtime: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        BdevParams::parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn params_parse_and_errors_name_the_field() {
        let p = BdevParams::parse(br#"{"kind":"ram","size":"64M"}"#).unwrap();
        assert_eq!((p.kind, p.size, p.block_size), (Kind::Ram, 64 << 20, 4096));
        let p = BdevParams::parse(
            br#"{"kind":"file","path":"/x/y","size":1048576,"block_size":"64K","direct":true}"#,
        )
        .unwrap();
        assert_eq!(p.path.as_deref(), Some(Path::new("/x/y")));
        assert!(p.direct);
        assert_eq!(p.blocks(), 16);
        for (text, field) in [
            ("", "JSON object"),
            ("[1]", "JSON object"),
            (
                r#"{"kind":"ram","size":"1M","sise":1}"#,
                "sise: unknown field",
            ),
            (r#"{"size":"1M"}"#, "kind: missing"),
            (r#"{"kind":"tape","size":"1M"}"#, "kind: expected"),
            (r#"{"kind":"ram"}"#, "size: missing"),
            (
                r#"{"kind":"ram","size":"12X"}"#,
                "size: unknown size suffix",
            ),
            (
                r#"{"kind":"ram","size":-4}"#,
                "size: expected a whole number",
            ),
            (r#"{"kind":"ram","size":"0"}"#, "size: expected a positive"),
            (
                r#"{"kind":"ram","size":5000}"#,
                "size: expected a positive whole number of blocks",
            ),
            (
                r#"{"kind":"ram","size":"1M","block_size":1000}"#,
                "block_size: expected a power of two",
            ),
            (
                r#"{"kind":"ram","size":"1M","block_size":256}"#,
                "block_size",
            ),
            (
                r#"{"kind":"ram","size":"1M","block_size":true}"#,
                "block_size: expected a size",
            ),
            (r#"{"kind":"file","size":"1M"}"#, "path: missing"),
            (
                r#"{"kind":"file","size":"1M","path":"rel/x"}"#,
                "path: expected an absolute",
            ),
            (
                r#"{"kind":"file","size":"1M","path":7}"#,
                "path: expected a string",
            ),
            (
                r#"{"kind":"ram","size":"1M","path":"/x"}"#,
                "path: only a file pool",
            ),
            (
                r#"{"kind":"ram","size":"1M","direct":true}"#,
                "direct: only a file pool",
            ),
            (
                r#"{"kind":"file","size":"1M","path":"/x","direct":"yes"}"#,
                "direct: expected",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn block_map_first_fit_split_and_all_or_nothing_free() {
        let mut m = BlockMap::new(130);
        let (a, _) = m.allocate(10).unwrap();
        assert_eq!(a, vec![(0, 10)]);
        let (b, _) = m.allocate(100).unwrap();
        assert_eq!(b, vec![(10, 100)]);
        m.free(&[(0, 10)]).unwrap();
        // 10 free at the start, 20 at the end: 25 must split, in order.
        let (c, touched) = m.allocate(25).unwrap();
        assert_eq!(c, vec![(0, 10), (110, 15)]);
        assert_eq!(touched, (0, 1));
        assert_eq!(m.used, 125);
        assert!(m.allocate(6).is_none(), "only 5 left");
        assert!(m.allocate(0).is_none());
        let (d, _) = m.allocate(5).unwrap();
        assert_eq!(d, vec![(125, 5)]);
        assert_eq!(m.used, 130);
        // A block freed twice in one request, or one not allocated: nothing changes.
        assert!(m.free(&[(0, 4), (3, 2)]).unwrap_err().contains("overlap"));
        m.free(&[(0, 4)]).unwrap();
        let e = m.free(&[(10, 5), (2, 1)]).unwrap_err();
        assert!(e.contains("block 2"), "{e}");
        assert!(m.is_set(10), "the valid part was not freed");
        assert_eq!(m.used, 126);
        assert_eq!(m.find(0, false), 0);
        assert_eq!(m.find(4, false), 130);
    }

    #[test]
    fn stripe_indices_ascend_and_wrap() {
        let s = Stripes::new(4 << 20); // 64 stripes
        assert_eq!(s.locks.len(), 64);
        assert_eq!(s.indices(0, 1), [0..1, 0..0]);
        assert_eq!(s.indices(65535, 2), [0..2, 0..0]);
        assert_eq!(s.indices(0, 4 << 20), [0..64, 0..0]);
        let big = Stripes::new(1 << 30); // 16384 stripes onto 1024 locks
        assert_eq!(big.locks.len(), 1024);
        // Stripes 1023..=1025 are locks 1023, 0, 1: taken as 0..2 then 1023.
        assert_eq!(big.indices(1023 << 16, 3 << 16), [0..2, 1023..1024]);
        assert_eq!(big.indices(5 << 16, 2000 << 16), [0..1024, 0..0]);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Writes a few extents (aligned, unaligned, straddling blocks, at the
    /// end), checks every byte and the range errors; returns the contents.
    fn exercise(dev: &Bdev) -> Vec<u8> {
        let size = dev.params().size;
        let mut model = vec![0u8; size as usize];
        for (i, (off, len)) in [
            (0u64, 4096usize),
            (100, 7),
            (5000, 9000),
            (size - 3, 3),
            (4095, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(len, i as u8);
            dev.write(off, &data).unwrap();
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        let mut all = vec![0u8; size as usize];
        dev.read_into(0, &mut all).unwrap();
        assert!(all == model);
        let mut piece = vec![0u8; 20];
        dev.read_into(4090, &mut piece).unwrap();
        assert_eq!(piece, model[4090..4110]);
        assert!(matches!(
            dev.write(size - 1, &[1, 2]),
            Err(TaskError::BadInput(_))
        ));
        assert!(matches!(
            dev.read_into(u64::MAX, &mut [0]),
            Err(TaskError::BadInput(_))
        ));
        let st = dev.stats();
        assert_eq!(st.writes, 5);
        assert_eq!(st.reads, 2);
        assert_eq!(st.bytes_read, size + 20);
        model
    }

    #[test]
    fn ram_device_reads_what_was_written() {
        let dev = Bdev::open(
            BdevParams::parse(br#"{"kind":"ram","size":"64K","block_size":512}"#).unwrap(),
        )
        .unwrap();
        exercise(&dev);
    }

    fn file_params(dir: &Path, direct: bool) -> BdevParams {
        let text = format!(
            r#"{{"kind":"file","path":"{}","size":"64K","block_size":4096,"direct":{direct}}}"#,
            dir.join("dev.img").display()
        );
        BdevParams::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn file_device_keeps_data_and_allocations_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_params(dir.path(), false);
        let dev = Bdev::open(p.clone()).unwrap();
        let model = exercise(&dev);
        let ext = dev.allocate(3).unwrap();
        assert_eq!(
            ext,
            vec![Extent {
                offset: 0,
                len: 3 * 4096
            }]
        );
        dev.flush().unwrap();
        let again = Bdev::open(p.clone()).unwrap_err();
        assert!(again.contains("in use"), "{again}");
        drop(dev);
        let dev = Bdev::open(p.clone()).unwrap();
        assert_eq!(dev.stats().blocks_used, 3);
        assert_eq!(
            dev.allocate(1).unwrap(),
            vec![Extent {
                offset: 3 * 4096,
                len: 4096
            }]
        );
        let mut all = vec![0u8; model.len()];
        dev.read_into(0, &mut all).unwrap();
        assert!(all == model, "the data survived closing and opening");
        drop(dev);
        let mut other = p.clone();
        other.block_size = 8192;
        let e = Bdev::open(other).unwrap_err();
        assert!(e.contains("size/block_size"), "{e}");
        let mut small = p;
        small.size = 32 << 10;
        let e = Bdev::open(small).unwrap_err();
        assert!(e.contains("refusing to cut it short"), "{e}");
    }

    #[test]
    fn direct_file_device_handles_unaligned_extents() {
        let dir = tempfile::tempdir().unwrap();
        match Bdev::open(file_params(dir.path(), true)) {
            Ok(dev) => {
                exercise(&dev);
            }
            Err(e) => assert!(e.contains("O_DIRECT"), "{e}"),
        }
    }
}
