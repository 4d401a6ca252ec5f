//! A Rust module as a plugin: [`export_module!`](crate::export_module)
//! exports the C ABI ([`crate::abi`]) for a [`Module`], so that the daemon
//! `apt install` gives loads it from a `cdylib` (see docs/MODULES.md).
//!
//! Each plugin library links its own copy of this crate, so the module it
//! exports lives in this file's statics: one per library. Every function
//! the daemon calls catches panics; a panicking task ends with an error
//! that names the panic, and the daemon goes on.

use std::cell::OnceCell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};

use crate::abi::{self, ChiErrBuf, ChiHostApi, ChiModuleDescriptor, ChiStr, ChiTask, code};
use crate::{Container, Module, PoolInfo, Subtask, TaskContext, TaskError, TaskHost, TaskInfo};

struct Exported {
    module: Box<dyn Module>,
    descriptor: ChiModuleDescriptor,
}

// SAFETY: the descriptor's pointers point at 'static strings (the module's
// name, which the boxed module owns and never drops, and literals); nothing
// is written through them.
unsafe impl Send for Exported {}
// SAFETY: as for Send: immutable after construction.
unsafe impl Sync for Exported {}

static EXPORTED: OnceLock<Option<Exported>> = OnceLock::new();

/// What the entry symbol of [`export_module!`](crate::export_module)
/// returns: the descriptor of the module `make` builds (once), or null if
/// building it panicked. Not for direct use.
#[doc(hidden)]
pub fn entry(make: fn() -> Box<dyn Module>, version: &'static str) -> *const ChiModuleDescriptor {
    let exported = EXPORTED.get_or_init(|| {
        let module = catch_unwind(make).ok()?;
        // SAFETY: the name borrows the boxed module, which lives in this
        // static for the rest of the process.
        let name: &'static str = unsafe { &*(module.name() as *const str) };
        Some(Exported {
            descriptor: ChiModuleDescriptor {
                abi_version: abi::ABI_VERSION,
                descriptor_size: size_of::<ChiModuleDescriptor>() as u32,
                layout_hash: abi::LAYOUT_HASH,
                name: ChiStr::of(name),
                version: ChiStr::of(version),
                sdk_version: ChiStr::of(abi::SDK_VERSION),
                create: Some(create),
                run: Some(run),
                quick: Some(quick),
                destroy: Some(destroy),
            },
            module,
        })
    });
    match exported {
        Some(e) => &e.descriptor,
        None => std::ptr::null(),
    }
}

/// # Safety
/// The host's promise: `bytes` is null with `len` 0, or `len` readable bytes.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// # Safety
/// As [`bytes`]; the host passes UTF-8 names.
unsafe fn text(s: ChiStr) -> String {
    // SAFETY: the caller's promise.
    String::from_utf8_lossy(unsafe { bytes(s.ptr, s.len) }).into_owned()
}

unsafe extern "C" fn create(
    pool: *const abi::ChiPoolInfo,
    params: *const u8,
    params_len: usize,
    container: *mut *mut c_void,
    err: *mut ChiErrBuf,
) -> i32 {
    let made = catch_unwind(AssertUnwindSafe(|| {
        let Some(Some(exported)) = EXPORTED.get() else {
            return Err("the module was not made (its entry failed)".to_string());
        };
        if pool.is_null() || container.is_null() {
            return Err("the host passed a null pool or container pointer".into());
        }
        // SAFETY: the host passes a valid pool info for the call.
        let pool = unsafe { *pool };
        let info = PoolInfo {
            id: pool.id,
            // SAFETY: the host's strings are valid for the call.
            name: unsafe { text(pool.name) },
            // SAFETY: as above.
            module: unsafe { text(pool.module) },
        };
        // SAFETY: params_len bytes at params, valid for the call.
        let params = unsafe { bytes(params, params_len) };
        let c = exported.module.create_container(&info, params)?;
        // SAFETY: `container` is non-null (checked) and writable.
        unsafe { *container = Box::into_raw(Box::new(c)) as *mut c_void };
        Ok(())
    }));
    let message = match made {
        Ok(Ok(())) => return code::OK,
        Ok(Err(m)) => m,
        Err(p) => format!(
            "the module panicked creating the container: {}",
            crate::panic_message(&*p)
        ),
    };
    // SAFETY: the host's error buffer.
    unsafe { abi::write_error(err, &message) };
    code::MODULE_ERROR
}

unsafe extern "C" fn run(
    container: *mut c_void,
    info: *const abi::ChiTaskInfo,
    task: *mut ChiTask,
    host: *const ChiHostApi,
    err: *mut ChiErrBuf,
) -> i32 {
    let ran = catch_unwind(AssertUnwindSafe(|| {
        if container.is_null() || info.is_null() || host.is_null() {
            return Err(TaskError::Failed("the host passed a null pointer".into()));
        }
        // SAFETY: `container` is what `create` returned, alive until
        // `destroy` (the host's promise).
        let c = unsafe { &*(container as *const Arc<dyn Container>) };
        // SAFETY: valid for the call.
        let i = unsafe { *info };
        let info = TaskInfo {
            pool_id: i.pool_id,
            method: i.method,
            worker: i.worker,
            deadline_ns: i.deadline_ns,
            record: i.record,
        };
        let mut h = ForeignHost {
            task,
            // SAFETY: valid for the call.
            api: unsafe { *host },
            input: OnceCell::new(),
        };
        c.run(&mut TaskContext::new(info, &mut h))
    }));
    let e = match ran {
        Ok(Ok(())) => return code::OK,
        Ok(Err(e)) => e,
        Err(p) => TaskError::Failed(format!(
            "the module panicked: {}",
            crate::panic_message(&*p)
        )),
    };
    let message = match &e {
        TaskError::NoSuchMethod(_) => String::new(),
        TaskError::BadInput(m) | TaskError::Failed(m) => m.clone(),
    };
    // SAFETY: the host's error buffer.
    unsafe { abi::write_error(err, &message) };
    e.status()
}

unsafe extern "C" fn quick(container: *mut c_void, method: u32) -> u32 {
    if container.is_null() {
        return 0;
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `run`.
        let c = unsafe { &*(container as *const Arc<dyn Container>) };
        c.quick(method) as u32
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn destroy(container: *mut c_void) {
    if container.is_null() {
        return;
    }
    // SAFETY: `container` came from Box::into_raw in `create`; the host
    // calls this once, after its last use.
    let c = unsafe { Box::from_raw(container as *mut Arc<dyn Container>) };
    // A panicking destroy leaks the container rather than unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        c.destroy();
        drop(c);
    }));
}

/// The daemon, as a plugin's task sees it: [`TaskHost`] over the host's
/// function table.
struct ForeignHost {
    task: *mut ChiTask,
    api: ChiHostApi,
    input: OnceCell<(*const u8, usize)>,
}

impl ForeignHost {
    fn last_error(&self, status: i32) -> TaskError {
        let mut len = 0usize;
        // SAFETY: a host function of this task, called on its thread.
        let p = unsafe { (self.api.last_error)(self.task, &mut len) };
        // SAFETY: the host's bytes, valid until its next call.
        let m = String::from_utf8_lossy(unsafe { bytes(p, len) }).into_owned();
        match status {
            code::BAD_INPUT => TaskError::BadInput(m),
            _ => TaskError::Failed(m),
        }
    }
}

impl TaskHost for ForeignHost {
    fn input(&self) -> &[u8] {
        let (p, len) = *self.input.get_or_init(|| {
            let mut len = 0usize;
            // SAFETY: a host function of this task, called on its thread.
            let p = unsafe { (self.api.input)(self.task, &mut len) };
            (p, len)
        });
        // SAFETY: the host keeps the input until `run` returns, longer than
        // this borrow of the host.
        unsafe { bytes(p, len) }
    }

    fn input_len(&self) -> usize {
        // SAFETY: a host function of this task, called on its thread.
        unsafe { (self.api.input_len)(self.task) }
    }

    fn read_input(&self, at: usize, dst: &mut [u8]) -> usize {
        // SAFETY: dst is writable for its length.
        let n = unsafe { (self.api.read_input)(self.task, at, dst.as_mut_ptr(), dst.len()) };
        n.min(dst.len())
    }

    fn set_output(&mut self, out: &[u8]) -> Result<(), TaskError> {
        // SAFETY: out is readable for its length, for the call.
        match unsafe { (self.api.set_output)(self.task, out.as_ptr(), out.len()) } {
            code::OK => Ok(()),
            s => Err(self.last_error(s)),
        }
    }

    fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        // SAFETY: a host function of this task, called on its thread.
        let p = unsafe { (self.api.output_buffer)(self.task, len) };
        if p.is_null() {
            return Err(self.last_error(code::MODULE_ERROR));
        }
        // SAFETY: the host's private buffer of `len` bytes, valid until the
        // next set_output/output_buffer, which need `&mut self` and so end
        // this borrow first.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }

    fn yield_now(&self) {
        // SAFETY: a host function of this task, called on its thread.
        unsafe { (self.api.yield_now)(self.task) }
    }

    fn submit(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        local: bool,
    ) -> Result<Subtask, TaskError> {
        let mut sub = 0u32;
        // SAFETY: input readable for its length; sub writable.
        let s = unsafe {
            (self.api.submit)(
                self.task,
                pool,
                method,
                input.as_ptr(),
                input.len(),
                local as u32,
                &mut sub,
            )
        };
        match s {
            code::OK => Ok(Subtask::new(sub)),
            s => Err(self.last_error(s)),
        }
    }

    fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError> {
        let (mut p, mut len) = (std::ptr::null(), 0usize);
        // SAFETY: out pointers writable.
        let s = unsafe { (self.api.wait)(self.task, sub.id(), &mut p, &mut len) };
        // SAFETY: the host keeps them until `run` returns.
        let out = unsafe { bytes(p, len) };
        match s {
            code::OK => Ok(out.to_vec()),
            code::BAD_INPUT => Err(TaskError::BadInput(String::from_utf8_lossy(out).into())),
            _ => Err(TaskError::Failed(String::from_utf8_lossy(out).into())),
        }
    }

    fn log(&self, level: u32, msg: &str) {
        // SAFETY: msg readable for its length.
        unsafe { (self.api.log)(self.task, level, msg.as_ptr(), msg.len()) }
    }
}

/// Exports a [`Module`] from a `cdylib` as a chimaera plugin: the daemon
/// loads the library (`modules.load` in its configuration) and offers the
/// module under its [`Module::name`], like a built-in one.
///
/// ```ignore
/// // Cargo.toml: [lib] crate-type = ["cdylib"]
/// chimaera_module::export_module!(KvModule);
/// ```
///
/// The argument is an expression that makes the module (a unit struct's
/// name, `KvModule::default()`...), evaluated once, when the daemon first
/// reads the descriptor. The module's version in the descriptor is the
/// exporting crate's `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_module {
    ($module:expr) => {
        /// The chimaera plugin entry: the module's descriptor.
        #[unsafe(no_mangle)]
        pub extern "C" fn chimaera_module_entry() -> *const $crate::abi::ChiModuleDescriptor {
            fn make() -> ::std::boxed::Box<dyn $crate::Module> {
                ::std::boxed::Box::new($module)
            }
            $crate::export::entry(make, env!("CARGO_PKG_VERSION"))
        }
    };
}
