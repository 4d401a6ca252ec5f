//! The client library: attach to the runtime on this host and run tasks.
//!
//! ```no_run
//! use std::time::Duration;
//! use chimaera_client::{Client, Task};
//! use chimaera_proto::admin;
//!
//! let client = Client::connect()?;                 // finds the runtime through its discovery file
//! let rtt = client.ping()?;                        // an admin no-op, round trip
//! println!("runtime answers in {rtt:?}");
//!
//! // One task, synchronously.
//! let echo = client.call(&Task::new(admin::POOL_ID, admin::method::ECHO, b"hello"))?;
//! assert_eq!(echo, b"hello");
//!
//! // Many, pipelined: submit returns a handle at once; wait later.
//! let handles = client.submit_batch((0..100).map(|_| Task::new(admin::POOL_ID, admin::method::PING, &[])))?;
//! for h in handles {
//!     h.wait_timeout(Duration::from_secs(1))?;
//! }
//! # Ok::<(), chimaera_client::ClientError>(())
//! ```
//!
//! Every wait is bounded: by the caller's timeout, by the runtime's
//! `task_timeout` (the runtime completes an overdue task with a timeout), and
//! by the runtime's life: a client waiting on a runtime that dies gets
//! [`ClientError::RuntimeGone`] within [`LIVENESS_CHECK`].

use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

pub mod discovery;
pub mod locate;

use chimaera_proto::admin::{self, PoolInfo};
use chimaera_proto::alloc::{Arena, Region};
use chimaera_proto::header::{HEADER_SIZE, HeaderError, HeaderInfo, LAYOUT_VERSION};
use chimaera_proto::layout::{self, View};
use chimaera_proto::protocol::{
    check_payload_len, fill_record, free_payloads, output_bytes, process_start_time, ring_lane,
    take_doorbell,
};
use chimaera_proto::record::{self, REF_CLIENT, status};
use chimaera_proto::sync::{futex_wait, now_ns, relax};
use chimaera_proto::sys::{self, LockState};

pub use chimaera_proto::broadcast::{NodeReply, decode_broadcast};
pub use chimaera_proto::wire::Route;
use discovery::Discovery;
pub use locate::{Env, LoadOptions, Locator};

/// How often a sleeping waiter checks that the runtime still lives.
pub const LIVENESS_CHECK: Duration = Duration::from_millis(100);
/// `lane` of a record pushed to the network lane.
const NET_LANE: u32 = u32::MAX;
/// How long a waiter spins before it sleeps on the futex.
const SPIN: Duration = Duration::from_micros(20);
/// The same for a task with a route: a few loopback round trips here, so
/// that a reply usually finds its waiter awake.
const ROUTED_SPIN: Duration = Duration::from_micros(500);
/// ... but only while the client has at most this many such tasks out.
const ROUTED_SPIN_MAX_OUT: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the chimaera runtime is not running: {0}")]
    NotRunning(String),
    #[error(
        "the runtime uses shared-memory layout {found}, this client {LAYOUT_VERSION}: use a client of the runtime's release ({runtime_version})"
    )]
    VersionMismatch { found: u32, runtime_version: String },
    #[error(
        "the lane is full (or every task record is in use): retry later or use the blocking submit"
    )]
    QueueFull,
    #[error("timed out waiting for the task")]
    TimedOut,
    #[error("the runtime went away (pid {0}) before the task completed")]
    RuntimeGone(u32),
    #[error("the runtime is stopping and takes no more tasks")]
    Stopping,
    #[error("no pool with id {0}")]
    NoSuchPool(u32),
    /// The task's node is down, unknown or unreachable ("node unavailable: ...").
    #[error("{0}")]
    NodeUnavailable(String),
    #[error("the module failed the task (status {status}): {message}")]
    Module { status: i32, message: String },
    #[error("not allowed to use the runtime: {0}")]
    PermissionDenied(String),
    #[error("all {0} client slots are taken")]
    TooManyClients(u32),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
}

/// A task to submit: its pool, method, input bytes and where it runs.
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    pub pool: u32,
    pub method: u32,
    pub input: &'a [u8],
    /// Where the task runs; [`Route::Local`] (this node) unless set.
    pub route: Route,
}

impl<'a> Task<'a> {
    pub fn new(pool: u32, method: u32, input: &'a [u8]) -> Task<'a> {
        Task {
            pool,
            method,
            input,
            route: Route::Local,
        }
    }

    /// Runs the task on node `node` (its hostfile line); this node's own id
    /// runs it here.
    pub fn on_node(mut self, node: u32) -> Task<'a> {
        self.route = Route::Direct(node);
        self
    }

    /// Runs the task on the node `key` hashes to (jump consistent hash over
    /// the hostfile's nodes): the same key always lands on the same node.
    pub fn by_key(mut self, key: u64) -> Task<'a> {
        self.route = Route::Hash(key);
        self
    }

    /// Runs the task on every node; the output is every node's reply, read
    /// with [`decode_broadcast`] (or use [`Client::broadcast`]).
    pub fn on_all_nodes(mut self) -> Task<'a> {
        self.route = Route::Broadcast;
        self
    }
}

struct Mapped {
    _map: MmapMut,
    base: *mut u8,
    len: usize,
}

fn map_segment(name: &str) -> Result<(File, Mapped), ClientError> {
    let fd = sys::shm_open(name, libc::O_RDWR, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ClientError::NotRunning(format!("segment {name} does not exist")),
        Some(libc::EACCES) => ClientError::PermissionDenied(format!(
            "segment {name}: {e}; be its owner or a member of the runtime's shared_memory.group"
        )),
        _ => ClientError::Other(format!("cannot open segment {name}: {e}")),
    })?;
    let file = File::from(fd);
    let info = wait_ready(&file, name)?;
    info.check(name).map_err(|e| match e {
        HeaderError::VersionMismatch { found, .. } => ClientError::VersionMismatch {
            found,
            runtime_version: String::from("unknown"),
        },
        other => ClientError::Other(other.to_string()),
    })?;
    // SAFETY: shared memory other processes write; reached only through
    // atomics and the record protocol.
    let mut map = unsafe { MmapMut::map_mut(&file) }
        .map_err(|e| ClientError::Other(format!("cannot map {name}: {e}")))?;
    let base = map.as_mut_ptr();
    let len = map.len();
    Ok((
        file,
        Mapped {
            _map: map,
            base,
            len,
        },
    ))
}

/// The header once its ready word is set (a runtime may still be starting).
fn wait_ready(file: &File, name: &str) -> Result<HeaderInfo, ClientError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Ok(Some(info)) = HeaderInfo::read(file)
            && info.ready
        {
            return Ok(info);
        }
        if Instant::now() > deadline {
            return Err(ClientError::NotRunning(format!(
                "segment {name} never became ready"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Inner {
    view: View,
    client_arena: Arena,
    runtime_arena: Arena,
    main_file: File,
    _maps: [Mapped; 3],
    slot: u32,
    owner: u32,
    policy: u32,
    rr: AtomicU32,
    runtime_pid: u32,
    discovery: Discovery,
    /// Connected to the network thread's wake-up socket: tasks with a route
    /// go to the network lane. None: to the workers' lanes (they forward).
    net_wake: Option<UnixDatagram>,
    /// Handles of tasks with a route that are alive: their waiters spin
    /// only while this is small.
    routed_out: AtomicU32,
}

// SAFETY: the view and arenas point into mappings owned by this struct and
// are reached through atomics and the record protocol only.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not FREE: tasks this client abandoned may still run with buffers
        // tagged with the slot; the reaper frees it when they are done.
        let slot = &self.view.clients[self.slot as usize];
        let _ = slot.state.compare_exchange(
            layout::CLIENT_ACTIVE,
            layout::CLIENT_LEAVING,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// A connection to the runtime. Cheap to clone; usable from many threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
    static TID: Cell<u32> = const { Cell::new(0) };
}

fn random_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = now_ns() ^ (u64::from(std::process::id()) << 32) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

fn thread_id() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid has no preconditions.
            t.set(unsafe { libc::gettid() } as u32);
        }
        t.get()
    })
}

impl Client {
    /// Connects with the configuration the CLI would load (`CHI_SERVER_CONF`,
    /// /etc/chimaera/chimaera_config.yaml, defaults, CHI_* variables).
    pub fn connect() -> Result<Client, ClientError> {
        Client::connect_with(&LoadOptions::default())
    }

    pub fn connect_with(opts: &LoadOptions) -> Result<Client, ClientError> {
        let env = Env::from_process();
        let loc = Locator::load(opts, &env).map_err(ClientError::Config)?;
        Client::connect_located(&loc, &env)
    }

    /// Connects to the runtime `loc` names.
    pub fn connect_located(loc: &Locator, env: &Env) -> Result<Client, ClientError> {
        let (path, disc) = match discovery::find(loc, env) {
            Ok(found) => found,
            Err(discovery::NotFound::Nowhere(dirs)) => {
                return Err(ClientError::NotRunning(format!(
                    "no discovery file {} in {}",
                    discovery::file_name(&loc.names.main),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Err(discovery::NotFound::Denied(p, e)) => {
                return Err(ClientError::PermissionDenied(format!(
                    "{}: {e}",
                    p.display()
                )));
            }
        };
        Client::connect_discovery(path, disc)
    }

    /// Connects to the runtime a discovery file describes.
    pub fn connect_discovery(path: PathBuf, disc: Discovery) -> Result<Client, ClientError> {
        if disc.layout_version != LAYOUT_VERSION {
            return Err(ClientError::VersionMismatch {
                found: disc.layout_version,
                runtime_version: disc.version.clone(),
            });
        }
        let (main_file, main) = map_segment(&disc.segments.main).map_err(|e| match e {
            ClientError::VersionMismatch { found, .. } => ClientError::VersionMismatch {
                found,
                runtime_version: disc.version.clone(),
            },
            other => other,
        })?;
        if sys::try_flock(main_file.as_fd(), false)
            .map_err(|e| ClientError::Other(e.to_string()))?
            == LockState::Acquired
        {
            sys::unlock(main_file.as_fd());
            return Err(ClientError::NotRunning(format!(
                "stale discovery file {} from pid {}, which is gone",
                path.display(),
                disc.pid
            )));
        }
        let (_, client) = map_segment(&disc.segments.client_data)?;
        let (_, runtime) = map_segment(&disc.segments.runtime_data)?;
        // SAFETY: `main` maps main.len bytes and is kept in Inner beside the view.
        let view = unsafe { View::attach(main.base, main.len, HEADER_SIZE) }
            .map_err(ClientError::Other)?;
        let region = |m: &Mapped| {
            // SAFETY: as above; the data area follows the one-page header.
            unsafe {
                Region::new(
                    m.base.add(HEADER_SIZE as usize),
                    m.len - HEADER_SIZE as usize,
                )
            }
        };
        let client_arena =
            Arena::attach(region(&client)).map_err(|e| ClientError::Other(e.to_string()))?;
        let runtime_arena =
            Arena::attach(region(&runtime)).map_err(|e| ClientError::Other(e.to_string()))?;
        match view.header.state.load(Ordering::Acquire) {
            layout::RUNTIME_RUNNING => {}
            layout::RUNTIME_STOPPING => return Err(ClientError::Stopping),
            _ => {
                return Err(ClientError::NotRunning(
                    "the runtime is still starting".into(),
                ));
            }
        }
        let pid = std::process::id();
        let start_time = process_start_time(pid).unwrap_or(0);
        let slot = view
            .clients
            .iter()
            .position(|s| {
                s.state
                    .compare_exchange(
                        layout::CLIENT_FREE,
                        layout::CLIENT_CLAIMING,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            })
            .ok_or(ClientError::TooManyClients(view.header.max_clients))?;
        let s = &view.clients[slot];
        s.pid.store(pid, Ordering::Relaxed);
        s.start_time.store(start_time, Ordering::Relaxed);
        // A CAS: a connect stalled for over a second may have had its
        // half-claimed slot reclaimed meanwhile.
        if s.state
            .compare_exchange(
                layout::CLIENT_CLAIMING,
                layout::CLIENT_ACTIVE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(ClientError::Other(
                "the runtime reclaimed this client's slot while it was connecting; connect again"
                    .into(),
            ));
        }
        let policy = view.header.lane_policy;
        let runtime_pid = view.header.runtime_pid;
        // Without write access to it (or with a runtime that has none), tasks
        // with a route take the workers' lanes: one hand-off more, no less.
        let net_wake = (!disc.wake_socket.is_empty())
            .then(|| {
                let s = UnixDatagram::unbound().ok()?;
                s.connect(&disc.wake_socket).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            })
            .flatten();
        Ok(Client {
            inner: Arc::new(Inner {
                view,
                client_arena,
                runtime_arena,
                main_file,
                _maps: [main, client, runtime],
                slot: slot as u32,
                owner: slot as u32 + 1,
                policy,
                rr: AtomicU32::new(0),
                runtime_pid,
                discovery: disc,
                net_wake,
                routed_out: AtomicU32::new(0),
            }),
        })
    }

    /// Whether tasks with a route go straight to the runtime's network
    /// thread (its wake-up socket was reachable when this client connected)
    /// rather than through a worker, which costs one thread hand-off more.
    pub fn uses_network_lane(&self) -> bool {
        self.inner.net_wake.is_some()
    }

    /// What the runtime wrote in its discovery file.
    pub fn discovery(&self) -> &Discovery {
        &self.inner.discovery
    }

    /// This client's slot in the runtime (for diagnostics).
    pub fn slot(&self) -> u32 {
        self.inner.slot
    }

    pub fn lanes(&self) -> u32 {
        self.inner.view.lanes.len() as u32
    }

    /// Whether the runtime still holds its segments (it is alive).
    pub fn runtime_alive(&self) -> bool {
        match sys::try_flock(self.inner.main_file.as_fd(), false) {
            Ok(LockState::Acquired) => {
                sys::unlock(self.inner.main_file.as_fd());
                false
            }
            _ => true,
        }
    }

    fn pick_lane(&self) -> u32 {
        let n = self.inner.view.lanes.len() as u32;
        match self.inner.policy {
            layout::LANE_RANDOM => (random_u64() % u64::from(n)) as u32,
            layout::LANE_MAP_BY_PID_TID => {
                let h = (u64::from(std::process::id()) << 32 | u64::from(thread_id()))
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((h >> 32) % u64::from(n)) as u32
            }
            _ => {
                // Racy on purpose: threads of one process sharing a counter
                // only need to spread, not to count; a locked add per task
                // would cost more than a lane choice is worth.
                let next = self.inner.rr.load(Ordering::Relaxed);
                self.inner.rr.store(next.wrapping_add(1), Ordering::Relaxed);
                next % n
            }
        }
    }

    /// Submits a task; waits while its lane is full (back-pressure, never a
    /// dropped task). Returns a handle to wait on.
    pub fn submit(&self, task: &Task<'_>) -> Result<TaskHandle<'_>, ClientError> {
        self.submit_to(task, None, true)
    }

    /// Submits a task unless its lane is full ([`ClientError::QueueFull`]).
    pub fn try_submit(&self, task: &Task<'_>) -> Result<TaskHandle<'_>, ClientError> {
        self.submit_to(task, None, false)
    }

    /// Submits to a given lane (worker), e.g. to keep related tasks in order.
    pub fn submit_to_lane(
        &self,
        task: &Task<'_>,
        lane: u32,
    ) -> Result<TaskHandle<'_>, ClientError> {
        if lane >= self.lanes() {
            return Err(ClientError::Other(format!(
                "no lane {lane}; the runtime has {}",
                self.lanes()
            )));
        }
        self.submit_to(task, Some(lane), true)
    }

    /// Submits every task (blocking on full lanes) and returns their handles.
    pub fn submit_batch<'t>(
        &self,
        tasks: impl IntoIterator<Item = Task<'t>>,
    ) -> Result<Vec<TaskHandle<'_>>, ClientError> {
        tasks.into_iter().map(|t| self.submit(&t)).collect()
    }

    /// Submits and waits: the result bytes, or the task's error.
    pub fn call(&self, task: &Task<'_>) -> Result<Vec<u8>, ClientError> {
        self.submit(task)?.wait()
    }

    fn submit_to(
        &self,
        task: &Task<'_>,
        lane: Option<u32>,
        block: bool,
    ) -> Result<TaskHandle<'_>, ClientError> {
        let inner = &*self.inner;
        let view = &inner.view;
        if view.is_stopping() {
            return Err(ClientError::Stopping);
        }
        check_payload_len(task.input.len(), "input").map_err(ClientError::Other)?;
        let mut backoff = Backoff::new();
        let idx = loop {
            if let Some(i) = view.records.alloc(inner.owner) {
                break i;
            }
            if !block {
                return Err(ClientError::QueueFull);
            }
            backoff.wait(self)?;
        };
        let (route_flags, route_arg) = record::route_flags(task.route);
        let routed = route_flags != 0;
        if routed {
            inner.routed_out.fetch_add(1, Ordering::Relaxed);
        }
        let handle = TaskHandle {
            client: self,
            idx,
            routed,
        };
        let rec = view.records.get(idx);
        rec.route_arg.store(route_arg, Ordering::Relaxed);
        fill_record(view.header, &inner.client_arena, rec, task.pool, task.method, task.input, inner.owner, route_flags).map_err(|len| {
            ClientError::Other(format!(
                "no room for {len} bytes of task input in the client data segment: raise memory.client_data_segment_size"
            ))
        })?;
        // A task with a route goes straight to the network thread, unless
        // the caller chose a lane.
        let to_net = lane.is_none() && route_flags != 0 && inner.net_wake.is_some();
        let lane = lane.unwrap_or_else(|| if to_net { NET_LANE } else { self.pick_lane() });
        rec.lane.store(lane, Ordering::Relaxed);
        rec.mark_submitted();
        let l = if to_net {
            &view.net_lane
        } else {
            &view.lanes[lane as usize]
        };
        let mut backoff = Backoff::new();
        loop {
            if l.push(idx).is_ok() {
                if to_net {
                    self.wake_net();
                } else {
                    ring_lane(l);
                }
                return Ok(handle);
            }
            if !block || view.is_stopping() {
                // Not published: take the runtime's reference back.
                rec.unmark_submitted();
                return Err(if block {
                    ClientError::Stopping
                } else {
                    ClientError::QueueFull
                });
            }
            if let Err(e) = backoff.wait(self) {
                rec.unmark_submitted();
                return Err(e);
            }
        }
    }

    /// Wakes the network thread if it announced sleep. A lost datagram (a
    /// full socket buffer) loses nothing: one is already waiting for it.
    fn wake_net(&self) {
        let inner = &*self.inner;
        if take_doorbell(&inner.view.net_lane)
            && let Some(s) = &inner.net_wake
        {
            let _ = s.send(&[1]);
        }
    }

    /// Runs an admin task and returns its output.
    fn admin(&self, method: u32, input: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.call(&Task::new(admin::POOL_ID, method, input))
    }

    /// An admin no-op; returns its round trip.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        let t = Instant::now();
        self.admin(admin::method::PING, &[])?;
        Ok(t.elapsed())
    }

    /// An admin no-op on node `node`; returns its round trip from here.
    pub fn ping_node(&self, node: u32) -> Result<Duration, ClientError> {
        let t = Instant::now();
        self.call(&Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(node))?;
        Ok(t.elapsed())
    }

    /// Runs `task` on every node and returns each node's reply, in node
    /// order (a down node's reply has status NODE_UNAVAILABLE).
    pub fn broadcast(&self, task: &Task<'_>) -> Result<Vec<NodeReply>, ClientError> {
        let out = self.call(&task.on_all_nodes())?;
        decode_broadcast(&out)
            .ok_or_else(|| ClientError::Other("malformed broadcast reply from the runtime".into()))
    }

    pub fn stats(&self) -> Result<admin::Stats, ClientError> {
        let out = self.admin(admin::method::STATS, &[])?;
        serde_json::from_slice(&out)
            .map_err(|e| ClientError::Other(format!("bad stats from the runtime: {e}")))
    }

    /// Asks the runtime to stop gracefully (as SIGTERM does).
    pub fn stop_runtime(&self) -> Result<(), ClientError> {
        self.admin(admin::method::STOP, &[]).map(|_| ())
    }

    /// Waits until the runtime has no queued or running work but this.
    pub fn flush(&self) -> Result<(), ClientError> {
        self.admin(admin::method::FLUSH, &[]).map(|_| ())
    }

    /// Creates a pool, or returns the existing one of that name and module.
    pub fn create_pool(
        &self,
        name: &str,
        module: &str,
        params: &str,
    ) -> Result<PoolInfo, ClientError> {
        let req = admin::CreatePool {
            name: name.into(),
            module: module.into(),
            params: params.into(),
        };
        let out = self.admin(
            admin::method::CREATE_POOL,
            &serde_json::to_vec(&req).expect("serializable"),
        )?;
        serde_json::from_slice(&out).map_err(|e| ClientError::Other(e.to_string()))
    }

    pub fn destroy_pool(&self, name: &str) -> Result<PoolInfo, ClientError> {
        self.destroy_pool_ref(&admin::PoolRef::Name { name: name.into() })
    }

    /// Destroys a pool named by id or by name.
    pub fn destroy_pool_ref(&self, req: &admin::PoolRef) -> Result<PoolInfo, ClientError> {
        let out = self.admin(
            admin::method::DESTROY_POOL,
            &serde_json::to_vec(&req).expect("serializable"),
        )?;
        serde_json::from_slice(&out).map_err(|e| ClientError::Other(e.to_string()))
    }

    pub fn list_pools(&self) -> Result<Vec<PoolInfo>, ClientError> {
        let out = self.admin(admin::method::LIST_POOLS, &[])?;
        serde_json::from_slice(&out).map_err(|e| ClientError::Other(e.to_string()))
    }

    fn check_alive(&self) -> Result<(), ClientError> {
        if self.runtime_alive() {
            Ok(())
        } else {
            Err(ClientError::RuntimeGone(self.inner.runtime_pid))
        }
    }
}

/// Spin, then yield, then sleep, checking the runtime's life as it goes.
struct Backoff {
    round: u32,
    /// Read on the first wait, not at creation: every submit makes two
    /// backoffs and almost never waits, and a clock read costs a tenth of
    /// a local round trip here.
    last_check: Option<Instant>,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            round: 0,
            last_check: None,
        }
    }

    fn wait(&mut self, client: &Client) -> Result<(), ClientError> {
        self.round += 1;
        if self.round < 64 {
            relax();
        } else if self.round < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
        let last = *self.last_check.get_or_insert_with(Instant::now);
        if last.elapsed() > LIVENESS_CHECK {
            self.last_check = Some(Instant::now());
            client.check_alive()?;
            if client.inner.view.is_stopping() {
                return Err(ClientError::Stopping);
            }
        }
        Ok(())
    }
}

/// A submitted task. Dropping it gives up the result (the task still runs).
/// It borrows its client: no reference count moves per task.
pub struct TaskHandle<'c> {
    client: &'c Client,
    idx: u32,
    routed: bool,
}

impl TaskHandle<'_> {
    fn rec(&self) -> &record::TaskRecord {
        self.client.inner.view.records.get(self.idx)
    }

    pub fn is_done(&self) -> bool {
        self.rec().phase() == record::DONE
    }

    /// The runtime's id for this task.
    pub fn task_id(&self) -> u64 {
        self.rec().task_id.load(Ordering::Relaxed)
    }

    /// Waits for completion; bounded by the runtime's task_timeout and life.
    ///
    /// The calling thread spins before it sleeps: 20 µs for a task of this
    /// node, up to 500 µs (yielding its CPU every round) for a task with a
    /// route while this client has at most 4 of those out. A synchronous
    /// caller thus sees the reply as it lands, at the price of a busy CPU
    /// for that long.
    pub fn wait(self) -> Result<Vec<u8>, ClientError> {
        self.wait_until(None)?;
        self.result(|b| b.to_vec())
    }

    /// Waits at most `limit`; [`ClientError::TimedOut`] leaves the task
    /// running and the handle usable.
    pub fn wait_timeout(&self, limit: Duration) -> Result<Vec<u8>, ClientError> {
        self.wait_until(Some(Instant::now() + limit))?;
        self.result(|b| b.to_vec())
    }

    /// Waits, then lends the output where it lies in shared memory (no copy).
    pub fn wait_with<R>(self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.wait_until(None)?;
        self.result(f)
    }

    fn result<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        let inner = &*self.client.inner;
        let rec = self.rec();
        let out = output_bytes(&inner.runtime_arena, rec);
        match rec.status() {
            status::OK => Ok(f(out)),
            status::TIMED_OUT => Err(ClientError::TimedOut),
            status::STOPPING => Err(ClientError::Stopping),
            status::NO_SUCH_POOL => {
                Err(ClientError::NoSuchPool(rec.pool_id.load(Ordering::Relaxed)))
            }
            status::NODE_UNAVAILABLE => Err(ClientError::NodeUnavailable(
                String::from_utf8_lossy(out).into_owned(),
            )),
            s => Err(ClientError::Module {
                status: s,
                message: String::from_utf8_lossy(out).into_owned(),
            }),
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<(), ClientError> {
        let rec = self.rec();
        if rec.phase() == record::DONE {
            return Ok(());
        }
        // A short tight loop first: a PAUSE costs ~24 ns on this class of
        // machine, close to a tenth of a whole local round trip.
        for _ in 0..256 {
            if rec.phase() == record::DONE {
                return Ok(());
            }
        }
        // A task with a route waits a network round trip (100 µs and more):
        // still worth spinning through, since the futex wake-up it saves is
        // a hand-off of 10-30 µs. It yields every round, not every other,
        // as the daemon's network thread and ZeroMQ need the CPU meanwhile.
        // With more of this client's routed tasks out it sleeps at once:
        // replies then come in bursts, and a sleeper wakes to a batch
        // (spinning there cut pipelined throughput by a tenth).
        let (spin, yield_every) = if !self.routed {
            (SPIN, 2)
        } else if self.client.inner.routed_out.load(Ordering::Relaxed) <= ROUTED_SPIN_MAX_OUT {
            (ROUTED_SPIN, 1)
        } else {
            (Duration::ZERO, 1)
        };
        let mut spin_until = None;
        let mut round = 0u32;
        loop {
            for _ in 0..64 {
                if rec.phase() == record::DONE {
                    return Ok(());
                }
                relax();
            }
            // The clock is first read here, after a round in vain: a read
            // costs a tenth of a local round trip, and most local tasks are
            // done within that round.
            let now = now_ns();
            let until = *spin_until.get_or_insert_with(|| {
                // Never past the caller's own limit.
                let spin = deadline.map_or(spin, |d| {
                    spin.min(d.saturating_duration_since(Instant::now()))
                });
                now + spin.as_nanos() as u64
            });
            if now >= until {
                break;
            }
            // Every few µs, let another thread of this CPU run: the worker
            // that completes the task may be pinned here.
            round += 1;
            if round.is_multiple_of(yield_every) {
                std::thread::yield_now();
            }
        }
        // The runtime completes overdue tasks itself; this margin only
        // matters if its timekeeper cannot run.
        let task_deadline = rec.deadline_ns.load(Ordering::Relaxed) + 1_000_000_000;
        let mut last_check = Instant::now();
        loop {
            let s = rec.state.load(Ordering::Acquire);
            if s & record::PHASE_MASK == record::DONE {
                return Ok(());
            }
            let mut slice = LIVENESS_CHECK;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(ClientError::TimedOut);
                }
                slice = slice.min(d - now);
            }
            if s & record::WAITER == 0
                && rec
                    .state
                    .compare_exchange(s, s | record::WAITER, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            futex_wait(&rec.state, s | record::WAITER, slice);
            if last_check.elapsed() >= LIVENESS_CHECK {
                last_check = Instant::now();
                if rec.phase() == record::DONE {
                    return Ok(());
                }
                self.client.check_alive()?;
                if now_ns() > task_deadline {
                    return Err(ClientError::TimedOut);
                }
            }
        }
    }
}

impl Drop for TaskHandle<'_> {
    fn drop(&mut self) {
        let inner = &*self.client.inner;
        if self.routed {
            inner.routed_out.fetch_sub(1, Ordering::Relaxed);
        }
        inner.view.records.release(self.idx, REF_CLIENT, |r| {
            free_payloads(&inner.client_arena, &inner.runtime_arena, r)
        });
    }
}
