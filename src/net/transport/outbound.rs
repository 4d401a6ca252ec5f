//! Sending this node's tasks to peers, and the bookkeeping of those out:
//! a client's task with a remote route goes to one peer (`Pending::Single`)
//! or, broadcast, to every node (one `Pending::Leg` per peer, gathered in a
//! `Broadcast`); each is settled by its reply, its deadline, its peer going
//! down or restarting, or the node stopping.

use std::sync::atomic::Ordering;

use super::Transport;
use super::batch::Via;
use super::serve::Serving;
use crate::net::{Decision, PEER_UP};
use chimaera_proto::broadcast::NodeReply;
use chimaera_proto::record::{self, status};
use chimaera_proto::wire::{Frame, Route};

/// A task this node sent to a peer and waits on.
pub(super) enum Pending {
    /// A local client's record.
    Single { idx: u32, node: u32, deadline: u64 },
    /// One leg of a broadcast.
    Leg { bid: u64, node: u32, deadline: u64 },
}

impl Pending {
    fn node(&self) -> u32 {
        match self {
            Pending::Single { node, .. } | Pending::Leg { node, .. } => *node,
        }
    }
    fn deadline(&self) -> u64 {
        match self {
            Pending::Single { deadline, .. } | Pending::Leg { deadline, .. } => *deadline,
        }
    }
}

/// A broadcast under way: the client's record and each node's reply so far.
pub(super) struct Broadcast {
    pub(super) idx: u32,
    replies: Vec<Option<NodeReply>>,
    left: usize,
}

impl Transport {
    /// A local client's task with a remote route: send it on (or fail it).
    pub(super) fn forward(&mut self, idx: u32, now: u64) {
        let core = self.core.clone();
        // From the network lane, which any client may write: checked.
        let Some(rec) = core.view.records.checked(idx) else {
            core.rejected.record_index.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !core.take_queued(idx, rec) {
            return;
        }
        let deadline = rec.deadline_ns.load(Ordering::Relaxed);
        let route = record::route_of(
            rec.flags.load(Ordering::Relaxed),
            rec.route_arg.load(Ordering::Relaxed),
        );
        let pool = rec.pool_id.load(Ordering::Relaxed);
        let method = rec.method.load(Ordering::Relaxed);
        let input = match core.input_copy(idx, rec) {
            Ok(input) => input,
            Err(m) => {
                core.rejected.payload.fetch_add(1, Ordering::Relaxed);
                core.finish(idx, status::BAD_INPUT, Some(&m), true);
                return;
            }
        };
        let input = &input[..];
        match self.shared.decide_route(route) {
            Decision::Remote(node) => {
                let id = self.fresh_id();
                match self.send_task(id, node, pool, method, route, deadline, now, input) {
                    Ok(()) => {
                        self.pending.insert(
                            id,
                            Pending::Single {
                                idx,
                                node,
                                deadline,
                            },
                        );
                    }
                    Err(e) => {
                        let msg = format!(
                            "node unavailable: cannot send to node {node} ({}): {e}",
                            self.shared.peers[node as usize].addr
                        );
                        core.finish_with(idx, status::NODE_UNAVAILABLE, Some(msg.as_bytes()), true);
                    }
                }
            }
            Decision::Broadcast => {
                let bid = self.fresh_id();
                let n = self.shared.nodes as usize;
                let b = Broadcast {
                    idx,
                    replies: vec![None; n],
                    left: n,
                };
                let mut immediate = Vec::new();
                for node in 0..n as u32 {
                    if node == self.shared.node_id {
                        match self.submit_local(pool, method, input, deadline, Serving::Leg { bid })
                        {
                            Ok(()) => {}
                            Err((st, m)) => immediate.push((node, st, m)),
                        }
                        continue;
                    }
                    let state = self.shared.peers[node as usize]
                        .state
                        .load(Ordering::Acquire);
                    if state != PEER_UP {
                        immediate.push((
                            node,
                            status::NODE_UNAVAILABLE,
                            self.shared.unavailable(node, state),
                        ));
                        continue;
                    }
                    let id = self.fresh_id();
                    match self.send_task(id, node, pool, method, route, deadline, now, input) {
                        Ok(()) => {
                            self.pending.insert(
                                id,
                                Pending::Leg {
                                    bid,
                                    node,
                                    deadline,
                                },
                            );
                        }
                        Err(e) => immediate.push((
                            node,
                            status::NODE_UNAVAILABLE,
                            format!("node unavailable: cannot send to node {node}: {e}"),
                        )),
                    }
                }
                // Registered before the immediate results: the last of them
                // may complete the broadcast.
                self.broadcasts.insert(bid, b);
                for (node, st, m) in immediate {
                    self.leg_done(bid, node, st, m.as_bytes());
                }
            }
            Decision::Local => {
                // A client's task whose route leads here (its hash, or its
                // own node): a worker runs it.
                self.hand_to_workers(idx);
            }
            Decision::Fail(st, m) => {
                core.finish_with(idx, st, Some(m.as_bytes()), true);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send_task(
        &mut self,
        id: u64,
        node: u32,
        pool: u32,
        method: u32,
        route: Route,
        deadline: u64,
        now: u64,
        input: &[u8],
    ) -> Result<(), String> {
        let left_ms = deadline.saturating_sub(now) / 1_000_000;
        if left_ms == 0 {
            return Err("the task's time ran out before it was sent".into());
        }
        let f = Frame::Task {
            task_id: id,
            pool,
            method,
            route,
            timeout_ms: left_ms.min(u64::from(u32::MAX)) as u32,
            payload: input,
        };
        self.encode(&f, node)?;
        self.queue(node, Via::Dealer, Some(id));
        self.shared
            .counters
            .tasks_forwarded
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A wire task id (or broadcast id) never used before by this node.
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Gives a pending task its result: completes a local record, or fills
    /// a broadcast leg.
    pub(super) fn settle(&mut self, id: u64, st: i32, output: &[u8]) {
        match self.pending.remove(&id) {
            Some(Pending::Single { idx, .. }) => {
                self.core.finish_with(idx, st, Some(output), true);
            }
            Some(Pending::Leg { bid, node, .. }) => self.leg_done(bid, node, st, output),
            None => {
                self.shared
                    .counters
                    .dropped_late_reply
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Node `node`'s result for broadcast `bid`; the last one completes the
    /// client's record with every node's reply.
    pub(super) fn leg_done(&mut self, bid: u64, node: u32, st: i32, output: &[u8]) {
        let Some(b) = self.broadcasts.get_mut(&bid) else {
            return;
        };
        let slot = &mut b.replies[node as usize];
        if slot.is_some() {
            return;
        }
        *slot = Some(NodeReply {
            node,
            status: st,
            output: output.to_vec(),
        });
        b.left -= 1;
        if b.left == 0 {
            let b = self.broadcasts.remove(&bid).expect("present");
            let replies: Vec<NodeReply> = b.replies.into_iter().flatten().collect();
            let out = chimaera_proto::broadcast::encode_broadcast(&replies);
            self.core.finish_with(b.idx, status::OK, Some(&out), true);
        }
    }

    /// Fails every task waiting on `node` with NODE_UNAVAILABLE.
    pub(super) fn fail_pending(&mut self, node: u32, msg: &str) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node() == node)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.settle(id, status::NODE_UNAVAILABLE, msg.as_bytes());
        }
    }

    /// Times out pending tasks and broadcasts whose deadline passed.
    pub(super) fn expire(&mut self, now: u64) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now > p.deadline())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.settle(
                id,
                status::TIMED_OUT,
                b"timed out waiting for the remote node",
            );
        }
    }
}
