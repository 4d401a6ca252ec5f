//! Feeds arbitrary bytes to `wire::decode`, with and without a cluster key.
//! Besides "never panics", it checks that decoding is canonical: anything
//! accepted re-encodes to exactly the input bytes.
#![no_main]

use std::sync::LazyLock;

use chimaera::wire::{self, ClusterKey};
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<ClusterKey> =
    LazyLock::new(|| ClusterKey::from_bytes(&[0x42; 32]).expect("32-byte key"));

fuzz_target!(|data: &[u8]| {
    for key in [None, Some(&*KEY)] {
        match wire::decode(data, key) {
            Ok((hdr, frame)) => {
                assert_eq!(hdr.authenticated, key.is_some());
                let mut out = Vec::with_capacity(data.len());
                wire::encode(&frame, &hdr.fields(), key, &mut out).expect("decoded frame encodes");
                assert_eq!(out, data, "decode accepted a non-canonical encoding");
            }
            Err(e) => {
                // Every error renders an operator message.
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
