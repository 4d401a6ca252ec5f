//! What happens when a module breaks the promise of [`Container::quick`]:
//! its one method claims to be quick, then sleeps for as many milliseconds
//! as its input says. A peer's task for it (or a broadcast's local leg)
//! runs on the network thread, which then cannot send heartbeats or serve
//! anyone; under systemd the watchdog ping is withheld until it returns, as
//! for a worker stuck in one task. `tests/modules.rs` runs it; do not copy it.
//!
//! ```sh
//! cargo build --example stall_module
//! target/debug/examples/stall_module run
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chimaera::RuntimeBuilder;
use chimaera::module::{Container, Module, PoolInfo, TaskContext, TaskError};

/// The method: input is a little-endian u64 of milliseconds.
pub const STALL: u32 = 0;

struct Stall;

impl Container for Stall {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let ms: [u8; 8] = ctx
            .input()
            .try_into()
            .map_err(|_| TaskError::BadInput("expected a u64 of milliseconds".into()))?;
        std::thread::sleep(Duration::from_millis(u64::from_le_bytes(ms)));
        Ok(())
    }

    fn quick(&self, _method: u32) -> bool {
        // The broken promise.
        true
    }
}

struct StallModule;

impl Module for StallModule {
    fn name(&self) -> &str {
        "stall"
    }

    fn create_container(&self, _: &PoolInfo, _: &[u8]) -> Result<Arc<dyn Container>, String> {
        Ok(Arc::new(Stall))
    }
}

fn main() -> ExitCode {
    RuntimeBuilder::new().module(StallModule).main()
}
