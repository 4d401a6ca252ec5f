//! The device's data path: WRITE and READ, straight to or from RAM, through
//! buffered `pwrite`/`pread`, or O_DIRECT (through a bounce buffer when the
//! request is not aligned). Each holds the stripe locks over its extent.
//! Apart from `device` because this is the hot, `unsafe` part a reader of
//! the I/O wants without the opening and allocation around it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use chimaera_module::TaskError;

use super::device::{Backing, Bdev};

fn io_err(what: &str, off: u64, len: usize, e: std::io::Error) -> TaskError {
    TaskError::Failed(format!("{what} of {len} bytes at offset {off}: {e}"))
}

impl Bdev {
    /// On a RAM device, lends `f` the `len` device bytes at `off` to fill,
    /// under the write locks: the task copies its input straight from
    /// shared memory into the device (one copy). None on a file device.
    pub fn ram_write_with(
        &self,
        off: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]),
    ) -> Option<Result<(), TaskError>> {
        let Backing::Ram { base, .. } = &self.backing else {
            return None;
        };
        let checked = self
            .check_open()
            .and_then(|()| self.check_range("WRITE", off, len));
        if let Err(e) = checked {
            return Some(Err(e));
        }
        if len == 0 {
            return Some(Ok(()));
        }
        {
            let _guards = self.stripes.write(off, len);
            // SAFETY: off + len <= size (checked), so the range lies in the
            // device's private mapping; the write locks over it exclude
            // every other access while `f` holds it.
            f(unsafe { std::slice::from_raw_parts_mut(base.add(off as usize), len as usize) });
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(len, Ordering::Relaxed);
        Some(Ok(()))
    }

    /// On a RAM device, lends `f` the `len` device bytes at `off`, under the
    /// read locks: the task copies them straight into its output in shared
    /// memory (one copy). None on a file device.
    pub fn ram_read_with(
        &self,
        off: u64,
        len: u64,
        f: impl FnOnce(&[u8]) -> Result<(), TaskError>,
    ) -> Option<Result<(), TaskError>> {
        let Backing::Ram { base, .. } = &self.backing else {
            return None;
        };
        let checked = self
            .check_open()
            .and_then(|()| self.check_range("READ", off, len));
        if let Err(e) = checked {
            return Some(Err(e));
        }
        if len == 0 {
            return Some(f(&[]));
        }
        let _guards = self.stripes.read(off, len);
        // SAFETY: in range (checked) and under read locks, which exclude
        // writers, while `f` holds it; device memory is the daemon's own.
        let r = f(unsafe { std::slice::from_raw_parts(base.add(off as usize), len as usize) });
        if r.is_ok() {
            self.count_read(len);
        }
        Some(r)
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
}
