//! The C ABI between the daemon and a module library (a plugin): what a
//! `.so` exports, what the daemon hands it, and the numbers both sides check
//! before the first call. `include/chimaera_module.h` declares the same
//! things for C and C++; a test compiles it and compares every struct's size
//! and field offsets, the constants and [`LAYOUT_HASH`] with this file.
//!
//! The shape, in short:
//!
//! - The library exports one symbol, [`ENTRY_SYMBOL`], a function without
//!   arguments that returns a pointer to a static [`ChiModuleDescriptor`]
//!   (or null when the module cannot be made).
//! - The descriptor says which ABI it was built for ([`ABI_VERSION`],
//!   [`LAYOUT_HASH`]), names the module and its version, and holds the
//!   module's functions: `create` a container for a new pool, `run` a task
//!   in a container, `quick`, `destroy`.
//! - `run` gets the task as an opaque [`ChiTask`] pointer and the host's
//!   functions ([`ChiHostApi`]): input, output, yield, subtasks, deadline,
//!   log. Everything the host returns stays valid until the task's `run`
//!   returns, unless a function says otherwise.
//!
//! Byte strings cross as pointer and length, never NUL-terminated; text is
//! UTF-8. Nothing allocated on one side is freed on the other: the module
//! writes error text into a buffer the host owns ([`ChiErrBuf`]), and the
//! host keeps what it returns until the task ends.
//!
//! Rules a module follows (the daemon cannot check them): `run` and `quick`
//! may be called from several threads at once, for the same container, so
//! a container guards its own state; `run` may be suspended inside a host
//! function (`yield_now`, `wait`, a `submit` into a full lane) and resumed
//! on the same thread later, so it holds no lock across those calls; no
//! C++ exception or Rust panic leaves an exported function.

use std::ffi::c_void;
use std::mem::{align_of, offset_of, size_of};

/// The ABI this crate and `chimaera_module.h` describe. A change that an
/// older module or daemon would misread (a function added to a table, a
/// meaning changed) takes the next number; the daemon loads only its own.
pub const ABI_VERSION: u32 = 1;

/// The function every module library exports (`chimaera_module_entry`).
pub const ENTRY_SYMBOL: &str = "chimaera_module_entry";

/// The version of this SDK (the `chimaera-module` crate), written into the
/// descriptor of every module built with it, for diagnostics.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Status codes a module's functions return (the task statuses of the
/// record protocol, so a client sees them unchanged).
pub mod code {
    use chimaera_proto::record::status;
    pub const OK: i32 = status::OK;
    pub const MODULE_ERROR: i32 = status::MODULE_ERROR;
    pub const NO_SUCH_METHOD: i32 = status::NO_SUCH_METHOD;
    pub const BAD_INPUT: i32 = status::BAD_INPUT;
    pub const TIMED_OUT: i32 = status::TIMED_OUT;
}

/// Log levels of [`ChiHostApi::log`], most severe first.
pub mod level {
    pub const ERROR: u32 = 0;
    pub const WARNING: u32 = 1;
    pub const INFO: u32 = 2;
    pub const DEBUG: u32 = 3;
    pub const TRACE: u32 = 4;
}

/// Bytes owned by whoever hands them over: `len` bytes at `ptr` (which may
/// be null when `len` is 0). Text is UTF-8, not NUL-terminated.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl ChiStr {
    /// A view of `s`; valid as long as `s` is.
    pub const fn of(s: &str) -> ChiStr {
        ChiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    pub const EMPTY: ChiStr = ChiStr {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// A buffer the host owns, for the module's error text: the module writes
/// at most `cap` bytes at `ptr` and sets `len` to how many it wrote.
#[repr(C)]
#[derive(Debug)]
pub struct ChiErrBuf {
    pub ptr: *mut u8,
    pub cap: usize,
    pub len: usize,
}

/// The pool a container is created for.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChiPoolInfo {
    pub id: u32,
    pub reserved: u32,
    pub name: ChiStr,
    pub module: ChiStr,
}

/// The task `run` runs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChiTaskInfo {
    pub pool_id: u32,
    pub method: u32,
    /// The worker running it, or `0xffff_ffff` for the network thread.
    pub worker: u32,
    /// The task's record in the main segment, for diagnostics.
    pub record: u32,
    /// CLOCK_MONOTONIC ns after which the task's client gets a timeout.
    pub deadline_ns: u64,
}

/// The running task, as the host knows it: only ever passed back to the
/// host's functions.
#[repr(C)]
pub struct ChiTask {
    _opaque: [u8; 0],
}

/// The host's functions, handed to every `run`. Each takes the task it was
/// handed; none may be called after that `run` returned, or from another
/// thread than the one running it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChiHostApi {
    /// `size_of::<ChiHostApi>()` as the host built it.
    pub struct_size: usize,
    /// The task's input; its length in `*len`. Valid until `run` returns.
    pub input: unsafe extern "C" fn(task: *mut ChiTask, len: *mut usize) -> *const u8,
    /// The input's length, without copying it.
    pub input_len: unsafe extern "C" fn(task: *mut ChiTask) -> usize,
    /// Copies input bytes from `at` into `dst` (at most `cap`); returns how
    /// many (fewer at the end of the input).
    pub read_input:
        unsafe extern "C" fn(task: *mut ChiTask, at: usize, dst: *mut u8, cap: usize) -> usize,
    /// Sets the task's output (replacing any set before). 0, or a status
    /// with the reason in `last_error`.
    pub set_output: unsafe extern "C" fn(task: *mut ChiTask, ptr: *const u8, len: usize) -> i32,
    /// A zeroed output of `len` bytes to fill in place; it becomes the
    /// output when `run` returns 0. Valid until the next `set_output` or
    /// `output_buffer`. Null, with the reason in `last_error`, if refused.
    pub output_buffer: unsafe extern "C" fn(task: *mut ChiTask, len: usize) -> *mut u8,
    /// Lets other tasks run; this one goes on at its worker's next pass.
    pub yield_now: unsafe extern "C" fn(task: *mut ChiTask),
    /// Submits a subtask to `pool` (to the worker's own lane when `local`
    /// is non-zero); its id in `*sub`. 0, or a status with the reason in
    /// `last_error`.
    pub submit: unsafe extern "C" fn(
        task: *mut ChiTask,
        pool: u32,
        method: u32,
        input: *const u8,
        len: usize,
        local: u32,
        sub: *mut u32,
    ) -> i32,
    /// Suspends the task until subtask `sub` completes. 0 and its output in
    /// `*out`/`*out_len`, or a status and the reason there. Valid until
    /// `run` returns.
    pub wait: unsafe extern "C" fn(
        task: *mut ChiTask,
        sub: u32,
        out: *mut *const u8,
        out_len: *mut usize,
    ) -> i32,
    /// CLOCK_MONOTONIC ns after which the task's client gets a timeout.
    pub deadline_ns: unsafe extern "C" fn(task: *mut ChiTask) -> u64,
    /// Writes a line to the daemon's log, at one of the [`level`]s.
    pub log: unsafe extern "C" fn(task: *mut ChiTask, level: u32, msg: *const u8, len: usize),
    /// Why the last host function that failed on this task failed.
    /// Valid until the next call of a host function.
    pub last_error: unsafe extern "C" fn(task: *mut ChiTask, len: *mut usize) -> *const u8,
}

/// Makes a container for a new pool: `*container` is then whatever the
/// module wants `run` to get (null is allowed). 0, or a status with the
/// reason written into `err`.
pub type CreateFn = unsafe extern "C" fn(
    pool: *const ChiPoolInfo,
    params: *const u8,
    params_len: usize,
    container: *mut *mut c_void,
    err: *mut ChiErrBuf,
) -> i32;

/// Runs a task in a container. 0 for success, or a status ([`code`]) with
/// the reason in `err` (for `NO_SUCH_METHOD` it may stay empty).
pub type RunFn = unsafe extern "C" fn(
    container: *mut c_void,
    info: *const ChiTaskInfo,
    task: *mut ChiTask,
    host: *const ChiHostApi,
    err: *mut ChiErrBuf,
) -> i32;

/// Non-zero if `method` never blocks its thread (see
/// `Container::quick`); null in the descriptor means never.
pub type QuickFn = unsafe extern "C" fn(container: *mut c_void, method: u32) -> u32;

/// Frees a container: called once, after the pool was destroyed and the
/// last of its tasks returned. Null in the descriptor: nothing to free.
pub type DestroyFn = unsafe extern "C" fn(container: *mut c_void);

/// What [`ENTRY_SYMBOL`] returns: static, read once by the host.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChiModuleDescriptor {
    /// [`ABI_VERSION`] of the SDK the module was built with. Read first,
    /// before anything else of the descriptor.
    pub abi_version: u32,
    /// `size_of::<ChiModuleDescriptor>()` as the module built it.
    pub descriptor_size: u32,
    /// [`LAYOUT_HASH`] of the SDK the module was built with.
    pub layout_hash: u64,
    /// The module's name: pools name it (`compose:`, `pool create`).
    pub name: ChiStr,
    /// The module's own version, for diagnostics.
    pub version: ChiStr,
    /// [`SDK_VERSION`] of the SDK it was built with.
    pub sdk_version: ChiStr,
    pub create: Option<CreateFn>,
    pub run: Option<RunFn>,
    pub quick: Option<QuickFn>,
    pub destroy: Option<DestroyFn>,
}

/// The entry symbol's type.
pub type EntryFn = unsafe extern "C" fn() -> *const ChiModuleDescriptor;

/// One line of the layout both sides must agree on: a struct's size and
/// alignment, or one field's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutItem {
    pub ty: &'static str,
    /// Empty for the struct's own line.
    pub field: &'static str,
    /// The struct's size, or the field's offset.
    pub value: usize,
    /// The struct's alignment; 0 on field lines.
    pub align: usize,
}

macro_rules! layout {
    ($( $ty:ident { $($field:ident),* } )*) => {
        /// Every ABI struct's size and alignment and each field's offset,
        /// in declaration order: what [`LAYOUT_HASH`] is computed from and
        /// what the header test compares with C's `sizeof`/`offsetof`.
        pub const LAYOUT: &[LayoutItem] = &[ $(
            LayoutItem { ty: stringify!($ty), field: "", value: size_of::<$ty>(), align: align_of::<$ty>() },
            $( LayoutItem { ty: stringify!($ty), field: stringify!($field), value: offset_of!($ty, $field), align: 0 }, )*
        )* ];
    };
}

layout! {
    ChiStr { ptr, len }
    ChiErrBuf { ptr, cap, len }
    ChiPoolInfo { id, reserved, name, module }
    ChiTaskInfo { pool_id, method, worker, record, deadline_ns }
    ChiHostApi { struct_size, input, input_len, read_input, set_output, output_buffer,
        yield_now, submit, wait, deadline_ns, log, last_error }
    ChiModuleDescriptor { abi_version, descriptor_size, layout_hash, name, version,
        sdk_version, create, run, quick, destroy }
}

/// The text of one [`LayoutItem`], as the hash and the header test see it:
/// `Type size align` or `Type.field offset`.
pub fn layout_line(item: &LayoutItem) -> String {
    if item.field.is_empty() {
        format!("{} {} {}", item.ty, item.value, item.align)
    } else {
        format!("{}.{} {}", item.ty, item.field, item.value)
    }
}

/// FNV-1a over the [`LAYOUT`] lines, each followed by a newline, with the
/// ABI version first: two builds that agree on it lay out every struct the
/// same way.
pub const LAYOUT_HASH: u64 = layout_hash();

const fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

const fn fnv_num(h: u64, mut n: usize) -> u64 {
    // Decimal digits, most significant first, as `layout_line` prints them.
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut out = [0u8; 20];
    let mut i = 0;
    while i < len {
        out[i] = digits[len - 1 - i];
        i += 1;
    }
    let (used, _) = out.split_at(len);
    fnv(h, used)
}

const fn layout_hash() -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, b"chimaera-module-abi ");
    h = fnv_num(h, ABI_VERSION as usize);
    h = fnv(h, b"\n");
    let mut i = 0;
    while i < LAYOUT.len() {
        let it = &LAYOUT[i];
        h = fnv(h, it.ty.as_bytes());
        if it.field.is_empty() {
            h = fnv(h, b" ");
            h = fnv_num(h, it.value);
            h = fnv(h, b" ");
            h = fnv_num(h, it.align);
        } else {
            h = fnv(h, b".");
            h = fnv(h, it.field.as_bytes());
            h = fnv(h, b" ");
            h = fnv_num(h, it.value);
        }
        h = fnv(h, b"\n");
        i += 1;
    }
    h
}

/// The same hash computed at run time from the lines, to test the const
/// one against the text.
pub fn layout_hash_of(lines: &[String]) -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, b"chimaera-module-abi ");
    h = fnv(h, format!("{ABI_VERSION}\n").as_bytes());
    for l in lines {
        h = fnv(h, l.as_bytes());
        h = fnv(h, b"\n");
    }
    h
}

/// Copies `msg` into `err` (truncated to its capacity, at a character
/// boundary). `err` may be null.
///
/// # Safety
/// `err` is null or points to a `ChiErrBuf` whose `ptr` is writable for
/// `cap` bytes.
pub unsafe fn write_error(err: *mut ChiErrBuf, msg: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: the caller's promise: a valid, exclusive ChiErrBuf.
    let err = unsafe { &mut *err };
    if err.ptr.is_null() {
        return;
    }
    let mut n = msg.len().min(err.cap);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: n <= cap bytes at ptr are writable (the caller's promise).
    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), err.ptr, n) };
    err.len = n;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_const_hash_is_the_hash_of_the_layout_text() {
        let lines: Vec<String> = LAYOUT.iter().map(layout_line).collect();
        assert_eq!(LAYOUT_HASH, layout_hash_of(&lines));
    }

    #[test]
    fn error_text_is_cut_at_a_character_boundary() {
        let mut buf = [0u8; 4];
        let mut err = ChiErrBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
            len: 0,
        };
        // SAFETY: err describes `buf`, 4 writable bytes.
        unsafe { write_error(&mut err, "abcé!") };
        assert_eq!(err.len, 3);
        assert_eq!(&buf[..3], b"abc");
    }
}
