//! Unit tests of the allocator: format and attach checks, sizes and
//! capacities, reuse of freed space, bad offsets and double frees, a full
//! arena, reclaiming an owner, and stress from threads, through two
//! mappings and from a forked process. `check_consistency` walks an arena
//! at rest and checks every invariant of its layout.

use super::layout::{
    BLOCK_MAGIC, HDR, STATE_ALLOCATED, STATE_FREE, STATE_KIND_MASK, UNIT_MASK, UNIT_SHIFT,
    class_cap,
};
use super::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// A zeroed, 64-byte aligned heap buffer standing in for a segment.
struct Buf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Buf {
    fn new(len: usize) -> Buf {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Buf { ptr, layout }
    }

    fn region(&self) -> Region {
        // SAFETY: the buffer lives as long as `self`, and every test
        // drops its arenas before the buffer.
        unsafe { Region::new(self.ptr, self.layout.size()) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in Buf::new with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// A small xorshift generator: deterministic and allocation-free (it is
/// used in a forked child).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Walks the arena at rest and checks every invariant: blocks tile the
/// carved area exactly as the bitmap says, every block is allocated or
/// on exactly one free list of its own class, and the counters agree.
fn check_consistency(a: &Arena) {
    let l = a.layout;
    let end = a.control().cursor.cursor.load(Ordering::Relaxed);
    let mut at = l.data_off;
    let mut free_blocks = HashSet::new();
    let mut allocated = vec![0u64; l.num_classes as usize];
    while at < end {
        let unit = at >> UNIT_SHIFT;
        assert!(
            a.bitmap_word(unit / 64).load(Ordering::Relaxed) & (1 << (unit % 64)) != 0,
            "block at {at:#x} not in the bitmap"
        );
        let h = a.header_at(at);
        let meta = h.meta.load(Ordering::Relaxed);
        assert_eq!(meta >> 8, BLOCK_MAGIC);
        let class = (meta & 0xFF) as usize;
        let s = h.state.load(Ordering::Relaxed);
        match s & STATE_KIND_MASK {
            STATE_FREE => {
                free_blocks.insert((at, class));
            }
            STATE_ALLOCATED => allocated[class] += 1,
            _ => panic!("bad state {s:#x} at {at:#x}"),
        }
        let next = at + HDR + class_cap(class);
        // No bitmap bits inside the block.
        for u in (at >> UNIT_SHIFT) + 1..next >> UNIT_SHIFT {
            assert_eq!(
                a.bitmap_word(u / 64).load(Ordering::Relaxed) & (1 << (u % 64)),
                0,
                "bitmap bit inside block at {at:#x}"
            );
        }
        at = next;
    }
    assert_eq!(at, end, "blocks do not tile the carved area");
    let mut listed = HashSet::new();
    for (k, line) in a.control().classes[..l.num_classes as usize]
        .iter()
        .enumerate()
    {
        let mut unit = line.head.load(Ordering::Relaxed) & UNIT_MASK;
        while unit != 0 {
            let block = unit << UNIT_SHIFT;
            assert!(listed.insert((block, k)), "block {block:#x} listed twice");
            unit = a.header_at(block).next.load(Ordering::Relaxed);
        }
        assert_eq!(
            line.allocated.load(Ordering::Relaxed),
            allocated[k],
            "allocated count of class {k}"
        );
    }
    assert_eq!(listed, free_blocks, "free-state blocks vs free lists");
}

#[test]
fn format_checks_the_region() {
    let buf = Buf::new(MIN_REGION_LEN);
    // SAFETY: a prefix of a live buffer (refused before use).
    let small = unsafe { Region::new(buf.ptr, MIN_REGION_LEN - 64) };
    assert!(matches!(
        Arena::format(small),
        Err(AllocError::TooSmall { .. })
    ));
    // SAFETY: a sub-range of a live buffer (never used: refused first).
    let odd = unsafe { Region::new(buf.ptr.add(8), MIN_REGION_LEN - 64) };
    assert!(matches!(
        Arena::format(odd),
        Err(AllocError::Misaligned { .. })
    ));
    let err = Arena::attach(buf.region()).unwrap_err();
    assert_eq!(err, AllocError::NotFormatted { found: 0 });
    assert!(err.to_string().contains("no allocator arena"));
    let a = Arena::format(buf.region()).unwrap();
    let u = a.usage();
    assert_eq!(u.carved_bytes, 0);
    assert_eq!(u.allocated_blocks, 0);
    assert!(u.capacity_bytes > (MIN_REGION_LEN as u64) * 9 / 10);
    let b = Arena::attach(buf.region()).unwrap();
    let off = a.alloc(100, 1).unwrap();
    assert_eq!(b.capacity(off), Ok(128));
    // A different version is refused.
    a.control().header.version.store(99, Ordering::Relaxed);
    assert!(matches!(
        Arena::attach(buf.region()),
        Err(AllocError::VersionMismatch { found: 99, .. })
    ));
    // A different length is refused.
    a.control().header.version.store(1, Ordering::Relaxed);
    assert!(Arena::attach(buf.region()).is_ok());
    let big = Buf::new(2 * MIN_REGION_LEN);
    // SAFETY: a prefix of a live buffer.
    let prefix = unsafe { Region::new(big.ptr, MIN_REGION_LEN) };
    Arena::format(prefix).unwrap();
    let err = Arena::attach(big.region()).unwrap_err();
    assert!(matches!(err, AllocError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("formatted for 65536 bytes"),
        "{err}"
    );
}

#[test]
fn sizes_capacity_alignment() {
    let buf = Buf::new(1 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let sizes = [1usize, 63, 64, 65, 100, 128, 129, 1000, 4096, 4097, 65536];
    let mut got = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let off = a.alloc(size, 1).unwrap();
        assert_eq!(off % 64, 0);
        assert_eq!(a.ptr(off) as usize % 64, 0);
        let cap = a.capacity(off).unwrap();
        assert!(cap >= size && cap.is_power_of_two() && cap >= 64);
        assert!(cap < 2 * size.max(64), "size {size} got capacity {cap}");
        // Fill the whole capacity with a pattern of our own.
        // SAFETY: we own `cap` bytes at this block.
        unsafe { std::ptr::write_bytes(a.ptr(off), i as u8 + 1, cap) };
        got.push((off, cap, i as u8 + 1));
    }
    for &(off, cap, pat) in &got {
        // SAFETY: still allocated, `cap` bytes.
        let s = unsafe { std::slice::from_raw_parts(a.ptr(off), cap) };
        assert!(s.iter().all(|&b| b == pat), "block {off:#x} overwritten");
    }
    assert_eq!(a.alloc(0, 1), None);
    assert_eq!(a.alloc(64, 0), None);
    assert_eq!(a.alloc(usize::MAX, 1), None);
    let u = a.usage();
    assert_eq!(u.allocated_blocks, sizes.len() as u64);
    assert_eq!(
        u.allocated_bytes,
        got.iter().map(|g| g.1 as u64).sum::<u64>()
    );
    check_consistency(&a);
    for &(off, ..) in &got {
        a.free(off).unwrap();
    }
    assert_eq!(a.usage().allocated_bytes, 0);
    check_consistency(&a);
}

#[test]
fn freed_space_is_reused() {
    let buf = Buf::new(1 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let sizes = [24usize, 64, 200, 1000, 3000];
    let first: Vec<u64> = sizes.iter().map(|&s| a.alloc(s, 3).unwrap()).collect();
    for off in first {
        a.free(off).unwrap();
    }
    let carved = a.usage().carved_bytes;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..100_000 {
        let size = sizes[(rng.next() % sizes.len() as u64) as usize];
        let off = a.alloc(size, 3).unwrap();
        a.free(off).unwrap();
    }
    assert_eq!(a.usage().carved_bytes, carved);
    assert_eq!(a.usage().allocated_blocks, 0);
    check_consistency(&a);
}

#[test]
fn double_free_and_bad_offsets_are_refused() {
    let buf = Buf::new(1 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let big = a.alloc(4096, 1).unwrap();
    let small = a.alloc(64, 1).unwrap();
    // Forge a copy of a real header inside the big block's payload and
    // point at the "payload" after it: the bitmap still refuses it.
    // SAFETY: both ranges are inside blocks we own / the arena, 64 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(a.ptr(small - HDR), a.ptr(big + 1024), 64);
    }
    let cases = [
        (0, "outside"),
        (a.layout.data_off, "outside"),
        (big + 1, "aligned"),
        (big + 1024 + 64, "start of a block"),
        (big + 64, "start of a block"),
        (
            a.usage().carved_bytes + a.layout.data_off + HDR,
            "start of a block",
        ),
        (buf.layout.size() as u64, "outside"),
        (u64::MAX - 63, "outside"),
    ];
    for (off, why) in cases {
        let err = a.free(off).unwrap_err();
        assert!(
            err.to_string().contains(why),
            "offset {off:#x}: {err} (wanted {why:?})"
        );
        assert!(a.capacity(off).is_err());
    }
    a.free(small).unwrap();
    assert_eq!(a.free(small), Err(AllocError::DoubleFree { offset: small }));
    assert!(a.capacity(small).is_err());
    a.free(big).unwrap();
    assert!(a.free(big).unwrap_err().to_string().contains("double free"));
    check_consistency(&a);
    // The arena is intact: the same blocks come back.
    let again = a.alloc(64, 2).unwrap();
    assert_eq!(again, small);
    assert_eq!(a.usage().allocated_blocks, 1);
}

#[test]
fn full_arena_returns_none_and_freeing_makes_room() {
    let buf = Buf::new(MIN_REGION_LEN);
    let a = Arena::format(buf.region()).unwrap();
    let mut blocks = Vec::new();
    while let Some(off) = a.alloc(64, 1) {
        blocks.push(off);
    }
    let u = a.usage();
    assert!(blocks.len() as u64 >= u.capacity_bytes / 128 - 1);
    assert!(u.capacity_bytes - u.carved_bytes < 128);
    assert_eq!(a.alloc(1, 1), None);
    let freed = blocks.swap_remove(blocks.len() / 2);
    a.free(freed).unwrap();
    assert_eq!(a.alloc(50, 1), Some(freed));
    assert_eq!(a.alloc(50, 1), None);
    for off in blocks.drain(..) {
        a.free(off).unwrap();
    }
    a.free(freed).unwrap();
    assert_eq!(a.usage().allocated_blocks, 0);
    check_consistency(&a);

    // Large blocks, freed, serve small requests once nothing is left to carve.
    let buf = Buf::new(MIN_REGION_LEN);
    let a = Arena::format(buf.region()).unwrap();
    let mut big = Vec::new();
    while let Some(off) = a.alloc(1024, 1) {
        big.push(off);
    }
    let n = big.len();
    for off in big {
        a.free(off).unwrap();
    }
    let mut small = Vec::new();
    while let Some(off) = a.alloc(64, 1) {
        small.push(off);
    }
    assert!(small.len() >= n, "{} small from {n} large", small.len());
    check_consistency(&a);
}

#[test]
fn reclaim_owner_frees_exactly_that_owners_blocks() {
    let buf = Buf::new(1 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let mut mine = Vec::new();
    let mut others = Vec::new();
    let mut rng = Rng(7);
    for i in 0..300u32 {
        let owner = 1 + i % 3;
        let size = 1 + (rng.next() % 2000) as usize;
        let off = a.alloc(size, owner).unwrap();
        let list = if owner == 2 { &mut mine } else { &mut others };
        list.push(off);
    }
    // Some of owner 2's blocks were already freed by it.
    for off in mine.drain(..10) {
        a.free(off).unwrap();
    }
    let before = a.usage();
    assert_eq!(a.reclaim_owner(2), mine.len());
    assert_eq!(a.reclaim_owner(2), 0);
    assert_eq!(a.reclaim_owner(0), 0);
    assert_eq!(a.reclaim_owner(9), 0);
    let after = a.usage();
    assert_eq!(
        after.allocated_blocks,
        before.allocated_blocks - mine.len() as u64
    );
    for &off in &mine {
        assert_eq!(a.free(off), Err(AllocError::DoubleFree { offset: off }));
    }
    for &off in &others {
        assert!(a.capacity(off).is_ok());
    }
    check_consistency(&a);
    for off in others {
        a.free(off).unwrap();
    }
    assert_eq!(a.usage().allocated_blocks, 0);
    check_consistency(&a);
}

/// Allocates, fills with a pattern unique to (thread, iteration), checks
/// and frees; holds up to 16 blocks at once. Any overlap between two
/// live blocks shows up as a pattern mismatch. Returns mismatches.
fn churn(a: &Arena, owner: u32, sizes: (usize, usize), iters: u32, seed: u64) -> u32 {
    let mut rng = Rng(seed);
    let mut held: [(u64, usize, u8); 16] = [(0, 0, 0); 16];
    let mut bad = 0;
    let check_free = |(off, size, pat): (u64, usize, u8), bad: &mut u32| {
        if off == 0 {
            return;
        }
        // SAFETY: the block is ours, `size` <= its capacity.
        let s = unsafe { std::slice::from_raw_parts(a.ptr(off), size) };
        if s.iter().any(|&b| b != pat) {
            *bad += 1;
        }
        if a.free(off).is_err() {
            *bad += 1;
        }
    };
    for i in 0..iters {
        let slot = (rng.next() % 16) as usize;
        check_free(held[slot], &mut bad);
        held[slot] = (0, 0, 0);
        let size = sizes.0 + (rng.next() % (sizes.1 - sizes.0 + 1) as u64) as usize;
        if let Some(off) = a.alloc(size, owner) {
            let pat = (owner as u8).wrapping_mul(31).wrapping_add(i as u8) | 1;
            // SAFETY: we own at least `size` bytes at `off`.
            unsafe { std::ptr::write_bytes(a.ptr(off), pat, size) };
            held[slot] = (off, size, pat);
        }
    }
    for h in held {
        check_free(h, &mut bad);
    }
    bad
}

#[test]
fn threads_stress_no_overlap() {
    let buf = Buf::new(4 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let threads: Vec<_> = (1..=4u32)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || churn(&a, t, (1, 3000), 20_000, 0x1234_5678 * u64::from(t)))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0, "overlapping blocks or failed frees");
    }
    assert_eq!(a.usage().allocated_blocks, 0);
    check_consistency(&a);
}

#[test]
fn reclaim_races_with_frees_without_double_frees() {
    let buf = Buf::new(4 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Owner 1 allocates and frees; a reaper keeps reclaiming owner 1, so
    // some of owner 1's frees find their block already reclaimed. The
    // bystander uses other size classes: a late free by owner 1 of a block
    // reclaimed *and reallocated* would free the bystander's block (offsets
    // carry no generation), which is the caller's bug, not under test.
    let victim = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut refused = 0u32;
            for i in 0..20_000u32 {
                let off = a.alloc(64 << (i % 4), 1).unwrap();
                match a.free(off) {
                    Ok(()) => {}
                    Err(AllocError::DoubleFree { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            refused
        })
    };
    let bystander = {
        let a = a.clone();
        std::thread::spawn(move || churn(&a, 2, (1025, 3000), 20_000, 99))
    };
    let reaper = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += a.reclaim_owner(1);
            }
            n
        })
    };
    let refused = victim.join().unwrap();
    assert_eq!(bystander.join().unwrap(), 0);
    stop.store(true, Ordering::Relaxed);
    let reclaimed = reaper.join().unwrap();
    // Every free the victim was refused is a block the reaper took.
    assert_eq!(refused as usize, reclaimed);
    assert_eq!(a.usage().allocated_blocks, 0);
    check_consistency(&a);
}

/// A memfd of `len` bytes, mapped shared twice.
fn memfd_twice(len: usize) -> (libc::c_int, *mut u8, *mut u8) {
    // SAFETY: plain syscalls on a descriptor we own; the results are
    // checked before use.
    unsafe {
        let fd = libc::memfd_create(c"chimaera-alloc-test".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        let map = || {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            p.cast::<u8>()
        };
        (fd, map(), map())
    }
}

#[test]
fn two_mappings_at_different_addresses_share_the_arena() {
    let len = 1 << 20;
    let (fd, p1, p2) = memfd_twice(len);
    assert_ne!(p1, p2);
    // SAFETY: both mappings stay until the munmap at the end.
    let (r1, r2) = unsafe { (Region::new(p1, len), Region::new(p2, len)) };
    let a = Arena::format(r1).unwrap();
    let b = Arena::attach(r2).unwrap();
    let off = a.alloc(300, 5).unwrap();
    let msg = b"written through the first mapping";
    // SAFETY: we own 512 bytes at `off`.
    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), a.ptr(off), msg.len()) };
    // SAFETY: the same bytes, seen through the other mapping.
    let seen = unsafe { std::slice::from_raw_parts(b.ptr(off), msg.len()) };
    assert_eq!(seen, msg);
    assert_eq!(b.capacity(off), Ok(512));
    // Alloc through one, free through the other; reuse is shared too.
    let off2 = b.alloc(64, 6).unwrap();
    a.free(off2).unwrap();
    assert_eq!(b.free(off2), Err(AllocError::DoubleFree { offset: off2 }));
    assert_eq!(a.alloc(64, 7), Some(off2));
    assert_eq!(b.reclaim_owner(5), 1);
    assert_eq!(a.usage(), b.usage());
    assert_eq!(a.usage().allocated_blocks, 1);
    check_consistency(&b);
    // SAFETY: the mappings and descriptor are ours; nothing uses them
    // after this point.
    unsafe {
        libc::munmap(p1.cast(), len);
        libc::munmap(p2.cast(), len);
        libc::close(fd);
    }
}

#[test]
fn two_processes_allocate_concurrently_and_a_dead_ones_blocks_are_reclaimed() {
    let len = 4 << 20;
    let (fd, p1, p2) = memfd_twice(len);
    // SAFETY: mapped until the munmap at the end.
    let (r1, r2) = unsafe { (Region::new(p1, len), Region::new(p2, len)) };
    let a = Arena::format(r1).unwrap();
    let baseline = a.usage();
    // SAFETY: fork; the child only runs allocator code (atomics, no heap,
    // no locks) and leaves with _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Child: the arena through the *other* mapping.
        let b = match Arena::attach(r2) {
            Ok(b) => b,
            // SAFETY: _exit is async-signal-safe.
            Err(_) => unsafe { libc::_exit(2) },
        };
        let bad = churn(&b, 8, (1, 3000), 20_000, 4242);
        // Die holding some blocks of owner 9, as a killed client would.
        let mut leaked = 0;
        for i in 0..25 {
            if b.alloc(64 << (i % 5), 9).is_some() {
                leaked += 1;
            }
        }
        let code = if bad == 0 && leaked == 25 { 0 } else { 1 };
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    let bad = churn(&a, 1, (1, 3000), 20_000, 777);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert_eq!(bad, 0);
    assert_eq!(a.usage().allocated_blocks, 25);
    assert_eq!(a.reclaim_owner(9), 25);
    let u = a.usage();
    assert_eq!(u.allocated_blocks, baseline.allocated_blocks);
    assert_eq!(u.allocated_bytes, baseline.allocated_bytes);
    check_consistency(&a);
    // SAFETY: ours, unused from here on.
    unsafe {
        libc::munmap(p1.cast(), len);
        libc::munmap(p2.cast(), len);
        libc::close(fd);
    }
}

/// `cargo test --release --lib alloc::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "timing; run in release"]
fn bench_alloc_free_64() {
    let buf = Buf::new(1 << 20);
    let a = Arena::format(buf.region()).unwrap();
    let n = 10_000_000u32;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let off = a.alloc(64, 1).unwrap();
        a.free(std::hint::black_box(off)).unwrap();
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!("alloc+free 64 B, uncontended: {ns:.1} ns");
}
