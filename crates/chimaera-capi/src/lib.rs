//! The C ABI of the chimaera client: `libchimaera.so.0`, `libchimaera.a`
//! and `include/chimaera.h` (generated from this crate by cbindgen;
//! `tests/header.rs` fails when the two disagree). docs/CLIENTS.md is the
//! guide; the header's comments are the reference.
//!
//! Every exported function runs its body through [`error::boundary`]: a
//! Rust panic never crosses into C, and every failure leaves its code and
//! message in the calling thread's last error. Handles are boxes of the
//! Rust client's own types ([`Client`], [`OwnedTaskHandle`]), both `Send`
//! and `Sync`, which is what the header's thread-safety promise rests on.

// The C names are the header's names.
#![allow(non_camel_case_types)]

mod error;
mod pool;

use std::ffi::{CStr, c_char, c_void};
use std::path::PathBuf;
use std::time::Duration;

use ::chimaera_client::{Client, LoadOptions, OwnedTaskHandle, Task};

pub use error::chimaera_status;
use error::{Failure, Outcome, boundary, boundary_or};
pub use pool::*;

/// The admin pool, which every runtime has.
pub const CHIMAERA_ADMIN_POOL: u32 = 0;
/// Admin method: does nothing; its round trip is the runtime's latency.
pub const CHIMAERA_ADMIN_PING: u32 = 0;
/// Admin method: the output is the input.
pub const CHIMAERA_ADMIN_ECHO: u32 = 7;
/// Admin method: input a little-endian uint64_t of milliseconds; the task
/// sleeps that long (its worker runs other tasks meanwhile).
pub const CHIMAERA_ADMIN_SLEEP: u32 = 8;

/// A connection to one runtime. Opaque; from `chimaera_connect`, freed by
/// `chimaera_client_free`.
pub struct chimaera_client {
    client: Client,
}

/// A submitted task. Opaque; from `chimaera_submit` or
/// `chimaera_try_submit`, freed by `chimaera_task_free`.
pub struct chimaera_task {
    handle: OwnedTaskHandle,
}

/// Bytes the library allocated for the caller: a task's output. `data` is
/// NULL when `len` is 0. Free with `chimaera_buffer_free`.
#[repr(C)]
pub struct chimaera_buffer {
    pub data: *mut u8,
    pub len: usize,
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version holds a NUL"),
    };

pub(crate) fn invalid(why: &str) -> Failure {
    Failure::Invalid(why.to_string())
}

/// The client behind a handle the caller passed.
///
/// # Safety
/// `p` is NULL or a pointer from `chimaera_connect` not yet freed.
pub(crate) unsafe fn client_ref<'a>(p: *const chimaera_client) -> Result<&'a Client, Failure> {
    // SAFETY: the caller's contract: NULL or a live handle.
    unsafe { p.as_ref() }
        .map(|c| &c.client)
        .ok_or_else(|| invalid("the client is NULL"))
}

/// A NUL-terminated UTF-8 string the caller passed.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-null, NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(&format!("{what} is not UTF-8")))
}

/// The input bytes the caller passed; NULL is fine when `len` is 0.
///
/// # Safety
/// `p` is NULL or points to `len` readable bytes.
unsafe fn input<'a>(p: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid("input is NULL but input_len is not 0"));
    }
    // SAFETY: the caller's contract: len readable bytes at p.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// Writes `value` to a caller's out-parameter, which must not be NULL.
///
/// # Safety
/// `p` is NULL or valid for a write of a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, value: T, what: &str) -> Outcome {
    if p.is_null() {
        return Err(invalid(&format!("{what} is NULL")));
    }
    // SAFETY: non-null and writable by the caller's contract; write, not
    // assignment: the memory may be uninitialised.
    unsafe { p.write(value) };
    Ok(())
}

fn buffer_of(bytes: &[u8]) -> chimaera_buffer {
    if bytes.is_empty() {
        return chimaera_buffer {
            data: std::ptr::null_mut(),
            len: 0,
        };
    }
    let boxed: Box<[u8]> = bytes.into();
    let len = boxed.len();
    chimaera_buffer {
        data: Box::into_raw(boxed).cast::<u8>(),
        len,
    }
}

/// Clears a caller's output buffer before anything can fail, so that it is
/// empty (and safe to free) after an error.
///
/// # Safety
/// `out` is NULL or valid for a write of a `chimaera_buffer`.
unsafe fn clear_buffer(out: *mut chimaera_buffer) -> Outcome {
    // SAFETY: forwarded contract.
    unsafe {
        put(
            out,
            chimaera_buffer {
                data: std::ptr::null_mut(),
                len: 0,
            },
            "output",
        )
    }
}

/// The library's version ("0.1.0"), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn chimaera_version() -> *const c_char {
    VERSION.as_ptr()
}

/// What this thread's last failed call said: the problem and what to do.
/// "" before any failure. A successful call leaves it as it was (like
/// errno). The string stays valid until this thread's next failed call.
#[unsafe(no_mangle)]
pub extern "C" fn chimaera_last_error_message() -> *const c_char {
    error::last_message()
}

/// The status this thread's last failed call returned (CHIMAERA_OK before any).
#[unsafe(no_mangle)]
pub extern "C" fn chimaera_last_error_status() -> chimaera_status {
    error::last_status()
}

/// The module's own status when this thread's last failed call returned
/// CHIMAERA_ERR_MODULE; 0 otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn chimaera_last_module_status() -> i32 {
    error::last_module_status()
}

/// The name of a status ("CHIMAERA_ERR_TIMED_OUT"), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn chimaera_status_name(status: i32) -> *const c_char {
    // An i32, not the enum: any int a C caller passes must be defined here.
    error::status_name(status).as_ptr()
}

/// Connects to the runtime on this host the way the `chimaera` command does:
/// the file `CHI_SERVER_CONF` names, else /etc/chimaera/chimaera_config.yaml
/// when present, else the defaults; `CHI_*` variables override. Only the
/// keys that locate the runtime are read.
///
/// # Safety
/// `out` is valid for a write of a pointer. On success `*out` is a client
/// to free with `chimaera_client_free`; on failure it is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_connect(out: *mut *mut chimaera_client) -> chimaera_status {
    // SAFETY: forwarded contract; NULL config path is the default resolution.
    unsafe { chimaera_connect_config(std::ptr::null(), out) }
}

/// `chimaera_connect` with the configuration file `config_path` instead of
/// `CHI_SERVER_CONF` or the system's (`CHI_*` variables still override);
/// NULL is `chimaera_connect`.
///
/// # Safety
/// `config_path` is NULL or a NUL-terminated string; `out` as for
/// `chimaera_connect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_connect_config(
    config_path: *const c_char,
    out: *mut *mut chimaera_client,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract for `out`.
        unsafe { put(out, std::ptr::null_mut(), "out")? };
        let mut opts = LoadOptions::default();
        if !config_path.is_null() {
            // SAFETY: non-null, NUL-terminated by the caller's contract.
            let path = unsafe { text(config_path, "config_path")? };
            opts.config_path = Some(PathBuf::from(path));
        }
        let client = Client::connect_with(&opts)?;
        let handle = Box::into_raw(Box::new(chimaera_client { client }));
        // SAFETY: checked writable above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Disconnects. Tasks still held keep the connection until they are freed
/// too. NULL is ignored.
///
/// # Safety
/// `client` is NULL or from `chimaera_connect`, not freed before, and no
/// other thread uses it during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_client_free(client: *mut chimaera_client) {
    boundary_or((), || {
        if !client.is_null() {
            // SAFETY: from Box::into_raw in chimaera_connect_config, freed once.
            drop(unsafe { Box::from_raw(client) });
        }
    })
}

/// One admin ping: `*rtt_ns` is its round trip in nanoseconds.
///
/// # Safety
/// `client` is a live client; `rtt_ns` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_ping(
    client: *const chimaera_client,
    rtt_ns: *mut u64,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { client_ref(client)? };
        if rtt_ns.is_null() {
            return Err(invalid("rtt_ns is NULL"));
        }
        let rtt = c.ping()?;
        // SAFETY: checked non-null; writable by the caller's contract.
        unsafe { put(rtt_ns, rtt.as_nanos() as u64, "rtt_ns") }
    })
}

/// Submits a task and waits for it: `*output` is its output, to free with
/// `chimaera_buffer_free` (empty after an error).
///
/// # Safety
/// `client` is a live client; `input` points to `input_len` bytes (or
/// `input_len` is 0); `output` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_call(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input: *const c_void,
    input_len: usize,
    output: *mut chimaera_buffer,
) -> chimaera_status {
    // SAFETY: forwarded contract; u64::MAX ms is no limit.
    unsafe { call(client, pool, method, input, input_len, None, output) }
}

/// `chimaera_call` waiting at most `timeout_ms` milliseconds: then
/// CHIMAERA_ERR_TIMED_OUT (the runtime still runs the task).
///
/// # Safety
/// As for `chimaera_call`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_call_timeout(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input: *const c_void,
    input_len: usize,
    timeout_ms: u64,
    output: *mut chimaera_buffer,
) -> chimaera_status {
    let limit = Some(Duration::from_millis(timeout_ms));
    // SAFETY: forwarded contract.
    unsafe { call(client, pool, method, input, input_len, limit, output) }
}

/// # Safety
/// As for `chimaera_call`.
unsafe fn call(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input_ptr: *const c_void,
    input_len: usize,
    limit: Option<Duration>,
    output: *mut chimaera_buffer,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (c, bytes) = unsafe {
            clear_buffer(output)?;
            (client_ref(client)?, input(input_ptr, input_len)?)
        };
        let task = Task::new(pool, method, bytes);
        let h = c.submit(&task)?;
        let buf = match limit {
            None => h.wait_with(buffer_of)?,
            Some(limit) => h.into_owned().wait_timeout_with(limit, buffer_of)?,
        };
        // SAFETY: checked writable by clear_buffer.
        unsafe { output.write(buf) };
        Ok(())
    })
}

/// # Safety
/// As for `chimaera_submit`.
unsafe fn submit(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input_ptr: *const c_void,
    input_len: usize,
    block: bool,
    out: *mut *mut chimaera_task,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        let (c, bytes) = unsafe {
            put(out, std::ptr::null_mut(), "out")?;
            (client_ref(client)?, input(input_ptr, input_len)?)
        };
        let task = Task::new(pool, method, bytes);
        let h = if block {
            c.submit(&task)?
        } else {
            c.try_submit(&task)?
        };
        let handle = Box::into_raw(Box::new(chimaera_task {
            handle: h.into_owned(),
        }));
        // SAFETY: checked writable above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Submits a task and returns at once with `*out`, a task to wait on and
/// then free with `chimaera_task_free`. The input is copied: the caller's
/// buffer is free again on return. Waits while the runtime's lane is full
/// (back-pressure, bounded by the runtime's task_timeout).
///
/// # Safety
/// `client` is a live client; `input` points to `input_len` bytes (or
/// `input_len` is 0); `out` is valid for a write (NULL after an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_submit(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input: *const c_void,
    input_len: usize,
    out: *mut *mut chimaera_task,
) -> chimaera_status {
    // SAFETY: forwarded contract.
    unsafe { submit(client, pool, method, input, input_len, true, out) }
}

/// `chimaera_submit` that does not wait for room: CHIMAERA_ERR_QUEUE_FULL
/// when the lane is full or every task record is in use.
///
/// # Safety
/// As for `chimaera_submit`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_try_submit(
    client: *const chimaera_client,
    pool: u32,
    method: u32,
    input: *const c_void,
    input_len: usize,
    out: *mut *mut chimaera_task,
) -> chimaera_status {
    // SAFETY: forwarded contract.
    unsafe { submit(client, pool, method, input, input_len, false, out) }
}

/// # Safety
/// `task` is NULL or a live task.
unsafe fn task_ref<'a>(task: *const chimaera_task) -> Result<&'a OwnedTaskHandle, Failure> {
    // SAFETY: the caller's contract: NULL or a live task.
    unsafe { task.as_ref() }
        .map(|t| &t.handle)
        .ok_or_else(|| invalid("the task is NULL"))
}

/// Waits for the task (bounded by the runtime's task_timeout and life):
/// `*output` is its output, to free with `chimaera_buffer_free`. The task
/// stays valid: waiting again returns the same output.
///
/// # Safety
/// `task` is a live task; `output` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_task_wait(
    task: *const chimaera_task,
    output: *mut chimaera_buffer,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        let t = unsafe {
            clear_buffer(output)?;
            task_ref(task)?
        };
        let buf = t.wait_with(buffer_of)?;
        // SAFETY: checked writable by clear_buffer.
        unsafe { output.write(buf) };
        Ok(())
    })
}

/// `chimaera_task_wait` for at most `timeout_ms` milliseconds; after
/// CHIMAERA_ERR_TIMED_OUT the task still runs and may be waited on again.
///
/// # Safety
/// As for `chimaera_task_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_task_wait_timeout(
    task: *const chimaera_task,
    timeout_ms: u64,
    output: *mut chimaera_buffer,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        let t = unsafe {
            clear_buffer(output)?;
            task_ref(task)?
        };
        let buf = t.wait_timeout_with(Duration::from_millis(timeout_ms), buffer_of)?;
        // SAFETY: checked writable by clear_buffer.
        unsafe { output.write(buf) };
        Ok(())
    })
}

/// Whether the task is complete (`*done`), without waiting.
///
/// # Safety
/// `task` is a live task; `done` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_task_done(
    task: *const chimaera_task,
    done: *mut bool,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            let t = task_ref(task)?;
            put(done, t.is_done(), "done")
        }
    })
}

/// Frees a task; one not complete yet still runs, its output unread.
/// NULL is ignored.
///
/// # Safety
/// `task` is NULL or from `chimaera_submit`/`chimaera_try_submit`, not
/// freed before, and no other thread uses it during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_task_free(task: *mut chimaera_task) {
    boundary_or((), || {
        if !task.is_null() {
            // SAFETY: from Box::into_raw in submit, freed once.
            drop(unsafe { Box::from_raw(task) });
        }
    })
}

/// Frees a buffer's bytes and empties it (freeing it again does nothing).
/// NULL is ignored.
///
/// # Safety
/// `buffer` is NULL or a buffer the library filled and the caller did not
/// change.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_buffer_free(buffer: *mut chimaera_buffer) {
    boundary_or((), || {
        // SAFETY: NULL or a valid buffer by the caller's contract.
        let Some(b) = (unsafe { buffer.as_mut() }) else {
            return;
        };
        if !b.data.is_null() {
            let bytes = std::ptr::slice_from_raw_parts_mut(b.data, b.len);
            // SAFETY: data and len are a Box<[u8]> from buffer_of, freed once
            // (emptied below).
            drop(unsafe { Box::from_raw(bytes) });
        }
        b.data = std::ptr::null_mut();
        b.len = 0;
    })
}

// The thread-safety the header promises.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Client>();
    send_sync::<OwnedTaskHandle>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use chimaera_proto::admin;
    use chimaera_status::*;

    #[test]
    fn admin_constants_are_the_runtimes() {
        assert_eq!(CHIMAERA_ADMIN_POOL, admin::POOL_ID);
        assert_eq!(CHIMAERA_ADMIN_PING, admin::method::PING);
        assert_eq!(CHIMAERA_ADMIN_ECHO, admin::method::ECHO);
        assert_eq!(CHIMAERA_ADMIN_SLEEP, admin::method::SLEEP);
    }

    #[test]
    fn buffers_round_trip_and_free_twice_safely() {
        let mut b = buffer_of(b"hello");
        assert_eq!(b.len, 5);
        // SAFETY: a buffer the library filled.
        unsafe { chimaera_buffer_free(&mut b) };
        assert!(b.data.is_null() && b.len == 0);
        // SAFETY: emptied above; a second free does nothing.
        unsafe { chimaera_buffer_free(&mut b) };
        let e = buffer_of(b"");
        assert!(e.data.is_null() && e.len == 0);
    }

    #[test]
    fn null_arguments_are_refused_not_dereferenced() {
        let mut out = chimaera_buffer {
            data: std::ptr::dangling_mut::<u8>(),
            len: 9,
        };
        // SAFETY: NULL client; `out` is a valid buffer to overwrite.
        let s = unsafe { chimaera_call(std::ptr::null(), 0, 0, std::ptr::null(), 0, &mut out) };
        assert_eq!(s, CHIMAERA_ERR_INVALID_ARGUMENT);
        assert!(out.data.is_null() && out.len == 0, "cleared on failure");
        let mut t = std::ptr::dangling_mut::<chimaera_task>();
        // SAFETY: as above.
        let s = unsafe { chimaera_submit(std::ptr::null(), 0, 0, std::ptr::null(), 0, &mut t) };
        assert_eq!(s, CHIMAERA_ERR_INVALID_ARGUMENT);
        assert!(t.is_null());
        // SAFETY: NULLs throughout.
        unsafe {
            assert_eq!(
                chimaera_task_wait(std::ptr::null(), std::ptr::null_mut()),
                CHIMAERA_ERR_INVALID_ARGUMENT
            );
            chimaera_task_free(std::ptr::null_mut());
            chimaera_client_free(std::ptr::null_mut());
            chimaera_buffer_free(std::ptr::null_mut());
        }
    }
}
