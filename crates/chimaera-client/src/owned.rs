//! A task handle that owns its client ([`OwnedTaskHandle`]), for callers
//! that cannot keep a borrow alive: language bindings, whose task objects
//! live as long as their users keep them, and handles stored beside the
//! client in one struct. Also waiting apart from reading the output, so a
//! binding can wait without its interpreter lock and read with it.
//!
//! Both are thin: an owned handle is a [`TaskHandle`]'s fields plus a clone
//! of the client (one reference count moved per task), and every wait and
//! read goes through the borrowed handle's code.

use std::mem::ManuallyDrop;

use super::*;

impl<'c> TaskHandle<'c> {
    /// Turns this handle into one that owns a clone of its client, so it can
    /// outlive the borrow (and be sent to, or shared with, other threads).
    pub fn into_owned(self) -> OwnedTaskHandle {
        // Not dropped: the record's reference passes to the owned handle.
        let this = ManuallyDrop::new(self);
        OwnedTaskHandle {
            client: this.client.clone(),
            idx: this.idx,
            routed: this.routed,
            deadline_ns: this.deadline_ns,
        }
    }

    /// Waits until the task is done or `limit` (if any) has passed, and
    /// keeps the handle: `Ok(true)` done, `Ok(false)` the limit came first
    /// (the task still runs; wait again or drop the handle). Errors:
    /// [`ClientError::RuntimeGone`] (checked at least every
    /// [`LIVENESS_CHECK`], and once more before `Ok(false)`), and
    /// [`ClientError::TimedOut`] when the task's own deadline (the runtime's
    /// `task_timeout`) passed by [`LOST_TASK_GRACE`] without completion.
    pub fn wait_done(&self, limit: Option<Duration>) -> Result<bool, ClientError> {
        let until = limit.map(|l| Instant::now() + l);
        match self.wait_until(until) {
            Ok(()) => Ok(true),
            // The same error for the caller's limit and the task's lost
            // deadline; only the caller's has passed by its own clock.
            Err(ClientError::TimedOut) if until.is_some_and(|u| Instant::now() >= u) => {
                if self.is_done() {
                    return Ok(true);
                }
                // A short limit ends the wait before its periodic check.
                self.client.check_alive()?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Lends a done task's output where it lies in shared memory, or gives
    /// the task's error; an error if the task is not done yet.
    pub fn output_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        if !self.is_done() {
            return Err(ClientError::Other(
                "the task is not done yet: wait for it before reading its output".into(),
            ));
        }
        self.result(f)
    }
}

/// A submitted task that owns (a clone of) its client: `'static`, `Send`
/// and `Sync`, so a binding's task object or another thread can keep it.
/// Made by [`TaskHandle::into_owned`]. Dropping it gives up the result (the
/// task still runs) and its record, as a [`TaskHandle`] does.
pub struct OwnedTaskHandle {
    client: Client,
    idx: u32,
    routed: bool,
    deadline_ns: u64,
}

impl OwnedTaskHandle {
    /// The borrowed handle over the same record, which must not be dropped:
    /// the record's reference is this owned handle's.
    fn borrowed(&self) -> ManuallyDrop<TaskHandle<'_>> {
        ManuallyDrop::new(TaskHandle {
            client: &self.client,
            idx: self.idx,
            routed: self.routed,
            deadline_ns: self.deadline_ns,
        })
    }

    /// The client the task was submitted through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_done(&self) -> bool {
        self.borrowed().is_done()
    }

    /// The runtime's id for this task.
    pub fn task_id(&self) -> u64 {
        self.borrowed().task_id()
    }

    /// [`TaskHandle::wait_done`].
    pub fn wait_done(&self, limit: Option<Duration>) -> Result<bool, ClientError> {
        self.borrowed().wait_done(limit)
    }

    /// [`TaskHandle::output_with`].
    pub fn output_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        self.borrowed().output_with(f)
    }

    /// [`TaskHandle::wait`]: waits (bounded by the runtime's task_timeout
    /// and life) and copies the output.
    pub fn wait(self) -> Result<Vec<u8>, ClientError> {
        self.borrowed().wait_until(None)?;
        self.output_with(<[u8]>::to_vec)
    }

    /// [`TaskHandle::wait_timeout`].
    pub fn wait_timeout(&self, limit: Duration) -> Result<Vec<u8>, ClientError> {
        let h = self.borrowed();
        h.wait_until(Some(Instant::now() + limit))?;
        h.result(<[u8]>::to_vec)
    }
}

impl Drop for OwnedTaskHandle {
    fn drop(&mut self) {
        // The borrowed handle's drop gives the record back.
        drop(ManuallyDrop::into_inner(self.borrowed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's handles, owned or not, must cross threads as the
    /// bindings use them (waiting with the interpreter lock released).
    #[test]
    fn owned_handles_are_send_and_sync() {
        fn both<T: Send + Sync + 'static>() {}
        fn borrowed<T: Send + Sync>() {}
        both::<OwnedTaskHandle>();
        both::<Client>();
        borrowed::<TaskHandle<'static>>();
    }
}
