//! Opening a module library and reading its descriptor: every check that
//! can be made before the module runs anything of its own (beyond the
//! library's constructors, which `dlopen` runs).

use std::ffi::{CStr, CString, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use chimaera_module::abi::{
    self, ChiModuleDescriptor, ChiStr, CreateFn, DestroyFn, QuickFn, RunFn,
};

/// Why a library is not a module this daemon can load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("no such file")]
    Missing,
    #[error("cannot load it: {0}")]
    Open(String),
    #[error(
        "it exports no `{}`: not a chimaera module (build it with chimaera_module::export_module! or chimaera_module.h)",
        abi::ENTRY_SYMBOL
    )]
    NoEntry,
    #[error(
        "its `{}` returned no descriptor (the module failed to initialise)",
        abi::ENTRY_SYMBOL
    )]
    NullDescriptor,
    #[error(
        "it was built for module ABI {found}, this daemon loads ABI {}: rebuild it against chimaera-module {} (chimaera_module.h)",
        abi::ABI_VERSION,
        abi::SDK_VERSION
    )]
    AbiVersion { found: u32 },
    #[error(
        "its layout hash {found:#018x} differs from this daemon's {:#018x}: it was built with a different chimaera_module.h or chimaera-module; rebuild it against chimaera-module {}",
        abi::LAYOUT_HASH,
        abi::SDK_VERSION
    )]
    LayoutHash { found: u64 },
    #[error(
        "its descriptor is {found} bytes, this ABI's is {want}: the library is damaged or lies about its ABI"
    )]
    DescriptorSize { found: u32, want: u32 },
    #[error("its descriptor has no `{0}` function")]
    MissingFunction(&'static str),
    #[error("its descriptor's {field} is not usable: {why}")]
    BadField { field: &'static str, why: String },
}

/// A module library that passed the checks. The library stays loaded for
/// the rest of the process: its code may be running on any worker, and
/// nothing tells when the last pointer into it is gone.
#[derive(Debug, Clone)]
pub struct Library {
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    pub sdk_version: String,
    pub abi_version: u32,
    pub(super) fns: Functions,
}

/// The module's functions, copied out of its descriptor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Functions {
    pub create: CreateFn,
    pub run: RunFn,
    pub quick: Option<QuickFn>,
    pub destroy: Option<DestroyFn>,
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string owned by libc,
    // valid until the next dl* call on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// Opens `file`, finds the entry symbol, calls it and checks the descriptor.
pub fn open(file: &Path) -> Result<Library, LoadError> {
    if !file.exists() {
        return Err(LoadError::Missing);
    }
    let c_path = CString::new(file.as_os_str().as_bytes())
        .map_err(|_| LoadError::Open("the path holds a NUL byte".into()))?;
    // RTLD_NODELETE: a later dlclose (there is none) could not unload code
    // a worker may be running. RTLD_LOCAL: one module's symbols do not
    // satisfy another's.
    // SAFETY: a valid C string; loading runs the library's constructors,
    // which is what loading a module means.
    let handle = unsafe {
        libc::dlopen(
            c_path.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE,
        )
    };
    if handle.is_null() {
        return Err(LoadError::Open(dlerror()));
    }
    let symbol = CString::new(abi::ENTRY_SYMBOL).expect("no NUL in the symbol name");
    // SAFETY: a live handle and a valid C string.
    let entry = unsafe { libc::dlsym(handle, symbol.as_ptr()) };
    if entry.is_null() {
        return Err(LoadError::NoEntry);
    }
    // SAFETY: the module ABI says the entry symbol is an `EntryFn`; a
    // library that exports something else under that name is beyond
    // checking.
    let entry: abi::EntryFn = unsafe { std::mem::transmute::<*mut c_void, abi::EntryFn>(entry) };
    // SAFETY: as above; Rust modules catch their panics inside.
    let d = unsafe { entry() };
    if d.is_null() {
        return Err(LoadError::NullDescriptor);
    }
    // The version first, alone: a descriptor of another ABI may be shorter
    // or shaped otherwise, so nothing else of it is read before it matches.
    // SAFETY: every ABI version starts with this u32.
    let abi_version = unsafe { std::ptr::read_unaligned(d as *const u32) };
    if abi_version != abi::ABI_VERSION {
        return Err(LoadError::AbiVersion { found: abi_version });
    }
    // SAFETY: ABI 1 descriptors are ChiModuleDescriptors; copied out once.
    let d: ChiModuleDescriptor = unsafe { std::ptr::read_unaligned(d) };
    let want = size_of::<ChiModuleDescriptor>() as u32;
    if d.layout_hash != abi::LAYOUT_HASH {
        return Err(LoadError::LayoutHash {
            found: d.layout_hash,
        });
    }
    if d.descriptor_size != want {
        return Err(LoadError::DescriptorSize {
            found: d.descriptor_size,
            want,
        });
    }
    let name = text(d.name, "name")?;
    chimaera_module::check_module_name(&name)
        .map_err(|why| LoadError::BadField { field: "name", why })?;
    let version = text(d.version, "version")?;
    let sdk_version = text(d.sdk_version, "sdk_version")?;
    Ok(Library {
        file: file.to_path_buf(),
        name,
        version,
        sdk_version,
        abi_version,
        fns: Functions {
            create: d.create.ok_or(LoadError::MissingFunction("create"))?,
            run: d.run.ok_or(LoadError::MissingFunction("run"))?,
            quick: d.quick,
            destroy: d.destroy,
        },
    })
}

/// The longest name, version or other text a descriptor may carry.
const MAX_TEXT: usize = 256;

fn text(s: ChiStr, field: &'static str) -> Result<String, LoadError> {
    let bad = |why: String| LoadError::BadField { field, why };
    if s.len > MAX_TEXT {
        return Err(bad(format!("{} bytes, more than {MAX_TEXT}", s.len)));
    }
    if s.len == 0 {
        return Ok(String::new());
    }
    if s.ptr.is_null() {
        return Err(bad("a null pointer with a length".into()));
    }
    // SAFETY: the module's static text of s.len bytes (the ABI's promise),
    // copied at once.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) }.to_vec();
    String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))
}
