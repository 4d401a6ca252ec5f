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
//!
//! The code is split by concern; this file only declares the parts and
//! re-exports their public items here, at `modules::bdev::*`:
//!
//! - `protocol`: what a client and a pool agree on: the module name, the
//!   method numbers, the extent encoding, the stats.
//! - `params`: a pool's JSON params, parsed and checked.
//! - `container`: the module and the `Container` impl that turns a task's
//!   input into a call on the device.
//! - `device`: one pool's device ([`Bdev`]): what it is made of, opening it
//!   (RAM, file, O_DIRECT), ALLOCATE, FREE, FLUSH and STATS.
//! - `io`: the data path of the device: WRITE and READ, buffered or O_DIRECT.
//! - `stripes`: the striped reader-writer locks that order overlapping I/O.
//! - `bounce`: aligned buffers for O_DIRECT requests that are not aligned.
//! - `blockmap`: the allocation bitmap, in memory.
//! - `mapfile`: the same bitmap on disk beside a file pool (`<path>.alloc`).
//! - `client`: [`BdevClient`] and [`IoBuf`], the typed client side.

mod blockmap;
mod bounce;
mod client;
mod container;
mod device;
mod io;
mod mapfile;
mod params;
mod protocol;
mod stripes;

pub use client::{BdevClient, IoBuf};
pub use container::BdevModule;
pub use device::Bdev;
pub use mapfile::map_path;
pub use params::{BdevParams, DEFAULT_BLOCK_SIZE, Kind, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
pub use protocol::{BdevStats, Extent, MODULE_NAME, decode_extents, encode_extents, method};
