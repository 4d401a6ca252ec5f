//! The configuration's shape: one struct per section of the seed README's
//! schema, the choices some keys take, and the built-in defaults.

use super::*;

/// The defaults as a file; a test keeps it equal to [`Config::default`].
pub const DEFAULT_YAML: &str = include_str!("../../config/chimaera_default.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub const NAMES: &'static [&'static str] = &["trace", "debug", "info", "warning", "error"];

    pub(super) fn from_name(name: &str) -> Option<LogLevel> {
        Some(match name {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warning" | "warn" => LogLevel::Warning,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(LogLevel::NAMES[*self as usize])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneMapPolicy {
    RoundRobin,
    Random,
    MapByPidTid,
}

impl LaneMapPolicy {
    pub const NAMES: &'static [&'static str] = &["round_robin", "random", "map_by_pid_tid"];
}

impl fmt::Display for LaneMapPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(LaneMapPolicy::NAMES[*self as usize])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    pub sched_threads: WorkerCount,
    pub process_reaper_threads: u32,
}

/// `workers.sched_threads`: a number of workers, or `auto`, one per CPU
/// this process may use (its CPU set, limited by its cgroup's CPU quota;
/// see `crate::cpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    Auto,
    Count(u32),
}

impl WorkerCount {
    /// The number of workers: the count given, or for `auto` the CPUs
    /// `limit` leaves usable (1 when it knows none).
    pub fn resolve(self, limit: &CpuLimit) -> u32 {
        match self {
            WorkerCount::Count(n) => n,
            // The key's own maximum: a machine with more CPUs gets 1024.
            WorkerCount::Auto => limit.usable().unwrap_or(1).clamp(1, 1024),
        }
    }
}

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerCount::Auto => f.write_str("auto"),
            WorkerCount::Count(n) => write!(f, "{n}"),
        }
    }
}

/// `auto` as a string, a count as a number, as a file would say it.
impl Serialize for WorkerCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WorkerCount::Auto => s.serialize_str("auto"),
            WorkerCount::Count(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match NodeIdSetting::deserialize(d)? {
            NodeIdSetting::Auto => WorkerCount::Auto,
            NodeIdSetting::Id(n) => WorkerCount::Count(n),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub main_segment_size: u64,
    pub client_data_segment_size: u64,
    pub runtime_data_segment_size: u64,
    pub shm_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub zmq_port: u16,
    pub hostfile: String,
    pub node_id: NodeIdSetting,
    pub cluster_key_file: String,
}

/// `network.node_id`: find this node's hostfile line by its addresses and
/// port (`auto`), or the given line index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeIdSetting {
    #[default]
    Auto,
    Id(u32),
}

impl NodeIdSetting {
    /// The given id, or None for `auto`.
    pub fn explicit(self) -> Option<u32> {
        match self {
            NodeIdSetting::Auto => None,
            NodeIdSetting::Id(n) => Some(n),
        }
    }
}

impl fmt::Display for NodeIdSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeIdSetting::Auto => f.write_str("auto"),
            NodeIdSetting::Id(n) => write!(f, "{n}"),
        }
    }
}

/// `auto` as a string, an id as a number, so `config show` prints what a
/// file would say.
impl Serialize for NodeIdSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NodeIdSetting::Auto => s.serialize_str("auto"),
            NodeIdSetting::Id(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for NodeIdSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NodeIdSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto or a node id")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeIdSetting, E> {
                if v.eq_ignore_ascii_case("auto") {
                    Ok(NodeIdSetting::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NodeIdSetting, E> {
                u32::try_from(v)
                    .map(NodeIdSetting::Id)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NodeIdSetting, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub level: LogLevel,
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    pub stack_size: u64,
    pub queue_depth: u32,
    pub lane_map_policy: LaneMapPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedMemory {
    pub main_segment_name: String,
    pub client_data_segment_name: String,
    pub runtime_data_segment_name: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub heartbeat_interval: u64,
    pub task_timeout: u64,
    pub run_dir: String,
}

/// Plugin modules (`modules`): the libraries the daemon loads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// Directories searched for a module named in `load`, in order.
    pub path: SearchPath,
    /// Modules to load: names (`lib<name>.so` on the path) or absolute
    /// paths of libraries.
    pub load: ModuleList,
}

/// Directories, in order: `:`-separated in a variable or `--set`, a list in
/// YAML.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SearchPath(pub Vec<String>);

impl fmt::Display for SearchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(":"))
    }
}

/// Module names or library paths: `,`-separated in a variable or `--set`,
/// a list in YAML.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModuleList(pub Vec<String>);

impl fmt::Display for ModuleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Where `modules.path` points unless told otherwise.
pub const DEFAULT_MODULE_DIR: &str = "/usr/lib/chimaera/modules";

/// The Prometheus endpoint (`monitoring`): off unless given a port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// 0: no endpoint.
    pub metrics_port: u16,
    pub metrics_address: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub workers: Workers,
    pub memory: Memory,
    pub network: Network,
    pub logging: Logging,
    pub performance: Performance,
    pub shared_memory: SharedMemory,
    pub runtime: Runtime,
    pub monitoring: Monitoring,
    pub modules: Modules,
    /// Pools created at start, in order, after the admin pool.
    #[serde(default)]
    pub compose: Vec<PoolSpec>,
}

impl Default for Config {
    /// The seed README's defaults.
    fn default() -> Self {
        Config {
            workers: Workers {
                sched_threads: WorkerCount::Count(8),
                process_reaper_threads: 1,
            },
            memory: Memory {
                main_segment_size: 1 << 30,
                client_data_segment_size: 512 << 20,
                runtime_data_segment_size: 512 << 20,
                shm_size: 2 << 30,
            },
            network: Network {
                zmq_port: 5555,
                hostfile: String::new(),
                node_id: NodeIdSetting::Auto,
                cluster_key_file: String::new(),
            },
            logging: Logging {
                level: LogLevel::Info,
                file: "/var/log/chimaera/chimaera.log".into(),
            },
            performance: Performance {
                stack_size: 65536,
                queue_depth: 10000,
                lane_map_policy: LaneMapPolicy::RoundRobin,
            },
            shared_memory: SharedMemory {
                main_segment_name: "chi_main_segment_${USER}".into(),
                client_data_segment_name: "chi_client_data_segment_${USER}".into(),
                runtime_data_segment_name: "chi_runtime_data_segment_${USER}".into(),
                group: String::new(),
            },
            runtime: Runtime {
                heartbeat_interval: 1000,
                task_timeout: 30000,
                run_dir: String::new(),
            },
            monitoring: Monitoring {
                metrics_port: 0,
                // Loopback: the numbers say what runs here; exposing them
                // beyond the host is a choice to make explicitly.
                metrics_address: IpAddr::from([127, 0, 0, 1]),
            },
            modules: Modules {
                path: SearchPath(vec![DEFAULT_MODULE_DIR.into()]),
                load: ModuleList::default(),
            },
            compose: Vec::new(),
        }
    }
}

impl Config {
    pub fn total_segment_size(&self) -> u64 {
        let m = &self.memory;
        m.main_segment_size
            .saturating_add(m.client_data_segment_size)
            .saturating_add(m.runtime_data_segment_size)
    }
}
