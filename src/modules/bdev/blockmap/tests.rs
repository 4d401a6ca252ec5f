//! Tests of the in-memory block bitmap: first fit, splitting, and freeing
//! all or nothing.

use super::*;

#[test]
fn block_map_first_fit_split_and_all_or_nothing_free() {
    let mut m = BlockMap::new(130);
    let (a, _) = m.allocate(10).unwrap();
    assert_eq!(a, vec![(0, 10)]);
    let (b, _) = m.allocate(100).unwrap();
    assert_eq!(b, vec![(10, 100)]);
    m.free(&[(0, 10)]).unwrap();
    // 10 free at the start, 20 at the end: 25 must split, in order.
    let (c, touched) = m.allocate(25).unwrap();
    assert_eq!(c, vec![(0, 10), (110, 15)]);
    assert_eq!(touched, (0, 1));
    assert_eq!(m.used, 125);
    assert!(m.allocate(6).is_none(), "only 5 left");
    assert!(m.allocate(0).is_none());
    let (d, _) = m.allocate(5).unwrap();
    assert_eq!(d, vec![(125, 5)]);
    assert_eq!(m.used, 130);
    // A block freed twice in one request, or one not allocated: nothing changes.
    assert!(m.free(&[(0, 4), (3, 2)]).unwrap_err().contains("overlap"));
    m.free(&[(0, 4)]).unwrap();
    let e = m.free(&[(10, 5), (2, 1)]).unwrap_err();
    assert!(e.contains("block 2"), "{e}");
    assert!(m.is_set(10), "the valid part was not freed");
    assert_eq!(m.used, 126);
    assert_eq!(m.find(0, false), 0);
    assert_eq!(m.find(4, false), 130);
}
