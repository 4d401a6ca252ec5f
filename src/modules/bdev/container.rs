//! How tasks reach a device: [`BdevModule`] makes one device per pool, and
//! the `Container` impl decodes a task's method and input into a call on
//! [`Bdev`] and writes its output. The byte layouts are in `protocol`; the
//! work is in `device` and `io`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sys;
use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};

use super::device::{Backing, Bdev};
use super::params::BdevParams;
use super::protocol::{MODULE_NAME, decode_extents, encode_extents, method};

fn u64_at(input: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(input[at..at + 8].try_into().expect("8 bytes"))
}

impl Container for Bdev {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match ctx.method() {
            method::WRITE => {
                let n = ctx.input_len();
                let Some(split) = n.checked_sub(8) else {
                    return Err(TaskError::BadInput(format!(
                        "WRITE: expected the data and then a u64 offset, got {n} bytes"
                    )));
                };
                let mut off = [0u8; 8];
                ctx.read_input(split, &mut off);
                let off = u64::from_le_bytes(off);
                // RAM: from the client's buffer straight into the device.
                if let Some(r) = self.ram_write_with(off, split as u64, |dst| {
                    ctx.read_input(0, dst);
                }) {
                    return r;
                }
                let input = ctx.input();
                self.write(off, &input[..split])
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
                // RAM: from the device straight into the client's output.
                if let Some(r) = self.ram_read_with(off, len, |src| ctx.set_output(src)) {
                    return r;
                }
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

    fn check_params(&self, pool_name: &str, params: &[u8]) -> Result<(), String> {
        BdevParams::parse(params)
            .map(drop)
            .map_err(|e| format!("bdev pool {pool_name:?}: {e}"))
    }
}
