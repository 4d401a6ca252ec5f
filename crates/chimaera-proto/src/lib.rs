//! What a chimaera runtime and its clients must agree on, and nothing else:
//! the segment header ([`header`]), the main segment's layout ([`layout`]),
//! task records ([`record`]) and the lanes they travel on ([`lane`]), the
//! cross-process allocator of the data segments ([`alloc`]), the record
//! protocol that fills, publishes, completes and frees them ([`protocol`]),
//! the futex and clocks both sides wait with ([`sync`]), the admin pool's
//! requests ([`admin`]), a broadcast's aggregated output ([`broadcast`]) and
//! the cluster's wire frame ([`wire`]).
//!
//! No I/O beyond the system calls shared memory needs ([`sys`]): no sockets,
//! no logging, no threads of its own. Both the daemon and every client build
//! on it, so a change here is a change of the shared-memory layout
//! ([`header::LAYOUT_VERSION`]) or of the wire ([`wire::WIRE_VERSION`]).

pub mod admin;
pub mod alloc;
pub mod broadcast;
#[doc(hidden)]
pub mod fuzz_support;
pub mod header;
pub mod lane;
pub mod layout;
pub mod protocol;
pub mod record;
pub mod shared;
pub mod sync;
pub mod sys;
pub mod wire;

/// Milliseconds since the Unix epoch, for records other processes read.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
