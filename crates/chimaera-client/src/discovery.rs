//! The discovery file: how clients, `chimaera status` and `chimaera stop` find
//! a running runtime. It lives in the run directory and is named after the
//! main segment, so several runtimes can share one directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use chimaera_proto::header::SegmentNames;

use crate::locate::{Env, Locator};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// Release of the runtime that wrote the file.
    pub version: String,
    /// Shared-memory layout version; a client of another layout refuses.
    pub layout_version: u32,
    pub pid: u32,
    pub uid: u32,
    pub node_id: u32,
    pub zmq_port: u16,
    pub started_unix_ms: u64,
    /// Where the configuration came from.
    pub config: String,
    pub log_file: String,
    pub segments: SegmentNames,
    pub segment_sizes: [u64; 3],
    /// The network thread's Unix datagram socket: a client that pushes a
    /// routed task to the network lane while that thread sleeps sends a
    /// byte here to wake it. Empty: none (routed tasks go through workers).
    #[serde(default)]
    pub wake_socket: String,
}

/// What the runtime did with its last SIGHUP: written beside the discovery
/// file (`<main segment>.reload.json`) once the reload is done, so that
/// `chimaera reload` can say what was applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Counts the reloads of this run (the first is 1).
    pub seq: u64,
    /// The runtime that wrote it.
    pub pid: u32,
    /// False: the new configuration was refused and the running one kept.
    pub ok: bool,
    /// Keys applied live: `key = new (was old)`.
    pub applied: Vec<String>,
    /// Changes that need a restart, in words.
    pub restart_needed: Vec<String>,
    /// Why the new configuration was refused, a problem a line.
    pub refused: Vec<String>,
}

pub fn reload_file_name(main_segment: &str) -> String {
    format!("{main_segment}.reload.json")
}

pub fn file_name(main_segment: &str) -> String {
    format!("{main_segment}.toml")
}

/// Creates the run directory (and its parents) readable by all: clients of
/// other users look in it.
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

/// The network thread's wake-up socket, beside the discovery file.
pub fn wake_socket_name(main_segment: &str) -> String {
    format!("{main_segment}.wake")
}

/// Writes the file atomically (a reader never sees half of it), readable by
/// all: it holds names, not secrets; the segments' own modes guard access.
pub fn write(dir: &Path, d: &Discovery) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    make_dir(dir)?;
    let path = dir.join(file_name(&d.segments.main));
    let tmp = dir.join(format!(".{}.{}", file_name(&d.segments.main), d.pid));
    let text = toml::to_string(d).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(b"# written by the chimaera runtime; removed when it stops\n")?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

pub fn read(path: &Path) -> Result<Discovery, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| format!("{} is not a chimaera discovery file: {e}", path.display()))
}

/// Why no discovery file was found.
#[derive(Debug)]
pub enum NotFound {
    /// None of these directories has one.
    Nowhere(Vec<PathBuf>),
    /// One exists, or may, but we may not read it: not the same as "not running".
    Denied(PathBuf, std::io::Error),
}

/// Finds the discovery file of the runtime `loc` names.
pub fn find(loc: &Locator, env: &Env) -> Result<(PathBuf, Discovery), NotFound> {
    let dirs = loc.search_dirs(env);
    for dir in &dirs {
        let path = dir.join(file_name(&loc.names.main));
        match std::fs::File::open(&path) {
            Ok(_) => {
                if let Ok(d) = read(&path) {
                    return Ok((path, d));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(NotFound::Denied(path, e));
            }
            Err(_) => {}
        }
    }
    Err(NotFound::Nowhere(dirs))
}
