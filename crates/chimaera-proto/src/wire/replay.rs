//! Replay protection, applied to frames [`decode`](super::decode) accepted:
//! the sender's [`SeqCounter`] and the receiver's per-peer [`ReplayWindow`],
//! which also binds each frame to the receiver's epoch. Why seqs start at the
//! epoch, and why a window is not reset when a peer's epoch changes, is told
//! under "Replay protection" in the `wire` module doc (`mod.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::{Header, Kind};

/// A sender's frame counter. Start it at the node's epoch (start time in
/// Unix nanoseconds) so that a restarted node's seqs exceed its previous
/// incarnation's: a node does not send a frame per nanosecond. One counter
/// for all peers is fine; receivers' windows tolerate gaps.
#[derive(Debug)]
pub struct SeqCounter(AtomicU64);

impl SeqCounter {
    pub fn starting_at(epoch_ns: u64) -> SeqCounter {
        SeqCounter(AtomicU64::new(epoch_ns))
    }

    /// The seq for the next frame.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// The seq the next frame will get (no frame of this counter has one as
    /// high).
    pub fn peek(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Frames this far behind the newest seq seen from a peer are refused.
pub const REPLAY_WINDOW: u64 = 1024;
const WINDOW_WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Why [`ReplayWindow::check_and_mark`] refused a seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error(
        "frame addressed to epoch {dst_epoch} of this node, which is at epoch {local_epoch}: dropped as a replay from an earlier run (or the sender has not yet heard this node's heartbeat)"
    )]
    StaleEpoch { dst_epoch: u64, local_epoch: u64 },
    #[error("frame seq {seq} was already received from this peer: dropped as a replay")]
    Duplicate { seq: u64 },
    #[error(
        "frame seq {seq} is {REPLAY_WINDOW} or more behind the newest seq {newest} from this peer: dropped as a possible replay (if the peer restarted with its clock set back, restart this node too)"
    )]
    TooOld { seq: u64, newest: u64 },
}

/// Per-peer sliding window over received seqs (IPsec style, RFC 4303 §3.4.3):
/// the newest seq seen and a bitmap of which of the [`REPLAY_WINDOW`] seqs up
/// to it have arrived. Accepts out-of-order frames within the window, refuses
/// duplicates and anything older.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    newest: Option<u64>,
    /// Bit `s % REPLAY_WINDOW` is set iff seq `s` (within the window) arrived.
    seen: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            newest: None,
            seen: [0; WINDOW_WORDS],
        }
    }

    /// The newest seq accepted since creation or the last reset.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Would `seq` be accepted? Does not record it.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        let Some(newest) = self.newest else {
            return Ok(());
        };
        if seq > newest {
            return Ok(());
        }
        if newest - seq >= REPLAY_WINDOW {
            return Err(Replay::TooOld { seq, newest });
        }
        let (w, b) = Self::bit(seq);
        if self.seen[w] & b != 0 {
            return Err(Replay::Duplicate { seq });
        }
        Ok(())
    }

    /// The receive-side freshness check for a frame [`decode`] accepted from
    /// this window's peer: `dst_epoch` must be `local_epoch` (this node's
    /// epoch) unless the frame is a Heartbeat, and `seq` must be new.
    ///
    /// [`decode`]: super::decode
    pub fn admit(&mut self, hdr: &Header, local_epoch: u64) -> Result<(), Replay> {
        if hdr.kind != Kind::Heartbeat && hdr.dst_epoch != local_epoch {
            return Err(Replay::StaleEpoch {
                dst_epoch: hdr.dst_epoch,
                local_epoch,
            });
        }
        self.check_and_mark(hdr.seq)
    }

    /// Accepts `seq` once: call it only for frames [`decode`] accepted.
    ///
    /// [`decode`]: super::decode
    pub fn check_and_mark(&mut self, seq: u64) -> Result<(), Replay> {
        self.check(seq)?;
        match self.newest {
            Some(newest) if seq <= newest => {}
            Some(newest) if seq - newest < REPLAY_WINDOW => {
                // Forget the slots the window slides over.
                for s in newest + 1..=seq {
                    let (w, b) = Self::bit(s);
                    self.seen[w] &= !b;
                }
                self.newest = Some(seq);
            }
            _ => {
                self.seen = [0; WINDOW_WORDS];
                self.newest = Some(seq);
            }
        }
        let (w, b) = Self::bit(seq);
        self.seen[w] |= b;
        Ok(())
    }

    /// Forgets everything: the next seq is accepted whatever it is, so a
    /// recorded frame with a higher seq than the peer now uses could be
    /// replayed once afterwards. Not for epoch changes or peers coming back
    /// up (see the `wire` module doc); for tests and deliberate operator
    /// action.
    pub fn reset(&mut self) {
        *self = ReplayWindow::new();
    }
}
