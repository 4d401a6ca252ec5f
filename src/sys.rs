//! Thin, safe wrappers over the few libc calls the runtime needs. Each
//! `unsafe` block is here, small, and says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn pid() -> u32 {
    std::process::id()
}

/// The login name of `uid` from the user database, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: zeroed passwd is a valid "empty" value for an out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and buf's
    // length is passed; on success result points at pwd, whose strings live in buf.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside buf, still alive here.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    let name = name.to_string_lossy().into_owned();
    (!name.is_empty()).then_some(name)
}

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

/// Whether a process exists and is not a zombie. EPERM means it exists but
/// belongs to someone else.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(p, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // A zombie has released everything it held; for us it is gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
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

/// The outcome of a non-blocking flock.
#[derive(Debug, PartialEq, Eq)]
pub enum LockState {
    Acquired,
    HeldElsewhere,
}

/// flock(2) with LOCK_NB: `exclusive` or shared. The kernel drops the lock
/// when the last descriptor of the open file closes, including when the
/// holder dies, which is why liveness is judged by it and not by a pid.
pub fn try_flock(fd: BorrowedFd<'_>, exclusive: bool) -> io::Result<LockState> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: fd is a valid open descriptor for the duration of the borrow.
    if unsafe { libc::flock(fd.as_raw_fd(), op) } == 0 {
        return Ok(LockState::Acquired);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(LockState::HeldElsewhere)
    } else {
        Err(err)
    }
}

pub fn unlock(fd: BorrowedFd<'_>) {
    // SAFETY: fd is a valid open descriptor; unlocking cannot corrupt memory.
    unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
}

fn shm_cname(name: &str) -> io::Result<CString> {
    CString::new(format!("/{name}"))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment name contains NUL"))
}

/// shm_open(3); the descriptor is close-on-exec.
pub fn shm_open(name: &str, flags: i32, mode: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = shm_cname(name)?;
    // SAFETY: c is NUL-terminated; shm_open returns a new descriptor or -1.
    let fd = unsafe { libc::shm_open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::mode_t) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// shm_unlink(3).
pub fn shm_unlink(name: &str) -> io::Result<()> {
    let c = shm_cname(name)?;
    // SAFETY: c is NUL-terminated.
    if unsafe { libc::shm_unlink(c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
