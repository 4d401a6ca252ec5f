//! chimaera: a distributed task-execution runtime, the daemon and its
//! command line.
//!
//! The crates below it are the architecture (docs/ARCHITECTURE.md has the
//! layer picture): `chimaera-proto` is what both sides of shared memory
//! agree on, `chimaera-client` submits tasks, `chimaera-module` is what a
//! module is written against. This package runs them: [`config`] is the
//! schema and the merging of sources, [`preflight`] the checks that need the
//! machine, [`shm`] owns the segments, [`engine`] runs tasks, [`net`] carries
//! them between nodes, [`metrics`] exports counters, [`service`] is the
//! daemon's life cycle, and [`cli`] maps subcommands onto them.

pub mod bench;
pub mod builder;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cpus;
pub mod engine;
pub mod exit;
pub mod metrics;
pub mod modules;
pub mod net;
pub mod plugin;
pub mod preflight;
pub mod service;
pub mod shm;
pub mod sys;

pub use builder::RuntimeBuilder;
pub use chimaera_client as client;
pub use chimaera_proto as proto;
pub use chimaera_proto::{alloc, unix_ms, wire};

/// The module API (`chimaera-module`), and the registry a runtime of one's
/// own registers its modules in.
pub mod module {
    pub use crate::engine::pools::Registry;
    pub use chimaera_module::*;
}
