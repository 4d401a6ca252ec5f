//! One configuration schema, three sources.
//!
//! Precedence, lowest first: built-in defaults < YAML file < `CHI_*` environment
//! < `--set key=value` flags. Every key lives in [`KEYS`]; the YAML walk, the
//! environment overlay, the flags, `chimaera config keys` and the man-page test
//! all read that one table, so a key cannot be parsed in one place and
//! forgotten in another.
//!
//! Nothing here creates anything or looks at the machine: what needs it
//! (this node's hostfile line, the cluster key file, the group, the
//! segments' layout and /dev/shm) is `crate::preflight`, which runs this
//! first. `preflight::load_and_check` is exactly what `chimaera config
//! check`, the Docker entrypoint and the daemon run.

pub mod compose;
pub mod hostfile;
pub mod keys;
pub mod load;
pub mod problem;
pub mod schema;
pub mod size;
pub mod yaml;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::size::{human, parse_size};
use self::yaml::{Loc, Node};
use crate::cpus::CpuLimit;

pub use chimaera_client::locate::{
    Env, LoadOptions, SERVER_CONF_ENV, SYSTEM_CONFIG_PATH, current_user, default_run_dirs,
    expand_name,
};
pub use chimaera_proto::header::SegmentNames;
pub use compose::*;
pub use keys::*;
pub use load::*;
pub use problem::*;
pub use schema::*;

/// Where the configuration came from, for logs and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Builtin,
    File(PathBuf),
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Builtin => f.write_str("built-in defaults"),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A configuration that passed validation, with what was derived from it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub source: ConfigSource,
    pub names: SegmentNames,
    pub run_dir: PathBuf,
    /// True when the run directory was given rather than chosen.
    pub run_dir_configured: bool,
    pub hosts: Vec<hostfile::HostEntry>,
    /// This node's index in `hosts` (0 without a hostfile): `network.node_id`
    /// when given, else found by this machine's addresses and zmq port.
    pub node_id: u32,
    /// The cluster key read from `network.cluster_key_file`, if one is set.
    pub cluster_key: Option<chimaera_proto::wire::ClusterKey>,
    /// Scheduler workers to start: `workers.sched_threads`, `auto` resolved
    /// against `cpu`.
    pub workers: u32,
    /// What limits this process's CPUs (read by `crate::preflight`; unknown
    /// to a load without the machine).
    pub cpu: CpuLimit,
    /// Things worth saying that do not stop the start (an unknown CHI_* variable).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Where clients find the runtime this configuration describes.
    pub fn locator(&self) -> chimaera_client::Locator {
        chimaera_client::Locator {
            names: self.names.clone(),
            run_dir: self.run_dir_configured.then(|| self.run_dir.clone()),
            config: match &self.source {
                ConfigSource::File(p) => Some(p.clone()),
                ConfigSource::Builtin => None,
            },
        }
    }
}

/// The run directory: the configured one, else systemd's RUNTIME_DIRECTORY,
/// else /run/chimaera for root, else $XDG_RUNTIME_DIR/chimaera, else
/// /tmp/chimaera-UID. The flag says whether it was configured.
pub fn run_dir(config: &Config, env: &Env) -> (PathBuf, bool) {
    if !config.runtime.run_dir.is_empty() {
        return (PathBuf::from(&config.runtime.run_dir), true);
    }
    (default_run_dirs(env).remove(0), false)
}

/// Keys whose value differs between two configurations, with both values.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<(&'static Key, String, String)> {
    KEYS.iter()
        .filter_map(|k| {
            let (a, b) = (k.get(old), k.get(new));
            (a != b).then_some((k, a, b))
        })
        .collect()
}

/// The effective configuration as YAML, with segment names expanded.
/// The effective configuration as JSON: `to_yaml`'s values, for scripts.
pub fn to_json(loaded: &Loaded) -> String {
    serde_json::to_string(&effective(loaded)).expect("the configuration always serializes")
}

/// The configuration with what the daemon derives filled in: segment names
/// with `${USER}` expanded, the run directory chosen.
fn effective(loaded: &Loaded) -> Config {
    let mut c = loaded.config.clone();
    c.shared_memory.main_segment_name = loaded.names.main.clone();
    c.shared_memory.client_data_segment_name = loaded.names.client_data.clone();
    c.shared_memory.runtime_data_segment_name = loaded.names.runtime_data.clone();
    c.runtime.run_dir = loaded.run_dir.display().to_string();
    c
}

pub fn to_yaml(loaded: &Loaded) -> String {
    let c = effective(loaded);
    let body = serde_saphyr::to_string(&c).expect("the configuration always serializes");
    format!(
        "# effective chimaera configuration (source: {}; then CHI_* environment and --set)\n{body}",
        loaded.source
    )
}

#[cfg(test)]
mod tests;
