//! Several frames per ZeroMQ message. What the thread has for a peer in one
//! pass of its loop (tasks, answers, heartbeats and their acks) is gathered
//! per peer and per socket and goes out at the end of the pass as one
//! message. A burst of pipelined tasks then costs one send, one wake-up of
//! ZeroMQ's I/O thread and one receive on each side, not one per task; a
//! lone task still leaves in the pass that took it, as a message of one
//! frame, byte for byte what an unbatched sender sends. The receiver cuts a
//! message into its frames with `wire::split` and checks each on its own.

use std::sync::atomic::Ordering;

use super::Transport;
use super::ready;
use super::socket::identity;
use chimaera_proto::record::status;

/// Bytes a batch may hold before it goes out on its own, mid-pass. Well
/// under `MAX_FRAME` (the receivers' `ZMQ_MAXMSGSIZE`); a frame bigger than
/// this goes alone.
pub(super) const BATCH_BYTES: usize = 256 * 1024;

/// Frames waiting for one socket to one peer.
#[derive(Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
    frames: u64,
    /// The pending tasks whose Task frame is in here: they fail if the
    /// message cannot be handed to ZeroMQ.
    tasks: Vec<u64>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.frames == 0
    }
}

/// Which socket a batch leaves by.
#[derive(Clone, Copy)]
pub(super) enum Via {
    /// Our DEALER to the peer: requests and heartbeats.
    Dealer,
    /// Back through the ROUTER: answers.
    Router,
}

impl Transport {
    /// Adds the encoded frame in `self.buf` to what goes to `node` by `via`;
    /// `task` is the pending task it carries, if any.
    pub(super) fn queue(&mut self, node: u32, via: Via, task: Option<u64>) {
        let n = node as usize;
        let full = {
            let b = self.batch(n, via);
            !b.is_empty() && b.bytes.len() + self.buf.len() > BATCH_BYTES
        };
        if full {
            self.flush_one(node, via);
        }
        let buf = std::mem::take(&mut self.buf);
        let b = self.batch(n, via);
        b.bytes.extend_from_slice(&buf);
        b.frames += 1;
        b.tasks.extend(task);
        self.buf = buf;
    }

    fn batch(&mut self, n: usize, via: Via) -> &mut Batch {
        match via {
            Via::Dealer => &mut self.to_dealer[n],
            Via::Router => &mut self.to_router[n],
        }
    }

    /// Sends every batch gathered in this pass.
    pub(super) fn flush(&mut self) {
        for node in 0..self.to_dealer.len() as u32 {
            if !self.to_dealer[node as usize].is_empty() {
                self.flush_one(node, Via::Dealer);
            }
            if !self.to_router[node as usize].is_empty() {
                self.flush_one(node, Via::Router);
            }
        }
    }

    /// Hands one batch to ZeroMQ. Never blocks: a peer that is not
    /// connected (our DEALERs queue nothing for it) or whose queue is full
    /// gets nothing, and the tasks in the batch fail now with "node
    /// unavailable" instead of at their deadline.
    fn flush_one(&mut self, node: u32, via: Via) {
        let n = node as usize;
        let mut b = std::mem::take(self.batch(n, via));
        let sent = match via {
            Via::Dealer => match &self.dealers[n] {
                Some(d) => d.send(&b.bytes[..], zmq::DONTWAIT),
                None => Err(zmq::Error::ENOTCONN),
            },
            Via::Router => {
                let id = identity(node);
                let parts: [&[u8]; 2] = [&id, &b.bytes];
                self.router.send_multipart(parts, zmq::DONTWAIT)
            }
        };
        // A send may take in the socket's commands, so its descriptor no
        // longer tells of what arrived: read it on the next pass.
        self.ready.mark(match via {
            Via::Dealer => ready::dealer(node),
            Via::Router => ready::ROUTER,
        });
        let c = &self.shared.counters;
        match sent {
            Ok(()) => {
                c.messages_out.fetch_add(1, Ordering::Relaxed);
                c.frames_out.fetch_add(b.frames, Ordering::Relaxed);
            }
            Err(e) => {
                c.send_failed.fetch_add(b.frames, Ordering::Relaxed);
                let why = match e {
                    zmq::Error::EAGAIN => "not connected, or its send queue is full".to_string(),
                    e => e.to_string(),
                };
                let msg = format!(
                    "node unavailable: cannot send to node {node} ({}): {why}",
                    self.shared.peers[n].addr
                );
                for id in b.tasks.drain(..) {
                    self.settle(id, status::NODE_UNAVAILABLE, msg.as_bytes());
                }
            }
        }
        b.bytes.clear();
        b.tasks.clear();
        b.frames = 0;
        // Back in place, so its buffer's capacity is kept for the next pass.
        *self.batch(n, via) = b;
    }
}
