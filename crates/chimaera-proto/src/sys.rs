//! The few libc calls both sides of shared memory make (segments, their
//! lock, who is who). Each `unsafe` block is here, small, and says why it is
//! sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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
