//! The network thread's sockets: setting up the ROUTER peers reach this node
//! on, a DEALER per peer and the wake-up socket clients ring; encoding a
//! frame and putting it on a DEALER (requests, heartbeats) or back through
//! the ROUTER (answers), which `batch` gathers per peer.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{NetConfig, Transport};
use crate::config::hostfile::HostEntry;
use crate::net::NetError;
use crate::net::zap;
use chimaera_proto::wire::{self, Frame, HeaderFields, MAX_FRAME};

/// The routing id this node's DEALERs connect with (`chi-node-<id>`).
pub(super) fn identity(node: u32) -> Vec<u8> {
    format!("chi-node-{node}").into_bytes()
}

pub(super) fn endpoint(h: &HostEntry, zmq_port: u16) -> String {
    let port = h.port.unwrap_or(zmq_port);
    if h.host.contains(':') {
        format!("tcp://[{}]:{port}", h.host)
    } else {
        format!("tcp://{}:{port}", h.host)
    }
}

/// Binds the wake-up socket (a stale one of a dead runtime is replaced)
/// and gives it the segments' mode and group: clients need write access.
pub(super) fn bind_wake(path: &Path, access: crate::shm::Access) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        chimaera_client::discovery::make_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let sock = UnixDatagram::bind(path)?;
    sock.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode()))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(sock)
}

/// What every socket of the thread is set to.
///
/// ZeroMQ's own heartbeats (ZMTP PING/PONG) every `heartbeat`, and a
/// connection that answers none for three of them is closed: a peer whose
/// machine or container vanished sends no FIN or RST, and TCP alone would
/// keep retransmitting into the void for a quarter of an hour. A DEALER
/// whose connection is closed reconnects, and every attempt resolves the
/// peer's name again (libzmq's tcp connecter), so a peer rescheduled under
/// the same name at another address is found there.
fn setup(s: &zmq::Socket, heartbeat: Duration) -> Result<(), zmq::Error> {
    s.set_linger(0)?;
    s.set_maxmsgsize(MAX_FRAME as i64)?;
    s.set_ipv6(true)?;
    s.set_sndhwm(100_000)?;
    s.set_rcvhwm(100_000)?;
    let ms = i32::try_from(heartbeat.as_millis()).unwrap_or(i32::MAX / 3);
    s.set_heartbeat_ivl(ms)?;
    s.set_heartbeat_timeout(ms.saturating_mul(3))?;
    Ok(())
}

/// The ROUTER peers' tasks and heartbeats arrive on, bound on `port`.
pub(super) fn open_router(
    ctx: &zmq::Context,
    port: u16,
    heartbeat: Duration,
) -> Result<zmq::Socket, NetError> {
    let router = ctx.socket(zmq::ROUTER).map_err(NetError::Socket)?;
    setup(&router, heartbeat).map_err(NetError::Socket)?;
    router
        .set_zap_domain(zap::DOMAIN)
        .map_err(NetError::Socket)?;
    // A restarted peer connects with the same routing id: let it take
    // the id over instead of being refused as a duplicate.
    router.set_router_handover(true).map_err(NetError::Socket)?;
    router
        .bind(&format!("tcp://*:{port}"))
        .map_err(|e| match e {
            zmq::Error::EADDRINUSE => crate::preflight::ListenError::ZmqPortInUse { port }.into(),
            source => NetError::Bind { port, source },
        })?;
    Ok(router)
}

/// One DEALER per peer (None for this node), connected once and kept.
pub(super) fn connect_dealers(
    ctx: &zmq::Context,
    cfg: &NetConfig,
) -> Result<Vec<Option<zmq::Socket>>, NetError> {
    let mut dealers = Vec::new();
    for (i, h) in cfg.hosts.iter().enumerate() {
        if i as u32 == cfg.node_id {
            dealers.push(None);
            continue;
        }
        let d = ctx.socket(zmq::DEALER).map_err(NetError::Socket)?;
        setup(&d, cfg.heartbeat).map_err(NetError::Socket)?;
        d.set_identity(&identity(cfg.node_id))
            .map_err(NetError::Socket)?;
        // Queue nothing for a peer that is not connected: a task for it
        // fails now rather than running whenever it comes back.
        d.set_immediate(true).map_err(NetError::Socket)?;
        d.set_reconnect_ivl(100).map_err(NetError::Socket)?;
        d.set_reconnect_ivl_max(1000).map_err(NetError::Socket)?;
        d.connect(&endpoint(h, cfg.zmq_port))
            .map_err(|e| NetError::Setup(format!("connect to node {i} ({h}): {e}")))?;
        dealers.push(Some(d));
    }
    Ok(dealers)
}

/// The sockets' `ZMQ_FD`s for [`super::ready::Ready`]: the ROUTER's, then
/// each DEALER's (none for this node).
pub(super) fn readiness(
    router: &zmq::Socket,
    dealers: &[Option<zmq::Socket>],
) -> Result<super::ready::Ready, NetError> {
    let mut fds = vec![Some(router.get_fd().map_err(NetError::Socket)?)];
    for d in dealers {
        fds.push(match d {
            Some(d) => Some(d.get_fd().map_err(NetError::Socket)?),
            None => None,
        });
    }
    super::ready::Ready::new(fds)
}

impl Transport {
    /// Drops the connection to `node` and connects anew, which resolves its
    /// name again. For a peer that restarted: it may be at another address
    /// now (a rescheduled pod), and the old connection, to an address
    /// nobody answers at, would otherwise wait for ZeroMQ's heartbeat
    /// timeout. What was queued on the old connection is dropped; the
    /// restart already failed the tasks sent to the peer's last run.
    pub(super) fn reconnect(&mut self, node: u32) {
        let Some(d) = &self.dealers[node as usize] else {
            return;
        };
        let ep = endpoint(&self.hosts[node as usize], self.zmq_port);
        self.dialed[node as usize].redialed_ms = chimaera_proto::sync::mono_ms();
        self.ready.mark(super::ready::dealer(node));
        // Not connected (any more) is fine: connect is what matters.
        let _ = d.disconnect(&ep);
        if let Err(e) = d.connect(&ep) {
            slog::warn!(
                self.log,
                "cannot reconnect to node {} ({}): {}",
                node,
                ep,
                e
            );
        }
    }

    fn next_header(&self, dst: u32) -> HeaderFields {
        HeaderFields {
            src_node: self.shared.node_id,
            dst_node: dst,
            seq: self.seq.next(),
            dst_epoch: self.shared.peers[dst as usize]
                .epoch
                .load(Ordering::Relaxed),
        }
    }

    /// Encodes `frame` for `dst` into the reusable buffer.
    pub(super) fn encode(&mut self, frame: &Frame<'_>, dst: u32) -> Result<(), String> {
        let hdr = self.next_header(dst);
        self.buf.clear();
        wire::encode(frame, &hdr, self.key.as_ref(), &mut self.buf).map_err(|e| e.to_string())
    }
}
