//! Modules built into the runtime.

pub mod admin;
pub mod bdev;

use std::sync::Arc;

use crate::engine::pools::Registry;

/// Every built-in module but admin, which the engine registers itself (it
/// also creates pool 0 from it).
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register(Arc::new(bdev::BdevModule));
    registry
}
