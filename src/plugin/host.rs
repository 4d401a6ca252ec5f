//! A loaded library as a [`Module`]: pools of it get containers made by
//! the library, and its tasks reach the engine through [`HOST_API`], a
//! table of C functions over the task's [`TaskContext`].
//!
//! Whatever the library returns is checked like any other input: status
//! codes are mapped onto the known ones, error text is bounded and read as
//! lossy UTF-8, pointers it passes in are null-checked. A host function
//! never unwinds into the library: a panic inside one becomes an error
//! status.

use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use chimaera_module::abi::{
    self, ChiErrBuf, ChiHostApi, ChiPoolInfo, ChiStr, ChiTask, ChiTaskInfo, code,
};
use chimaera_module::{Container, Module, PoolInfo, Subtask, TaskContext, TaskError};

use super::library::{Functions, Library};

/// Room for a module's error text; longer text is cut.
const ERR_CAP: usize = 4096;

/// A plugin module: what the registry holds for a loaded library.
pub struct PluginModule {
    lib: Arc<Library>,
}

impl PluginModule {
    pub fn new(lib: Library) -> PluginModule {
        PluginModule { lib: Arc::new(lib) }
    }

    pub fn library(&self) -> &Library {
        &self.lib
    }
}

fn err_buf(store: &mut [u8]) -> ChiErrBuf {
    ChiErrBuf {
        ptr: store.as_mut_ptr(),
        cap: store.len(),
        len: 0,
    }
}

/// The module's error text: what it wrote, bounded by the buffer.
fn err_text(store: &[u8], err: &ChiErrBuf) -> String {
    String::from_utf8_lossy(&store[..err.len.min(store.len())]).into_owned()
}

impl Module for PluginModule {
    fn name(&self) -> &str {
        &self.lib.name
    }

    fn create_container(
        &self,
        pool: &PoolInfo,
        params: &[u8],
    ) -> Result<Arc<dyn Container>, String> {
        let info = ChiPoolInfo {
            id: pool.id,
            reserved: 0,
            name: ChiStr::of(&pool.name),
            module: ChiStr::of(&pool.module),
        };
        let mut store = vec![0u8; ERR_CAP];
        let mut err = err_buf(&mut store);
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `info` and its
        // strings, `params`, `handle` and the error buffer of ERR_CAP bytes.
        let status = unsafe {
            (self.lib.fns.create)(&info, params.as_ptr(), params.len(), &mut handle, &mut err)
        };
        if status != code::OK {
            let text = err_text(&store, &err);
            return Err(if text.is_empty() {
                format!(
                    "module {} refused to create the pool (status {status})",
                    self.lib.name
                )
            } else {
                text
            });
        }
        Ok(Arc::new(PluginContainer {
            lib: self.lib.clone(),
            fns: self.lib.fns,
            handle,
        }))
    }
}

/// One pool's container, made by the library.
struct PluginContainer {
    lib: Arc<Library>,
    fns: Functions,
    handle: *mut c_void,
}

// SAFETY: the module ABI requires a container to be usable from several
// threads at once (chimaera_module.h says so); the handle is only passed
// back to the library.
unsafe impl Send for PluginContainer {}
// SAFETY: as for Send.
unsafe impl Sync for PluginContainer {}

impl Container for PluginContainer {
    fn run(&self, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let info = ChiTaskInfo {
            pool_id: ctx.pool_id(),
            method: ctx.method(),
            worker: ctx.worker(),
            record: ctx.record(),
            deadline_ns: ctx.deadline_ns(),
        };
        let method = info.method;
        let mut task = HostTask {
            ctx,
            kept: RefCell::new(Vec::new()),
            last_error: RefCell::new(Vec::new()),
        };
        let mut store = vec![0u8; ERR_CAP];
        let mut err = err_buf(&mut store);
        // SAFETY: `task` outlives the call and is only reached through the
        // host functions, on this thread; the other pointers are valid for
        // the call.
        let status = unsafe {
            (self.fns.run)(
                self.handle,
                &info,
                &mut task as *mut HostTask as *mut ChiTask,
                &HOST_API,
                &mut err,
            )
        };
        let text = err_text(&store, &err);
        match status {
            code::OK => Ok(()),
            code::NO_SUCH_METHOD => Err(TaskError::NoSuchMethod(method)),
            code::BAD_INPUT => Err(TaskError::BadInput(text)),
            code::MODULE_ERROR | code::TIMED_OUT => Err(TaskError::Failed(text)),
            other => Err(TaskError::Failed(format!(
                "module {} returned an unknown status {other}{}{text}",
                self.lib.name,
                if text.is_empty() { "" } else { ": " }
            ))),
        }
    }

    fn quick(&self, method: u32) -> bool {
        match self.fns.quick {
            // SAFETY: the container's handle, as the ABI passes it.
            Some(q) => unsafe { q(self.handle, method) != 0 },
            None => false,
        }
    }
}

impl Drop for PluginContainer {
    fn drop(&mut self) {
        // The last reference: the pool is gone and none of its tasks runs.
        if let Some(d) = self.fns.destroy {
            // SAFETY: the handle `create` made, freed once, after its last use.
            unsafe { d(self.handle) }
        }
    }
}

/// A running plugin task: its context, and what the host handed the module
/// that must stay valid until `run` returns.
struct HostTask<'t, 'c> {
    ctx: &'t mut TaskContext<'c>,
    /// Subtask outputs and error texts handed out by `wait`.
    kept: RefCell<Vec<Vec<u8>>>,
    last_error: RefCell<Vec<u8>>,
}

/// Runs a host function's body on the task; a null task or a panic gives
/// `fail`.
///
/// # Safety
/// `task` is null or the `HostTask` this thread's `run` passed.
unsafe fn with_task<R>(
    task: *mut ChiTask,
    fail: R,
    f: impl FnOnce(&mut HostTask<'_, '_>) -> R,
) -> R {
    if task.is_null() {
        return fail;
    }
    // SAFETY: the caller's promise; the module calls host functions only
    // during `run`, while `run`'s HostTask is alive and not otherwise used.
    let t = unsafe { &mut *(task as *mut HostTask<'_, '_>) };
    catch_unwind(AssertUnwindSafe(|| f(t))).unwrap_or(fail)
}

impl HostTask<'_, '_> {
    fn fail(&self, e: &TaskError) -> i32 {
        let text = match e {
            TaskError::BadInput(m) | TaskError::Failed(m) => m.clone(),
            other => other.to_string(),
        };
        *self.last_error.borrow_mut() = text.into_bytes();
        e.status()
    }

    /// Keeps `bytes` until `run` returns; their address.
    fn keep(&self, bytes: Vec<u8>) -> (*const u8, usize) {
        let mut kept = self.kept.borrow_mut();
        kept.push(bytes);
        let b = kept.last().expect("just pushed");
        // A Vec's heap buffer does not move when the outer Vec grows.
        (b.as_ptr(), b.len())
    }
}

/// # Safety
/// `ptr` is null with `len` 0, or `len` readable bytes (the module's
/// promise, which the ABI states).
unsafe fn module_bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    match (ptr.is_null(), len) {
        (_, 0) => Some(&[]),
        (true, _) => None,
        // SAFETY: the caller's promise.
        (false, _) => Some(unsafe { std::slice::from_raw_parts(ptr, len) }),
    }
}

unsafe extern "C" fn host_input(task: *mut ChiTask, len: *mut usize) -> *const u8 {
    // SAFETY: the module passes the task it was given.
    unsafe {
        with_task(task, std::ptr::null(), |t| {
            let input = t.ctx.input();
            if !len.is_null() {
                *len = input.len();
            }
            input.as_ptr()
        })
    }
}

unsafe extern "C" fn host_input_len(task: *mut ChiTask) -> usize {
    // SAFETY: as above.
    unsafe { with_task(task, 0, |t| t.ctx.input_len()) }
}

unsafe extern "C" fn host_read_input(
    task: *mut ChiTask,
    at: usize,
    dst: *mut u8,
    cap: usize,
) -> usize {
    if dst.is_null() || cap == 0 {
        return 0;
    }
    // SAFETY: as above; dst is writable for cap bytes (the module's promise).
    unsafe {
        with_task(task, 0, |t| {
            let dst = std::slice::from_raw_parts_mut(dst, cap);
            t.ctx.read_input(at, dst)
        })
    }
}

unsafe extern "C" fn host_set_output(task: *mut ChiTask, ptr: *const u8, len: usize) -> i32 {
    // SAFETY: as above.
    unsafe {
        with_task(task, code::MODULE_ERROR, |t| {
            let Some(bytes) = module_bytes(ptr, len) else {
                return t.fail(&TaskError::Failed(
                    "set_output: a null pointer with a length".into(),
                ));
            };
            match t.ctx.set_output(bytes) {
                Ok(()) => code::OK,
                Err(e) => t.fail(&e),
            }
        })
    }
}

unsafe extern "C" fn host_output_buffer(task: *mut ChiTask, len: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe {
        with_task(task, std::ptr::null_mut(), |t| {
            match t.ctx.output_buffer(len) {
                Ok(buf) => buf.as_mut_ptr(),
                Err(e) => {
                    t.fail(&e);
                    std::ptr::null_mut()
                }
            }
        })
    }
}

unsafe extern "C" fn host_yield_now(task: *mut ChiTask) {
    // SAFETY: as above.
    unsafe { with_task(task, (), |t| t.ctx.yield_now()) }
}

unsafe extern "C" fn host_submit(
    task: *mut ChiTask,
    pool: u32,
    method: u32,
    input: *const u8,
    len: usize,
    local: u32,
    sub: *mut u32,
) -> i32 {
    // SAFETY: as above.
    unsafe {
        with_task(task, code::MODULE_ERROR, |t| {
            let Some(input) = module_bytes(input, len) else {
                return t.fail(&TaskError::Failed(
                    "submit: a null input with a length".into(),
                ));
            };
            if sub.is_null() {
                return t.fail(&TaskError::Failed(
                    "submit: no place for the subtask's id".into(),
                ));
            }
            match t.ctx.submit(pool, method, input, local != 0) {
                Ok(s) => {
                    *sub = s.id();
                    code::OK
                }
                Err(e) => t.fail(&e),
            }
        })
    }
}

unsafe extern "C" fn host_wait(
    task: *mut ChiTask,
    sub: u32,
    out: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: as above.
    unsafe {
        with_task(task, code::MODULE_ERROR, |t| {
            let (status, bytes) = match t.ctx.wait(&Subtask::new(sub)) {
                Ok(o) => (code::OK, o),
                Err(e) => {
                    let s = t.fail(&e);
                    (s, t.last_error.borrow().clone())
                }
            };
            let (p, n) = t.keep(bytes);
            if !out.is_null() {
                *out = p;
            }
            if !out_len.is_null() {
                *out_len = n;
            }
            status
        })
    }
}

unsafe extern "C" fn host_deadline_ns(task: *mut ChiTask) -> u64 {
    // SAFETY: as above.
    unsafe { with_task(task, 0, |t| t.ctx.deadline_ns()) }
}

unsafe extern "C" fn host_log(task: *mut ChiTask, level: u32, msg: *const u8, len: usize) {
    // SAFETY: as above.
    unsafe {
        with_task(task, (), |t| {
            if let Some(m) = module_bytes(msg, len.min(64 * 1024)) {
                t.ctx.log(level, &String::from_utf8_lossy(m));
            }
        })
    }
}

unsafe extern "C" fn host_last_error(task: *mut ChiTask, len: *mut usize) -> *const u8 {
    // SAFETY: as above.
    unsafe {
        with_task(task, std::ptr::null(), |t| {
            let e = t.last_error.borrow();
            if !len.is_null() {
                *len = e.len();
            }
            e.as_ptr()
        })
    }
}

/// The host functions every plugin task gets.
pub static HOST_API: ChiHostApi = ChiHostApi {
    struct_size: size_of::<ChiHostApi>(),
    input: host_input,
    input_len: host_input_len,
    read_input: host_read_input,
    set_output: host_set_output,
    output_buffer: host_output_buffer,
    yield_now: host_yield_now,
    submit: host_submit,
    wait: host_wait,
    deadline_ns: host_deadline_ns,
    log: host_log,
    last_error: host_last_error,
};

const _: () = assert!(abi::ABI_VERSION == 1, "HOST_API fills the ABI 1 table");
