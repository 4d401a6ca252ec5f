//! The runtime's reading of shared memory under arbitrary writes: lanes,
//! records, input spans and the allocator over segments a hostile client
//! wrote over (`chimaera_proto::fuzz_support::exercise`). `cargo test` runs
//! the same path on seeded random writes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    chimaera::proto::fuzz_support::exercise(data);
});
