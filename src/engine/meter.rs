//! The workers' task counters and latency histograms: the engine counts,
//! `crate::metrics` only reads and exports them.
//!
//! **Counting** stays off the workers' critical path. Each worker owns a
//! [`WorkerMeter`]: fixed arrays of counters that it alone writes (a plain
//! load and store, no locked instruction, no lock, no allocation), indexed
//! by small integers: a slot per (pool, module) pair, a slot per module, and
//! the method number. Pools past [`POOL_SLOTS`], modules past
//! [`MODULE_SLOTS`] and methods from [`METHOD_SLOTS`] on are counted as
//! "(other)". Slots are handed out under a lock, but only when a worker sees
//! the pool table change, never per task. The HTTP thread sums the workers'
//! arrays when it is scraped.
//!
//! **Latency** is the time from the worker taking a task up to its
//! completion being published (its client woken), parked time included;
//! the time a task queued in its lane is not in it (`chimaera_lane_depth`
//! shows queueing). A record's submit time is read from the coarse clock (a
//! few ms of resolution), useless at these scales, and a precise clock read
//! costs about 45 ns on this kind of VM (CLOCK_MONOTONIC through the vDSO;
//! `rdtsc` about 20 ns, and it needs calibrating), against a whole round
//! trip of ~300 ns. So only some tasks are timed: per worker, pool and
//! method, the first task in each tick of the coarse clock (4 ms here),
//! which the worker reads once a pass anyway. A method run less often than
//! that has every task timed; a busy one has at most one task per tick
//! timed, a vanishing share, so even the round trip's p99 does not move.
//! (Timing one task in 16 instead, the first version, put the two clock
//! reads into 6% of round trips and raised `bench local`'s p99 by ~25 ns.)
//! A histogram's `_count` is therefore the number of timed tasks;
//! `chimaera_tasks_total` counts every task.
//!

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chimaera_proto::sync::now_ns;

/// (pool, module) pairs counted apart; later ones count as "(other)".
pub const POOL_SLOTS: usize = 64;
/// Modules whose latencies are kept apart; later ones are "(other)".
pub const MODULE_SLOTS: usize = 16;
/// Methods 0 to METHOD_SLOTS - 1 are counted apart, higher ones as "other".
pub const METHOD_SLOTS: usize = 32;
/// Label value of the slots past the bounds. Pool names cannot contain
/// parentheses, so it never collides with a real pool.
pub const OTHER: &str = "(other)";

const METHODS: usize = METHOD_SLOTS + 1;
const POOLS: usize = POOL_SLOTS + 1;
const MODULES: usize = MODULE_SLOTS + 1;

/// Upper bounds of the latency buckets: in ns, and as Prometheus' `le`.
pub const BUCKETS: [(u64, &str); 24] = [
    (250, "2.5e-07"),
    (500, "5e-07"),
    (1_000, "1e-06"),
    (2_500, "2.5e-06"),
    (5_000, "5e-06"),
    (10_000, "1e-05"),
    (25_000, "2.5e-05"),
    (50_000, "5e-05"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];
/// A histogram cell: one counter per bucket (not cumulative), one for
/// durations past the last bound, and the sum of the durations in ns.
const HIST_STRIDE: usize = BUCKETS.len() + 2;
const SUM: usize = HIST_STRIDE - 1;

/// Where a pool's tasks are counted: its (pool, module) slot and its
/// module's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pool: u16,
    module: u16,
}

impl Slots {
    pub const OTHER: Slots = Slots {
        pool: POOL_SLOTS as u16,
        module: MODULE_SLOTS as u16,
    };
}

/// A task being metered: its counter cells and, if it is timed, when its
/// worker took it up (0: not timed; CLOCK_MONOTONIC is never 0 after boot).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    count: u32,
    hist: u32,
    t0: u64,
}

/// A (pool slot, method) counter: tasks done, and the coarse-clock tick of
/// the last task timed. Side by side, so a task touches one cache line.
#[derive(Default)]
struct Cell {
    count: AtomicU64,
    tick: AtomicU64,
}

/// One worker's counters. Only that worker writes them.
pub struct WorkerMeter {
    counts: Box<[Cell]>,
    /// Latency histograms, per (module slot, method), [`HIST_STRIDE`] each.
    hist: Box<[AtomicU64]>,
}

/// Adds to a counter that only the calling thread writes: a load and a
/// store, no read-modify-write instruction. Readers see it whole (it is an
/// atomic) and, since it only grows, never going back.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl WorkerMeter {
    fn new() -> WorkerMeter {
        WorkerMeter {
            counts: (0..POOLS * METHODS).map(|_| Cell::default()).collect(),
            hist: zeroed(MODULES * METHODS * HIST_STRIDE),
        }
    }

    /// A task of a pool with `slots` runs `method` now; `tick` is the
    /// coarse clock as the worker last read it. Reads the precise clock only
    /// for the first task of the tick, which is timed.
    #[inline]
    pub fn begin(&self, slots: Slots, method: u32, tick: u64) -> Meter {
        let m = (method as usize).min(METHOD_SLOTS);
        let count = slots.pool as usize * METHODS + m;
        let hist = slots.module as usize * METHODS + m;
        let cell = &self.counts[count];
        let t0 = if cell.tick.load(Ordering::Relaxed) != tick {
            cell.tick.store(tick, Ordering::Relaxed);
            now_ns()
        } else {
            0
        };
        Meter {
            count: count as u32,
            hist: hist as u32,
            t0,
        }
    }

    /// The task of `m` is complete.
    #[inline]
    pub fn end(&self, m: Meter) {
        bump(&self.counts[m.count as usize].count, 1);
        if m.t0 != 0 {
            self.observe(m.hist as usize, now_ns().saturating_sub(m.t0));
        }
    }

    #[cold]
    fn observe(&self, cell: usize, ns: u64) {
        let base = cell * HIST_STRIDE;
        let b = BUCKETS
            .iter()
            .position(|(le, _)| ns <= *le)
            .unwrap_or(BUCKETS.len());
        bump(&self.hist[base + b], 1);
        bump(&self.hist[base + SUM], ns);
    }
}

#[derive(Default)]
struct Names {
    /// (pool name, module name) of each pool slot.
    pools: Vec<(String, String)>,
    modules: Vec<String>,
}

/// The task counters of every worker, and the names behind their slots.
pub struct TaskMetrics {
    names: Mutex<Names>,
    workers: Vec<Arc<WorkerMeter>>,
}

/// `chimaera_tasks_total` of one (pool, module, method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    pub pool: String,
    pub module: String,
    /// None: methods from [`METHOD_SLOTS`] on.
    pub method: Option<u32>,
    pub count: u64,
}

/// `chimaera_task_duration_seconds` of one (module, method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations {
    pub module: String,
    pub method: Option<u32>,
    /// Cumulative counts per bound of [`BUCKETS`], then +Inf (the total).
    pub cumulative: Vec<u64>,
    pub sum_ns: u64,
}

fn get_or_push<T: PartialEq>(list: &mut Vec<T>, item: T, bound: usize) -> u16 {
    match list.iter().position(|x| *x == item) {
        Some(i) => i as u16,
        None if list.len() < bound => {
            list.push(item);
            (list.len() - 1) as u16
        }
        None => bound as u16,
    }
}

impl TaskMetrics {
    pub fn new(workers: usize) -> TaskMetrics {
        TaskMetrics {
            names: Mutex::new(Names::default()),
            // One more for the network thread's executor.
            workers: (0..=workers)
                .map(|_| Arc::new(WorkerMeter::new()))
                .collect(),
        }
    }

    /// The counters of the network thread's executor (peers' quick tasks).
    pub fn network_meter(&self) -> Arc<WorkerMeter> {
        self.workers
            .last()
            .expect("one meter beyond the workers")
            .clone()
    }

    /// Worker `w`'s counters, for that worker to write.
    pub fn meter(&self, w: u32) -> Arc<WorkerMeter> {
        self.workers[w as usize].clone()
    }

    /// The slots of the pool `pool` of module `module`, handed out on first
    /// sight. Pools are told apart by name and module, not id: an id freed by
    /// a destroyed pool may come back with another pool, whose counts must
    /// not continue the old one's.
    pub fn slots(&self, pool: &str, module: &str) -> Slots {
        let mut n = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let module_slot = get_or_push(&mut n.modules, module.to_string(), MODULE_SLOTS);
        let pool_slot = get_or_push(
            &mut n.pools,
            (pool.to_string(), module.to_string()),
            POOL_SLOTS,
        );
        Slots {
            pool: pool_slot,
            module: module_slot,
        }
    }

    /// Every worker's counters summed, by label; cells no task reached are
    /// left out.
    pub fn read(&self) -> (Vec<TaskCount>, Vec<Durations>) {
        let names = {
            let n = self.names.lock().unwrap_or_else(|p| p.into_inner());
            (n.pools.clone(), n.modules.clone())
        };
        let method_of = |m: usize| (m < METHOD_SLOTS).then_some(m as u32);
        let mut counts = Vec::new();
        for p in 0..POOLS {
            for m in 0..METHODS {
                let cell = p * METHODS + m;
                let count: u64 = self
                    .workers
                    .iter()
                    .map(|w| w.counts[cell].count.load(Ordering::Relaxed))
                    .sum();
                if count == 0 {
                    continue;
                }
                let (pool, module) = names
                    .0
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| (OTHER.into(), OTHER.into()));
                counts.push(TaskCount {
                    pool,
                    module,
                    method: method_of(m),
                    count,
                });
            }
        }
        let mut durations = Vec::new();
        for module in 0..MODULES {
            for m in 0..METHODS {
                let base = (module * METHODS + m) * HIST_STRIDE;
                let mut raw = [0u64; HIST_STRIDE];
                for w in &self.workers {
                    for (i, r) in raw.iter_mut().enumerate() {
                        *r = r.wrapping_add(w.hist[base + i].load(Ordering::Relaxed));
                    }
                }
                // +Inf is the running total of the buckets as read, so it
                // equals `_count` whatever a worker did meanwhile.
                let mut total = 0u64;
                let cumulative: Vec<u64> = raw[..=BUCKETS.len()]
                    .iter()
                    .map(|n| {
                        total += n;
                        total
                    })
                    .collect();
                if total == 0 {
                    continue;
                }
                durations.push(Durations {
                    module: names.1.get(module).cloned().unwrap_or_else(|| OTHER.into()),
                    method: method_of(m),
                    cumulative,
                    sum_ns: raw[SUM],
                });
            }
        }
        (counts, durations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_time_the_first_task_of_a_tick_and_bound_their_labels() {
        let m = TaskMetrics::new(2);
        let admin = m.slots("admin", "admin");
        assert_eq!(m.slots("admin", "admin"), admin);
        let ram = m.slots("ram0", "bdev");
        assert_ne!(ram, admin);
        // The same name with another module is another pool.
        let other = m.slots("ram0", "other_module");
        assert_ne!(other, ram);
        let (w0, w1) = (m.meter(0), m.meter(1));
        // Worker 0: 30 tasks in tick 5, 3 in tick 9 (two timed); worker 1:
        // one in tick 5 (its own first, timed).
        for i in 0..33 {
            let t = w0.begin(admin, 7, if i < 30 { 5 } else { 9 });
            w0.end(t);
        }
        let t = w1.begin(admin, 7, 5);
        w1.end(t);
        let t = w1.begin(ram, 1000, 5);
        w1.end(t);
        let (counts, durations) = m.read();
        let count = |pool: &str, method: Option<u32>| {
            counts
                .iter()
                .find(|c| c.pool == pool && c.method == method)
                .map(|c| c.count)
        };
        assert_eq!(count("admin", Some(7)), Some(34));
        assert_eq!(count("ram0", None), Some(1), "method 1000 is `other`");
        assert_eq!(counts.len(), 2, "{counts:?}");
        let d = durations
            .iter()
            .find(|d| d.module == "admin" && d.method == Some(7))
            .unwrap();
        assert_eq!(d.cumulative.last(), Some(&3));
        assert_eq!(d.cumulative.len(), BUCKETS.len() + 1);
        assert!(d.cumulative.windows(2).all(|w| w[0] <= w[1]));
        let bdev = durations.iter().find(|d| d.module == "bdev").unwrap();
        assert_eq!((bdev.method, bdev.cumulative.last()), (None, Some(&1)));

        // Past the bounds, pools and modules share the "(other)" slots.
        for i in 0..POOL_SLOTS + 3 {
            let s = m.slots(&format!("p{i}"), &format!("m{}", i % (MODULE_SLOTS + 2)));
            if i + 3 >= POOL_SLOTS {
                assert_eq!(s.pool, POOL_SLOTS as u16, "pool {i}");
            }
        }
        let late = m.slots("late", "late_module");
        assert_eq!(late, Slots::OTHER);
        let t = w0.begin(late, 3, 5);
        w0.end(t);
        let (counts, durations) = m.read();
        assert!(
            counts
                .iter()
                .any(|c| c.pool == OTHER && c.module == OTHER && c.count == 1)
        );
        assert!(durations.iter().any(|d| d.module == OTHER));
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let m = TaskMetrics::new(1);
        let s = m.slots("admin", "admin");
        let w = m.meter(0);
        let cell = s.module as usize * METHODS;
        for ns in [1, 250, 251, 999_999, 10_000_000_000, 10_000_000_001] {
            w.observe(cell, ns);
        }
        let (_, d) = m.read();
        let c = &d[0].cumulative;
        assert_eq!(c[0], 2, "1 and 250 ns are <= 250 ns");
        assert_eq!(c[1], 3, "251 ns is <= 500 ns");
        assert_eq!(c[11] - c[10], 1, "999999 ns is <= 1 ms");
        assert_eq!(c[BUCKETS.len() - 1], 5, "10 s is the last bound");
        assert_eq!(c[BUCKETS.len()], 6);
        assert_eq!(d[0].sum_ns, 1 + 250 + 251 + 999_999 + 20_000_000_001);
    }
}
