//! Containing modules' panics. A module is code the daemon does not own:
//! its panic must end its task with an error and leave the daemon, its other
//! tasks and the pool running. A panic in the daemon's own code is a bug
//! that must not leave a half-dead daemon behind (a worker thread gone while
//! the process lingers): it aborts the process, as `panic = "abort"` did,
//! and systemd or Docker restarts it.
//!
//! So the build unwinds (release included), a worker marks the thread while
//! it runs a task's coroutine ([`in_module`]), the coroutine catches what
//! unwinds out of the module ([`contain`]), and the panic hook
//! ([`install_hook`]) aborts for any panic raised outside such a stretch.
//! Catching costs nothing until something panics; the mark is two
//! thread-local stores a task.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

thread_local! {
    static IN_MODULE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a resume of a task's coroutine) with the thread marked as
/// running module code.
#[inline]
pub fn in_module<R>(f: impl FnOnce() -> R) -> R {
    let before = IN_MODULE.replace(true);
    let r = f();
    IN_MODULE.set(before);
    r
}

/// Runs module code; a panic becomes its message.
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| chimaera_module::panic_message(p.as_ref()))
}

/// Installs the hook once per process: a panic in module code is reported
/// in one line and unwinds to [`contain`]; any other prints as usual and
/// aborts the process.
pub fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_MODULE.get() {
                let thread = std::thread::current();
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                eprintln!(
                    "chimaera: module code panicked on {}{at}: {}; its task fails, the runtime goes on",
                    thread.name().unwrap_or("a thread"),
                    chimaera_module::panic_message(info.payload())
                );
                return;
            }
            default(info);
            std::process::abort();
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_module_code_becomes_its_message() {
        let r: Result<(), String> = in_module(|| contain(|| panic!("boom {}", 7)));
        assert_eq!(r, Err("boom 7".into()));
        assert_eq!(in_module(|| contain(|| 5)), Ok(5));
        assert!(!IN_MODULE.get(), "the mark is taken down after the stretch");
    }
}
