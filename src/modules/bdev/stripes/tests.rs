//! Tests of which stripe locks an extent takes, in ascending order, when
//! stripes wrap onto fewer locks.

use super::*;

#[test]
fn stripe_indices_ascend_and_wrap() {
    let s = Stripes::new(4 << 20); // 64 stripes
    assert_eq!(s.locks.len(), 64);
    assert_eq!(s.indices(0, 1), [0..1, 0..0]);
    assert_eq!(s.indices(65535, 2), [0..2, 0..0]);
    assert_eq!(s.indices(0, 4 << 20), [0..64, 0..0]);
    let big = Stripes::new(1 << 30); // 16384 stripes onto 1024 locks
    assert_eq!(big.locks.len(), 1024);
    // Stripes 1023..=1025 are locks 1023, 0, 1: taken as 0..2 then 1023.
    assert_eq!(big.indices(1023 << 16, 3 << 16), [0..2, 1023..1024]);
    assert_eq!(big.indices(5 << 16, 2000 << 16), [0..1024, 0..0]);
}
