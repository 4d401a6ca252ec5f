//! Frames received: reading the ROUTER and the DEALERs, checking each frame
//! (its tag, its kind against the connection it came by, its nodes, its
//! place in the replay window), and acting on it: a peer's heartbeat is
//! acknowledged and its task submitted here; an answer on a DEALER settles
//! what this node sent. Dropped frames are counted and reported at most
//! once per 10 s.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slog::warn;

use super::Transport;
use super::batch::Via;
use super::ready;
use super::serve::Serving;
use chimaera_proto::record::status;
use chimaera_proto::sync::{coarse_now_ns, now_ns};
use chimaera_proto::wire::{self, DecodeError, Frame, Header, Kind, Replay, Route};

/// Rate-limited reports of dropped frames: one line per 10 s.
#[derive(Default)]
pub(super) struct DropLog {
    last: Option<Instant>,
    quiet: u64,
}

impl Transport {
    /// Reads what waits on every socket that is readable or pending (see
    /// `ready`); true if anything was.
    pub(super) fn receive_all(&mut self) -> bool {
        self.ready.look();
        let mut any = false;
        if self.ready.take(ready::ROUTER) {
            any |= self.drain_router();
        }
        for node in 0..self.dealers.len() as u32 {
            if self.ready.take(ready::dealer(node)) {
                any |= self.drain_dealer(node);
            }
        }
        any
    }

    /// Reads the ROUTER until it has nothing (or the per-pass bound, so
    /// that notes and timers are not starved; it stays pending then).
    fn drain_router(&mut self) -> bool {
        let mut any = false;
        for _ in 0..256 {
            match self.router.recv_multipart(zmq::DONTWAIT) {
                Ok(parts) => {
                    any = true;
                    self.shared
                        .counters
                        .messages_in
                        .fetch_add(1, Ordering::Relaxed);
                    self.on_router(parts);
                }
                Err(e) => return self.stopped_reading(ready::ROUTER, e, any),
            }
        }
        self.ready.mark(ready::ROUTER);
        any
    }

    /// The same for the DEALER to `node`.
    fn drain_dealer(&mut self, node: u32) -> bool {
        let mut any = false;
        for _ in 0..256 {
            let Some(d) = &self.dealers[node as usize] else {
                return any;
            };
            match d.recv_bytes(zmq::DONTWAIT) {
                Ok(bytes) => {
                    any = true;
                    self.shared
                        .counters
                        .messages_in
                        .fetch_add(1, Ordering::Relaxed);
                    for piece in wire::split(&bytes) {
                        match piece {
                            Ok(frame) => self.on_dealer(node, frame),
                            Err(e) => self.drop_undecodable(e),
                        }
                    }
                }
                Err(e) => return self.stopped_reading(ready::dealer(node), e, any),
            }
        }
        self.ready.mark(ready::dealer(node));
        any
    }

    /// A read of socket `i` failed with `e`: drained (EAGAIN), or cut
    /// short by a signal, when it is read again on the next pass.
    fn stopped_reading(&mut self, i: usize, e: zmq::Error, any: bool) -> bool {
        if e == zmq::Error::EINTR {
            self.ready.mark(i);
        }
        any
    }

    /// Decodes and checks a frame from `node` that came by `channel`.
    fn admit<'b>(
        &mut self,
        bytes: &'b [u8],
        from_router: bool,
        node: Option<u32>,
    ) -> Option<(Header, Frame<'b>)> {
        let c = &self.shared.counters;
        let (hdr, frame) = match wire::decode(bytes, self.key.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                self.drop_undecodable(e);
                return None;
            }
        };
        let me = self.shared.node_id;
        let src = hdr.src_node;
        let kind_ok = match hdr.kind {
            Kind::Task | Kind::Heartbeat => from_router,
            Kind::Reply | Kind::Error | Kind::HeartbeatAck => !from_router,
        };
        if hdr.dst_node != me
            || src >= self.shared.nodes
            || src == me
            || node.is_some_and(|n| n != src)
            || !kind_ok
        {
            c.dropped_wrong_node.fetch_add(1, Ordering::Relaxed);
            self.report_drop(&format!(
                "a {} frame claiming to be from node {src} to node {} came on the connection of {}: dropped",
                hdr.kind,
                hdr.dst_node,
                node.map_or("an unknown peer".to_string(), |n| format!("node {n}"))
            ));
            return None;
        }
        let windows = if from_router {
            &mut self.router_windows
        } else {
            &mut self.dealer_windows
        };
        if let Err(e) = windows[src as usize].admit(&hdr, self.epoch) {
            // A peer that restarted keeps sending our old epoch until our
            // heartbeat reaches it: not worth a line each time.
            if !matches!(e, Replay::StaleEpoch { .. }) {
                self.report_drop(&format!("from node {src}: {e}"));
            }
            self.shared
                .counters
                .dropped_replay
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.shared
            .counters
            .frames_in
            .fetch_add(1, Ordering::Relaxed);
        self.heard(src, !from_router);
        Some((hdr, frame))
    }

    /// Counts (by kind) and reports a frame, or a piece of a message, that
    /// does not decode.
    fn drop_undecodable(&mut self, e: DecodeError) {
        let c = &self.shared.counters;
        let counter = match e {
            DecodeError::MissingTag { .. } => &c.dropped_missing_tag,
            DecodeError::BadTag { .. } => &c.dropped_bad_tag,
            DecodeError::UnexpectedTag { .. } => &c.dropped_unexpected_tag,
            _ => &c.dropped_bad_frame,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.report_drop(&e.to_string());
    }

    fn report_drop(&mut self, why: &str) {
        let d = &mut self.drop_log;
        if d.last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            warn!(
                self.log,
                "dropped a frame: {} ({} more dropped since the last report; counts in `chimaera status --json`)",
                why,
                d.quiet
            );
            d.last = Some(Instant::now());
            d.quiet = 0;
        } else {
            d.quiet += 1;
        }
    }

    /// A message on the ROUTER: a peer's Task or Heartbeat, answered back
    /// through the ROUTER.
    fn on_router(&mut self, parts: Vec<Vec<u8>>) {
        let [id, bytes] = parts.as_slice() else {
            self.shared
                .counters
                .dropped_bad_frame
                .fetch_add(1, Ordering::Relaxed);
            self.report_drop(&format!(
                "a message of {} parts, expected 1",
                parts.len().saturating_sub(1)
            ));
            return;
        };
        // The routing id names the node the connection claims to be; the
        // header must say the same.
        let claimed = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.strip_prefix("chi-node-"))
            .and_then(|n| n.parse::<u32>().ok());
        let Some(claimed) = claimed else {
            self.shared
                .counters
                .dropped_wrong_node
                .fetch_add(1, Ordering::Relaxed);
            self.report_drop("a message from a connection that did not name a node: dropped");
            return;
        };
        for piece in wire::split(bytes) {
            match piece {
                Ok(frame) => self.on_router_frame(claimed, frame),
                Err(e) => self.drop_undecodable(e),
            }
        }
    }

    /// One frame of a message on the ROUTER from the connection that says
    /// it is node `claimed`.
    fn on_router_frame(&mut self, claimed: u32, bytes: &[u8]) {
        let Some((_, frame)) = self.admit(bytes, true, Some(claimed)) else {
            return;
        };
        let src = claimed;
        match frame {
            Frame::Heartbeat { epoch, sent_ns } => {
                // Its heartbeat came in on its own connection to us; ours
                // to it may still point at where its last run was.
                if self.learn_epoch(src, epoch) {
                    self.reconnect(src);
                } else {
                    self.redial_if_one_way(src);
                }
                let ack = Frame::HeartbeatAck {
                    epoch: self.epoch,
                    echo_sent_ns: sent_ns,
                };
                if self.encode(&ack, src).is_ok() {
                    self.queue(src, Via::Router, None);
                }
            }
            Frame::Task {
                task_id,
                pool,
                method,
                route,
                timeout_ms,
                payload,
            } => {
                self.shared
                    .counters
                    .tasks_served
                    .fetch_add(1, Ordering::Relaxed);
                let me = self.shared.node_id;
                let result = match route {
                    Route::Direct(n) if n != me => Err((
                        status::BAD_INPUT,
                        format!("task for node {n} reached node {me}"),
                    )),
                    _ => {
                        let deadline = coarse_now_ns() + u64::from(timeout_ms) * 1_000_000;
                        self.submit_local(
                            pool,
                            method,
                            payload,
                            deadline,
                            Serving::Peer { node: src, task_id },
                        )
                    }
                };
                if let Err((st, message)) = result {
                    let f = Frame::Error {
                        task_id,
                        code: st as u16,
                        message: &message,
                    };
                    if self.encode(&f, src).is_ok() {
                        self.queue(src, Via::Router, None);
                    }
                }
            }
            _ => {}
        }
    }

    /// A frame of a message on the DEALER to `node`: an answer to what this
    /// node sent.
    fn on_dealer(&mut self, node: u32, bytes: &[u8]) {
        let Some((_, frame)) = self.admit(bytes, false, Some(node)) else {
            return;
        };
        match frame {
            Frame::HeartbeatAck {
                epoch,
                echo_sent_ns,
            } => {
                // On our own connection: that one is evidently fine.
                self.learn_epoch(node, epoch);
                self.shared.peers[node as usize]
                    .rtt_ns
                    .store(now_ns().saturating_sub(echo_sent_ns), Ordering::Relaxed);
            }
            Frame::Reply {
                task_id,
                status,
                payload,
            } => self.settle(task_id, status, payload),
            Frame::Error {
                task_id,
                code,
                message,
            } => self.settle(task_id, i32::from(code), message.as_bytes()),
            _ => {}
        }
    }
}
