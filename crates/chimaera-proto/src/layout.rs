//! How the main segment is carved up. Both the runtime and every client map
//! the segment (at different addresses) and build the same [`View`] from the
//! offsets in [`EngineHeader`]: nothing in the segment is a pointer.
//!
//! ```text
//! 0       SegmentHeader (shm.rs)          one page
//! 4096    EngineHeader + PoolHeader       offsets, sizes, runtime state
//!         lanes      [LaneHeader + depth cells] x sched_threads
//!         net lane   [LaneHeader + depth cells]  (clients' routed tasks)
//!         workers    [WorkerSlot] x sched_threads
//!         clients    [ClientSlot] x MAX_CLIENTS
//!         owners     [u32] x records     (compact, for the reaper's scan)
//!         records    [TaskRecord] x records (256 B each; the rest of the segment)
//! ```

use std::ptr::addr_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::lane::{Lane, LaneHeader};
use crate::record::{PoolHeader, Records, TaskRecord};
use crate::shared::{Pad, read_shared};

pub const ENGINE_MAGIC: u64 = u64::from_le_bytes(*b"CHIENGN1");
pub const MAX_CLIENTS: u32 = 1024;
/// More records than this would only make the reaper's scans longer.
pub const MAX_RECORDS: u64 = 1 << 22;

/// `lane_policy` values (the configuration's `performance.lane_map_policy`).
pub const LANE_ROUND_ROBIN: u32 = 0;
pub const LANE_RANDOM: u32 = 1;
pub const LANE_MAP_BY_PID_TID: u32 = 2;

pub const RUNTIME_STARTING: u32 = 0;
pub const RUNTIME_RUNNING: u32 = 1;
pub const RUNTIME_STOPPING: u32 = 2;

/// The engine's header in the main segment. Its plain fields are written
/// once, before the segment is published; every process copies them out
/// ([`EngineInfo`]) and checks them, and no reference to the header is ever
/// formed: only to its atomics.
#[repr(C, align(64))]
pub struct EngineHeader {
    pub magic: u64,
    /// Where everything else is, as the runtime planned it.
    pub layout: Layout,
    pub max_clients: u32,
    pub task_timeout_ns: u64,
    /// How clients pick a lane: [`LANE_ROUND_ROBIN`], [`LANE_RANDOM`] or [`LANE_MAP_BY_PID_TID`].
    pub lane_policy: u32,
    pub runtime_pid: u32,
    /// STARTING, RUNNING, STOPPING.
    pub state: AtomicU32,
    pub _r0: u32,
    pub _r1: u64,
    pub started_ns: u64,
    pub pool: PoolHeader,
}

/// The written-once part of the [`EngineHeader`], as this process read (and
/// checked) it: what the runtime planned. Nobody reads the segment's copy
/// again, so a process that scribbles on it changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineInfo {
    pub layout: Layout,
    pub max_clients: u32,
    pub task_timeout_ns: u64,
    pub lane_policy: u32,
    pub runtime_pid: u32,
    /// CLOCK_MONOTONIC ns of the runtime's start.
    pub started_ns: u64,
}

/// Per-worker counters and its current task, for stats and the timekeeper.
#[repr(C, align(64))]
pub struct WorkerSlot {
    pub tasks_done: AtomicU64,
    /// Record being run, or [`crate::record::NONE`].
    pub running: AtomicU32,
    pub cpu: AtomicU32,
    /// Bumped on every pass of the worker's loop; unchanged means stuck.
    pub progress: AtomicU64,
    pub suspended: AtomicU32,
    pub _r: Pad<4>,
    pub _pad: Pad<32>,
}

/// Idle: running nothing. (A zero `running` would name record 0, and the
/// watchdog would take an idle network thread for one stuck in it.)
impl Default for WorkerSlot {
    fn default() -> WorkerSlot {
        WorkerSlot {
            tasks_done: AtomicU64::new(0),
            running: AtomicU32::new(crate::record::NONE),
            cpu: AtomicU32::new(0),
            progress: AtomicU64::new(0),
            suspended: AtomicU32::new(0),
            _r: Pad::default(),
            _pad: Pad::default(),
        }
    }
}

pub const CLIENT_FREE: u32 = 0;
pub const CLIENT_CLAIMING: u32 = 1;
pub const CLIENT_ACTIVE: u32 = 2;
pub const CLIENT_RECLAIMING: u32 = 3;
/// The client disconnected cleanly; the reaper frees the slot once nothing
/// it owned is in flight (its blocks carry the slot's id, so the slot must
/// not pass to another client before).
pub const CLIENT_LEAVING: u32 = 4;

/// A client process attached to the runtime. (pid, start time) names it:
/// pids are reused, the pair is not.
#[repr(C, align(64))]
pub struct ClientSlot {
    pub state: AtomicU32,
    pub pid: AtomicU32,
    pub start_time: AtomicU64,
    pub _pad: Pad<48>,
}

/// Offsets computed from the segment size and the configuration; stored in
/// the engine header, from which every process builds its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Layout {
    pub num_lanes: u32,
    pub queue_depth: u32,
    pub num_records: u32,
    pub lanes_off: u64,
    pub lane_stride: u64,
    /// The network thread's lane: clients push tasks with a route to it.
    pub net_lane_off: u64,
    pub workers_off: u64,
    pub clients_off: u64,
    pub owners_off: u64,
    pub records_off: u64,
}

const fn up64(x: u64) -> u64 {
    x.next_multiple_of(64)
}

impl Layout {
    /// Plans the segment; the error says how much room was missing.
    pub fn compute(
        segment_len: u64,
        data_offset: u64,
        lanes: u32,
        depth: u32,
    ) -> Result<Layout, String> {
        let engine_off = data_offset;
        let lanes_off = up64(engine_off + size_of::<EngineHeader>() as u64);
        let lane_stride = Lane::bytes(depth) as u64;
        let net_lane_off = lanes_off + lane_stride * u64::from(lanes);
        let workers_off = up64(net_lane_off + lane_stride);
        let clients_off = up64(workers_off + (size_of::<WorkerSlot>() as u64) * u64::from(lanes));
        let owners_off =
            up64(clients_off + (size_of::<ClientSlot>() as u64) * u64::from(MAX_CLIENTS));
        let room = segment_len.saturating_sub(owners_off);
        let per_record = size_of::<TaskRecord>() as u64 + 4;
        // Leave 64 bytes of slack for aligning the record array.
        let n = (room.saturating_sub(64) / per_record).min(MAX_RECORDS);
        let needed = (u64::from(lanes) + 1) * u64::from(depth) + 64;
        if n < needed {
            return Err(format!(
                "the main segment ({segment_len} bytes) holds {n} task records but {lanes} lanes (and the network's) of depth {depth} need at least {needed}: raise memory.main_segment_size or lower performance.queue_depth"
            ));
        }
        let records_off = up64(owners_off + 4 * n);
        Ok(Layout {
            num_lanes: lanes,
            queue_depth: depth,
            num_records: n as u32,
            lanes_off,
            lane_stride,
            net_lane_off,
            workers_off,
            clients_off,
            owners_off,
            records_off,
        })
    }
}

/// The engine's structures as seen from one process's mapping.
#[derive(Clone)]
pub struct View {
    /// The engine header's written-once fields, copied and checked.
    pub info: EngineInfo,
    /// The runtime's state word (STARTING, RUNNING, STOPPING).
    pub state: &'static AtomicU32,
    pub lanes: Vec<Lane<'static>>,
    /// Served by the network thread, not a worker.
    pub net_lane: Lane<'static>,
    pub workers: &'static [WorkerSlot],
    pub clients: &'static [ClientSlot],
    pub records: Records<'static>,
    /// The lanes' consumer positions, in this process's memory (the lanes
    /// point into it; the workers' lanes first, then the network lane's).
    _heads: std::sync::Arc<[ConsumerHead]>,
}

/// A lane consumer's position, alone on its cache line: each worker writes
/// its own with every task, and must not share a line with another's.
#[repr(align(64))]
struct ConsumerHead(AtomicU64);

impl View {
    /// Builds the view over a mapping whose engine header is at `engine_off`,
    /// reading the header's planned layout and checking it: it must be the
    /// layout [`Layout::compute`] gives for this segment, so nothing it
    /// points at lies outside the mapping whoever wrote it.
    ///
    /// # Safety
    /// `base` must point at a mapping of at least `len` bytes that stays
    /// mapped for as long as the view (and copies of it) are used; the owner
    /// keeps the mapping alive beside the view.
    pub unsafe fn attach(base: *mut u8, len: usize, engine_off: u64) -> Result<View, String> {
        if engine_off as usize + size_of::<EngineHeader>() > len {
            return Err("main segment too small for the engine header".into());
        }
        // SAFETY: the header lies inside the mapping (checked above); its
        // fields are plain integers, read by copy, never by reference.
        let (magic, info) = unsafe {
            let h = base.add(engine_off as usize) as *const EngineHeader;
            (
                read_shared(addr_of!((*h).magic)),
                EngineInfo {
                    layout: read_shared(addr_of!((*h).layout)),
                    max_clients: read_shared(addr_of!((*h).max_clients)),
                    task_timeout_ns: read_shared(addr_of!((*h).task_timeout_ns)),
                    lane_policy: read_shared(addr_of!((*h).lane_policy)),
                    runtime_pid: read_shared(addr_of!((*h).runtime_pid)),
                    started_ns: read_shared(addr_of!((*h).started_ns)),
                },
            )
        };
        if magic != ENGINE_MAGIC {
            return Err("main segment has no task engine (magic mismatch)".into());
        }
        let planned = Layout::compute(
            len as u64,
            engine_off,
            info.layout.num_lanes,
            info.layout.queue_depth,
        );
        if planned.as_ref() != Ok(&info.layout) || info.max_clients != MAX_CLIENTS {
            return Err(format!(
                "main segment layout is not one this build plans for a segment of {len} bytes: {:?}",
                info.layout
            ));
        }
        // SAFETY: the layout is the one compute() plans for this length, so
        // every region lies inside the mapping; per the contract it stays
        // mapped.
        unsafe { View::build(base, engine_off, info) }
    }

    /// The view of a layout known to fit the mapping.
    ///
    /// # Safety
    /// `info.layout` must lie inside the mapping at `base` (as
    /// [`Layout::compute`] plans it), which must stay mapped while the view
    /// is used.
    unsafe fn build(base: *mut u8, engine_off: u64, info: EngineInfo) -> Result<View, String> {
        let layout = info.layout;
        // SAFETY: per the contract every region below is inside the mapping;
        // the references made are to atomics and Pad only (see shared.rs).
        unsafe {
            let at = |off: u64| base.add(off as usize);
            let h = at(engine_off) as *const EngineHeader;
            let depth = layout.queue_depth as usize;
            let heads: std::sync::Arc<[ConsumerHead]> = (0..=layout.num_lanes)
                .map(|_| ConsumerHead(AtomicU64::new(0)))
                .collect();
            // The view keeps `heads` alive beside the lanes that point into it.
            let heads_ptr = heads.as_ptr();
            let lane_at = |off: u64, i: u32| {
                let h = at(off);
                Lane::new(
                    &*(h as *const LaneHeader),
                    std::slice::from_raw_parts(
                        h.add(size_of::<LaneHeader>()) as *const AtomicU64,
                        depth,
                    ),
                    &(*heads_ptr.add(i as usize)).0,
                )
            };
            let lanes = (0..layout.num_lanes)
                .map(|i| lane_at(layout.lanes_off + u64::from(i) * layout.lane_stride, i))
                .collect();
            let net_lane = lane_at(layout.net_lane_off, layout.num_lanes);
            let workers = std::slice::from_raw_parts(
                at(layout.workers_off) as *const WorkerSlot,
                layout.num_lanes as usize,
            );
            let clients = std::slice::from_raw_parts(
                at(layout.clients_off) as *const ClientSlot,
                info.max_clients as usize,
            );
            let n = layout.num_records as usize;
            let records = Records {
                header: &*addr_of!((*h).pool),
                records: std::slice::from_raw_parts(at(layout.records_off) as *const TaskRecord, n),
                owners: std::slice::from_raw_parts(at(layout.owners_off) as *const AtomicU32, n),
            };
            Ok(View {
                info,
                state: &*addr_of!((*h).state),
                lanes,
                net_lane,
                workers,
                clients,
                records,
                _heads: heads,
            })
        }
    }

    /// Writes the engine header and empty lanes, slots and pool into a fresh
    /// (zeroed) main segment, then builds the view.
    ///
    /// # Safety
    /// As for [`View::attach`], and no other process may use the segment yet
    /// (its ready word is not set).
    pub unsafe fn format(
        base: *mut u8,
        len: usize,
        engine_off: u64,
        layout: &Layout,
        task_timeout_ns: u64,
        lane_policy: u32,
    ) -> Result<View, String> {
        if engine_off as usize + size_of::<EngineHeader>() > len
            || Layout::compute(len as u64, engine_off, layout.num_lanes, layout.queue_depth)
                .as_ref()
                != Ok(layout)
        {
            return Err("the layout does not fit the main segment".into());
        }
        // SAFETY: the layout is the one compute() plans for this length (just
        // checked), so everything lies inside the mapping; the memory is
        // ours alone until published.
        unsafe {
            let h = base.add(engine_off as usize) as *mut EngineHeader;
            std::ptr::write_bytes(h as *mut u8, 0, size_of::<EngineHeader>());
            (*h).magic = ENGINE_MAGIC;
            (*h).layout = *layout;
            (*h).max_clients = MAX_CLIENTS;
            (*h).task_timeout_ns = task_timeout_ns;
            (*h).lane_policy = lane_policy;
            (*h).runtime_pid = std::process::id();
            (*h).started_ns = crate::sync::now_ns();
            (*h).pool.capacity = AtomicU32::new(layout.num_records);
            let offsets = (0..u64::from(layout.num_lanes))
                .map(|i| layout.lanes_off + i * layout.lane_stride)
                .chain([layout.net_lane_off]);
            for off in offsets {
                let lh = base.add(off as usize) as *mut LaneHeader;
                (*lh).depth = AtomicU32::new(layout.queue_depth);
            }
            let info = EngineInfo {
                layout: *layout,
                max_clients: MAX_CLIENTS,
                task_timeout_ns,
                lane_policy,
                runtime_pid: (*h).runtime_pid,
                started_ns: (*h).started_ns,
            };
            let view = View::build(base, engine_off, info)?;
            for lane in view.lanes.iter().chain([&view.net_lane]) {
                lane.init();
            }
            for w in view.workers {
                w.running.store(crate::record::NONE, Ordering::Relaxed);
            }
            view.records.init();
            view.state.store(RUNTIME_STARTING, Ordering::Release);
            Ok(view)
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNTIME_STOPPING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_main_segment_fits_default_lanes() {
        let l = Layout::compute(1 << 30, 4096, 8, 10_000).unwrap();
        assert!(u64::from(l.num_records) >= 80_000 + 64);
        assert!(l.records_off + u64::from(l.num_records) * 256 <= 1 << 30);
        assert_eq!(l.records_off % 64, 0);
        assert_eq!(l.lanes_off % 64, 0);
    }

    #[test]
    fn too_small_a_segment_says_what_to_raise() {
        let e = Layout::compute(1 << 20, 4096, 8, 10_000).unwrap_err();
        assert!(e.contains("memory.main_segment_size"), "{e}");
    }

    #[test]
    fn format_then_attach_agree() {
        #[repr(C, align(4096))]
        struct Page([u8; 4096]);
        let len = 4 << 20;
        let mut mem: Vec<Page> = (0..len / 4096).map(|_| Page([0; 4096])).collect();
        let base = mem.as_mut_ptr() as *mut u8;
        let layout = Layout::compute(len as u64, 4096, 2, 16).unwrap();
        // SAFETY: mem outlives both views and nobody else uses it.
        let v = unsafe { View::format(base, len, 4096, &layout, 1000, 0) }.unwrap();
        // SAFETY: as above; the second view reads what the first formatted.
        let w = unsafe { View::attach(base, len, 4096) }.unwrap();
        v.lanes[1].push(5).unwrap();
        assert_eq!(w.lanes[1].pop(), Some(5));
        let r = v.records.alloc(3).unwrap();
        assert_eq!(w.records.get(r).owner.load(Ordering::Relaxed), 3);
        assert_eq!(w.records.records.len() as u32, layout.num_records);
    }
}
