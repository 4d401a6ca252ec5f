//! Metrics: what the daemon counts for Prometheus, and the endpoint that
//! serves it (`monitoring.metrics_port`; off by default, loopback when on).
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
//! **Serving** is a small HTTP/1.1 server on its own thread: one request per
//! connection, handled in turn, the request head bounded to
//! [`MAX_REQUEST`] bytes and [`REQUEST_TIMEOUT`], `GET /metrics` answered in
//! the text exposition format 0.0.4, anything else refused with a 4xx. The
//! thread sleeps in poll(2) on the listener and an eventfd, so it costs
//! nothing between scrapes and stops at once.

use std::fmt::{Display, Write as _};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slog::warn;

use crate::engine::record::TaskRecord;
use crate::engine::runtime::RuntimeCore;
use crate::engine::sync::now_ns;
use crate::net::{ClusterStats, PEER_UP};

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

/// A worker's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub tasks_done: u64,
    pub lane_depth: u64,
    pub parked: u64,
}

/// A segment's bytes: in use now, ever carved (the high-water mark), and
/// what it can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRow {
    pub segment: &'static str,
    pub used: u64,
    pub carved: u64,
    pub capacity: u64,
}

/// Everything one scrape shows, read from the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub uptime_s: f64,
    pub tasks: Vec<TaskCount>,
    pub durations: Vec<Durations>,
    pub workers: Vec<WorkerRow>,
    /// Tasks with a route that clients queued for the network thread.
    pub network_lane_depth: u64,
    pub records_in_use: u64,
    pub records_capacity: u64,
    pub segments: Vec<SegmentRow>,
    pub clients: u64,
    pub pools: u64,
    pub cluster: Option<ClusterStats>,
}

/// Reads the runtime's state; `main_len` is the main segment's size.
pub fn gather(core: &RuntimeCore, main_len: u64) -> Snapshot {
    let v = &core.view;
    let (tasks, durations) = core.metrics.read();
    let layout = &v.header.layout;
    let record = size_of::<TaskRecord>() as u64;
    let in_use = u64::from(v.records.in_use());
    let carved = u64::from(v.records.header.carved.load(Ordering::Relaxed))
        .min(u64::from(layout.num_records));
    // Main: the engine's fixed structures (lanes, slots, owner array) and
    // the records.
    let fixed = layout.records_off;
    let mut segments = vec![SegmentRow {
        segment: "main",
        used: fixed + in_use * record,
        carved: fixed + carved * record,
        capacity: main_len,
    }];
    for (segment, arena) in [
        ("client_data", &core.client_arena),
        ("runtime_data", &core.runtime_arena),
    ] {
        let u = arena.usage();
        segments.push(SegmentRow {
            segment,
            used: u.allocated_bytes,
            carved: u.carved_bytes,
            capacity: u.capacity_bytes,
        });
    }
    Snapshot {
        uptime_s: now_ns().saturating_sub(v.header.started_ns) as f64 / 1e9,
        tasks,
        durations,
        workers: v
            .workers
            .iter()
            .zip(&v.lanes)
            .map(|(w, l)| WorkerRow {
                tasks_done: w.tasks_done.load(Ordering::Relaxed),
                lane_depth: l.depth_now(),
                parked: u64::from(w.suspended.load(Ordering::Relaxed)),
            })
            .collect(),
        network_lane_depth: v.net_lane.depth_now(),
        records_in_use: in_use,
        records_capacity: u64::from(layout.num_records),
        segments,
        clients: v
            .clients
            .iter()
            .filter(|c| c.state.load(Ordering::Relaxed) == crate::engine::layout::CLIENT_ACTIVE)
            .count() as u64,
        pools: core.pools.list().len() as u64,
        cluster: core.net.get().map(|n| n.snapshot()),
    }
}

/// The exposition text being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the text format needs it: backslash, quote and newline
/// escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn method_label(m: Option<u32>) -> String {
    m.map_or_else(|| "other".into(), |m| m.to_string())
}

/// Seconds from ns, as the text format writes a float.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.family(
        "chimaera_build_info",
        "gauge",
        "Always 1; the labels say which chimaera runs.",
    );
    o.sample(
        "chimaera_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.family(
        "chimaera_uptime_seconds",
        "gauge",
        "Seconds since the runtime started.",
    );
    o.sample("chimaera_uptime_seconds", &[], s.uptime_s);

    o.family(
        "chimaera_tasks_total",
        "counter",
        "Tasks whose method ran to completion on this node, by pool, module and method number (tasks that timed out in their lane or named no pool are only in chimaera_worker_tasks_total).",
    );
    for t in &s.tasks {
        let method = method_label(t.method);
        o.sample(
            "chimaera_tasks_total",
            &[
                ("module", &t.module),
                ("method", &method),
                ("pool", &t.pool),
            ],
            t.count,
        );
    }
    o.family(
        "chimaera_task_duration_seconds",
        "histogram",
        "Time from a worker taking a task up to its completion (time queued in the lane not included), for the first task of each worker, pool and method in each tick of the coarse clock (a few ms): every task of a method run less often, a sample of busier ones.",
    );
    for d in &s.durations {
        let method = method_label(d.method);
        let name = "chimaera_task_duration_seconds";
        for (i, n) in d.cumulative.iter().enumerate() {
            let le = BUCKETS.get(i).map_or("+Inf", |b| b.1);
            o.sample(
                &format!("{name}_bucket"),
                &[("module", &d.module), ("method", &method), ("le", le)],
                n,
            );
        }
        let labels = [("module", d.module.as_str()), ("method", method.as_str())];
        o.sample(&format!("{name}_sum"), &labels, seconds(d.sum_ns));
        o.sample(
            &format!("{name}_count"),
            &labels,
            d.cumulative.last().copied().unwrap_or(0),
        );
    }

    o.family(
        "chimaera_worker_tasks_total",
        "counter",
        "Tasks each worker completed, whatever their outcome.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_worker_tasks_total",
            &[("worker", &i.to_string())],
            w.tasks_done,
        );
    }
    o.family(
        "chimaera_lane_depth",
        "gauge",
        "Tasks queued in each worker's lane.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_lane_depth",
            &[("worker", &i.to_string())],
            w.lane_depth,
        );
    }
    o.family(
        "chimaera_network_lane_depth",
        "gauge",
        "Tasks with a route that clients queued for the network thread.",
    );
    o.sample("chimaera_network_lane_depth", &[], s.network_lane_depth);
    o.family(
        "chimaera_worker_parked_tasks",
        "gauge",
        "Tasks parked on each worker, waiting for a subtask or yielding.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_worker_parked_tasks",
            &[("worker", &i.to_string())],
            w.parked,
        );
    }
    o.family(
        "chimaera_task_records",
        "gauge",
        "Task records of the main segment: in use, and how many it holds.",
    );
    o.sample(
        "chimaera_task_records",
        &[("state", "in_use")],
        s.records_in_use,
    );
    o.sample(
        "chimaera_task_records",
        &[("state", "capacity")],
        s.records_capacity,
    );
    o.family(
        "chimaera_segment_bytes",
        "gauge",
        "Shared-memory segments: bytes in use, bytes ever carved (high-water mark) and capacity (main: engine structures and task records; data segments: their allocators' blocks).",
    );
    for seg in &s.segments {
        for (state, v) in [
            ("used", seg.used),
            ("carved", seg.carved),
            ("capacity", seg.capacity),
        ] {
            o.sample(
                "chimaera_segment_bytes",
                &[("segment", seg.segment), ("state", state)],
                v,
            );
        }
    }
    o.family(
        "chimaera_clients",
        "gauge",
        "Client processes attached to this runtime.",
    );
    o.sample("chimaera_clients", &[], s.clients);
    o.family("chimaera_pools", "gauge", "Pools, the admin pool included.");
    o.sample("chimaera_pools", &[], s.pools);

    if let Some(c) = &s.cluster {
        render_cluster(&mut o, c);
    }
    o.0
}

fn render_cluster(o: &mut Out, c: &ClusterStats) {
    o.family(
        "chimaera_cluster_nodes",
        "gauge",
        "Nodes of the hostfile, this one included (1 without a hostfile).",
    );
    o.sample("chimaera_cluster_nodes", &[], c.nodes);
    o.family(
        "chimaera_peer_up",
        "gauge",
        "1 while this node hears from the peer, 0 when it is down or was never heard from.",
    );
    for p in &c.peers {
        let up = u8::from(p.state == crate::net::peer_state_name(PEER_UP));
        o.sample(
            "chimaera_peer_up",
            &[("node", &p.node.to_string()), ("addr", &p.addr)],
            up,
        );
    }
    o.family(
        "chimaera_peer_rtt_seconds",
        "gauge",
        "Round trip of the last heartbeat answered by each peer (0 before the first).",
    );
    for p in &c.peers {
        o.sample(
            "chimaera_peer_rtt_seconds",
            &[("node", &p.node.to_string()), ("addr", &p.addr)],
            p.rtt_us / 1e6,
        );
    }
    let k = &c.counters;
    o.family(
        "chimaera_transport_frames_total",
        "counter",
        "Frames accepted from and sent to other nodes.",
    );
    o.sample(
        "chimaera_transport_frames_total",
        &[("direction", "in")],
        k.frames_in,
    );
    o.sample(
        "chimaera_transport_frames_total",
        &[("direction", "out")],
        k.frames_out,
    );
    o.family(
        "chimaera_transport_frames_dropped_total",
        "counter",
        "Frames from other nodes dropped, by reason.",
    );
    for (reason, n) in [
        ("bad_frame", k.dropped_bad_frame),
        ("missing_tag", k.dropped_missing_tag),
        ("bad_tag", k.dropped_bad_tag),
        ("unexpected_tag", k.dropped_unexpected_tag),
        ("wrong_node", k.dropped_wrong_node),
        ("replay", k.dropped_replay),
        ("late_reply", k.dropped_late_reply),
    ] {
        o.sample(
            "chimaera_transport_frames_dropped_total",
            &[("reason", reason)],
            n,
        );
    }
    o.family(
        "chimaera_transport_tasks_total",
        "counter",
        "Tasks sent to other nodes (each broadcast leg counts) and run here for them.",
    );
    o.sample(
        "chimaera_transport_tasks_total",
        &[("direction", "forwarded")],
        k.tasks_forwarded,
    );
    o.sample(
        "chimaera_transport_tasks_total",
        &[("direction", "served")],
        k.tasks_served,
    );
    o.family(
        "chimaera_transport_connections_refused_total",
        "counter",
        "Connections refused because their address is not in the hostfile.",
    );
    o.sample(
        "chimaera_transport_connections_refused_total",
        &[],
        k.zap_denied,
    );
    o.family(
        "chimaera_transport_send_failures_total",
        "counter",
        "Frames that could not be handed to ZeroMQ (peer not connected, queue full).",
    );
    o.sample("chimaera_transport_send_failures_total", &[], k.send_failed);
}

// ----- the HTTP endpoint ----------------------------------------------------

/// Largest request head read; a scraper's is a few hundred bytes.
pub const MAX_REQUEST: usize = 8192;
/// How long a connection may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection's unread input is drained after the answer.
const LINGER: Duration = Duration::from_millis(200);
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "monitoring.metrics_port {port} is already in use on {addr}: stop what holds it or choose another port (CHI_METRICS_PORT)"
    )]
    PortInUse { addr: IpAddr, port: u16 },
    #[error(
        "monitoring.metrics_address {addr} is not an address of this host: give one of its addresses, 127.0.0.1, 0.0.0.0 or :: (CHI_METRICS_ADDRESS)"
    )]
    NotLocal { addr: IpAddr },
    #[error(
        "cannot serve metrics on {addr} (monitoring.metrics_port, monitoring.metrics_address): {source}"
    )]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the metrics endpoint: {0}")]
    Setup(io::Error),
}

/// The running endpoint; stopping (or dropping) it joins its thread, which
/// must happen before the engine's segments go (it reads them).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `address:port` and serves `GET /metrics` from `core`.
    pub fn start(
        address: IpAddr,
        port: u16,
        core: Arc<RuntimeCore>,
        main_len: u64,
        log: &slog::Logger,
    ) -> Result<Server, MetricsError> {
        let at = SocketAddr::new(address, port);
        let listener = TcpListener::bind(at).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => MetricsError::PortInUse {
                addr: address,
                port,
            },
            io::ErrorKind::AddrNotAvailable => MetricsError::NotLocal { addr: address },
            _ => MetricsError::Bind {
                addr: at,
                source: e,
            },
        })?;
        listener
            .set_nonblocking(true)
            .map_err(MetricsError::Setup)?;
        let addr = listener.local_addr().map_err(MetricsError::Setup)?;
        let wake = Arc::new(crate::sys::eventfd().map_err(MetricsError::Setup)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (t_stop, t_wake, t_log) = (stop.clone(), wake.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("chi-metrics".into())
            .spawn(move || {
                let render = || render(&gather(&core, main_len));
                accept_loop(&listener, t_wake.as_fd(), &t_stop, &render, &t_log)
            })
            .map_err(MetricsError::Setup)?;
        Ok(Server {
            addr,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Where it listens (the port is the real one when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; a request in progress finishes first (bounded by the
    /// request and write timeouts).
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            crate::sys::eventfd_signal(self.wake.as_fd());
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Sleeps until the listener or the stop eventfd is readable.
fn wait(listener: BorrowedFd<'_>, wake: BorrowedFd<'_>) {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two pollfd for the whole call, its
    // length is passed, and poll writes only their `revents`; both fds are
    // borrowed, so open. EINTR and errors just send the caller round again.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
}

fn accept_loop(
    listener: &TcpListener,
    wake: BorrowedFd<'_>,
    stop: &AtomicBool,
    render: &dyn Fn() -> String,
    log: &slog::Logger,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        wait(listener.as_fd(), wake);
        if stop.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => serve(stream, render),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of descriptors and the like: the listener stays
                // readable, so pause rather than spin, and say so now and
                // then.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(log, "metrics endpoint cannot accept a connection: {}", e);
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Where a request head ends (just past its blank line), if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Reads one request head and answers it, all bounded; errors on the
/// connection only end it.
fn serve(mut stream: TcpStream, render: &dyn Fn() -> String) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; say so anyway,
    // the timeouts below rely on blocking reads.
    let _ = stream.set_nonblocking(false);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let reply = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break respond(&buf[..end], render);
        }
        if len == buf.len() {
            break error(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break error(408, "Request Timeout", "no complete request in time\n");
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return,
            Ok(0) => break error(400, "Bad Request", "incomplete request\n"),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break error(408, "Request Timeout", "no complete request in time\n");
            }
            Err(_) => return,
        }
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if stream.write_all(&reply).is_err() || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // Closing with unread input makes the kernel reset the connection, and
    // a reset can destroy the answer before the client has read it (an
    // oversized request's 431). So read what the client still sends, bounded
    // in time and bytes, before closing.
    let until = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < MAX_REQUEST * 8 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn response(status: u16, reason: &str, extra: &str, body: &str, with_body: bool) -> Vec<u8> {
    let ctype = if status == 200 {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

fn error(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "", body, true)
}

/// The answer to a complete request head: `GET`/`HEAD /metrics` (a query
/// string is ignored) is served; any other request is refused.
fn respond(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return error(400, "Bad Request", "malformed request line\n");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return error(400, "Bad Request", "malformed request line\n");
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return error(400, "Bad Request", "malformed request line\n");
    }
    if method != "GET" && method != "HEAD" {
        return response(
            405,
            "Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET /metrics is served\n",
            true,
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return error(404, "Not Found", "not found: the metrics are at /metrics\n");
    }
    response(200, "OK", "", &render(), method == "GET")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &[u8]) -> String {
        String::from_utf8(r.to_vec()).unwrap()
    }

    #[test]
    fn requests_are_routed_and_garbage_refused() {
        let body = || "x 1\n".to_string();
        let ok = text(&respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &body));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nx 1\n"));
        let q = text(&respond(b"GET /metrics?x=1 HTTP/1.0\n\n", &body));
        assert!(q.starts_with("HTTP/1.1 200 "), "{q}");
        let head = text(&respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &body));
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        for (req, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
            (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
            (b"GET /metrics\r\n\r\n", 400),
            (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
            (b"get /metrics HTTP/1.1\r\n\r\n", 400),
            (b"GET metrics HTTP/1.1\r\n\r\n", 400),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
            (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", 400),
            (b"\r\n\r\n", 400),
        ] {
            let r = text(&respond(req, &body));
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status} ")),
                "{:?} -> {r}",
                String::from_utf8_lossy(req)
            );
            assert!(!r.contains("x 1"), "{r}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

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

    fn sample_snapshot() -> Snapshot {
        let mut cumulative = vec![0; BUCKETS.len() + 1];
        for (i, c) in cumulative.iter_mut().enumerate() {
            *c = if i < 3 { 0 } else { 5 };
        }
        Snapshot {
            uptime_s: 1.5,
            tasks: vec![TaskCount {
                pool: "we\"ird\\pool\n".into(),
                module: "admin".into(),
                method: Some(7),
                count: 5,
            }],
            durations: vec![Durations {
                module: "admin".into(),
                method: None,
                cumulative,
                sum_ns: 12_000,
            }],
            workers: vec![
                WorkerRow {
                    tasks_done: 5,
                    lane_depth: 2,
                    parked: 0,
                };
                2
            ],
            network_lane_depth: 4,
            records_in_use: 3,
            records_capacity: 100,
            segments: vec![SegmentRow {
                segment: "main",
                used: 10,
                carved: 20,
                capacity: 30,
            }],
            clients: 1,
            pools: 1,
            cluster: None,
        }
    }

    #[test]
    fn exposition_has_help_type_escaped_labels_and_whole_histograms() {
        let t = render(&sample_snapshot());
        assert!(
            t.contains(
                "chimaera_tasks_total{module=\"admin\",method=\"7\",pool=\"we\\\"ird\\\\pool\\n\"} 5\n"
            ),
            "{t}"
        );
        assert!(t.contains("chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"1e-06\"} 0\n"));
        assert!(t.contains("chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"2.5e-06\"} 5\n"));
        assert!(t.contains("chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"+Inf\"} 5\n"));
        assert!(t.contains(
            "chimaera_task_duration_seconds_count{module=\"admin\",method=\"other\"} 5\n"
        ));
        assert!(t.contains(
            "chimaera_task_duration_seconds_sum{module=\"admin\",method=\"other\"} 0.000012\n"
        ));
        assert!(t.contains("chimaera_lane_depth{worker=\"1\"} 2\n"));
        assert!(t.contains("\nchimaera_network_lane_depth 4\n"));
        assert!(t.contains("chimaera_segment_bytes{segment=\"main\",state=\"carved\"} 20\n"));
        assert!(t.contains("chimaera_uptime_seconds 1.5\n"));
        // Every sample's family was announced, with HELP then TYPE.
        let mut announced = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    announced.iter().any(|f| name == f
                        || name
                            .strip_prefix(f.as_str())
                            .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                    "{line} before its TYPE"
                );
            }
        }
        assert_eq!(t.matches("# HELP ").count(), t.matches("# TYPE ").count());
        assert!(!t.contains("chimaera_peer_up"), "no network, no peers");
    }
}
