//! The cluster's wire format: versioned binary frames, their
//! authentication, and replay protection. Pure: no sockets, no threads, no
//! clock (reading the key file is the one piece of I/O, in
//! [`ClusterKey::from_file`]). The ZeroMQ transport sends what [`encode`]
//! writes, one frame per message or several back to back in one message
//! (frames are self-delimiting by their header's `body_len` and tag flag),
//! and cuts every message it receives into frames with [`split`] before
//! handing each to [`decode`].
//!
//! # Frame layout
//!
//! All integers are little-endian. A frame is `header | body | tag`:
//!
//! | offset | size | field      | meaning                                            |
//! |-------:|-----:|------------|----------------------------------------------------|
//! | 0      | 4    | magic      | `b"CHMR"`                                          |
//! | 4      | 1    | version    | [`WIRE_VERSION`] (1)                               |
//! | 5      | 1    | kind       | [`Kind`]: 1 Task, 2 Reply, 3 Heartbeat, 4 HeartbeatAck, 5 Error |
//! | 6      | 2    | flags      | bit 0 [`FLAG_AUTHENTICATED`]; every other bit must be 0 |
//! | 8      | 4    | src_node   | sender's node id (hostfile line index)             |
//! | 12     | 4    | dst_node   | receiver's node id                                 |
//! | 16     | 8    | seq        | sender's frame counter (see *Replay protection*)   |
//! | 24     | 8    | dst_epoch  | receiver's epoch as the sender knows it, 0 if unknown |
//! | 32     | 4    | body_len   | body bytes that follow, at most [`MAX_BODY`]       |
//! | 36     | body_len | body   | per kind, below                                    |
//! | 36+body_len | 16 | tag     | only when flag bit 0 is set                        |
//!
//! Bodies (offsets within the body):
//!
//! - **Task** (≥ 32 bytes): task_id u64 @0, pool u32 @8, method u32 @12,
//!   timeout_ms u32 @16 (time the task has left), route tag u8 @20
//!   (0 Local, 1 Direct, 2 Hash, 3 Broadcast), 3 reserved zero bytes @21,
//!   route argument u64 @24 (Direct: node id, which must fit in u32; Hash:
//!   key; Local and Broadcast: 0), payload @32 to the end of the body.
//! - **Reply** (≥ 12 bytes): task_id u64 @0, status i32 @8, payload @12.
//! - **Heartbeat** (exactly 16): epoch u64 @0, sent_ns u64 @8.
//! - **HeartbeatAck** (exactly 16): epoch u64 @0, echo_sent_ns u64 @8.
//! - **Error** (≥ 10 bytes): task_id u64 @0, code u16 @8, UTF-8 message @10.
//!
//! Variable-length data (payload, message) is always last and runs to the
//! end of the body, so it needs no length field of its own. The encoding is
//! canonical: reserved bytes, unused route arguments and unknown flag bits
//! must be zero and trailing bytes are refused, so every accepted frame has
//! exactly one encoding (`encode(decode(b)) == b`; the fuzz target checks it).
//!
//! [`decode`] borrows payloads and messages from the input buffer and copies
//! no payload bytes; [`encode`] appends to a caller-owned, reusable `Vec`.
//! Neither allocates apart from that `Vec`'s growth.
//!
//! # Authentication
//!
//! With a [`ClusterKey`], the tag is HMAC-SHA256 (RustCrypto `hmac` + `sha2`,
//! hardware SHA extensions when the CPU has them) over header and body,
//! truncated to its leftmost 16 bytes (as in RFC 4868's HMAC-SHA-256-128), and
//! flag bit 0 is set. The tag is compared in constant time. A node with a key
//! refuses untagged frames ([`DecodeError::MissingTag`]) and frames whose tag
//! does not verify ([`DecodeError::BadTag`]); a node without one refuses tagged
//! frames ([`DecodeError::UnexpectedTag`]), so a half-configured cluster fails
//! loudly instead of silently running unauthenticated. The flag bit is inside
//! the authenticated header, so it cannot be stripped.
//!
//! The key is shared by the whole cluster: a valid tag proves the frame came
//! from *a* key holder, not from the node named in `src_node`. The transport
//! should also check `src_node` against the peer the message arrived from
//! (its ZeroMQ routing id / ZAP-verified address) and `dst_node` against its
//! own id, which stops a frame captured on one link from being replayed onto
//! another.
//!
//! # Replay protection
//!
//! Two header fields make a frame good for one use only, with one node
//! incarnation; [`ReplayWindow::admit`] checks both, after [`decode`]
//! accepted the frame (never before: an unauthenticated frame must not move
//! the window).
//!
//! - `seq`: a sender takes a fresh seq for every frame it encodes (each leg
//!   of a broadcast included) from one [`SeqCounter`] started at its epoch
//!   (its start time in Unix nanoseconds, the value its heartbeats carry).
//!   So a restarted node's seqs are far above anything its previous
//!   incarnation sent, with no reset handshake. The receiver keeps one
//!   [`ReplayWindow`] per peer, an IPsec-style sliding window over the last
//!   1024 seqs: duplicates and seqs 1024 or more behind the newest are
//!   refused ([`Replay::Duplicate`], [`Replay::TooOld`]).
//! - `dst_epoch`: the receiver's epoch, as the sender learnt it from the
//!   receiver's heartbeats (a `Heartbeat`'s `epoch`, or a `HeartbeatAck`'s).
//!   Every frame except a `Heartbeat` must carry the receiver's current
//!   epoch, else [`Replay::StaleEpoch`]: a node that restarts starts with
//!   empty windows, and this is what keeps it from accepting frames recorded
//!   while an earlier incarnation of it ran. A `Heartbeat` may carry any
//!   dst_epoch (0 before the sender has heard from the receiver): it only
//!   announces liveness and the sender's epoch, and that is how the epochs
//!   get known. So a peer is usable once a heartbeat from it arrived, which
//!   is when the heartbeat logic marks it up anyway.
//!
//! Do **not** reset a window because a heartbeat carries a new epoch, nor
//! when a peer is marked down: a replayed heartbeat from an earlier
//! incarnation would then reopen the window to what that incarnation sent.
//! A restart needs no reset, because seqs keep rising across it. The one
//! case the scheme does not cover is a peer restarted with its wall clock
//! stepped back by more than its previous uptime: its new seqs sit below the
//! old ones and are refused as [`Replay::TooOld`] until this node restarts
//! too. [`ReplayWindow::reset`] accepts whatever comes next, so any recorded
//! frame with a higher seq could then be replayed once; it is for tests and
//! deliberate operator action.
//!
//! Without a cluster key anyone can forge these fields, so the checks then
//! only drop duplicates and strays; they are not a security boundary.
//!
//! # Transport checklist
//!
//! - Set ZeroMQ's `ZMQ_MAXMSGSIZE` to [`MAX_FRAME`] so libzmq drops an
//!   oversized message before allocating it; [`decode`] rejects it anyway.
//! - A message is one or more whole frames back to back; an empty message
//!   or one whose last piece is cut short is malformed ([`split`] ends with
//!   the error; the frames before it stand on their own and are admitted).
//!   Senders keep a batch under [`MAX_FRAME`] (a frame bigger than the batch
//!   limit goes alone), so `ZMQ_MAXMSGSIZE` still bounds every message.
//! - Order per received frame: [`split`] → [`decode`] → check
//!   `src_node`/`dst_node` → [`ReplayWindow::admit`] on the window for `src_node` → dispatch. Count
//!   each [`DecodeError`] and [`Replay`] (by variant) and drop the frame;
//!   log at most a rate-limited line: the errors' `Display` text is written
//!   for an operator.
//! - `src_node` in a [`DecodeError`] is what the frame *claims*, not verified.

// The code is split by concern; everything public is re-exported below, so
// `chimaera_proto::wire::X` stays the one path to every item and the
// submodules are private:
// - frame.rs: layout constants, kinds, routes, frames and headers, and
//   encode/decode with their errors;
// - key.rs: the cluster key (reading the key file, HMAC-SHA256 tags);
// - replay.rs: the sender's seq counter and the receiver's replay window.
mod frame;
mod key;
mod replay;
#[cfg(test)]
mod tests;

pub use frame::{
    DecodeError, EncodeError, FLAG_AUTHENTICATED, Frame, HEADER_LEN, Header, HeaderFields, Kind,
    MAGIC, MAX_BODY, MAX_FRAME, Route, Split, TAG_LEN, WIRE_VERSION, decode, encode, frame_len,
    split,
};
pub use key::{ClusterKey, KeyError};
pub use replay::{REPLAY_WINDOW, Replay, ReplayWindow, SeqCounter};
