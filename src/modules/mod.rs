//! Modules built into the runtime.

pub mod admin;
