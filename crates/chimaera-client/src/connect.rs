//! Attaching to a runtime: its discovery file, its three segments (mapped,
//! header and layout version checked), its liveness lock, a client slot.

use super::*;

pub(crate) struct Mapped {
    _map: MmapMut,
    base: *mut u8,
    len: usize,
}

pub(crate) fn map_segment(name: &str) -> Result<(File, Mapped), ClientError> {
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
pub(crate) fn wait_ready(file: &File, name: &str) -> Result<HeaderInfo, ClientError> {
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

pub(crate) struct Inner {
    pub(crate) view: View,
    pub(crate) client_arena: Arena,
    pub(crate) runtime_arena: Arena,
    pub(crate) main_file: File,
    pub(crate) _maps: [Mapped; 3],
    pub(crate) slot: u32,
    pub(crate) owner: u32,
    pub(crate) policy: u32,
    pub(crate) rr: AtomicU32,
    /// The lane of the current `round_robin` run (see `pick_lane`).
    pub(crate) rr_lane: AtomicU32,
    pub(crate) runtime_pid: u32,
    pub(crate) discovery: Discovery,
    /// Connected to the network thread's wake-up socket: tasks with a route
    /// go to the network lane. None: to the workers' lanes (they forward).
    pub(crate) net_wake: Option<UnixDatagram>,
    /// Handles of tasks with a route that are alive: their waiters spin
    /// only while this is small.
    pub(crate) routed_out: AtomicU32,
    /// Bound on the admin calls (pools, stats, stop, flush) in ns; 0: none.
    pub(crate) admin_limit_ns: std::sync::atomic::AtomicU64,
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

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
    static TID: Cell<u32> = const { Cell::new(0) };
}

pub(crate) fn random_u64() -> u64 {
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

pub(crate) fn thread_id() -> u32 {
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
        match view.state.load(Ordering::Acquire) {
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
            .ok_or(ClientError::TooManyClients(view.info.max_clients))?;
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
        let policy = view.info.lane_policy;
        let runtime_pid = view.info.runtime_pid;
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
                rr_lane: AtomicU32::new(0),
                runtime_pid,
                discovery: disc,
                net_wake,
                routed_out: AtomicU32::new(0),
                admin_limit_ns: std::sync::atomic::AtomicU64::new(0),
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
}
