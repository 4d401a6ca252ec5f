//! Running tasks on this node on behalf of the network: a peer's task, or a
//! broadcast's local leg, becomes a runtime-owned record (quick ones run on
//! this thread, the rest go to the workers' lanes, or wait in the backlog
//! for room); its completion comes back as a `Done` note and is answered to
//! whoever it ran for. A client's task routed here is handed to a worker
//! the same way.

use std::sync::atomic::Ordering;

use super::batch::Via;
use super::{NET_WAKER, Transport};
use chimaera_proto::record::{self, REF_CLIENT, status};
use chimaera_proto::wire::Frame;

/// A record this thread submitted locally, and who gets its result.
pub(super) enum Serving {
    Peer { node: u32, task_id: u64 },
    Leg { bid: u64 },
}

impl Transport {
    /// Submits a task here on behalf of a peer or a broadcast; its
    /// completion comes back as [`Note::Done`](crate::net::Note::Done).
    pub(super) fn submit_local(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        deadline: u64,
        serving: Serving,
    ) -> Result<(), (i32, String)> {
        let core = &*self.core;
        if core.stop.load(Ordering::Acquire) {
            return Err((status::STOPPING, "the node is stopping".into()));
        }
        let Some(idx) = core.view.records.alloc(record::RUNTIME_OWNER) else {
            return Err((
                status::MODULE_ERROR,
                "every task record of the node is in use: raise memory.main_segment_size".into(),
            ));
        };
        core.fill_runtime_record(idx, pool, method, input)
            .map_err(|e| (status::MODULE_ERROR, e))?;
        let rec = core.view.records.get(idx);
        let own = rec.deadline_ns.load(Ordering::Relaxed);
        rec.deadline_ns.store(own.min(deadline), Ordering::Relaxed);
        rec.waker.store(NET_WAKER, Ordering::Relaxed);
        self.serving.insert(idx, serving);
        rec.mark_submitted();
        self.arrived.push(idx);
        Ok(())
    }

    /// Hands a submitted record to a worker's lane, or to the backlog
    /// behind those already waiting (so that order is kept).
    pub(super) fn hand_to_workers(&mut self, idx: u32) {
        if !self.backlog.is_empty() || !self.push_lane(idx) {
            self.backlog.push_back(idx);
        }
    }

    /// Pushes a submitted record to the next lane with room.
    fn push_lane(&mut self, idx: u32) -> bool {
        let core = &*self.core;
        let lanes = core.view.lanes.len() as u32;
        // A worker still spinning takes the task without a futex wake-up:
        // try such a lane first, then the others in turn.
        let awake = (0..lanes).map(|k| (self.rr + k) % lanes).find(|&l| {
            core.view.lanes[l as usize]
                .header
                .doorbell
                .load(Ordering::Relaxed)
                == 0
        });
        for k in 0..=lanes {
            let lane = match (k, awake) {
                (0, Some(l)) => l,
                (0, None) => continue,
                _ => (self.rr + k - 1) % lanes,
            };
            core.view
                .records
                .get(idx)
                .lane
                .store(lane, Ordering::Relaxed);
            if core.view.lanes[lane as usize].push(idx).is_ok() {
                core.ring(lane);
                self.rr = lane + 1;
                return true;
            }
        }
        false
    }

    /// Moves what waits in the backlog to lanes with room, in order; what
    /// passed its deadline meanwhile is timed out.
    pub(super) fn retry_backlog(&mut self, now: u64) {
        while let Some(&idx) = self.backlog.front() {
            let rec = self.core.view.records.get(idx);
            if now > rec.deadline_ns.load(Ordering::Relaxed) {
                self.backlog.pop_front();
                // Never queued: completed here (a peer's task then posts
                // its Done note).
                self.core.finish_with(idx, status::TIMED_OUT, None, true);
                continue;
            }
            if !self.push_lane(idx) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// A record submitted here is done: answer whoever it ran for.
    pub(super) fn done(&mut self, idx: u32) {
        let core = self.core.clone();
        let rec = core.view.records.get(idx);
        // A subtask of a task this thread runs posts its Done too, and its
        // parent may free it (and the index come back as a peer's task not
        // yet run) before that note is read: only a finished record counts.
        if rec.phase() != record::DONE {
            return;
        }
        let Some(s) = self.serving.remove(&idx) else {
            return;
        };
        let st = rec.status();
        let out = core
            .output_copy(rec)
            .unwrap_or_else(|e| format!("the output was lost: {e}").into_bytes());
        let out = &out[..];
        match s {
            Serving::Peer { node, task_id } => {
                let f = Frame::Reply {
                    task_id,
                    status: st,
                    payload: out,
                };
                if self.encode(&f, node).is_ok() {
                    self.queue(node, Via::Router, None);
                }
            }
            Serving::Leg { bid } => {
                let me = self.shared.node_id;
                self.leg_done(bid, me, st, out);
            }
        }
        core.release(idx, REF_CLIENT);
    }
}
