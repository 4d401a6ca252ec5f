//! The key-value store of examples/kv_module.rs as a plugin: a `cdylib`
//! (`libkv_plugin.so`) that the packaged daemon loads with
//!
//! ```yaml
//! modules:
//!   path: [/path/to/target/release]
//!   load: [kv]
//! ```
//!
//! and that pools then name like a built-in module:
//!
//! ```sh
//! chimaera pool create sessions kv --params '{"capacity": 1000}'
//! chimaera call sessions 0 @entry.bin     # PUT: key \0 value
//! chimaera call sessions 1 alice          # GET
//! ```
//!
//! The same crate is an rlib too, so examples/kv_module.rs compiles the
//! module into a runtime of its own instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};

/// Method numbers: what clients put in `Task::method`.
pub mod kv {
    /// Input `key \0 value`; output the previous value, if any.
    pub const PUT: u32 = 0;
    /// Input `key`; output the value, or a module error if there is none.
    pub const GET: u32 = 1;
    /// Input `key`; output the removed value (empty if there was none).
    pub const DELETE: u32 = 2;
    /// Output the number of keys, u64 little-endian.
    pub const COUNT: u32 = 3;
}

/// One pool's store. Several workers may run tasks of the same pool at
/// once, so the map sits behind a mutex; no task holds it across a yield.
struct Store {
    capacity: usize,
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

impl Container for Store {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        // The input lies in shared memory, where the client wrote it.
        let input = ctx.input();
        match ctx.method() {
            kv::PUT => {
                let split = input
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| TaskError::BadInput("expected key \\0 value".into()))?;
                let (key, value) = (input[..split].to_vec(), input[split + 1..].to_vec());
                let previous = {
                    let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
                    if !map.contains_key(&key) && map.len() >= self.capacity {
                        return Err(TaskError::Failed(format!(
                            "the pool is full ({} keys); raise its capacity",
                            self.capacity
                        )));
                    }
                    map.insert(key, value)
                };
                ctx.set_output(previous.as_deref().unwrap_or_default())
            }
            kv::GET => {
                let value = self
                    .map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(input)
                    .cloned();
                match value {
                    Some(v) => ctx.set_output(&v),
                    None => Err(TaskError::Failed(format!(
                        "no key {:?}",
                        String::from_utf8_lossy(input)
                    ))),
                }
            }
            kv::DELETE => {
                let removed = self
                    .map
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(input);
                ctx.set_output(removed.as_deref().unwrap_or_default())
            }
            kv::COUNT => {
                let n = self.map.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
                ctx.set_output(&n.to_le_bytes())
            }
            m => Err(TaskError::NoSuchMethod(m)),
        }
    }
}

/// The module: makes one [`Store`] per pool, from the pool's parameters.
pub struct KvModule;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_capacity")]
    capacity: usize,
}

fn default_capacity() -> usize {
    10_000
}

impl Module for KvModule {
    fn name(&self) -> &str {
        "kv"
    }

    fn create_container(
        &self,
        pool: &PoolInfo,
        params: &[u8],
    ) -> Result<Arc<dyn Container>, String> {
        // Parameters come from `compose:` (YAML turned into JSON) or from a
        // client's create_pool; empty means the defaults.
        let p: Params = if params.is_empty() {
            Params {
                capacity: default_capacity(),
            }
        } else {
            serde_json::from_slice(params)
                .map_err(|e| format!("pool {:?}: bad kv params: {e}", pool.name))?
        };
        if p.capacity == 0 {
            return Err(format!("pool {:?}: capacity must be at least 1", pool.name));
        }
        Ok(Arc::new(Store {
            capacity: p.capacity,
            map: Mutex::new(HashMap::new()),
        }))
    }
}

chimaera_module::export_module!(KvModule);
