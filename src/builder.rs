//! Your own runtime: the `chimaera` command line (run, stop, status, ping,
//! config, bench) with your modules beside the built-in ones.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chimaera::module::{Container, Module, PoolInfo, TaskContext, TaskError};
//! use chimaera::RuntimeBuilder;
//!
//! struct Hello;
//! impl Container for Hello {
//!     fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
//!         ctx.set_output(b"hello")
//!     }
//! }
//! struct HelloModule;
//! impl Module for HelloModule {
//!     fn name(&self) -> &str { "hello" }
//!     fn create_container(&self, _: &PoolInfo, _: &[u8]) -> Result<Arc<dyn Container>, String> {
//!         Ok(Arc::new(Hello))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     RuntimeBuilder::new().module(HelloModule).main()
//! }
//! ```
//!
//! The binary is a complete `chimaera`: `my-runtime run` starts a daemon
//! whose pools may use `hello` (from the config's `compose:` or a client's
//! `create_pool`), and every other subcommand works as documented in
//! chimaera(1). See docs/MODULES.md.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use crate::engine::pools::Registry;
use chimaera_module::Module;

/// Collects modules, then runs the command line with them.
pub struct RuntimeBuilder {
    modules: Vec<Arc<dyn Module>>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder::new()
    }
}

impl RuntimeBuilder {
    /// A runtime with the built-in modules only.
    pub fn new() -> RuntimeBuilder {
        RuntimeBuilder {
            modules: Vec::new(),
        }
    }

    /// Adds a module; pools name it by [`Module::name`].
    pub fn module(mut self, module: impl Module) -> RuntimeBuilder {
        self.modules.push(Arc::new(module));
        self
    }

    /// The registry the daemon starts with: built-in modules, then these.
    /// A name given twice (or a built-in's name) is refused: a pool must
    /// not change meaning with the order of registration.
    pub fn registry(&self) -> Result<Registry, String> {
        let mut registry = crate::modules::builtin_registry();
        let builtin = registry.names();
        for m in &self.modules {
            let name = m.name();
            if name.is_empty() || name == crate::modules::admin::POOL_NAME {
                return Err(format!("a module may not be named {name:?}"));
            }
            if registry.get(name).is_some() {
                let whose = if builtin.iter().any(|b| b == name) {
                    "a built-in module"
                } else {
                    "another module of this runtime"
                };
                return Err(format!("module name {name:?} is taken by {whose}"));
            }
            registry.register(m.clone());
        }
        Ok(registry)
    }

    /// Runs the command line from this process's arguments.
    pub fn main(self) -> ExitCode {
        ExitCode::from(self.main_with_args(std::env::args_os()))
    }

    /// Runs the command line from `args` (the first is the program name);
    /// returns the exit code.
    pub fn main_with_args(self, args: impl IntoIterator<Item = OsString>) -> u8 {
        match self.registry() {
            Ok(registry) => crate::cli::main_with_registry(args, registry),
            Err(e) => {
                eprintln!("chimaera: {e}");
                crate::exit::SOFTWARE
            }
        }
    }
}
