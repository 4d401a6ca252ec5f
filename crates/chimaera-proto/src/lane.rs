//! A lane: the bounded multi-producer, single-consumer ring through which
//! clients (and the runtime itself) hand task records to one worker.
//!
//! Each cell is one 64-bit word holding `(sequence: u32, record: u32)`. A
//! producer publishes with a single CAS on the cell, from `(pos, EMPTY)` to
//! `(pos, record)`, and only then moves the shared tail; anyone who finds a
//! filled cell under the tail moves the tail for it. So a producer killed at
//! any instant leaves the lane consistent: either its task is in the ring
//! whole, or it is not there at all. The consumer takes the cell at its head
//! and re-arms it for the next lap as `(pos + depth, EMPTY)`.
//!
//! Depth need not be a power of two (queue_depth is an operator's number);
//! positions are u64, sequences their low 32 bits compared with wrapping
//! arithmetic, which is sound while depth < 2^31.
//!
//! Anyone who maps the segment can write any of it, so nothing the lane
//! reads from it is trusted with more than a wrong answer: the consumer
//! keeps its position in its own memory (the segment's `head` is only
//! published for others to read), a cell's value is a record index its
//! reader checks, and a producer gives up (`Full`) after a bounded number
//! of looks at a tail that does not make sense.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shared::Pad;

pub const EMPTY: u32 = u32::MAX;

#[inline]
fn pack(seq: u32, value: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(value)
}

#[inline]
fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The lane's control words, each on its own cache line: producers share the
/// tail, the consumer owns the head, and the doorbell is read by every
/// producer after a push.
#[repr(C, align(64))]
pub struct LaneHeader {
    pub tail: AtomicU64,
    _p0: Pad<56>,
    /// The consumer's position, published for stats; the consumer itself
    /// goes by its own copy.
    pub head: AtomicU64,
    _p1: Pad<56>,
    /// 1 while the worker sleeps (or is about to); producers wake it.
    pub doorbell: AtomicU32,
    pub depth: AtomicU32,
    _p2: Pad<56>,
}

/// A lane as seen by one process: its header and cells in the mapping, and
/// the consumer's position in this process's own memory.
#[derive(Clone, Copy)]
pub struct Lane<'a> {
    pub header: &'a LaneHeader,
    pub cells: &'a [AtomicU64],
    head: &'a AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl<'a> Lane<'a> {
    /// A lane over `header` and `cells` (in a segment) whose consumer's
    /// position is `head` (in private memory).
    pub fn new(header: &'a LaneHeader, cells: &'a [AtomicU64], head: &'a AtomicU64) -> Lane<'a> {
        Lane {
            header,
            cells,
            head,
        }
    }

    /// Bytes a lane of `depth` cells takes, header included, rounded to 64.
    pub fn bytes(depth: u32) -> usize {
        (size_of::<LaneHeader>() + depth as usize * 8).next_multiple_of(64)
    }

    /// Sets up an empty lane. Only the runtime calls this, before anyone else
    /// can see the lane.
    pub fn init(&self) {
        let depth = self.cells.len() as u64;
        for (i, c) in self.cells.iter().enumerate() {
            c.store(pack(i as u32, EMPTY), Ordering::Relaxed);
        }
        self.header.head.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
        self.header.tail.store(0, Ordering::Relaxed);
        self.header.doorbell.store(0, Ordering::Relaxed);
        self.header.depth.store(depth as u32, Ordering::Relaxed);
    }

    /// Publishes `record`, or says the lane is full. Never blocks.
    #[inline]
    pub fn push(&self, record: u32) -> Result<(), Full> {
        debug_assert_ne!(record, EMPTY);
        let depth = self.cells.len() as u64;
        // Honest producers finish within a lap of looks; a tail or cells
        // someone scribbled on must not hold a producer forever.
        for _ in 0..2 * depth + 64 {
            let t = self.header.tail.load(Ordering::Acquire);
            let cell = &self.cells[(t % depth) as usize];
            let (seq, value) = unpack(cell.load(Ordering::Acquire));
            let diff = seq.wrapping_sub(t as u32) as i32;
            if diff == 0 {
                if value == EMPTY {
                    // SeqCst pairs with the worker's doorbell store: either it
                    // sees this cell filled, or we see it asleep.
                    if cell
                        .compare_exchange(
                            pack(seq, EMPTY),
                            pack(seq, record),
                            Ordering::SeqCst,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        self.move_tail_on(t);
                        return Ok(());
                    }
                } else {
                    // Filled by a producer that has not moved the tail (yet, or ever).
                    self.move_tail_on(t);
                }
            } else if diff.unsigned_abs() as u64 > depth {
                // No honest state puts a cell more than a lap from the tail:
                // the tail was written over. The consumer puts it right
                // ([`Lane::repair`]); until then the lane is full.
                return Err(Full);
            } else if diff < 0 {
                // The cell still holds the task of the previous lap.
                return Err(Full);
            } else {
                // diff > 0: the tail is behind (stale, or set back): help it
                // on, as for a producer that has not moved it.
                self.move_tail_on(t);
            }
        }
        Err(Full)
    }

    /// Moves the tail from `t` to the next position, unless someone did:
    /// after our own push, for a producer that filled its cell but has not
    /// moved the tail, and for a tail that is behind.
    #[inline]
    fn move_tail_on(&self, t: u64) {
        let _ = self
            .header
            .tail
            .compare_exchange(t, t + 1, Ordering::Release, Ordering::Relaxed);
    }

    /// Takes the next record, if any. Only the lane's worker calls this.
    #[inline]
    pub fn pop(&self) -> Option<u32> {
        self.pop_then(|_| {})
    }

    /// As [`Lane::pop`], calling `claim` with the record before it leaves
    /// the ring: whatever `claim` stores (Release) is visible to anyone who
    /// then sees the cell empty (the reaper's orphan check relies on it).
    #[inline]
    pub fn pop_then(&self, claim: impl FnOnce(u32)) -> Option<u32> {
        let depth = self.cells.len() as u64;
        let h = self.head.load(Ordering::Relaxed);
        let cell = &self.cells[(h % depth) as usize];
        let (seq, value) = unpack(cell.load(Ordering::Acquire));
        if seq != h as u32 {
            // Only the consumer re-arms a cell, for exactly this position:
            // anything else was written over. Re-arm it so producers can
            // use the lane again (whatever it held is lost).
            cell.store(pack(h as u32, EMPTY), Ordering::Release);
            return None;
        }
        if value == EMPTY {
            return None;
        }
        claim(value);
        cell.store(pack((h + depth) as u32, EMPTY), Ordering::Release);
        self.head.store(h + 1, Ordering::Release);
        self.header.head.store(h + 1, Ordering::Release);
        Some(value)
    }

    /// Puts right what someone wrote over (consumer side, when the lane
    /// looks empty, before the consumer sleeps; a few loads when nothing
    /// is wrong). A producer moves the tail past a position only once its
    /// cell is filled, and only the consumer empties it, so with the cell
    /// at the head waiting for its position:
    /// - a tail past the head means that cell's task was wiped: the head
    ///   skips the hole (the task is lost; its client times out);
    /// - a tail before the head, or more than a lap past it, was written
    ///   over: it becomes the head. A producer that filled the head's cell
    ///   meanwhile is helped on by the next push, as for one that died
    ///   mid-push.
    pub fn repair(&self) {
        let depth = self.cells.len() as u64;
        for _ in 0..depth {
            let h = self.head.load(Ordering::Relaxed);
            // Acquire: a tail past h was moved after h's cell was filled,
            // so the cell read below sees that fill if it happened.
            let t = self.header.tail.load(Ordering::Acquire);
            let cell = &self.cells[(h % depth) as usize];
            let (seq, value) = unpack(cell.load(Ordering::Acquire));
            if seq != h as u32 || value != EMPTY || t == h {
                return;
            }
            if t > h && t <= h + depth {
                cell.store(pack((h + depth) as u32, EMPTY), Ordering::Release);
                self.head.store(h + 1, Ordering::Release);
                self.header.head.store(h + 1, Ordering::Release);
            } else {
                let _ =
                    self.header
                        .tail
                        .compare_exchange(t, h, Ordering::AcqRel, Ordering::Relaxed);
                return;
            }
        }
    }

    /// The record `ahead` places after the head, if it is already there
    /// (consumer side; it stays in the lane).
    #[inline]
    pub fn peek(&self, ahead: u64) -> Option<u32> {
        let depth = self.cells.len() as u64;
        let pos = self.head.load(Ordering::Relaxed) + ahead;
        let (seq, value) = unpack(self.cells[(pos % depth) as usize].load(Ordering::Acquire));
        (seq == pos as u32 && value != EMPTY).then_some(value)
    }

    /// Whether a record is waiting at the head (a consumer-side check that
    /// does not take it).
    #[inline]
    pub fn has_work(&self) -> bool {
        let depth = self.cells.len() as u64;
        let h = self.head.load(Ordering::Relaxed);
        let (seq, value) = unpack(self.cells[(h % depth) as usize].load(Ordering::SeqCst));
        seq == h as u32 && value != EMPTY
    }

    /// Tasks waiting (approximate while producers race; at most the depth
    /// whatever the tail says).
    pub fn depth_now(&self) -> u64 {
        let t = self.header.tail.load(Ordering::Relaxed);
        let h = self.header.head.load(Ordering::Relaxed);
        t.saturating_sub(h).min(self.cells.len() as u64)
    }

    /// The records currently queued, for the timekeeper's scan of a stuck lane.
    pub fn queued(&self) -> impl Iterator<Item = u32> + '_ {
        let depth = self.cells.len() as u64;
        let h = self.head.load(Ordering::Acquire);
        (h..h + depth).map_while(move |pos| {
            let (seq, value) = unpack(self.cells[(pos % depth) as usize].load(Ordering::Acquire));
            (seq == pos as u32 && value != EMPTY).then_some(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    struct Owned {
        header: Box<LaneHeader>,
        cells: Vec<AtomicU64>,
        head: AtomicU64,
    }

    impl Owned {
        fn new(depth: u32) -> Owned {
            // SAFETY: LaneHeader is atomics and padding; all-zero is valid.
            let header: Box<LaneHeader> = Box::new(unsafe { std::mem::zeroed() });
            let o = Owned {
                header,
                cells: (0..depth).map(|_| AtomicU64::new(0)).collect(),
                head: AtomicU64::new(0),
            };
            o.lane().init();
            o
        }
        fn lane(&self) -> Lane<'_> {
            Lane::new(&self.header, &self.cells, &self.head)
        }
    }

    #[test]
    fn scribbled_control_words_cost_answers_not_the_consumer_or_producers() {
        let o = Owned::new(4);
        let lane = o.lane();
        lane.push(1).unwrap();
        lane.push(2).unwrap();
        // Someone moves the published head back and the tail far behind.
        lane.header.head.store(0x1234_5678, Ordering::SeqCst);
        assert_eq!(lane.pop(), Some(1), "the consumer goes by its own head");
        lane.header.tail.store(u64::MAX - 3, Ordering::SeqCst);
        // A producer looking at a tail that makes no sense gives up in time.
        let t = std::time::Instant::now();
        assert_eq!(lane.push(3), Err(Full));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(lane.pop(), Some(2));
        // The consumer, finding its lane empty, puts the tail right.
        assert_eq!(lane.pop(), None);
        lane.repair();
        lane.push(4).unwrap();
        assert_eq!(lane.pop(), Some(4));
        // A cell written over is re-armed by the consumer, and the lane
        // goes on.
        lane.push(5).unwrap();
        let h = o.head.load(Ordering::SeqCst);
        lane.cells[(h % 4) as usize].store(pack(77, 9), Ordering::SeqCst);
        assert_eq!(
            lane.pop(),
            None,
            "a cell that is not at the head's position"
        );
        lane.repair();
        lane.push(6).unwrap();
        assert_eq!(lane.pop(), Some(6), "the hole of the wiped task is skipped");
        assert!(lane.depth_now() <= 4);
        assert!(lane.queued().count() <= 4);
    }

    #[test]
    fn fifo_full_and_wraparound() {
        let o = Owned::new(3);
        let lane = o.lane();
        assert_eq!(lane.pop(), None);
        for round in 0..10u32 {
            for i in 0..3 {
                lane.push(round * 10 + i).unwrap();
            }
            assert_eq!(lane.push(99), Err(Full));
            assert_eq!(lane.depth_now(), 3);
            assert_eq!(
                lane.queued().collect::<Vec<_>>(),
                [round * 10, round * 10 + 1, round * 10 + 2]
            );
            for i in 0..3 {
                assert_eq!(lane.pop(), Some(round * 10 + i));
            }
            assert_eq!(lane.pop(), None);
        }
    }

    #[test]
    fn a_producer_that_died_before_moving_the_tail_is_helped() {
        let o = Owned::new(4);
        let lane = o.lane();
        // Simulate a producer killed after its cell CAS: cell 0 filled, tail 0.
        lane.cells[0].store(pack(0, 7), Ordering::SeqCst);
        lane.push(8).unwrap();
        assert_eq!(lane.pop(), Some(7));
        assert_eq!(lane.pop(), Some(8));
        assert_eq!(lane.header.tail.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn many_producers_each_record_exactly_once() {
        let o = Arc::new(Owned::new(8));
        let producers = 4u32;
        let per = 50_000u32;
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let o = o.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let v = p * per + i;
                        while o.lane().push(v).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut last = vec![None::<u32>; producers as usize];
        while seen.len() < (producers * per) as usize {
            match o.lane().pop() {
                Some(v) => {
                    assert!(seen.insert(v), "{v} delivered twice");
                    // Per producer, order is kept.
                    let p = (v / per) as usize;
                    assert!(last[p].is_none_or(|l| l < v));
                    last[p] = Some(v);
                }
                None => std::thread::yield_now(),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(o.lane().pop(), None);
    }
}
