//! Submitting: picking a lane, filling and publishing a record, back-pressure
//! of a full lane, and the admin pool's calls.

use super::*;

/// How many consecutive tasks of one client `round_robin` gives a lane
/// before it moves to the next.
pub const ROUND_ROBIN_RUN: u32 = 64;

impl Client {
    pub(crate) fn pick_lane(&self) -> u32 {
        let n = self.inner.view.lanes.len() as u32;
        match self.inner.policy {
            layout::LANE_RANDOM => (random_u64() % u64::from(n)) as u32,
            layout::LANE_MAP_BY_PID_TID => {
                let h = (u64::from(std::process::id()) << 32 | u64::from(thread_id()))
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((h >> 32) % u64::from(n)) as u32
            }
            _ => {
                // Round robin by runs of ROUND_ROBIN_RUN tasks, not task by
                // task: a worker that just ran this client's task is still
                // polling its lane, while the next lane's worker has gone
                // to sleep (and, with more workers than cores, each awake
                // one takes a core from the client). A synchronous client
                // thus pays one wake-up per run, not one per task; a
                // pipelining one still spreads, a run to each lane.
                //
                // Racy on purpose: threads of one process sharing a counter
                // only need to spread, not to count; a locked add per task
                // would cost more than a lane choice is worth.
                let next = self.inner.rr.load(Ordering::Relaxed);
                self.inner.rr.store(next.wrapping_add(1), Ordering::Relaxed);
                if !next.is_multiple_of(ROUND_ROBIN_RUN) {
                    let lane = self.inner.rr_lane.load(Ordering::Relaxed);
                    if lane < n {
                        return lane;
                    }
                }
                let base = (next / ROUND_ROBIN_RUN) % n;
                // A caller with nothing else out waits for this task: give
                // it a lane it can wait on without sharing a CPU. One with
                // tasks out (pipelining) spreads over every lane in turn.
                // (The handle of the task being submitted counts already.)
                let waiting_alone = OUTSTANDING.with(|c| c.get()) <= 1;
                let lane = if waiting_alone {
                    self.run_lane(base, n)
                } else {
                    base
                };
                self.inner.rr_lane.store(lane, Ordering::Relaxed);
                lane
            }
        }
    }

    /// The lane for a new `round_robin` run: the first, from `base` on, whose
    /// worker is not pinned to the CPU this thread runs on, if there is one.
    /// A synchronous caller on its lane's worker's CPU can only submit, or
    /// see its result, while the worker lets go of the CPU: each round trip
    /// then costs two context switches (6-9 µs here) instead of a cache
    /// line's trip between cores (0.3-0.5 µs). Once per run, so the look at
    /// the CPU (a vDSO call) costs nothing per task; a thread the scheduler
    /// moves mid-run is set right at the next run. The workers' CPUs come
    /// from shared memory: only a hint, any value is harmless.
    fn run_lane(&self, base: u32, n: u32) -> u32 {
        // SAFETY: sched_getcpu takes no arguments and only reads the CPU
        // number (from the vDSO); -1 on failure.
        let here = unsafe { libc::sched_getcpu() };
        let Ok(here) = u32::try_from(here) else {
            return base;
        };
        let workers = self.inner.view.workers;
        (0..n)
            .map(|i| (base + i) % n)
            .find(|&lane| {
                workers
                    .get(lane as usize)
                    .is_none_or(|w| w.cpu.load(Ordering::Relaxed) != here)
            })
            .unwrap_or(base)
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

    pub(crate) fn submit_to(
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
        // 0: the limit starts with the first wait (no clock read per submit).
        let mut backoff = Backoff::new(0);
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
        handle_made();
        let mut handle = TaskHandle {
            client: self,
            ticket: Ticket {
                idx,
                routed,
                deadline_ns: u64::MAX,
            },
        };
        let rec = view.records.get(idx);
        rec.route_arg.store(route_arg, Ordering::Relaxed);
        fill_record(view.info.task_timeout_ns, &inner.client_arena, rec, task.pool, task.method, task.input, inner.owner, route_flags).map_err(|len| {
            ClientError::Other(format!(
                "no room for {len} bytes of task input in the client data segment: raise memory.client_data_segment_size"
            ))
        })?;
        handle.ticket.deadline_ns = rec.deadline_ns.load(Ordering::Relaxed);
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
        // Not past the task's own deadline: a task that could not even be
        // queued by then would only time out.
        let mut backoff = Backoff::new(
            handle
                .ticket
                .deadline_ns
                .saturating_add(LOST_TASK_GRACE.as_nanos() as u64),
        );
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
            // A consumer asleep on a lane that looks full to us has work to
            // do (or a lane to put right): make sure it is awake.
            if to_net {
                self.wake_net();
            } else {
                ring_lane(l);
            }
            if let Err(e) = backoff.wait(self) {
                rec.unmark_submitted();
                return Err(e);
            }
        }
    }

    /// Wakes the network thread if it announced sleep. A lost datagram (a
    /// full socket buffer) loses nothing: one is already waiting for it.
    pub(crate) fn wake_net(&self) {
        let inner = &*self.inner;
        if take_doorbell(&inner.view.net_lane)
            && let Some(s) = &inner.net_wake
        {
            let _ = s.send(&[1]);
        }
    }

    /// Runs an admin task and returns its output.
    pub(crate) fn admin(&self, method: u32, input: &[u8]) -> Result<Vec<u8>, ClientError> {
        let ns = self.inner.admin_limit_ns.load(Ordering::Relaxed);
        self.admin_within(method, input, (ns > 0).then(|| Duration::from_nanos(ns)))
    }

    /// Bounds every admin call of this client (pools, stats, stop, flush)
    /// by `limit`: past it the call returns [`ClientError::TimedOut`] (the
    /// runtime may still carry it out). None: they wait as long as the
    /// task's own timeout.
    pub fn set_admin_timeout(&self, limit: Option<Duration>) {
        let ns = limit.map_or(0, |l| {
            u64::try_from(l.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.inner.admin_limit_ns.store(ns, Ordering::Relaxed);
    }

    /// [`Client::admin`], waiting at most `limit` when one is given.
    fn admin_within(
        &self,
        method: u32,
        input: &[u8],
        limit: Option<Duration>,
    ) -> Result<Vec<u8>, ClientError> {
        let task = Task::new(admin::POOL_ID, method, input);
        match limit {
            None => self.call(&task),
            Some(limit) => self.call_timeout(&task, limit),
        }
    }

    fn ping_within(&self, limit: Option<Duration>) -> Result<Duration, ClientError> {
        let t = Instant::now();
        self.admin_within(admin::method::PING, &[], limit)?;
        Ok(t.elapsed())
    }

    fn stats_within(&self, limit: Option<Duration>) -> Result<admin::Stats, ClientError> {
        let out = self.admin_within(admin::method::STATS, &[], limit)?;
        serde_json::from_slice(&out)
            .map_err(|e| ClientError::Other(format!("bad stats from the runtime: {e}")))
    }

    /// Submits and waits at most `limit`: the result bytes, the task's
    /// error, or [`ClientError::TimedOut`] (the task is given up; the
    /// runtime still runs it). For callers that must answer in time even
    /// when the runtime does not (a frozen daemon).
    pub fn call_timeout(&self, task: &Task<'_>, limit: Duration) -> Result<Vec<u8>, ClientError> {
        self.submit(task)?.wait_timeout(limit)
    }

    /// [`Client::ping`], waiting at most `limit`.
    pub fn ping_timeout(&self, limit: Duration) -> Result<Duration, ClientError> {
        self.ping_within(Some(limit))
    }

    /// [`Client::stats`], waiting at most `limit`.
    pub fn stats_timeout(&self, limit: Duration) -> Result<admin::Stats, ClientError> {
        self.stats_within(Some(limit))
    }

    /// [`Client::stop_runtime`], waiting at most `limit` for the runtime to
    /// take the request.
    pub fn stop_runtime_timeout(&self, limit: Duration) -> Result<(), ClientError> {
        self.admin_within(admin::method::STOP, &[], Some(limit))
            .map(|_| ())
    }

    /// An admin no-op; returns its round trip.
    pub fn ping(&self) -> Result<Duration, ClientError> {
        self.ping_within(None)
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
        self.stats_within(None)
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

    pub(crate) fn check_alive(&self) -> Result<(), ClientError> {
        if self.runtime_alive() {
            Ok(())
        } else {
            Err(ClientError::RuntimeGone(self.inner.runtime_pid))
        }
    }
}

/// Spin, then yield, then sleep, checking the runtime's life as it goes.
pub(crate) struct Backoff {
    round: u32,
    /// Read on the first wait, not at creation: every submit makes two
    /// backoffs and almost never waits, and a clock read costs a tenth of
    /// a local round trip here.
    last_check: Option<Instant>,
    /// CLOCK_MONOTONIC ns after which a blocking submit stops waiting for
    /// room (a lane someone wrote over may not drain in time; the runtime
    /// puts it right, and the caller hears QueueFull meanwhile).
    until_ns: u64,
}

impl Backoff {
    pub(crate) fn new(until_ns: u64) -> Backoff {
        Backoff {
            round: 0,
            last_check: None,
            until_ns,
        }
    }

    pub(crate) fn wait(&mut self, client: &Client) -> Result<(), ClientError> {
        if self.until_ns == 0 {
            self.until_ns = now_ns()
                .saturating_add(client.inner.view.info.task_timeout_ns)
                .saturating_add(LOST_TASK_GRACE.as_nanos() as u64);
        }
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
            let now = Instant::now();
            self.last_check = Some(now);
            client.check_alive()?;
            if client.inner.view.is_stopping() {
                return Err(ClientError::Stopping);
            }
            if now_ns() > self.until_ns {
                return Err(ClientError::QueueFull);
            }
        }
        Ok(())
    }
}
