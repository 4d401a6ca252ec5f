//! The frame itself: the layout constants, what a frame carries ([`Kind`],
//! [`Route`], [`Frame`]), its [`Header`], and the codec ([`encode`],
//! [`decode`]) with its errors. The byte layout is documented once, under
//! "Frame layout" in the `wire` module doc (`mod.rs`); this file implements
//! it, so change the two together. The tag is computed and checked by
//! [`ClusterKey`] (`key.rs`); this file only decides where it goes and
//! whether a frame must carry one.

use std::fmt;

use super::key::ClusterKey;

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CHMR";
/// The only wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Fixed header size in bytes.
pub const HEADER_LEN: usize = 36;
pub(super) const BODY_LEN_AT: usize = 32;
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
pub(super) const REPLY_FIXED: usize = 12;
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
    ///
    /// [`SeqCounter`]: super::SeqCounter
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

/// The length of the frame at the start of `buf`, read from its header, so
/// that a message holding several frames back to back can be cut into them
/// ([`split`]). Checks only what the length rests on (magic, version, header
/// length, flags, body size limit, and that the frame is all there);
/// [`decode`] checks the rest of each piece.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
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
    let flags = get_u16(buf, 6);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }
    let body_len = get_u32(buf, BODY_LEN_AT);
    if body_len as usize > MAX_BODY {
        return Err(DecodeError::TooLarge { body_len });
    }
    let tagged = flags & FLAG_AUTHENTICATED != 0;
    let len = HEADER_LEN + body_len as usize + if tagged { TAG_LEN } else { 0 };
    if have < len {
        return Err(DecodeError::Truncated { need: len, have });
    }
    Ok(len)
}

/// The frames of one message, in order: a message carries one frame or
/// several back to back (a sender batches what it has queued for a peer).
/// Each piece still goes through [`decode`] and the replay window on its
/// own. A piece whose length cannot be read ends the iteration with that
/// error: nothing after it can be found again.
/// An empty message is malformed: its one item is an error.
pub fn split(msg: &[u8]) -> Split<'_> {
    Split {
        rest: msg,
        first: true,
    }
}

/// The iterator [`split`] returns.
pub struct Split<'a> {
    rest: &'a [u8],
    first: bool,
}

impl<'a> Iterator for Split<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() && !self.first {
            return None;
        }
        self.first = false;
        match frame_len(self.rest) {
            Ok(n) => {
                let (frame, rest) = self.rest.split_at(n);
                self.rest = rest;
                Some(Ok(frame))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
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
    // Magic, version, header length, flags, body size limit, total length.
    let expected = frame_len(buf)?;
    if have > expected {
        return Err(DecodeError::LengthMismatch {
            expected,
            actual: have,
        });
    }
    let kind_byte = buf[5];
    let flags = get_u16(buf, 6);
    let src_node = get_u32(buf, 8);
    let dst_node = get_u32(buf, 12);
    let seq = get_u64(buf, 16);
    let dst_epoch = get_u64(buf, 24);
    let body_len = get_u32(buf, BODY_LEN_AT);
    let tagged = flags & FLAG_AUTHENTICATED != 0;
    let signed_len = HEADER_LEN + body_len as usize;
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
