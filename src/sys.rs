//! Thin, safe wrappers over the few libc calls the runtime needs. Each
//! `unsafe` block is here, small, and says why it is sound. Those a client
//! makes too live in `chimaera_proto::sys` and are re-exported here.

pub use chimaera_proto::sys::{
    LockState, euid, pid, pid_alive, shm_open, shm_unlink, try_flock, unlock, user_name,
};

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The gid of a group name, if the group exists.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: zeroed group is a valid out-parameter value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// (total, available to unprivileged users) bytes of the filesystem at `path`.
pub fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: zeroed statvfs is a valid out-parameter value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is a valid out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize;
    Ok((st.f_blocks * frsize, st.f_bavail * frsize))
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let p = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(p, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts SIGPIPE back to its default (end the process quietly), for the
/// command line's printing subcommands: Rust ignores it, so a write to a
/// closed pipe (`chimaera config keys | head -1`) is an error that
/// `println!` turns into a panic. The daemon keeps ignoring it.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; it runs before any
    // thread of ours is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// fchown(2) to a group, keeping the owner.
pub fn fchown_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
    // SAFETY: fd is valid for the borrow; uid -1 leaves the owner unchanged.
    if unsafe { libc::fchown(fd.as_raw_fd(), u32::MAX, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's CPU mask.
pub fn affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid (empty) set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid out-parameter of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

/// Sets the calling thread's CPU mask (children inherit it).
pub fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: set points at a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The IP addresses of this machine's network interfaces, as `getifaddrs`
/// lists them (interfaces that are down included: an address being
/// configured is enough to say who we are).
pub fn interface_addrs() -> io::Result<Vec<std::net::IpAddr>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: head is a valid out-parameter; on success it points at a list
    // that we own until the freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet
        // freed; we only read it.
        let ifa = unsafe { &*cur };
        let sa = ifa.ifa_addr;
        if !sa.is_null() {
            // SAFETY: a non-null ifa_addr points at a sockaddr whose family
            // field is valid to read.
            let family = i32::from(unsafe { (*sa).sa_family });
            if family == libc::AF_INET {
                // SAFETY: for AF_INET the kernel stores a full sockaddr_in;
                // read_unaligned makes no alignment assumption.
                let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
                // s_addr is in network order, i.e. its bytes in memory are the octets.
                addrs.push(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )));
            } else if family == libc::AF_INET6 {
                // SAFETY: for AF_INET6 the kernel stores a full sockaddr_in6.
                let sin6 = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
                addrs.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs, is freed exactly once, and nothing
    // read from the list (all copied above) outlives this call.
    unsafe { libc::freeifaddrs(head) };
    Ok(addrs)
}

/// This machine's host name (`gethostname`), if it has a usable one.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of buf.len() bytes; gethostname writes
    // at most that many.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    // POSIX leaves truncation without a NUL unspecified; take up to the
    // first NUL or the whole buffer.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A non-blocking eventfd: a counter another thread bumps to wake a poller.
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes no pointers; a non-negative result is a fresh fd we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes whoever polls it).
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an fd we borrow. A full
    // counter (EAGAIN) already means "readable", which is all we want.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Resets an eventfd's counter to zero.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64; EAGAIN (already zero) is fine.
    let _ = unsafe { libc::read(fd.as_raw_fd(), (&raw mut v).cast(), 8) };
}

/// A TCP port nobody listens on now, for a daemon the caller is about to
/// start (the benches' and the tests'), chosen below the kernel's ephemeral
/// range (`net.ipv4.ip_local_port_range`). A port from bind(0) comes from
/// that range, which outgoing connections draw their source ports from: on
/// a host where daemons connect to each other, one could take the port
/// between this choice and the daemon's bind ("zmq_port ... is already in
/// use"). Random, so that processes choosing at once rarely meet; checked
/// free on every address, as the daemon binds it.
pub fn free_listen_port() -> io::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FROM: u16 = 10_000;
    if low > FROM + 1000 {
        let span = u64::from(low - FROM);
        let mut x = chimaera_proto::sync::now_ns() ^ (u64::from(pid()) << 32) | 1;
        for _ in 0..256 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = FROM + (x % span) as u16;
            if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
