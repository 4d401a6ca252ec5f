//! Which sockets to read, found with one epoll set instead of a call into
//! each socket. libzmq answers a non-blocking receive on a socket with
//! nothing waiting by polling that socket's command mailbox, a system call,
//! and `zmq_poll` asks each socket twice more; with 15 peers that was some
//! 50 system calls per wake-up of an idle node's network thread, which on a
//! small machine is what a broadcast to 16 nodes waited on. Each socket's
//! `ZMQ_FD` turns readable when a command (a peer's message among them)
//! reaches it, so the thread watches those descriptors together and reads
//! only the sockets that are readable or that it must read anyway.
//!
//! An epoll set rather than poll(2): poll asks every descriptor on every
//! call, and the thread asks once or twice per pass and once more to sleep,
//! so with 15 peers poll's per-descriptor work was a third of the CPU a
//! broadcast cost its receivers (measured with `perf` on `bench cluster`).
//! epoll_wait costs what is ready, not what is watched.
//!
//! libzmq's rule for `ZMQ_FD`: it only signals what arrived after the last
//! call into the socket that processed commands. A receive that ended in
//! EAGAIN leaves the socket in that state (anything new will signal). Any
//! other call may process a command without our reading (a send does, now
//! and then), so a socket sent on is read on the next pass whatever its
//! descriptor says, and so is one whose last read stopped at the per-pass
//! bound before EAGAIN. Nothing sleeps while such a socket is pending.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::net::NetError;

fn setup_error(e: io::Error) -> NetError {
    NetError::Setup(format!("epoll: {e}"))
}

/// The router's index; DEALER `node`'s is `1 + node`.
pub(super) const ROUTER: usize = 0;

pub(super) fn dealer(node: u32) -> usize {
    1 + node as usize
}

/// Per socket: whether it must be read; and the epoll set that tells.
pub(super) struct Ready {
    epoll: OwnedFd,
    pending: Vec<bool>,
    /// Descriptors other than sockets' (see [`Ready::watch`]): whether each
    /// was readable at the last [`Ready::sleep`].
    extra: Vec<bool>,
    events: Vec<libc::epoll_event>,
    /// The last sleep's events are still current: the next look would only
    /// repeat them.
    fresh: bool,
}

impl Ready {
    /// `fds[i]` is socket i's `ZMQ_FD`, or None for no socket (this node's
    /// own DEALER slot). Every socket starts pending.
    pub(super) fn new(fds: Vec<Option<RawFd>>) -> Result<Ready, NetError> {
        Ready::open(fds).map_err(setup_error)
    }

    fn open(fds: Vec<Option<RawFd>>) -> io::Result<Ready> {
        // SAFETY: epoll_create1 has no memory preconditions; a descriptor it
        // returns is ours alone.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: ep was just returned open and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut r = Ready {
            epoll,
            pending: vec![true; fds.len()],
            extra: Vec::new(),
            events: Vec::new(),
            fresh: false,
        };
        for (i, fd) in fds.iter().enumerate() {
            if let Some(fd) = fd {
                r.add(*fd, i as u64)?;
            }
        }
        Ok(r)
    }

    fn add(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is a live epoll_event; the kernel only reads it.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        self.events.push(libc::epoll_event { events: 0, u64: 0 });
        Ok(())
    }

    /// Watches a descriptor that is not a socket's (a wake-up), for
    /// [`Ready::sleep`] to report; returns its number for
    /// [`Ready::fired`]. `fd` must stay open as long as this set.
    pub(super) fn watch(&mut self, fd: RawFd) -> Result<usize, NetError> {
        let k = self.extra.len();
        self.add(fd, (self.pending.len() + k) as u64)
            .map_err(setup_error)?;
        self.extra.push(false);
        Ok(k)
    }

    /// Waits up to `timeout_ms` (0: not at all) and records what is ready.
    fn wait(&mut self, timeout_ms: i32) {
        // SAFETY: events is a live, exclusively borrowed buffer of the
        // length passed (at least one entry per watched descriptor).
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        for ev in &self.events[..n.max(0) as usize] {
            let token = ev.u64 as usize;
            if let Some(p) = self.pending.get_mut(token) {
                *p = true;
            } else if let Some(x) = self.extra.get_mut(token - self.pending.len()) {
                *x = true;
            }
        }
    }

    /// One look at every socket, without waiting: readable ones become
    /// pending. Right after a sleep, that sleep's answer stands.
    pub(super) fn look(&mut self) {
        if !std::mem::take(&mut self.fresh) {
            self.wait(0);
        }
    }

    /// Sleeps until a socket or a watched descriptor is readable, or
    /// `timeout_ms` passed; readable sockets become pending.
    pub(super) fn sleep(&mut self, timeout_ms: i32) {
        self.extra.iter_mut().for_each(|x| *x = false);
        self.wait(timeout_ms);
        self.fresh = true;
    }

    /// Whether watched descriptor `k` was readable at the last sleep.
    pub(super) fn fired(&self, k: usize) -> bool {
        self.extra[k]
    }

    /// Whether socket `i` is to be read now; it stops being pending.
    pub(super) fn take(&mut self, i: usize) -> bool {
        std::mem::take(&mut self.pending[i])
    }

    /// Socket `i` must be read on the next pass (sent on, or not drained).
    pub(super) fn mark(&mut self, i: usize) {
        self.pending[i] = true;
    }

    pub(super) fn any_pending(&self) -> bool {
        self.pending.iter().any(|&p| p)
    }
}
