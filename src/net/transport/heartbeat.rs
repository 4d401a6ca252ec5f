//! Heartbeats and peer liveness: sending a heartbeat to every peer, marking
//! a peer down after missed heartbeats and up again when it answers, and
//! learning peers' epochs (a newer one: the peer restarted).

use std::sync::atomic::Ordering;

use slog::{info, warn};

use super::Transport;
use super::batch::Via;
use crate::net::{PEER_DOWN, PEER_UP};
use chimaera_proto::sync::now_ns;
use chimaera_proto::wire::Frame;

/// Heartbeats a peer may miss before it is marked down.
const MISSED_HEARTBEATS: u64 = 3;

/// Our connection to one peer: when it last carried an answer, and when it
/// was last connected anew.
#[derive(Clone, Copy)]
pub(super) struct Dial {
    answered_ms: u64,
    pub(super) redialed_ms: u64,
}

impl Dial {
    /// Counted from `now_ms` (the node's start): a fresh connection gets two
    /// heartbeats to be answered before it is suspected.
    pub(super) fn new(now_ms: u64) -> Dial {
        Dial {
            answered_ms: now_ms,
            redialed_ms: now_ms,
        }
    }
}

impl Transport {
    /// Sends a heartbeat to every peer.
    pub(super) fn heartbeats(&mut self) {
        for node in 0..self.dealers.len() as u32 {
            if self.dealers[node as usize].is_none() {
                continue;
            }
            let f = Frame::Heartbeat {
                epoch: self.epoch,
                sent_ns: now_ns(),
            };
            if self.encode(&f, node).is_ok() {
                self.queue(node, Via::Dealer, None);
            }
        }
        // What the next run must start above (a small write to the run
        // directory once a heartbeat interval).
        if let Some(file) = &self.epoch_file {
            let _ = super::keep_epoch(file, self.seq.peek());
        }
    }

    /// Marks down every peer up but not heard from for `MISSED_HEARTBEATS`
    /// heartbeats, and fails the tasks waiting on it. Returns the ms until
    /// the next up peer would be due, so that the loop looks again right
    /// then: a loss is seen within `MISSED_HEARTBEATS` heartbeats of the
    /// peer's death, not up to a check interval later.
    pub(super) fn check_peers(&mut self) -> Option<u64> {
        let hb_ms = self.heartbeat_ns / 1_000_000;
        // A fiftieth short of the full three: the loop's clock and poll
        // round up by a few ms, and the promise is "within three".
        let limit_ms = MISSED_HEARTBEATS * hb_ms - hb_ms / 50;
        let now_ms = chimaera_proto::sync::mono_ms();
        let mut next: Option<u64> = None;
        for node in 0..self.shared.nodes {
            if node == self.shared.node_id {
                continue;
            }
            let peer = &self.shared.peers[node as usize];
            if peer.state.load(Ordering::Relaxed) != PEER_UP {
                continue;
            }
            let heard = peer.last_heard_mono_ms.load(Ordering::Relaxed);
            let silent = now_ms.saturating_sub(heard);
            if silent <= limit_ms {
                let due = limit_ms - silent + 1;
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            peer.state.store(PEER_DOWN, Ordering::Release);
            warn!(
                self.log,
                "node {} ({}) missed {} heartbeats: marked down; its tasks fail with \"node unavailable\"",
                node,
                peer.addr,
                MISSED_HEARTBEATS
            );
            let msg = self.shared.unavailable(node, PEER_DOWN);
            self.fail_pending(node, &msg);
        }
        next
    }

    /// A valid frame from `node` arrived. Any frame shows it alive; only an
    /// answer on our own connection to it (`both_ways`) shows that tasks can
    /// reach it, so only that marks it up.
    pub(super) fn heard(&mut self, node: u32, both_ways: bool) {
        let peer = &self.shared.peers[node as usize];
        peer.last_heard_mono_ms
            .store(chimaera_proto::sync::mono_ms(), Ordering::Relaxed);
        if !both_ways {
            return;
        }
        self.dialed[node as usize].answered_ms = chimaera_proto::sync::mono_ms();
        let was = peer.state.swap(PEER_UP, Ordering::AcqRel);
        if was != PEER_UP {
            info!(
                self.log,
                "node {} ({}) is {}",
                node,
                peer.addr,
                if was == PEER_DOWN { "up again" } else { "up" }
            );
        }
    }

    /// `node`'s heartbeat came in on its connection to us. If ours to it has
    /// carried no answer for two heartbeats, connect it anew: the peer
    /// evidently runs and reaches us, so ours is the broken half. That is
    /// the case when the peer refused our first attempt (its ZAP handler did
    /// not yet know our address, as when pods start together and names
    /// resolve only once a pod exists), and libzmq does not retry a refused
    /// handshake by itself. At most once per two heartbeats per peer.
    pub(super) fn redial_if_one_way(&mut self, node: u32) {
        let hb_ms = (self.heartbeat_ns / 1_000_000).max(1);
        let now = chimaera_proto::sync::mono_ms();
        let d = &self.dialed[node as usize];
        if now.saturating_sub(d.answered_ms) <= 2 * hb_ms
            || now.saturating_sub(d.redialed_ms) <= 2 * hb_ms
        {
            return;
        }
        info!(
            self.log,
            "node {} ({}) reaches this node but has not answered on this node's connection to it: connecting again",
            node,
            self.shared.peers[node as usize].addr
        );
        self.reconnect(node);
    }

    /// A peer's epoch from its heartbeat or ack. A newer one means it
    /// restarted: what it was running for us is lost, so those tasks fail
    /// now rather than at their timeout. An older one is a stray and ignored.
    /// True when it restarted.
    pub(super) fn learn_epoch(&mut self, node: u32, epoch: u64) -> bool {
        let peer = &self.shared.peers[node as usize];
        let old = peer.epoch.load(Ordering::Relaxed);
        if epoch <= old {
            return false;
        }
        peer.epoch.store(epoch, Ordering::Relaxed);
        if old == 0 {
            return false;
        }
        info!(
            self.log,
            "node {} ({}) restarted; tasks it was running for this node fail", node, peer.addr
        );
        let msg = format!(
            "node unavailable: node {node} ({}) restarted while running the task",
            peer.addr
        );
        self.fail_pending(node, &msg);
        true
    }
}
