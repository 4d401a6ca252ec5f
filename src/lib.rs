//! chimaera: a distributed task-execution runtime.
//!
//! The crate is laid out by concern: [`config`] is pure (parsing and
//! validation, no I/O beyond reading the file), [`shm`] owns the shared-memory
//! segments, [`service`] is the daemon's life cycle (signals, sd_notify,
//! logging, discovery), and [`cli`] maps subcommands onto them.

pub mod config;
pub mod shm;
pub mod sys;

/// Milliseconds since the Unix epoch, for records other processes read.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
pub mod alloc;
pub mod bench;
pub mod builder;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod engine;
pub mod exit;
pub mod metrics;
pub mod module;
pub mod modules;
pub mod net;
pub mod service;
pub mod wire;

pub use builder::RuntimeBuilder;
