//! A submitted task's handle: waiting (spin, then futex, checking the
//! runtime's life), reading the output, giving the record back.
//!
//! [`TaskHandle`] borrows its client; [`OwnedTaskHandle`] holds a clone of
//! it (one reference count), for callers that cannot tie a task to a
//! borrow: the C library, a handle kept in a struct or sent to a thread
//! that outlives the client. Both are a [`Ticket`] and a way to reach the
//! client.

use super::*;

/// A submitted task. Dropping it gives up the result (the task still runs).
/// It borrows its client: no reference count moves per task.
pub struct TaskHandle<'c> {
    pub(crate) client: &'c Client,
    pub(crate) ticket: Ticket,
}

/// A submitted task that keeps its client (and so the connection) alive
/// itself: [`TaskHandle::into_owned`]. Dropping it gives up the result
/// (the task still runs). Waiting does not consume it: the output stays
/// readable, where it lies in shared memory, until the handle is dropped.
/// It is `Send` and `Sync`; waits from several threads at once are sound.
pub struct OwnedTaskHandle {
    client: Client,
    ticket: Ticket,
}

/// What identifies a submitted task to its client: its record, whether it
/// has a route, its deadline.
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) idx: u32,
    pub(crate) routed: bool,
    /// The task's deadline as this client wrote it: the record's copy is in
    /// shared memory, where anyone may write over it.
    pub(crate) deadline_ns: u64,
}

/// `now + limit`, or None (no limit) when that is past what an Instant holds.
fn deadline_after(limit: Duration) -> Option<Instant> {
    Instant::now().checked_add(limit)
}

impl TaskHandle<'_> {
    pub fn is_done(&self) -> bool {
        self.ticket.is_done(self.client)
    }

    /// The runtime's id for this task.
    pub fn task_id(&self) -> u64 {
        self.ticket.task_id(self.client)
    }

    /// Waits for completion; bounded by the runtime's task_timeout and life.
    ///
    /// The calling thread spins before it sleeps: 20 µs for a task of this
    /// node, up to 500 µs (yielding its CPU every round) for a task with a
    /// route while this client has at most 4 of those out. A synchronous
    /// caller thus sees the reply as it lands, at the price of a busy CPU
    /// for that long.
    pub fn wait(self) -> Result<Vec<u8>, ClientError> {
        self.ticket.wait_until(self.client, None)?;
        self.ticket.result(self.client, |b| b.to_vec())
    }

    /// Waits at most `limit`; [`ClientError::TimedOut`] leaves the task
    /// running and the handle usable.
    pub fn wait_timeout(&self, limit: Duration) -> Result<Vec<u8>, ClientError> {
        self.ticket.wait_until(self.client, deadline_after(limit))?;
        self.ticket.result(self.client, |b| b.to_vec())
    }

    /// Waits, then lends the output where it lies in shared memory (no copy).
    pub fn wait_with<R>(self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.ticket.wait_until(self.client, None)?;
        self.ticket.result(self.client, f)
    }

    /// Waits until the task is done or `limit` (if any) passed, keeping the
    /// handle: `Ok(true)` done, `Ok(false)` the limit came first (the task
    /// still runs: wait again, or drop the handle). For bindings that wait
    /// without their interpreter lock and read the output with it.
    pub fn wait_done(&self, limit: Option<Duration>) -> Result<bool, ClientError> {
        self.ticket.wait_done(self.client, limit)
    }

    /// Lends a done task's output where it lies in shared memory, or gives
    /// the task's error; an error if the task is not done yet.
    pub fn output_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.ticket.output_with(self.client, f)
    }

    /// The same task, holding a clone of its client instead of a borrow.
    pub fn into_owned(self) -> OwnedTaskHandle {
        let this = std::mem::ManuallyDrop::new(self);
        OwnedTaskHandle {
            client: this.client.clone(),
            ticket: this.ticket,
        }
    }
}

impl OwnedTaskHandle {
    pub fn is_done(&self) -> bool {
        self.ticket.is_done(&self.client)
    }

    /// The runtime's id for this task.
    pub fn task_id(&self) -> u64 {
        self.ticket.task_id(&self.client)
    }

    /// The client that submitted the task.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// As [`TaskHandle::wait_done`].
    pub fn wait_done(&self, limit: Option<Duration>) -> Result<bool, ClientError> {
        self.ticket.wait_done(&self.client, limit)
    }

    /// As [`TaskHandle::output_with`].
    pub fn output_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.ticket.output_with(&self.client, f)
    }

    /// Waits for completion as [`TaskHandle::wait`] does, and copies the output.
    pub fn wait(&self) -> Result<Vec<u8>, ClientError> {
        self.wait_with(<[u8]>::to_vec)
    }

    /// Waits at most `limit` (a limit too large for the clock is none);
    /// [`ClientError::TimedOut`] leaves the task running.
    pub fn wait_timeout(&self, limit: Duration) -> Result<Vec<u8>, ClientError> {
        self.wait_timeout_with(limit, <[u8]>::to_vec)
    }

    /// Waits, then lends the output where it lies in shared memory (no copy).
    pub fn wait_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.ticket.wait_until(&self.client, None)?;
        self.ticket.result(&self.client, f)
    }

    /// [`OwnedTaskHandle::wait_with`], waiting at most `limit`.
    pub fn wait_timeout_with<R>(
        &self,
        limit: Duration,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ClientError> {
        self.ticket
            .wait_until(&self.client, deadline_after(limit))?;
        self.ticket.result(&self.client, f)
    }
}

impl Ticket {
    /// `Ok(true)` done; `Ok(false)` the caller's limit passed first. Errors:
    /// the runtime gone (checked once more before `Ok(false)`: a short limit
    /// ends the wait before its periodic check), or the task's own deadline
    /// passed by [`LOST_TASK_GRACE`].
    fn wait_done(&self, client: &Client, limit: Option<Duration>) -> Result<bool, ClientError> {
        let until = limit.and_then(deadline_after);
        match self.wait_until(client, until) {
            Ok(()) => Ok(true),
            // The same error for the caller's limit and the task's lost
            // deadline; only the caller's has passed by its own clock.
            Err(ClientError::TimedOut) if until.is_some_and(|u| Instant::now() >= u) => {
                if self.is_done(client) {
                    return Ok(true);
                }
                client.check_alive()?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn output_with<R>(
        &self,
        client: &Client,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ClientError> {
        if !self.is_done(client) {
            return Err(ClientError::Other(
                "the task is not done yet: wait for it before reading its output".into(),
            ));
        }
        self.result(client, f)
    }

    pub(crate) fn rec<'a>(&self, client: &'a Client) -> &'a record::TaskRecord {
        client.inner.view.records.get(self.idx)
    }

    fn is_done(&self, client: &Client) -> bool {
        self.rec(client).phase() == record::DONE
    }

    fn task_id(&self, client: &Client) -> u64 {
        self.rec(client).task_id.load(Ordering::Relaxed)
    }

    pub(crate) fn result<R>(
        &self,
        client: &Client,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ClientError> {
        let inner = &*client.inner;
        let rec = self.rec(client);
        let out = output_bytes(&inner.runtime_arena, rec).ok_or_else(|| {
            ClientError::Other(
                "the task's output is not where outputs live: its record was written over in shared memory"
                    .into(),
            )
        })?;
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

    pub(crate) fn wait_until(
        &self,
        client: &Client,
        deadline: Option<Instant>,
    ) -> Result<(), ClientError> {
        let rec = self.rec(client);
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
        } else if client.inner.routed_out.load(Ordering::Relaxed) <= ROUTED_SPIN_MAX_OUT {
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
        // matters if it cannot (its timekeeper is stuck, or the task's
        // record or lane cell was written over and no worker will see it).
        let task_deadline = self
            .deadline_ns
            .saturating_add(LOST_TASK_GRACE.as_nanos() as u64);
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
            let now = now_ns();
            if now > task_deadline {
                return Err(ClientError::TimedOut);
            }
            slice = slice.min(Duration::from_nanos(task_deadline - now));
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
                client.check_alive()?;
            }
        }
    }

    /// Gives the record back (the runtime frees it when it is done too).
    fn release(&self, client: &Client) {
        handle_dropped();
        let inner = &*client.inner;
        if self.routed {
            inner.routed_out.fetch_sub(1, Ordering::Relaxed);
        }
        inner.view.records.release(self.idx, REF_CLIENT, |r| {
            free_payloads(&inner.client_arena, &inner.runtime_arena, r)
        });
    }
}

impl Drop for TaskHandle<'_> {
    fn drop(&mut self) {
        self.ticket.release(self.client);
    }
}

impl Drop for OwnedTaskHandle {
    fn drop(&mut self) {
        self.ticket.release(&self.client);
    }
}
