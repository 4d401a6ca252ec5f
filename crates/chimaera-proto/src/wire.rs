//! The cluster's wire format: one versioned binary frame per message, its
//! authentication, and replay protection. Pure: no sockets, no threads, no
//! clock (reading the key file is the one piece of I/O, in
//! [`ClusterKey::from_file`]). The ZeroMQ transport sends what [`encode`]
//! writes as one message and hands every message it receives to [`decode`].
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
//! - Order per received message: [`decode`] → check `src_node`/`dst_node`
//!   → [`ReplayWindow::admit`] on the window for `src_node` → dispatch. Count
//!   each [`DecodeError`] and [`Replay`] (by variant) and drop the frame;
//!   log at most a rate-limited line: the errors' `Display` text is written
//!   for an operator.
//! - `src_node` in a [`DecodeError`] is what the frame *claims*, not verified.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CHMR";
/// The only wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Fixed header size in bytes.
pub const HEADER_LEN: usize = 36;
const BODY_LEN_AT: usize = 32;
/// Authentication tag size in bytes (HMAC-SHA256 truncated).
pub const TAG_LEN: usize = 16;
/// Largest body a frame may carry (64 MiB).
pub const MAX_BODY: usize = 64 << 20;
/// Largest complete frame: header, [`MAX_BODY`] and a tag.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY + TAG_LEN;
/// Flag bit 0: the frame ends with a [`TAG_LEN`]-byte authentication tag.
pub const FLAG_AUTHENTICATED: u16 = 1;
const KNOWN_FLAGS: u16 = FLAG_AUTHENTICATED;

const TASK_FIXED: usize = 32;
const REPLY_FIXED: usize = 12;
const HEARTBEAT_LEN: usize = 16;
const ERROR_FIXED: usize = 10;

const ROUTE_LOCAL: u8 = 0;
const ROUTE_DIRECT: u8 = 1;
const ROUTE_HASH: u8 = 2;
const ROUTE_BROADCAST: u8 = 3;

/// What a frame carries; the header's `kind` byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Task = 1,
    Reply = 2,
    Heartbeat = 3,
    HeartbeatAck = 4,
    Error = 5,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Task,
            2 => Kind::Reply,
            3 => Kind::Heartbeat,
            4 => Kind::HeartbeatAck,
            5 => Kind::Error,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Task => "Task",
            Kind::Reply => "Reply",
            Kind::Heartbeat => "Heartbeat",
            Kind::HeartbeatAck => "HeartbeatAck",
            Kind::Error => "Error",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a task goes. Carried in Task frames so the receiver can tell a
/// broadcast leg from a direct task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Run on the node that received it.
    Local,
    /// Run on this node id.
    Direct(u32),
    /// Run on the node the key hashes to.
    Hash(u64),
    /// Run on every node; replies are aggregated by the originator.
    Broadcast,
}

/// One decoded message. Payloads and messages borrow from the buffer given
/// to [`decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Task {
        task_id: u64,
        pool: u32,
        method: u32,
        route: Route,
        /// Milliseconds the task has left; the receiver enforces it.
        timeout_ms: u32,
        payload: &'a [u8],
    },
    Reply {
        task_id: u64,
        status: i32,
        payload: &'a [u8],
    },
    Heartbeat {
        /// The sender's epoch (its start time): a restarted node has a new one.
        epoch: u64,
        /// The sender's clock when sending, echoed back in the ack.
        sent_ns: u64,
    },
    HeartbeatAck {
        /// The acknowledging node's own epoch.
        epoch: u64,
        /// `sent_ns` of the heartbeat being answered.
        echo_sent_ns: u64,
    },
    Error {
        task_id: u64,
        code: u16,
        message: &'a str,
    },
}

impl Frame<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Task { .. } => Kind::Task,
            Frame::Reply { .. } => Kind::Reply,
            Frame::Heartbeat { .. } => Kind::Heartbeat,
            Frame::HeartbeatAck { .. } => Kind::HeartbeatAck,
            Frame::Error { .. } => Kind::Error,
        }
    }

    /// Length of this frame's body on the wire.
    pub fn body_len(&self) -> usize {
        match self {
            Frame::Task { payload, .. } => TASK_FIXED + payload.len(),
            Frame::Reply { payload, .. } => REPLY_FIXED + payload.len(),
            Frame::Heartbeat { .. } | Frame::HeartbeatAck { .. } => HEARTBEAT_LEN,
            Frame::Error { message, .. } => ERROR_FIXED + message.len(),
        }
    }

    /// Bytes [`encode`] appends for this frame, with or without a tag.
    pub fn encoded_len(&self, authenticated: bool) -> usize {
        HEADER_LEN + self.body_len() + if authenticated { TAG_LEN } else { 0 }
    }
}

/// The header fields a sender chooses; the rest follows from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeaderFields {
    pub src_node: u32,
    pub dst_node: u32,
    /// From the sender's [`SeqCounter`]; a new one for every frame.
    pub seq: u64,
    /// The receiver's epoch as last heard from it; 0 while unknown (only
    /// heartbeats are accepted then).
    pub dst_epoch: u64,
}

/// A decoded header. `authenticated` is true only if a key was given and the
/// tag verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub kind: Kind,
    pub authenticated: bool,
    pub src_node: u32,
    pub dst_node: u32,
    pub seq: u64,
    pub dst_epoch: u64,
    pub body_len: u32,
}

impl Header {
    pub fn fields(&self) -> HeaderFields {
        HeaderFields {
            src_node: self.src_node,
            dst_node: self.dst_node,
            seq: self.seq,
            dst_epoch: self.dst_epoch,
        }
    }
}

/// Why a buffer is not an acceptable frame. Every message says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "not a chimaera frame (first bytes {found:02x?}, expected \"CHMR\"): something other than a chimaera node is sending to the cluster port"
    )]
    BadMagic { found: [u8; 4] },
    #[error(
        "unsupported wire version {found} (this node speaks {WIRE_VERSION}): run the same chimaera release on every node"
    )]
    UnsupportedVersion { found: u8 },
    #[error("truncated frame: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error(
        "frame length mismatch: the header announces {expected} bytes, the message has {actual}"
    )]
    LengthMismatch { expected: usize, actual: usize },
    #[error("frame body of {body_len} bytes exceeds the limit of {MAX_BODY} bytes")]
    TooLarge { body_len: u32 },
    #[error(
        "frame sets unknown flag bits {flags:#06x}: the sender runs a newer or broken chimaera; run the same release on every node"
    )]
    UnknownFlags { flags: u16 },
    #[error(
        "unknown frame kind {kind}: the sender runs a newer or broken chimaera; run the same release on every node"
    )]
    UnknownKind { kind: u8 },
    #[error(
        "a {kind} body is {} {need} bytes, this one has {have}",
        if *.exact { "exactly" } else { "at least" }
    )]
    BodyLength {
        kind: Kind,
        need: usize,
        exact: bool,
        have: usize,
    },
    #[error("reserved bytes in a {kind} frame are not zero: the sender is broken")]
    Reserved { kind: Kind },
    #[error("bad route tag {tag} in a Task frame (known: 0 local, 1 direct, 2 hash, 3 broadcast)")]
    BadRoute { tag: u8 },
    #[error("direct route to node {node} in a Task frame: node ids are 32-bit")]
    BadRouteNode { node: u64 },
    #[error("the message of an Error frame is not valid UTF-8")]
    BadUtf8,
    #[error(
        "unauthenticated frame claiming to be from node {src_node}, but this node requires a cluster key: configure the same key file on every node"
    )]
    MissingTag { src_node: u32 },
    #[error(
        "authentication failed for a frame claiming to be from node {src_node}: the sender uses a different cluster key, or the frame was altered in transit"
    )]
    BadTag { src_node: u32 },
    #[error(
        "authenticated frame from node {src_node}, but this node has no cluster key configured: configure the same key file on every node"
    )]
    UnexpectedTag { src_node: u32 },
}

/// Why a frame cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "a frame body of {body_len} bytes exceeds the limit of {MAX_BODY} bytes: split the payload or pass it out of band"
    )]
    TooLarge { body_len: usize },
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends one frame to `out` (which may already hold data: only the new
/// bytes are covered by the tag). With `key`, the frame is authenticated.
/// On error `out` is left as it was.
pub fn encode(
    frame: &Frame<'_>,
    hdr: &HeaderFields,
    key: Option<&ClusterKey>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let body_len = frame.body_len();
    if body_len > MAX_BODY {
        return Err(EncodeError::TooLarge { body_len });
    }
    out.reserve(frame.encoded_len(key.is_some()));
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.push(frame.kind() as u8);
    put_u16(out, if key.is_some() { FLAG_AUTHENTICATED } else { 0 });
    put_u32(out, hdr.src_node);
    put_u32(out, hdr.dst_node);
    put_u64(out, hdr.seq);
    put_u64(out, hdr.dst_epoch);
    put_u32(out, body_len as u32); // <= MAX_BODY, checked above
    match *frame {
        Frame::Task {
            task_id,
            pool,
            method,
            route,
            timeout_ms,
            payload,
        } => {
            put_u64(out, task_id);
            put_u32(out, pool);
            put_u32(out, method);
            put_u32(out, timeout_ms);
            let (tag, arg) = match route {
                Route::Local => (ROUTE_LOCAL, 0),
                Route::Direct(node) => (ROUTE_DIRECT, u64::from(node)),
                Route::Hash(k) => (ROUTE_HASH, k),
                Route::Broadcast => (ROUTE_BROADCAST, 0),
            };
            out.extend_from_slice(&[tag, 0, 0, 0]);
            put_u64(out, arg);
            out.extend_from_slice(payload);
        }
        Frame::Reply {
            task_id,
            status,
            payload,
        } => {
            put_u64(out, task_id);
            out.extend_from_slice(&status.to_le_bytes());
            out.extend_from_slice(payload);
        }
        Frame::Heartbeat { epoch, sent_ns } => {
            put_u64(out, epoch);
            put_u64(out, sent_ns);
        }
        Frame::HeartbeatAck {
            epoch,
            echo_sent_ns,
        } => {
            put_u64(out, epoch);
            put_u64(out, echo_sent_ns);
        }
        Frame::Error {
            task_id,
            code,
            message,
        } => {
            put_u64(out, task_id);
            put_u16(out, code);
            out.extend_from_slice(message.as_bytes());
        }
    }
    debug_assert_eq!(out.len() - start, HEADER_LEN + body_len);
    if let Some(key) = key {
        let tag = key.tag(&out[start..]);
        out.extend_from_slice(&tag);
    }
    Ok(())
}

// Readers for offsets the caller has already bounds-checked.
fn get_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes exactly one frame occupying all of `buf`. With `key`, the frame
/// must carry a valid tag; without, it must carry none. Never panics, never
/// allocates; payloads borrow from `buf`.
///
/// Checks run in this order, so the error names the first thing wrong:
/// magic, version, header length, flags, body size limit, total length,
/// tag presence and validity, kind, body.
pub fn decode<'a>(
    buf: &'a [u8],
    key: Option<&ClusterKey>,
) -> Result<(Header, Frame<'a>), DecodeError> {
    let have = buf.len();
    // Garbage is reported as such even when short.
    let m = have.min(MAGIC.len());
    if buf[..m] != MAGIC[..m] {
        let mut found = [0; 4];
        found[..m].copy_from_slice(&buf[..m]);
        return Err(DecodeError::BadMagic { found });
    }
    if have > 4 && buf[4] != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: buf[4] });
    }
    if have < HEADER_LEN {
        return Err(DecodeError::Truncated {
            need: HEADER_LEN,
            have,
        });
    }
    let kind_byte = buf[5];
    let flags = get_u16(buf, 6);
    let src_node = get_u32(buf, 8);
    let dst_node = get_u32(buf, 12);
    let seq = get_u64(buf, 16);
    let dst_epoch = get_u64(buf, 24);
    let body_len = get_u32(buf, BODY_LEN_AT);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    if body_len as usize > MAX_BODY {
        return Err(DecodeError::TooLarge { body_len });
    }
    let tagged = flags & FLAG_AUTHENTICATED != 0;
    let signed_len = HEADER_LEN + body_len as usize;
    let expected = signed_len + if tagged { TAG_LEN } else { 0 };
    if have < expected {
        return Err(DecodeError::Truncated {
            need: expected,
            have,
        });
    }
    if have > expected {
        return Err(DecodeError::LengthMismatch {
            expected,
            actual: have,
        });
    }
    match (key, tagged) {
        (Some(_), false) => return Err(DecodeError::MissingTag { src_node }),
        (None, true) => return Err(DecodeError::UnexpectedTag { src_node }),
        (Some(key), true) => {
            if !key.verify(&buf[..signed_len], &buf[signed_len..]) {
                return Err(DecodeError::BadTag { src_node });
            }
        }
        (None, false) => {}
    }
    let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind { kind: kind_byte })?;
    let body = &buf[HEADER_LEN..signed_len];
    let frame = decode_body(kind, body)?;
    let header = Header {
        kind,
        authenticated: tagged,
        src_node,
        dst_node,
        seq,
        dst_epoch,
        body_len,
    };
    Ok((header, frame))
}

fn body_at_least(kind: Kind, body: &[u8], need: usize) -> Result<(), DecodeError> {
    if body.len() < need {
        return Err(DecodeError::BodyLength {
            kind,
            need,
            exact: false,
            have: body.len(),
        });
    }
    Ok(())
}

fn decode_body(kind: Kind, body: &[u8]) -> Result<Frame<'_>, DecodeError> {
    Ok(match kind {
        Kind::Task => {
            body_at_least(kind, body, TASK_FIXED)?;
            if body[21..24] != [0, 0, 0] {
                return Err(DecodeError::Reserved { kind });
            }
            let arg = get_u64(body, 24);
            let route = match body[20] {
                ROUTE_LOCAL | ROUTE_BROADCAST if arg != 0 => {
                    return Err(DecodeError::Reserved { kind });
                }
                ROUTE_LOCAL => Route::Local,
                ROUTE_BROADCAST => Route::Broadcast,
                ROUTE_DIRECT => Route::Direct(
                    u32::try_from(arg).map_err(|_| DecodeError::BadRouteNode { node: arg })?,
                ),
                ROUTE_HASH => Route::Hash(arg),
                tag => return Err(DecodeError::BadRoute { tag }),
            };
            Frame::Task {
                task_id: get_u64(body, 0),
                pool: get_u32(body, 8),
                method: get_u32(body, 12),
                timeout_ms: get_u32(body, 16),
                route,
                payload: &body[TASK_FIXED..],
            }
        }
        Kind::Reply => {
            body_at_least(kind, body, REPLY_FIXED)?;
            Frame::Reply {
                task_id: get_u64(body, 0),
                status: get_u32(body, 8) as i32,
                payload: &body[REPLY_FIXED..],
            }
        }
        Kind::Heartbeat | Kind::HeartbeatAck => {
            if body.len() != HEARTBEAT_LEN {
                return Err(DecodeError::BodyLength {
                    kind,
                    need: HEARTBEAT_LEN,
                    exact: true,
                    have: body.len(),
                });
            }
            let (epoch, ns) = (get_u64(body, 0), get_u64(body, 8));
            if kind == Kind::Heartbeat {
                Frame::Heartbeat { epoch, sent_ns: ns }
            } else {
                Frame::HeartbeatAck {
                    epoch,
                    echo_sent_ns: ns,
                }
            }
        }
        Kind::Error => {
            body_at_least(kind, body, ERROR_FIXED)?;
            Frame::Error {
                task_id: get_u64(body, 0),
                code: get_u16(body, 8),
                message: std::str::from_utf8(&body[ERROR_FIXED..])
                    .map_err(|_| DecodeError::BadUtf8)?,
            }
        }
    })
}

/// The cluster's shared secret, ready to tag and verify frames. Cheap to
/// clone (the keyed HMAC state is precomputed once). Its `Debug` shows only
/// the fingerprint.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
    fingerprint: [u8; 8],
}

/// Why a cluster key cannot be used.
#[derive(Debug)]
pub enum KeyError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    NotAFile {
        path: PathBuf,
    },
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    TooLong {
        path: PathBuf,
    },
    OddHex {
        path: PathBuf,
    },
    /// `path` is `None` for [`ClusterKey::from_bytes`].
    TooShort {
        path: Option<PathBuf>,
        len: usize,
    },
}

const KEYGEN_HINT: &str = "generate one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > FILE; chmod 600 FILE";

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Read { path, source } => {
                write!(
                    f,
                    "cannot read cluster key file {}: {source}",
                    path.display()
                )
            }
            KeyError::NotAFile { path } => {
                write!(
                    f,
                    "cluster key file {} is not a regular file",
                    path.display()
                )
            }
            KeyError::Permissions { path, mode } => write!(
                f,
                "cluster key file {p} has mode {mode:04o}: a key readable or writable by group or others is not secret; run `chmod 600 {p}` (owned by the user the daemon runs as)",
                p = path.display(),
                mode = mode & 0o7777,
            ),
            KeyError::TooLong { path } => write!(
                f,
                "cluster key file {} is larger than {} bytes: is it the right file?",
                path.display(),
                ClusterKey::MAX_FILE_LEN
            ),
            KeyError::OddHex { path } => write!(
                f,
                "cluster key file {} holds an odd number of hex digits",
                path.display()
            ),
            KeyError::TooShort { path, len } => {
                match path {
                    Some(p) => write!(f, "cluster key in {} ", p.display())?,
                    None => f.write_str("cluster key ")?,
                }
                write!(
                    f,
                    "is {len} bytes; at least {} are required ({KEYGEN_HINT})",
                    ClusterKey::MIN_LEN
                )
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl ClusterKey {
    /// Shortest acceptable key, in bytes (after hex decoding).
    pub const MIN_LEN: usize = 32;
    /// Largest key file read.
    pub const MAX_FILE_LEN: usize = 4096;

    /// A key from raw secret bytes (at least [`Self::MIN_LEN`]).
    pub fn from_bytes(secret: &[u8]) -> Result<ClusterKey, KeyError> {
        if secret.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                path: None,
                len: secret.len(),
            });
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC accepts keys of any length");
        let digest = mac
            .clone()
            .chain_update(b"chimaera cluster key fingerprint")
            .finalize()
            .into_bytes();
        let mut fingerprint = [0; 8];
        fingerprint.copy_from_slice(&digest[..8]);
        Ok(ClusterKey { mac, fingerprint })
    }

    /// Reads a key file. Its content is the key as hex (only hex digits,
    /// trailing whitespace ignored) or, otherwise, raw bytes; either way at
    /// least [`Self::MIN_LEN`] bytes of key. The file must be a regular file
    /// with no permission bits for group or others (mode 0600 or 0400).
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClusterKey, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Check the opened file itself, not the path again.
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut contents = Vec::with_capacity(256);
        file.take(Self::MAX_FILE_LEN as u64 + 1)
            .read_to_end(&mut contents)
            .map_err(read_err)?;
        let result = Self::from_file_contents(&contents, path);
        contents.fill(0);
        std::hint::black_box(&contents);
        result
    }

    fn from_file_contents(contents: &[u8], path: &Path) -> Result<ClusterKey, KeyError> {
        if contents.len() > Self::MAX_FILE_LEN {
            return Err(KeyError::TooLong {
                path: path.to_path_buf(),
            });
        }
        let text = contents.trim_ascii_end();
        let with_path = |e| match e {
            KeyError::TooShort { len, .. } => KeyError::TooShort {
                path: Some(path.to_path_buf()),
                len,
            },
            e => e,
        };
        if !text.is_empty() && text.iter().all(|&c| hex_val(c).is_some()) {
            if !text.len().is_multiple_of(2) {
                return Err(KeyError::OddHex {
                    path: path.to_path_buf(),
                });
            }
            let mut raw = [0u8; Self::MAX_FILE_LEN / 2];
            let n = text.len() / 2;
            for (i, pair) in text.chunks_exact(2).enumerate() {
                // Both digits were checked above.
                raw[i] = (hex_val(pair[0]).unwrap_or(0) << 4) | hex_val(pair[1]).unwrap_or(0);
            }
            let result = Self::from_bytes(&raw[..n]).map_err(with_path);
            raw.fill(0);
            std::hint::black_box(&raw);
            result
        } else {
            Self::from_bytes(contents).map_err(with_path)
        }
    }

    /// A short public identifier of the key (16 hex digits), for logs and
    /// `status` output, so operators can compare keys across nodes without
    /// revealing them.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let full = self
            .mac
            .clone()
            .chain_update(signed)
            .finalize()
            .into_bytes();
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Constant-time comparison of the leftmost bytes.
    fn verify(&self, signed: &[u8], tag: &[u8]) -> bool {
        tag.len() == TAG_LEN
            && self
                .mac
                .clone()
                .chain_update(signed)
                .verify_truncated_left(tag)
                .is_ok()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

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
    /// up (see the module doc); for tests and deliberate operator action.
    pub fn reset(&mut self) {
        *self = ReplayWindow::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    const HDR: HeaderFields = HeaderFields {
        src_node: 2,
        dst_node: 7,
        seq: 0x0123_4567_89ab_cdef,
        dst_epoch: 0x1111_2222_3333_4444,
    };

    fn key() -> ClusterKey {
        ClusterKey::from_bytes(&[0x5a; 32]).unwrap()
    }

    fn samples() -> Vec<Frame<'static>> {
        vec![
            Frame::Task {
                task_id: 1,
                pool: 3,
                method: 9,
                route: Route::Local,
                timeout_ms: 5000,
                payload: b"",
            },
            Frame::Task {
                task_id: u64::MAX,
                pool: u32::MAX,
                method: 0,
                route: Route::Direct(u32::MAX),
                timeout_ms: 1,
                payload: b"hello world",
            },
            Frame::Task {
                task_id: 42,
                pool: 1,
                method: 2,
                route: Route::Hash(0xdead_beef_cafe_f00d),
                timeout_ms: 0,
                payload: &[0xff; 300],
            },
            Frame::Task {
                task_id: 43,
                pool: 1,
                method: 2,
                route: Route::Broadcast,
                timeout_ms: 7,
                payload: b"x",
            },
            Frame::Reply {
                task_id: 42,
                status: -17,
                payload: b"result bytes",
            },
            Frame::Reply {
                task_id: 0,
                status: 0,
                payload: b"",
            },
            Frame::Heartbeat {
                epoch: 1_700_000_000_000_000_000,
                sent_ns: 123,
            },
            Frame::HeartbeatAck {
                epoch: 9,
                echo_sent_ns: 123,
            },
            Frame::Error {
                task_id: 5,
                code: 404,
                message: "no such pool: ünïcödé",
            },
            Frame::Error {
                task_id: 6,
                code: 0,
                message: "",
            },
        ]
    }

    fn enc(frame: &Frame<'_>, key: Option<&ClusterKey>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &HDR, key, &mut out).unwrap();
        out
    }

    #[test]
    fn every_kind_round_trips_with_and_without_key() {
        let k = key();
        for key in [None, Some(&k)] {
            for f in samples() {
                let buf = enc(&f, key);
                assert_eq!(buf.len(), f.encoded_len(key.is_some()));
                let (h, g) = decode(&buf, key).unwrap();
                assert_eq!(g, f);
                assert_eq!(h.kind, f.kind());
                assert_eq!(h.fields(), HDR);
                assert_eq!(h.authenticated, key.is_some());
                assert_eq!(h.body_len as usize, f.body_len());
            }
        }
    }

    #[test]
    fn decode_borrows_payload_from_input() {
        let buf = enc(&samples()[2], None);
        let (_, f) = decode(&buf, None).unwrap();
        let Frame::Task { payload, .. } = f else {
            panic!("not a task")
        };
        let range = buf.as_ptr_range();
        assert!(range.contains(&payload.as_ptr()));
    }

    #[test]
    fn encode_appends_and_tags_only_its_own_bytes() {
        let k = key();
        let mut out = b"prefix".to_vec();
        for f in samples() {
            let start = out.len();
            encode(&f, &HDR, Some(&k), &mut out).unwrap();
            assert_eq!(decode(&out[start..], Some(&k)).unwrap().1, f);
        }
        assert!(out.starts_with(b"prefix"));
    }

    #[test]
    fn header_layout_is_as_documented() {
        let buf = enc(&samples()[6], Some(&key()));
        assert_eq!(&buf[0..4], b"CHMR");
        assert_eq!(buf[4], 1);
        assert_eq!(buf[5], Kind::Heartbeat as u8);
        assert_eq!(&buf[6..8], &[1, 0]);
        assert_eq!(&buf[8..12], &2u32.to_le_bytes());
        assert_eq!(&buf[12..16], &7u32.to_le_bytes());
        assert_eq!(&buf[16..24], &HDR.seq.to_le_bytes());
        assert_eq!(&buf[24..32], &HDR.dst_epoch.to_le_bytes());
        assert_eq!(&buf[32..36], &16u32.to_le_bytes());
        assert_eq!(buf.len(), HEADER_LEN + 16 + TAG_LEN);
    }

    #[test]
    fn every_tampered_byte_of_an_authenticated_frame_is_rejected() {
        let k = key();
        for f in samples() {
            let buf = enc(&f, Some(&k));
            for i in 0..buf.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut t = buf.clone();
                    t[i] ^= flip;
                    let err = decode(&t, Some(&k)).unwrap_err();
                    // Bytes outside magic/version/flags/body_len can only be
                    // caught by the tag.
                    let structural = i < 8 || (BODY_LEN_AT..HEADER_LEN).contains(&i);
                    if !structural {
                        assert!(
                            matches!(err, DecodeError::BadTag { .. }),
                            "byte {i} of {f:?}: {err}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn auth_mismatches_have_distinct_errors() {
        let k = key();
        let other = ClusterKey::from_bytes(&[0xa5; 32]).unwrap();
        let f = samples()[0];
        assert_eq!(
            decode(&enc(&f, None), Some(&k)).unwrap_err(),
            DecodeError::MissingTag { src_node: 2 }
        );
        assert_eq!(
            decode(&enc(&f, Some(&k)), None).unwrap_err(),
            DecodeError::UnexpectedTag { src_node: 2 }
        );
        assert_eq!(
            decode(&enc(&f, Some(&other)), Some(&k)).unwrap_err(),
            DecodeError::BadTag { src_node: 2 }
        );
        // Stripping the tag and clearing the flag does not help.
        let mut stripped = enc(&f, Some(&k));
        stripped.truncate(stripped.len() - TAG_LEN);
        stripped[6] = 0;
        assert!(matches!(
            decode(&stripped, Some(&k)),
            Err(DecodeError::MissingTag { .. })
        ));
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        let k = key();
        for key in [None, Some(&k)] {
            for f in samples() {
                let buf = enc(&f, key);
                for n in 0..buf.len() {
                    let need = if n < HEADER_LEN {
                        HEADER_LEN
                    } else {
                        buf.len()
                    };
                    assert_eq!(
                        decode(&buf[..n], key).unwrap_err(),
                        DecodeError::Truncated { need, have: n },
                        "{f:?} cut at {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_a_length_mismatch() {
        let mut buf = enc(&samples()[4], None);
        let expected = buf.len();
        buf.push(0);
        assert_eq!(
            decode(&buf, None).unwrap_err(),
            DecodeError::LengthMismatch {
                expected,
                actual: expected + 1
            }
        );
    }

    #[test]
    fn wrong_version_is_named() {
        let mut buf = enc(&samples()[0], None);
        buf[4] = 2;
        let err = decode(&buf, None).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { found: 2 });
        assert!(err.to_string().contains("this node speaks 1"), "{err}");
        // Even a bare 5-byte prefix says so.
        assert_eq!(decode(&buf[..5], None).unwrap_err(), err);
    }

    #[test]
    fn bad_magic_even_when_short() {
        assert!(matches!(
            decode(b"GET / HTTP/1.1\r\n", None),
            Err(DecodeError::BadMagic { found }) if &found == b"GET "
        ));
        assert!(matches!(
            decode(b"X", None),
            Err(DecodeError::BadMagic { .. })
        ));
        assert_eq!(
            decode(b"", None).unwrap_err(),
            DecodeError::Truncated {
                need: HEADER_LEN,
                have: 0
            }
        );
    }

    #[test]
    fn malformed_headers_and_bodies() {
        let task = enc(&samples()[1], None);
        let mut b = task.clone();
        b[5] = 0;
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::UnknownKind { kind: 0 }
        );
        let mut b = task.clone();
        b[7] = 0x80;
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::UnknownFlags { flags: 0x8000 }
        );
        // Huge body_len: refused before anything looks at (or allocates for) it.
        let mut b = task.clone();
        b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::TooLarge { body_len: u32::MAX }
        );
        let mut b = task.clone();
        b[HEADER_LEN + 20] = 9;
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::BadRoute { tag: 9 }
        );
        let mut b = task.clone();
        b[HEADER_LEN + 28] = 1; // Direct node id above u32
        assert!(matches!(
            decode(&b, None),
            Err(DecodeError::BadRouteNode { .. })
        ));
        let mut b = task.clone();
        b[HEADER_LEN + 22] = 1;
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::Reserved { kind: Kind::Task }
        );
        let mut b = enc(&samples()[3], None); // Broadcast with an argument
        b[HEADER_LEN + 24] = 1;
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::Reserved { kind: Kind::Task }
        );

        let mut b = enc(&samples()[8], None);
        let last = b.len() - 1;
        b[last] = 0xff;
        assert_eq!(decode(&b, None).unwrap_err(), DecodeError::BadUtf8);

        // A heartbeat body of the wrong size, consistent with body_len.
        let mut b = enc(&samples()[6], None);
        b.push(0);
        b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(
            decode(&b, None).unwrap_err(),
            DecodeError::BodyLength {
                kind: Kind::Heartbeat,
                need: 16,
                exact: true,
                have: 17
            }
        );
        // A task body shorter than its fixed part.
        let mut b = task[..HEADER_LEN + 8].to_vec();
        b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&8u32.to_le_bytes());
        let err = decode(&b, None).unwrap_err();
        assert_eq!(
            err,
            DecodeError::BodyLength {
                kind: Kind::Task,
                need: 32,
                exact: false,
                have: 8
            }
        );
        assert_eq!(
            err.to_string(),
            "a Task body is at least 32 bytes, this one has 8"
        );
    }

    #[test]
    fn oversized_frame_is_refused_by_encode() {
        let big = vec![0u8; MAX_BODY - REPLY_FIXED + 1];
        let f = Frame::Reply {
            task_id: 1,
            status: 0,
            payload: &big,
        };
        let mut out = b"keep".to_vec();
        assert_eq!(
            encode(&f, &HDR, None, &mut out).unwrap_err(),
            EncodeError::TooLarge {
                body_len: MAX_BODY + 1
            }
        );
        assert_eq!(out, b"keep");
        // Exactly at the limit is fine.
        let f = Frame::Reply {
            task_id: 1,
            status: 0,
            payload: &big[1..],
        };
        encode(&f, &HDR, None, &mut out).unwrap();
        assert!(decode(&out[4..], None).is_ok());
    }

    #[test]
    fn replay_window_in_order_and_out_of_order() {
        let mut w = ReplayWindow::new();
        for s in 100..200 {
            w.check_and_mark(s).unwrap();
        }
        assert_eq!(w.newest(), Some(199));
        // Out of order within the window.
        let mut w = ReplayWindow::new();
        w.check_and_mark(3000).unwrap();
        w.check_and_mark(3005).unwrap();
        w.check_and_mark(3003).unwrap();
        w.check_and_mark(3001).unwrap();
        w.check_and_mark(3005 - REPLAY_WINDOW + 1).unwrap(); // oldest in window
        assert_eq!(w.newest(), Some(3005));
        // Gaps are fine; seqs from another incarnation far above are fine.
        w.check_and_mark(1_000_000).unwrap();
        w.check_and_mark(999_999).unwrap();
    }

    #[test]
    fn replay_window_refuses_duplicates_and_too_old() {
        let mut w = ReplayWindow::new();
        w.check_and_mark(5000).unwrap();
        w.check_and_mark(4990).unwrap();
        assert_eq!(w.check_and_mark(5000), Err(Replay::Duplicate { seq: 5000 }));
        assert_eq!(w.check_and_mark(4990), Err(Replay::Duplicate { seq: 4990 }));
        assert_eq!(
            w.check_and_mark(5000 - REPLAY_WINDOW),
            Err(Replay::TooOld {
                seq: 5000 - REPLAY_WINDOW,
                newest: 5000
            })
        );
        assert_eq!(
            w.check_and_mark(0),
            Err(Replay::TooOld {
                seq: 0,
                newest: 5000
            })
        );
        // Sliding forward forgets the slots it passes: 4990 + 1024 is new.
        w.check_and_mark(4990 + REPLAY_WINDOW).unwrap();
        assert_eq!(
            w.check_and_mark(4990),
            Err(Replay::TooOld {
                seq: 4990,
                newest: 4990 + REPLAY_WINDOW
            })
        );
        // 5000 is still remembered as seen.
        assert_eq!(w.check_and_mark(5000), Err(Replay::Duplicate { seq: 5000 }));
        // A refused seq leaves no trace; `check` alone marks nothing.
        assert!(w.check(5001).is_ok());
        assert!(w.check(5001).is_ok());
        // Extremes.
        w.check_and_mark(u64::MAX).unwrap();
        assert!(w.check_and_mark(u64::MAX).is_err());
        w.check_and_mark(u64::MAX - 1).unwrap();
    }

    #[test]
    fn replay_window_matches_a_naive_model() {
        use std::collections::BTreeSet;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut w = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let mut newest: Option<u64> = None;
        let mut base = 10_000u64;
        for _ in 0..200_000 {
            let r = rng.next();
            // Mostly near the front, sometimes far ahead, sometimes behind.
            let seq = match r % 16 {
                0 => base + (r >> 8) % 5000,
                1 => base.saturating_sub((r >> 8) % 2000),
                _ => base + (r >> 8) % 8,
            };
            base = base.max(seq);
            let model = match newest {
                Some(n) if seq + REPLAY_WINDOW <= n => Err(Replay::TooOld { seq, newest: n }),
                _ if seen.contains(&seq) => Err(Replay::Duplicate { seq }),
                _ => Ok(()),
            };
            assert_eq!(w.check_and_mark(seq), model, "seq {seq}");
            if model.is_ok() {
                seen.insert(seq);
                newest = Some(newest.map_or(seq, |n| n.max(seq)));
            }
        }
    }

    #[test]
    fn replay_window_reset() {
        let mut w = ReplayWindow::new();
        w.check_and_mark(1_000_000).unwrap();
        assert!(w.check_and_mark(3).is_err());
        w.reset();
        assert_eq!(w.newest(), None);
        w.check_and_mark(3).unwrap();
        assert!(w.check_and_mark(3).is_err());
    }

    #[test]
    fn admit_binds_frames_to_the_receivers_epoch() {
        let k = key();
        // Node 2 (epoch e2) talks to node 7, first at epoch e7a, then after 7
        // restarted at epoch e7b.
        let (e2, e7a, e7b) = (1_000_000_000u64, 5_000_000_000u64, 9_000_000_000u64);
        let seqs = SeqCounter::starting_at(e2);
        let send = |f: &Frame<'_>, dst_epoch: u64| {
            let hdr = HeaderFields {
                src_node: 2,
                dst_node: 7,
                seq: seqs.next(),
                dst_epoch,
            };
            let mut out = Vec::new();
            encode(f, &hdr, Some(&k), &mut out).unwrap();
            out
        };
        let hb = Frame::Heartbeat {
            epoch: e2,
            sent_ns: 1,
        };
        let task = samples()[1];
        let first_hb = send(&hb, 0); // 2 has not heard from 7 yet
        let recorded = [send(&task, e7a), send(&task, e7a)];

        let mut w = ReplayWindow::new(); // at node 7, epoch e7a
        for buf in [&first_hb, &recorded[0], &recorded[1]] {
            let (h, _) = decode(buf, Some(&k)).unwrap();
            w.admit(&h, e7a).unwrap();
        }
        let (h, _) = decode(&recorded[1], Some(&k)).unwrap();
        assert_eq!(w.admit(&h, e7a), Err(Replay::Duplicate { seq: h.seq }));

        // Node 7 restarts: fresh window, new epoch. The recorded frames are
        // refused although the window has never seen them.
        let mut w = ReplayWindow::new();
        for buf in &recorded {
            let (h, _) = decode(buf, Some(&k)).unwrap();
            assert_eq!(
                w.admit(&h, e7b),
                Err(Replay::StaleEpoch {
                    dst_epoch: e7a,
                    local_epoch: e7b
                })
            );
        }
        // Heartbeats pass whatever their dst_epoch; then 2 learns e7b.
        let (h, _) = decode(&send(&hb, e7a), Some(&k)).unwrap();
        w.admit(&h, e7b).unwrap();
        let (h, _) = decode(&send(&task, e7b), Some(&k)).unwrap();
        w.admit(&h, e7b).unwrap();
        // A HeartbeatAck is bound like any other frame.
        let ack = Frame::HeartbeatAck {
            epoch: e2,
            echo_sent_ns: 1,
        };
        let (h, _) = decode(&send(&ack, e7a), Some(&k)).unwrap();
        assert!(matches!(w.admit(&h, e7b), Err(Replay::StaleEpoch { .. })));

        // Node 2 restarts (later epoch, new counter): accepted with no reset.
        let seqs2 = SeqCounter::starting_at(e2 + 60_000_000_000);
        let hdr = HeaderFields {
            src_node: 2,
            dst_node: 7,
            seq: seqs2.next(),
            dst_epoch: e7b,
        };
        let mut out = Vec::new();
        encode(&task, &hdr, Some(&k), &mut out).unwrap();
        let (h, _) = decode(&out, Some(&k)).unwrap();
        w.admit(&h, e7b).unwrap();
    }

    #[test]
    fn seq_counter_starts_at_epoch() {
        let c = SeqCounter::starting_at(1_700_000_000_000_000_000);
        assert_eq!(c.next(), 1_700_000_000_000_000_000);
        assert_eq!(c.next(), 1_700_000_000_000_000_001);
    }

    fn key_file(contents: &[u8], mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents).unwrap();
        f.flush().unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn key_file_hex_and_raw() {
        let raw = [0x5a; 32];
        let hex = "5a".repeat(32) + "\n";
        let from_hex = ClusterKey::from_file(key_file(hex.as_bytes(), 0o600).path()).unwrap();
        let from_raw = ClusterKey::from_file(key_file(&raw, 0o400).path()).unwrap();
        assert_eq!(from_hex.fingerprint(), key().fingerprint());
        assert_eq!(from_raw.fingerprint(), key().fingerprint());
        assert_eq!(from_hex.fingerprint().len(), 16);
        // Frames tagged with one verify with the other.
        let buf = enc(&samples()[0], Some(&from_hex));
        assert!(decode(&buf, Some(&from_raw)).is_ok());
        // Debug never shows the secret.
        let dbg = format!("{from_hex:?}");
        assert!(
            dbg.contains(&from_hex.fingerprint()) && !dbg.contains("5a5a"),
            "{dbg}"
        );
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            let f = key_file("ab".repeat(32).as_bytes(), mode);
            let err = ClusterKey::from_file(f.path()).unwrap_err();
            assert!(
                matches!(err, KeyError::Permissions { .. }),
                "{mode:o}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"),
                "{msg}"
            );
        }
    }

    #[test]
    fn short_and_odd_keys_are_refused() {
        let f = key_file(&[7; 31], 0o600);
        let err = ClusterKey::from_file(f.path()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::TooShort {
                    len: 31,
                    path: Some(_)
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("at least 32"), "{err}");
        // 40 hex digits are 20 bytes, not a 41-byte raw key.
        let f = key_file(("ab".repeat(20) + "\n").as_bytes(), 0o600);
        assert!(matches!(
            ClusterKey::from_file(f.path()),
            Err(KeyError::TooShort { len: 20, .. })
        ));
        let f = key_file("abc".repeat(31).as_bytes(), 0o600);
        assert!(matches!(
            ClusterKey::from_file(f.path()),
            Err(KeyError::OddHex { .. })
        ));
        let f = key_file(&[1; ClusterKey::MAX_FILE_LEN + 1], 0o600);
        assert!(matches!(
            ClusterKey::from_file(f.path()),
            Err(KeyError::TooLong { .. })
        ));
        let f = key_file(b"", 0o600);
        assert!(matches!(
            ClusterKey::from_file(f.path()),
            Err(KeyError::TooShort { len: 0, .. })
        ));
        assert!(matches!(
            ClusterKey::from_bytes(&[0; 16]),
            Err(KeyError::TooShort {
                len: 16,
                path: None
            })
        ));
        assert!(matches!(
            ClusterKey::from_file("/nonexistent/chimaera.key"),
            Err(KeyError::Read { .. })
        ));
        assert!(matches!(
            ClusterKey::from_file(std::env::temp_dir()),
            Err(KeyError::NotAFile { .. }) | Err(KeyError::Permissions { .. })
        ));
    }

    /// Small deterministic PRNG so the randomized tests need no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// If `buf` decodes, it is the one canonical encoding of what it decoded to.
    fn decode_is_canonical(buf: &[u8], key: Option<&ClusterKey>) -> bool {
        match decode(buf, key) {
            Ok((h, f)) => {
                let mut out = Vec::new();
                encode(&f, &h.fields(), key, &mut out).unwrap();
                assert_eq!(out, buf, "non-canonical accept");
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        }
    }

    #[test]
    fn randomized_garbage_never_panics() {
        let k = key();
        let seeds = samples();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut accepted = 0;
        let mut buf = Vec::new();
        for i in 0..200_000u32 {
            buf.clear();
            let key = if i.is_multiple_of(2) { Some(&k) } else { None };
            if i.is_multiple_of(8) {
                // Pure noise, sometimes behind a valid magic and version.
                let n = rng.below(96);
                if rng.next().is_multiple_of(2) {
                    buf.extend_from_slice(&MAGIC);
                    buf.push(WIRE_VERSION);
                }
                buf.extend((0..n).map(|_| rng.next() as u8));
            } else {
                // A valid frame, signed or not, then a few mutations.
                let f = seeds[rng.below(seeds.len())];
                let hdr = HeaderFields {
                    src_node: rng.next() as u32,
                    dst_node: rng.next() as u32,
                    seq: rng.next(),
                    dst_epoch: rng.next(),
                };
                let sign = !rng.next().is_multiple_of(4);
                encode(&f, &hdr, if sign { Some(&k) } else { None }, &mut buf).unwrap();
                for _ in 0..rng.below(4) {
                    match rng.below(6) {
                        0 if !buf.is_empty() => {
                            let at = rng.below(buf.len());
                            buf[at] ^= 1 << rng.below(8);
                        }
                        1 if !buf.is_empty() => {
                            let at = rng.below(buf.len());
                            buf[at] = rng.next() as u8;
                        }
                        2 => {
                            let n = rng.below(buf.len() + 1);
                            buf.truncate(n);
                        }
                        3 => buf.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
                        4 if buf.len() >= HEADER_LEN => {
                            // Rewrite body_len, the field most worth attacking.
                            let v = match rng.below(3) {
                                0 => rng.next() as u32,
                                1 => (buf.len() - HEADER_LEN) as u32,
                                _ => rng.below(64) as u32,
                            };
                            buf[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&v.to_le_bytes());
                        }
                        _ => {}
                    }
                }
            }
            if decode_is_canonical(&buf, key) {
                accepted += 1;
            }
        }
        // Unmutated frames with the matching key setting do get through.
        assert!(accepted > 1000, "only {accepted} accepted");
    }

    /// `cargo test --release --lib wire::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_encode_decode_64b_task() {
        let k = key();
        let payload = [0x11u8; 64];
        let f = Frame::Task {
            task_id: 1,
            pool: 2,
            method: 3,
            route: Route::Direct(1),
            timeout_ms: 1000,
            payload: &payload,
        };
        let mut out = Vec::with_capacity(256);
        for key in [None, Some(&k)] {
            let n = 1_000_000u64;
            let t = std::time::Instant::now();
            for seq in 0..n {
                out.clear();
                let hdr = HeaderFields { seq, ..HDR };
                encode(&f, &hdr, key, &mut out).unwrap();
                let (h, _) = decode(std::hint::black_box(&out), key).unwrap();
                assert_eq!(h.seq, seq);
            }
            let ns = t.elapsed().as_nanos() as u64 / n;
            println!(
                "wire encode+decode 64 B task, key={}: {ns} ns/frame",
                key.is_some()
            );
        }
    }
}
