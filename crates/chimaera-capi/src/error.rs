//! Status codes, the per-thread last error, and the boundary every exported
//! function crosses: a panic never unwinds into C, it becomes
//! `CHIMAERA_ERR_PANIC` with its message.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use chimaera_client::ClientError;

/// What a call returned. `CHIMAERA_OK` (0) is success; each error but the
/// last three is one variant of the Rust client's `ClientError`, in its
/// order. After an error, `chimaera_last_error_message()` says what to do.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum chimaera_status {
    CHIMAERA_OK = 0,
    /// No runtime runs where the configuration says (no discovery file, no
    /// segments, a stale discovery file, a runtime still starting).
    CHIMAERA_ERR_NOT_RUNNING = 1,
    /// The runtime uses another shared-memory layout: use the library of
    /// the runtime's release.
    CHIMAERA_ERR_VERSION_MISMATCH = 2,
    /// `chimaera_try_submit`: the lane is full or every task record is in use.
    CHIMAERA_ERR_QUEUE_FULL = 3,
    /// The caller's timeout or the runtime's task_timeout passed.
    CHIMAERA_ERR_TIMED_OUT = 4,
    /// The runtime died before the task completed.
    CHIMAERA_ERR_RUNTIME_GONE = 5,
    /// The runtime is stopping and takes no more tasks.
    CHIMAERA_ERR_STOPPING = 6,
    /// No pool with the task's pool id.
    CHIMAERA_ERR_NO_SUCH_POOL = 7,
    /// The task's node is down, unknown or unreachable.
    CHIMAERA_ERR_NODE_UNAVAILABLE = 8,
    /// The module failed the task: `chimaera_last_module_status()` is its
    /// status, the message its output.
    CHIMAERA_ERR_MODULE = 9,
    /// Not allowed to open the runtime's segments or discovery file.
    CHIMAERA_ERR_PERMISSION_DENIED = 10,
    /// Every client slot of the runtime is taken.
    CHIMAERA_ERR_TOO_MANY_CLIENTS = 11,
    /// The configuration file (or a `CHI_*` variable) is invalid.
    CHIMAERA_ERR_CONFIG = 12,
    /// Anything else the client reports (the message says what).
    CHIMAERA_ERR_OTHER = 13,
    /// A null pointer where one is required, or a string that is not UTF-8.
    CHIMAERA_ERR_INVALID_ARGUMENT = 14,
    /// A bug in the library: it panicked, and the panic was caught. The
    /// client and its tasks may still be used.
    CHIMAERA_ERR_PANIC = 15,
}

use chimaera_status::*;

/// The status of each `ClientError`. Exhaustive on purpose: a new variant
/// does not compile until it has a code here, in the header and in
/// docs/CLIENTS.md.
pub(crate) fn status_of(e: &ClientError) -> chimaera_status {
    match e {
        ClientError::NotRunning(_) => CHIMAERA_ERR_NOT_RUNNING,
        ClientError::VersionMismatch { .. } => CHIMAERA_ERR_VERSION_MISMATCH,
        ClientError::QueueFull => CHIMAERA_ERR_QUEUE_FULL,
        ClientError::TimedOut => CHIMAERA_ERR_TIMED_OUT,
        ClientError::RuntimeGone(_) => CHIMAERA_ERR_RUNTIME_GONE,
        ClientError::Stopping => CHIMAERA_ERR_STOPPING,
        ClientError::NoSuchPool(_) => CHIMAERA_ERR_NO_SUCH_POOL,
        ClientError::NodeUnavailable(_) => CHIMAERA_ERR_NODE_UNAVAILABLE,
        ClientError::Module { .. } => CHIMAERA_ERR_MODULE,
        ClientError::PermissionDenied(_) => CHIMAERA_ERR_PERMISSION_DENIED,
        ClientError::TooManyClients(_) => CHIMAERA_ERR_TOO_MANY_CLIENTS,
        ClientError::Config(_) => CHIMAERA_ERR_CONFIG,
        ClientError::Other(_) => CHIMAERA_ERR_OTHER,
    }
}

/// A failed call, as the boundary records it.
pub(crate) enum Failure {
    Client(ClientError),
    Invalid(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

pub(crate) type Outcome = Result<(), Failure>;

struct LastError {
    status: chimaera_status,
    message: CString,
    module_status: i32,
}

thread_local! {
    static LAST: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// A message as C reads it: an interior NUL (module output may hold one)
/// ends nothing early, it is shown as \0.
fn c_message(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

fn record(status: chimaera_status, message: &str, module_status: i32) -> chimaera_status {
    // try_with: a call from a thread's TLS destructors, after ours is gone,
    // still returns its status.
    let _ = LAST.try_with(|l| {
        *l.borrow_mut() = Some(LastError {
            status,
            message: c_message(message),
            module_status,
        })
    });
    status
}

/// Runs an exported function's body: its result becomes a status (the last
/// error is recorded on failure), and a panic becomes `CHIMAERA_ERR_PANIC`.
pub(crate) fn boundary(body: impl FnOnce() -> Outcome) -> chimaera_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CHIMAERA_OK,
        Ok(Err(Failure::Client(e))) => {
            let module_status = match &e {
                ClientError::Module { status, .. } => *status,
                _ => 0,
            };
            record(status_of(&e), &e.to_string(), module_status)
        }
        Ok(Err(Failure::Invalid(why))) => record(CHIMAERA_ERR_INVALID_ARGUMENT, &why, 0),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            record(
                CHIMAERA_ERR_PANIC,
                &format!("the chimaera library panicked (a bug; please report it): {what}"),
                0,
            )
        }
    }
}

/// For the few functions that return no status (frees, getters): runs
/// `body`, and on a panic returns `fallback` with the panic recorded.
pub(crate) fn boundary_or<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    let mut out = None;
    boundary(|| {
        out = Some(body());
        Ok(())
    });
    out.unwrap_or(fallback)
}

/// The message of this thread's last failed call ("" before any).
pub(crate) fn last_message() -> *const c_char {
    LAST.try_with(|l| l.borrow().as_ref().map(|e| e.message.as_ptr()))
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

pub(crate) fn last_status() -> chimaera_status {
    LAST.try_with(|l| l.borrow().as_ref().map(|e| e.status))
        .ok()
        .flatten()
        .unwrap_or(CHIMAERA_OK)
}

pub(crate) fn last_module_status() -> i32 {
    LAST.try_with(|l| l.borrow().as_ref().map(|e| e.module_status))
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The name of a status as the header spells it.
pub(crate) fn status_name(status: i32) -> &'static CStr {
    match status {
        0 => c"CHIMAERA_OK",
        1 => c"CHIMAERA_ERR_NOT_RUNNING",
        2 => c"CHIMAERA_ERR_VERSION_MISMATCH",
        3 => c"CHIMAERA_ERR_QUEUE_FULL",
        4 => c"CHIMAERA_ERR_TIMED_OUT",
        5 => c"CHIMAERA_ERR_RUNTIME_GONE",
        6 => c"CHIMAERA_ERR_STOPPING",
        7 => c"CHIMAERA_ERR_NO_SUCH_POOL",
        8 => c"CHIMAERA_ERR_NODE_UNAVAILABLE",
        9 => c"CHIMAERA_ERR_MODULE",
        10 => c"CHIMAERA_ERR_PERMISSION_DENIED",
        11 => c"CHIMAERA_ERR_TOO_MANY_CLIENTS",
        12 => c"CHIMAERA_ERR_CONFIG",
        13 => c"CHIMAERA_ERR_OTHER",
        14 => c"CHIMAERA_ERR_INVALID_ARGUMENT",
        15 => c"CHIMAERA_ERR_PANIC",
        _ => c"(not a chimaera status)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> String {
        // SAFETY: last_message returns a NUL-terminated string owned by this
        // thread's LAST, unchanged until the next failing call.
        unsafe { CStr::from_ptr(last_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_with_its_message() {
        let s = boundary(|| panic!("boom {}", 42));
        assert_eq!(s, CHIMAERA_ERR_PANIC);
        assert_eq!(last_status(), CHIMAERA_ERR_PANIC);
        assert!(message().contains("boom 42"), "{}", message());
        assert_eq!(boundary_or(7u32, || panic!("again")), 7);
        assert!(message().contains("again"));
    }

    #[test]
    fn client_errors_keep_their_code_message_and_module_status() {
        let s = boundary(|| {
            Err(ClientError::Module {
                status: -5,
                message: "bad\0key".into(),
            }
            .into())
        });
        assert_eq!(s, CHIMAERA_ERR_MODULE);
        assert_eq!(last_module_status(), -5);
        assert!(message().contains("bad\\0key"), "{}", message());
        // A success leaves the last error alone, as errno does.
        assert_eq!(boundary(|| Ok(())), CHIMAERA_OK);
        assert_eq!(last_status(), CHIMAERA_ERR_MODULE);
        let s = boundary(|| Err(Failure::Invalid("null client".into())));
        assert_eq!(s, CHIMAERA_ERR_INVALID_ARGUMENT);
        assert_eq!(last_module_status(), 0);
        assert_eq!(message(), "null client");
    }

    #[test]
    fn every_status_has_its_header_name() {
        for (status, name) in [
            (CHIMAERA_OK, "CHIMAERA_OK"),
            (CHIMAERA_ERR_NOT_RUNNING, "CHIMAERA_ERR_NOT_RUNNING"),
            (
                CHIMAERA_ERR_VERSION_MISMATCH,
                "CHIMAERA_ERR_VERSION_MISMATCH",
            ),
            (CHIMAERA_ERR_QUEUE_FULL, "CHIMAERA_ERR_QUEUE_FULL"),
            (CHIMAERA_ERR_TIMED_OUT, "CHIMAERA_ERR_TIMED_OUT"),
            (CHIMAERA_ERR_RUNTIME_GONE, "CHIMAERA_ERR_RUNTIME_GONE"),
            (CHIMAERA_ERR_STOPPING, "CHIMAERA_ERR_STOPPING"),
            (CHIMAERA_ERR_NO_SUCH_POOL, "CHIMAERA_ERR_NO_SUCH_POOL"),
            (
                CHIMAERA_ERR_NODE_UNAVAILABLE,
                "CHIMAERA_ERR_NODE_UNAVAILABLE",
            ),
            (CHIMAERA_ERR_MODULE, "CHIMAERA_ERR_MODULE"),
            (
                CHIMAERA_ERR_PERMISSION_DENIED,
                "CHIMAERA_ERR_PERMISSION_DENIED",
            ),
            (
                CHIMAERA_ERR_TOO_MANY_CLIENTS,
                "CHIMAERA_ERR_TOO_MANY_CLIENTS",
            ),
            (CHIMAERA_ERR_CONFIG, "CHIMAERA_ERR_CONFIG"),
            (CHIMAERA_ERR_OTHER, "CHIMAERA_ERR_OTHER"),
            (
                CHIMAERA_ERR_INVALID_ARGUMENT,
                "CHIMAERA_ERR_INVALID_ARGUMENT",
            ),
            (CHIMAERA_ERR_PANIC, "CHIMAERA_ERR_PANIC"),
        ] {
            assert_eq!(status_name(status as i32).to_str().unwrap(), name);
        }
        assert_eq!(status_name(16).to_str().unwrap(), "(not a chimaera status)");
    }

    #[test]
    fn client_errors_map_to_distinct_codes() {
        let all = [
            ClientError::NotRunning(String::new()),
            ClientError::VersionMismatch {
                found: 0,
                runtime_version: String::new(),
            },
            ClientError::QueueFull,
            ClientError::TimedOut,
            ClientError::RuntimeGone(0),
            ClientError::Stopping,
            ClientError::NoSuchPool(0),
            ClientError::NodeUnavailable(String::new()),
            ClientError::Module {
                status: 0,
                message: String::new(),
            },
            ClientError::PermissionDenied(String::new()),
            ClientError::TooManyClients(0),
            ClientError::Config(String::new()),
            ClientError::Other(String::new()),
        ];
        let codes: Vec<i32> = all.iter().map(|e| status_of(e) as i32).collect();
        // In the enum's order, 1 to 13.
        assert_eq!(codes, (1..=13).collect::<Vec<_>>());
    }
}
