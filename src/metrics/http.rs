//! The endpoint: one thread, one request per connection, bounded heads.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slog::warn;

use super::snapshot::gather;
use super::text::render;
use crate::engine::runtime::RuntimeCore;

/// Largest request head read; a scraper's is a few hundred bytes.
pub const MAX_REQUEST: usize = 8192;
/// How long a connection may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection's unread input is drained after the answer.
const LINGER: Duration = Duration::from_millis(200);
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Listen(#[from] crate::preflight::ListenError),
    #[error("cannot start the metrics endpoint: {0}")]
    Setup(io::Error),
}

/// The running endpoint; stopping (or dropping) it joins its thread, which
/// must happen before the engine's segments go (it reads them).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `address:port` and serves `GET /metrics` from `core`.
    pub fn start(
        address: IpAddr,
        port: u16,
        core: Arc<RuntimeCore>,
        main_len: u64,
        log: &slog::Logger,
    ) -> Result<Server, MetricsError> {
        let listener = crate::preflight::metrics_listener(address, port)?;
        listener
            .set_nonblocking(true)
            .map_err(MetricsError::Setup)?;
        let addr = listener.local_addr().map_err(MetricsError::Setup)?;
        let wake = Arc::new(crate::sys::eventfd().map_err(MetricsError::Setup)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (t_stop, t_wake, t_log) = (stop.clone(), wake.clone(), log.clone());
        let thread = std::thread::Builder::new()
            .name("chi-metrics".into())
            .spawn(move || {
                let render = || render(&gather(&core, main_len));
                accept_loop(&listener, t_wake.as_fd(), &t_stop, &render, &t_log)
            })
            .map_err(MetricsError::Setup)?;
        Ok(Server {
            addr,
            stop,
            wake,
            thread: Some(thread),
        })
    }

    /// Where it listens (the port is the real one when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; a request in progress finishes first (bounded by the
    /// request and write timeouts).
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Release);
            crate::sys::eventfd_signal(self.wake.as_fd());
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Sleeps until the listener or the stop eventfd is readable.
fn wait(listener: BorrowedFd<'_>, wake: BorrowedFd<'_>) {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a live array of two pollfd for the whole call, its
    // length is passed, and poll writes only their `revents`; both fds are
    // borrowed, so open. EINTR and errors just send the caller round again.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
}

fn accept_loop(
    listener: &TcpListener,
    wake: BorrowedFd<'_>,
    stop: &AtomicBool,
    render: &dyn Fn() -> String,
    log: &slog::Logger,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        wait(listener.as_fd(), wake);
        if stop.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => serve(stream, render),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of descriptors and the like: the listener stays
                // readable, so pause rather than spin, and say so now and
                // then.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(log, "metrics endpoint cannot accept a connection: {}", e);
                    last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Where a request head ends (just past its blank line), if it does.
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Reads one request head and answers it, all bounded; errors on the
/// connection only end it.
fn serve(mut stream: TcpStream, render: &dyn Fn() -> String) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; say so anyway,
    // the timeouts below rely on blocking reads.
    let _ = stream.set_nonblocking(false);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let reply = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break respond(&buf[..end], render);
        }
        if len == buf.len() {
            break error(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break error(408, "Request Timeout", "no complete request in time\n");
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) if len == 0 => return,
            Ok(0) => break error(400, "Bad Request", "incomplete request\n"),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break error(408, "Request Timeout", "no complete request in time\n");
            }
            Err(_) => return,
        }
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if stream.write_all(&reply).is_err() || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // Closing with unread input makes the kernel reset the connection, and
    // a reset can destroy the answer before the client has read it (an
    // oversized request's 431). So read what the client still sends, bounded
    // in time and bytes, before closing.
    let until = Instant::now() + LINGER;
    let mut drained = 0;
    while drained < MAX_REQUEST * 8 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn response(status: u16, reason: &str, extra: &str, body: &str, with_body: bool) -> Vec<u8> {
    let ctype = if status == 200 {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

fn error(status: u16, reason: &str, body: &str) -> Vec<u8> {
    response(status, reason, "", body, true)
}

/// The answer to a complete request head: `GET`/`HEAD /metrics` (a query
/// string is ignored) is served; any other request is refused.
pub(super) fn respond(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return error(400, "Bad Request", "malformed request line\n");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return error(400, "Bad Request", "malformed request line\n");
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return error(400, "Bad Request", "malformed request line\n");
    }
    if method != "GET" && method != "HEAD" {
        return response(
            405,
            "Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET /metrics is served\n",
            true,
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return error(404, "Not Found", "not found: the metrics are at /metrics\n");
    }
    response(200, "OK", "", &render(), method == "GET")
}
