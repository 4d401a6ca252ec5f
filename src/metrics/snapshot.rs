//! One scrape's worth of the runtime's state, read without stopping it.

use std::sync::atomic::Ordering;

use chimaera_proto::admin::ClusterStats;
use chimaera_proto::record::TaskRecord;
use chimaera_proto::sync::now_ns;

use crate::engine::meter::{Durations, TaskCount};
use crate::engine::runtime::RuntimeCore;

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
    /// Words read from shared memory that failed their checks.
    pub rejected: chimaera_proto::admin::Rejected,
}

/// Reads the runtime's state; `main_len` is the main segment's size.
pub fn gather(core: &RuntimeCore, main_len: u64) -> Snapshot {
    let v = &core.view;
    let (tasks, durations) = core.metrics.read();
    let layout = &v.info.layout;
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
        uptime_s: now_ns().saturating_sub(v.info.started_ns) as f64 / 1e9,
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
            .filter(|c| c.state.load(Ordering::Relaxed) == chimaera_proto::layout::CLIENT_ACTIVE)
            .count() as u64,
        pools: core.pools.list().len() as u64,
        cluster: core.cluster_stats(),
        rejected: core.rejected.read(),
    }
}
