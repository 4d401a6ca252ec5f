//! The client side of a bdev pool: [`BdevClient`], typed calls over a
//! `chimaera_client::Client`, and [`IoBuf`], a write buffer laid out so a
//! write reaches shared memory in one copy. It runs in client processes and
//! shares only `protocol` with the daemon side.

use chimaera_client::{Client, ClientError, Task, TaskHandle};

use super::protocol::{BdevStats, Extent, MODULE_NAME, decode_extents, encode_extents, method};

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
