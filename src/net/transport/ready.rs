//! Which sockets to read, found with one poll(2) instead of a call into
//! each socket. libzmq answers a non-blocking receive on a socket with
//! nothing waiting by polling that socket's command mailbox, a system call,
//! and `zmq_poll` asks each socket twice more; with 15 peers that was some
//! 50 system calls per wake-up of an idle node's network thread, which on a
//! small machine is what a broadcast to 16 nodes waited on. Each socket's
//! `ZMQ_FD` turns readable when a command (a peer's message among them)
//! reaches it, so the thread polls those descriptors together and reads
//! only the sockets that are readable or that it must read anyway.
//!
//! libzmq's rule for `ZMQ_FD`: it only signals what arrived after the last
//! call into the socket that processed commands. A receive that ended in
//! EAGAIN leaves the socket in that state (anything new will signal). Any
//! other call may process a command without our reading (a send does, now
//! and then), so a socket sent on is read on the next pass whatever its
//! descriptor says, and so is one whose last read stopped at the per-pass
//! bound before EAGAIN. Nothing sleeps while such a socket is pending.

use std::os::fd::RawFd;

/// The router's index; DEALER `node`'s is `1 + node`.
pub(super) const ROUTER: usize = 0;

pub(super) fn dealer(node: u32) -> usize {
    1 + node as usize
}

/// Per socket: its descriptor and whether it must be read regardless.
pub(super) struct Ready {
    fds: Vec<libc::pollfd>,
    pending: Vec<bool>,
}

impl Ready {
    /// `fds[i]` is socket i's `ZMQ_FD`, or None for no socket (this node's
    /// own DEALER slot). Every socket starts pending.
    pub(super) fn new(fds: Vec<Option<RawFd>>) -> Ready {
        let pending = vec![true; fds.len()];
        let fds = fds
            .into_iter()
            .map(|fd| libc::pollfd {
                // A negative descriptor is skipped by poll(2).
                fd: fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ready { fds, pending }
    }

    /// One look at every descriptor, without waiting: readable ones become
    /// pending.
    pub(super) fn look(&mut self) {
        // SAFETY: fds is a live, exclusively borrowed slice of pollfd of the
        // length passed; a zero timeout does not block.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, 0) };
        if n > 0 {
            for (p, fd) in self.pending.iter_mut().zip(&self.fds) {
                *p |= fd.revents & (libc::POLLIN | libc::POLLERR) != 0;
            }
        }
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

    /// The descriptors to sleep on, followed by `extra` ones.
    pub(super) fn sleep_set(&self, extra: &[RawFd]) -> Vec<libc::pollfd> {
        let mut v = self.fds.clone();
        v.extend(extra.iter().map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        v
    }
}
