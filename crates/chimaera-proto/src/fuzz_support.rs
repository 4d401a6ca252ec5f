//! The record-reading path under arbitrary writes, for `fuzz/` (cargo-fuzz
//! target `shm_read`) and for a bounded randomized test run by `cargo test`:
//! a main segment and two arenas are formatted in memory, queued tasks are
//! set up as a client would, then the input's bytes are written over them
//! (as a hostile client of the real segments could), and everything the
//! runtime reads from a segment is read: lane pops and repair, record
//! checks, input spans, allocator calls. None may panic, loop or produce a
//! span outside its memory.

use std::sync::atomic::Ordering;

use crate::alloc::{Arena, Region};
use crate::layout::{Layout, View};
use crate::protocol::{fill_record, input_span};
use crate::record::INLINE;

const MAIN: usize = 1 << 20;
const DATA: usize = 128 << 10;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn pages(len: usize) -> Vec<Page> {
    (0..len / 4096).map(|_| Page([0; 4096])).collect()
}

fn inside(p: *const u8, len: usize, base: *const u8, size: usize) -> bool {
    let (p, b) = (p as usize, base as usize);
    p >= b && p.checked_add(len).is_some_and(|end| end <= b + size)
}

/// Runs the path once over writes taken from `data`: each 12 bytes are a
/// target (which memory, and where: u32) and a value (u64).
pub fn exercise(data: &[u8]) {
    let mut main = pages(MAIN);
    let mut client = pages(DATA);
    let mut runtime = pages(DATA);
    let main_base = main.as_mut_ptr().cast::<u8>();
    let client_base = client.as_mut_ptr().cast::<u8>();
    let runtime_base = runtime.as_mut_ptr().cast::<u8>();
    let layout = Layout::compute(MAIN as u64, 4096, 2, 8).expect("the layout fits");
    // SAFETY: the buffers are ours, page-aligned, and outlive the views.
    let view =
        unsafe { View::format(main_base, MAIN, 4096, &layout, 1_000_000, 0) }.expect("formats");
    // SAFETY: as above.
    let (carena, rarena) = unsafe {
        (
            Arena::format(Region::new(client_base, DATA)).expect("formats"),
            Arena::format(Region::new(runtime_base, DATA)).expect("formats"),
        )
    };
    // A client's queued tasks: small and large inputs.
    let mut queued = Vec::new();
    for i in 0..6u32 {
        let owner = 1 + i % 2;
        let Some(idx) = view.records.alloc(owner) else {
            break;
        };
        let input = vec![i as u8; if i % 2 == 0 { 16 } else { 300 }];
        if fill_record(
            1_000_000,
            &carena,
            view.records.get(idx),
            0,
            0,
            &input,
            owner,
            0,
        )
        .is_ok()
        {
            view.records.get(idx).mark_submitted();
            let _ = view.lanes[(i % 2) as usize].push(idx);
            queued.push(idx);
        }
    }
    // The hostile writes.
    for w in data.chunks_exact(12) {
        let target = u32::from_le_bytes(w[..4].try_into().expect("4 bytes"));
        let value = u64::from_le_bytes(w[4..].try_into().expect("8 bytes"));
        let (base, size) = match target % 3 {
            0 => (main_base, MAIN),
            1 => (client_base, DATA),
            _ => (runtime_base, DATA),
        };
        let at = ((target / 3) as usize % (size / 8)) * 8;
        if base == main_base && at < 4096 + 64 {
            continue; // the segment header and the engine header's copy: read once at attach
        }
        // SAFETY: at + 8 <= size, inside our buffer; a raw write, as a
        // process mapping the segment would do.
        unsafe { std::ptr::write_volatile(base.add(at).cast::<u64>(), value) };
    }
    // What the runtime reads.
    for lane in view.lanes.iter().chain([&view.net_lane]) {
        for _ in 0..32 {
            let Some(idx) = lane.pop() else { break };
            let Some(rec) = view.records.checked(idx) else {
                continue;
            };
            let owner = rec.owner.load(Ordering::Relaxed);
            if let Ok((p, len)) = input_span(rec, &carena, owner, "client data") {
                let in_record = rec.in_offset.load(Ordering::Relaxed) == INLINE;
                assert!(
                    in_record || inside(p, len, client_base, DATA),
                    "an input span outside the client data segment"
                );
                // SAFETY: the span was checked to lie in mapped memory.
                let _ = unsafe { crate::shared::copy_out(p, len) };
            }
            let _ = carena.free_owned(rec.in_offset.load(Ordering::Relaxed), owner);
        }
        lane.repair();
        let _ = lane.push(0);
        let _ = lane.depth_now();
        let _ = lane.queued().count();
    }
    for arena in [&carena, &rarena] {
        for size in [1usize, 100, 5000] {
            if let Some(off) = arena.alloc(size, 3) {
                let base = if std::ptr::eq(arena, &carena) {
                    client_base
                } else {
                    runtime_base
                };
                assert!(inside(arena.ptr(off), size, base, DATA), "alloc outside");
                let _ = arena.free(off);
            }
        }
        let _ = arena.reclaim_owner(1);
        let _ = arena.usage();
        for w in data.chunks_exact(8).take(16) {
            let off = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            let _ = arena.owned_span(off, 64, 1);
            let _ = arena.span(off, 64);
            let _ = arena.free(off);
        }
    }
    let _ = view.records.alloc(5);
    let _ = view.records.in_use();
    drop(queued);
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_writes_never_break_the_read_path() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let iterations = std::env::var("CHIMAERA_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        for _ in 0..iterations {
            let n = (x % 64) as usize * 12;
            let data: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            super::exercise(&data);
        }
    }
}
