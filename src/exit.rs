//! Exit codes. The daemon follows sysexits(3); `status` follows the LSB
//! init-script convention, which systemd and health checks understand.

/// Clean stop, or the command did what was asked.
pub const OK: u8 = 0;
/// `stop` gave up waiting.
pub const FAILURE: u8 = 1;
/// `status`/`stop`: no runtime is running (LSB "program is not running").
pub const NOT_RUNNING: u8 = 3;
/// `status`: the state cannot be told (e.g. permission denied), LSB code 4.
pub const STATUS_UNKNOWN: u8 = 4;
/// EX_USAGE: the command line is wrong (an unknown option, an input that
/// cannot be read).
pub const USAGE: u8 = 64;
/// EX_UNAVAILABLE: a needed resource is missing or taken (already running,
/// port in use, shared memory unusable).
pub const UNAVAILABLE: u8 = 69;
/// EX_TEMPFAIL: the runtime holds its segments but answered nothing in the
/// time given (`status`, `ping`: stopped with SIGSTOP, or stuck); retry.
pub const NOT_RESPONDING: u8 = 75;
/// EX_SOFTWARE: an internal error.
pub const SOFTWARE: u8 = 70;
/// EX_NOPERM: not allowed to signal the runtime.
pub const NOPERM: u8 = 77;
/// EX_CONFIG: the configuration is wrong; nothing was started.
pub const CONFIG: u8 = 78;
