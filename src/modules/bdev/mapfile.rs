//! The allocation map file beside a file pool's data (`<path>.alloc`): its
//! header, and opening, checking and loading it into a [`BlockMap`]. This is
//! the on-disk format that survives a restart, so it sits apart from the
//! in-memory bitmap (`blockmap`) and from the device that updates it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::blockmap::BlockMap;
use super::params::BdevParams;

/// "CHIBDEVM": the allocation map beside a file pool's data.
const MAP_MAGIC: [u8; 8] = *b"CHIBDEVM";
const MAP_VERSION: u32 = 1;
/// The map's header: magic, version, pad, size, block size, blocks; the
/// bitmap words (u64 LE) follow.
pub(super) const MAP_HEADER: u64 = 64;

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
pub(super) fn open_map(
    p: &BdevParams,
    data: &Path,
    fresh: bool,
) -> Result<(File, BlockMap), String> {
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
