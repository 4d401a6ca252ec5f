//! A plugin that fails in every way a Rust module can, on request, so that
//! tests/plugins.rs can show the daemon survives it: the C ABI boundary
//! catches each panic and turns it into the task's (or the pool's) error.
//!
//! Methods: 0 panics; 1 answers "fine"; 2 panics after yielding once;
//! 3 submits method 1 to its own pool, waits, and answers with its output.
//! Pool parameters `panic` make creating the pool panic.

use std::sync::Arc;

use chimaera_module::{Container, Module, PoolInfo, TaskContext, TaskError};

struct Faulty;

impl Container for Faulty {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        match ctx.method() {
            0 => panic!("faulty plugin: method 0 always panics"),
            1 => ctx.set_output(b"fine"),
            2 => {
                ctx.yield_now();
                panic!("faulty plugin: panicked after a yield")
            }
            3 => {
                let pool = ctx.pool_id();
                let sub = ctx.submit(pool, 1, b"", true)?;
                let out = ctx.wait(&sub)?;
                ctx.set_output(&out)
            }
            m => Err(TaskError::NoSuchMethod(m)),
        }
    }
}

struct FaultyModule;

impl Module for FaultyModule {
    fn name(&self) -> &str {
        "faulty"
    }

    fn create_container(&self, _: &PoolInfo, params: &[u8]) -> Result<Arc<dyn Container>, String> {
        if params == b"panic" || params == b"\"panic\"" {
            panic!("faulty plugin: asked to panic creating the pool");
        }
        Ok(Arc::new(Faulty))
    }
}

chimaera_module::export_module!(FaultyModule);
