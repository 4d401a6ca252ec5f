//! A module of your own, in a runtime of your own: the key-value store of
//! examples/plugins/kv (crate `kv-plugin`), compiled in instead of loaded
//! as a plugin.
//!
//! Build and run it like `chimaera` itself (it *is* `chimaera`, plus `kv`):
//!
//! ```sh
//! cargo build --release --example kv_module
//! target/release/examples/kv_module run            # a daemon that knows `kv`
//! ```
//!
//! and use it from a client (see `docs/MODULES.md`):
//!
//! ```text
//! client.create_pool("sessions", "kv", r#"{"capacity": 1000}"#)?;
//! client.call(&Task::new(pool.id, kv::PUT, b"alice\0online"))?;
//! ```

use std::process::ExitCode;

use chimaera::RuntimeBuilder;
use kv_plugin::KvModule;

fn main() -> ExitCode {
    RuntimeBuilder::new().module(KvModule).main()
}
