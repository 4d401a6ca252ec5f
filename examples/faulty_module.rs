//! A module that panics, for the test that shows a panic is contained
//! (`tests/modules.rs`): its task ends with "module faulty panicked: ...",
//! and the daemon, its other tasks and the pool run on. Do not copy it.
//!
//! ```sh
//! cargo build --example faulty_module
//! target/debug/examples/faulty_module run
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use chimaera::RuntimeBuilder;
use chimaera::module::{Container, Module, PoolInfo, TaskContext, TaskError};

/// Panics with its input as the message.
pub const PANIC: u32 = 0;
/// Yields once (its coroutine is parked and resumed), then panics.
pub const PANIC_AFTER_YIELD: u32 = 1;
/// Output = input.
pub const ECHO: u32 = 2;

struct Faulty;

impl Container for Faulty {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let input = String::from_utf8_lossy(ctx.input()).into_owned();
        match ctx.method() {
            PANIC => panic!("{input}"),
            PANIC_AFTER_YIELD => {
                ctx.yield_now();
                let v: Vec<u8> = Vec::new();
                // An index out of bounds, as a real bug would.
                let i = input.len() + 10;
                ctx.set_output(&[v[i]])
            }
            ECHO => ctx.set_output(input.as_bytes()),
            m => Err(TaskError::NoSuchMethod(m)),
        }
    }
}

struct FaultyModule;

impl Module for FaultyModule {
    fn name(&self) -> &str {
        "faulty"
    }

    fn create_container(&self, _: &PoolInfo, _: &[u8]) -> Result<Arc<dyn Container>, String> {
        Ok(Arc::new(Faulty))
    }
}

fn main() -> ExitCode {
    RuntimeBuilder::new().module(FaultyModule).main()
}
