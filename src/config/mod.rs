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

pub mod hostfile;
pub mod size;
pub mod yaml;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::size::{human, parse_size};
use self::yaml::{Loc, Node};

pub use chimaera_client::locate::{
    Env, LoadOptions, SERVER_CONF_ENV, SYSTEM_CONFIG_PATH, current_user, default_run_dirs,
    expand_name,
};
pub use chimaera_proto::header::SegmentNames;

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

    fn from_name(name: &str) -> Option<LogLevel> {
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
    pub sched_threads: u32,
    pub process_reaper_threads: u32,
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
    /// Pools created at start, in order, after the admin pool.
    #[serde(default)]
    pub compose: Vec<PoolSpec>,
}

/// One entry of `compose:`: a pool the runtime creates when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub module: String,
    /// The module's parameters as JSON text (a YAML mapping is converted).
    #[serde(default)]
    pub params: String,
    /// The entry's line in the configuration file (0: not from a file), for
    /// errors only the start can find (a module this binary lacks).
    #[serde(skip)]
    pub line: usize,
}

impl PoolSpec {
    /// Whether two entries create the same pool (the line does not count).
    pub fn same_pool(&self, other: &PoolSpec) -> bool {
        (&self.name, &self.module, &self.params) == (&other.name, &other.module, &other.params)
    }
}

/// What may name a pool: what `chimaera` prints and logs without quoting.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "a pool name has 1 to 64 characters, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "{c:?} in pool name {name:?}: use letters, digits, '_', '-' and '.'"
        ));
    }
    if name == chimaera_proto::admin::POOL_NAME {
        return Err("\"admin\" is the runtime's own pool".into());
    }
    Ok(())
}

/// A YAML value as JSON: mappings and lists as such, plain scalars as the
/// number, boolean or null they spell, everything else as a string.
fn yaml_to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Node::Map { entries, .. } => Value::Object(
            entries
                .iter()
                .map(|(k, _, v)| (k.clone(), yaml_to_json(v)))
                .collect(),
        ),
        Node::Seq { items, .. } => Value::Array(items.iter().map(yaml_to_json).collect()),
        n if n.is_null() => Value::Null,
        Node::Scalar { text, plain, .. } => {
            if *plain {
                if let Ok(i) = text.parse::<i64>() {
                    return Value::from(i);
                }
                if let Ok(f) = text.parse::<f64>() {
                    return Value::from(f);
                }
                match text.as_str() {
                    "true" => return Value::Bool(true),
                    "false" => return Value::Bool(false),
                    _ => {}
                }
            }
            Value::String(text.clone())
        }
    }
}

impl Default for Config {
    /// The seed README's defaults.
    fn default() -> Self {
        Config {
            workers: Workers {
                sched_threads: 8,
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

/// What a key accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A whole number written as a number.
    Count {
        min: u64,
        max: u64,
    },
    /// `auto`, or a whole number from 0 to max written as a number.
    AutoOrCount {
        max: u64,
    },
    /// Bytes, or with a K/M/G/T suffix.
    Size {
        min: u64,
        max: u64,
    },
    /// Milliseconds, a whole number.
    Millis {
        min: u64,
        max: u64,
    },
    Port,
    /// 0 (off), or a TCP port.
    PortOrOff,
    /// An IPv4 or IPv6 address, written as such (no host name).
    IpAddr,
    Choice(&'static [&'static str]),
    /// A POSIX shared-memory object name; `${USER}` expands.
    SegmentName,
    /// An absolute path, or empty for "none"/"automatic".
    Path,
    /// A Unix group name, or empty.
    Group,
}

impl Kind {
    fn expects(&self) -> String {
        match self {
            Kind::Count { min, max } => format!("a whole number from {min} to {max}"),
            Kind::AutoOrCount { max } => format!("auto, or a whole number from 0 to {max}"),
            Kind::Size { min, max } => format!(
                "a size from {} to {} (bytes, or with a K/M/G suffix)",
                human(*min),
                human(*max)
            ),
            Kind::Millis { min, max } => format!("milliseconds from {min} to {max}"),
            Kind::Port => "a TCP port from 1 to 65535".into(),
            Kind::PortOrOff => "0 (off) or a TCP port from 1 to 65535".into(),
            Kind::IpAddr => "an IPv4 or IPv6 address such as 127.0.0.1 or ::1".into(),
            Kind::Choice(names) => format!("one of {}", names.join(", ")),
            Kind::SegmentName => {
                "a shared-memory name of letters, digits, '.', '_', '-' and ${USER}".into()
            }
            Kind::Path => "an absolute path, or empty".into(),
            Kind::Group => "a group name, or empty".into(),
        }
    }
}

/// A parsed value, before it is stored in its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(u64),
    Text(String),
}

trait FromValue {
    fn from_value(v: Value) -> Self;
}

impl FromValue for u64 {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Num(n) => n,
            Value::Text(t) => unreachable!("kind table gives text {t:?} to a number field"),
        }
    }
}

impl FromValue for u32 {
    fn from_value(v: Value) -> Self {
        u32::try_from(u64::from_value(v)).expect("range checked against the kind's max")
    }
}

impl FromValue for u16 {
    fn from_value(v: Value) -> Self {
        u16::try_from(u64::from_value(v)).expect("range checked against the kind's max")
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Text(t) => t,
            Value::Num(n) => n.to_string(),
        }
    }
}

impl FromValue for IpAddr {
    fn from_value(v: Value) -> Self {
        String::from_value(v)
            .parse()
            .expect("checked by parse_value against the IpAddr kind")
    }
}

impl FromValue for LogLevel {
    fn from_value(v: Value) -> Self {
        LogLevel::from_name(&String::from_value(v)).expect("checked against the choice list")
    }
}

impl FromValue for NodeIdSetting {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Num(n) => NodeIdSetting::Id(u32::from_value(Value::Num(n))),
            Value::Text(_) => NodeIdSetting::Auto,
        }
    }
}

impl FromValue for LaneMapPolicy {
    fn from_value(v: Value) -> Self {
        match String::from_value(v).as_str() {
            "random" => LaneMapPolicy::Random,
            "map_by_pid_tid" => LaneMapPolicy::MapByPidTid,
            _ => LaneMapPolicy::RoundRobin,
        }
    }
}

/// One configuration key: where it lives, how it is spelled in the
/// environment, what it accepts and what it means.
pub struct Key {
    pub section: &'static str,
    pub name: &'static str,
    pub env: Option<&'static str>,
    pub kind: Kind,
    /// Whether SIGHUP applies a change without a restart.
    pub live: bool,
    pub help: &'static str,
    set: fn(&mut Config, Value),
    get: fn(&Config) -> String,
}

impl Key {
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// The value of this key in `config`, as `config keys` prints it.
    pub fn get(&self, config: &Config) -> String {
        (self.get)(config)
    }
}

const TIB: u64 = 1 << 40;
const MIB: u64 = 1 << 20;

macro_rules! keys {
    ($( $section:ident . $name:ident, $env:expr, $kind:expr, $live:expr, $help:expr; )*) => {
        /// Every configuration key, in the order of the seed README.
        pub static KEYS: &[Key] = &[ $( Key {
            section: stringify!($section),
            name: stringify!($name),
            env: $env,
            kind: $kind,
            live: $live,
            help: $help,
            set: |c, v| c.$section.$name = FromValue::from_value(v),
            get: |c| c.$section.$name.to_string(),
        }, )* ];
    };
}

keys! {
    workers.sched_threads, Some("CHI_SCHED_WORKERS"), Kind::Count { min: 1, max: 1024 }, false,
        "Scheduler worker threads, each pinned to its own core.";
    workers.process_reaper_threads, Some("CHI_PROCESS_REAPER_WORKERS"), Kind::Count { min: 1, max: 64 }, false,
        "Threads that notice dead client processes and reclaim what they held.";
    memory.main_segment_size, Some("CHI_MAIN_SEGMENT_SIZE"), Kind::Size { min: MIB, max: TIB }, false,
        "Size of the main segment (queues and task records).";
    memory.client_data_segment_size, Some("CHI_CLIENT_DATA_SEGMENT_SIZE"), Kind::Size { min: MIB, max: TIB }, false,
        "Size of the segment clients allocate task buffers from.";
    memory.runtime_data_segment_size, Some("CHI_RUNTIME_DATA_SEGMENT_SIZE"), Kind::Size { min: MIB, max: TIB }, false,
        "Size of the segment the runtime allocates buffers from.";
    memory.shm_size, Some("CHI_SHM_SIZE"), Kind::Size { min: 3 * MIB, max: 4 * TIB }, false,
        "Shared memory set aside for the runtime; the three segments must fit in it (match docker --shm-size).";
    network.zmq_port, Some("CHI_ZMQ_PORT"), Kind::Port, false,
        "TCP port of the ZeroMQ socket other nodes reach this node on.";
    network.hostfile, Some("CHI_HOSTFILE"), Kind::Path, false,
        "File listing the cluster's nodes, one per line; empty for a single node.";
    network.node_id, Some("CHI_NODE_ID"), Kind::AutoOrCount { max: 65535 }, false,
        "This node's hostfile line (from 0); auto: the line with one of this machine's addresses and network.zmq_port.";
    network.cluster_key_file, Some("CHI_CLUSTER_KEY_FILE"), Kind::Path, false,
        "File holding the cluster's shared secret (hex or raw, at least 32 bytes, mode 0600 or 0400), the same on every node; every frame between nodes is then authenticated. Empty: frames are not authenticated.";
    logging.level, Some("CHI_LOG_LEVEL"), Kind::Choice(&["trace", "debug", "info", "warning", "warn", "error"]), true,
        "Least severe level logged: trace, debug, info, warning or error.";
    logging.file, Some("CHI_LOG_FILE"), Kind::Path, true,
        "Log file, besides stderr; its directory is created. Empty for stderr only.";
    performance.stack_size, Some("CHI_STACK_SIZE"), Kind::Size { min: 16 * 1024, max: 256 * MIB }, false,
        "Stack size of each task's coroutine, in bytes.";
    performance.queue_depth, Some("CHI_QUEUE_DEPTH"), Kind::Count { min: 1, max: 1 << 20 }, false,
        "Depth of each worker's lane; a full lane holds submitters back.";
    performance.lane_map_policy, Some("CHI_LANE_MAP_POLICY"), Kind::Choice(LaneMapPolicy::NAMES), false,
        "How a client picks a lane: round_robin, random or map_by_pid_tid.";
    shared_memory.main_segment_name, None, Kind::SegmentName, false,
        "POSIX shared-memory name of the main segment.";
    shared_memory.client_data_segment_name, None, Kind::SegmentName, false,
        "POSIX shared-memory name of the client data segment.";
    shared_memory.runtime_data_segment_name, None, Kind::SegmentName, false,
        "POSIX shared-memory name of the runtime data segment.";
    shared_memory.group, Some("CHI_SHM_GROUP"), Kind::Group, false,
        "Group allowed to use the runtime: segments become mode 0660 owned by it. Empty: 0600, owner only.";
    runtime.heartbeat_interval, Some("CHI_HEARTBEAT_INTERVAL"), Kind::Millis { min: 10, max: 3_600_000 }, false,
        "Milliseconds between heartbeats to other nodes.";
    runtime.task_timeout, Some("CHI_TASK_TIMEOUT"), Kind::Millis { min: 1, max: 86_400_000 }, false,
        "Milliseconds a task may run before it completes with a timeout error.";
    runtime.run_dir, Some("CHI_RUN_DIR"), Kind::Path, false,
        "Directory of the discovery file; empty: $RUNTIME_DIRECTORY, /run/chimaera (root), $XDG_RUNTIME_DIR/chimaera, else /tmp/chimaera-UID.";
    monitoring.metrics_port, Some("CHI_METRICS_PORT"), Kind::PortOrOff, false,
        "TCP port of the Prometheus endpoint (http://ADDRESS:PORT/metrics); 0: no endpoint.";
    monitoring.metrics_address, Some("CHI_METRICS_ADDRESS"), Kind::IpAddr, false,
        "Address the Prometheus endpoint listens on: 127.0.0.1 keeps it on this host; 0.0.0.0 or :: opens it to the network.";
}

pub fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path() == path)
}

fn sections() -> Vec<&'static str> {
    let mut s: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
    s.dedup();
    s
}

/// Where a value (or a problem) came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: PathBuf,
        line: usize,
        col: usize,
    },
    Env(String),
    Flag,
    /// A rule across keys, or the machine itself.
    Check,
}

/// One thing wrong with the configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { path, line, col } => {
                write!(
                    f,
                    "{}:{line}:{col}: {}: {}",
                    path.display(),
                    self.key,
                    self.message
                )
            }
            Origin::Env(var) => write!(f, "environment {var} ({}): {}", self.key, self.message),
            Origin::Flag => write!(f, "--set {}: {}", self.key, self.message),
            Origin::Check => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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

fn check_name_chars(raw: &str) -> Result<(), String> {
    let without_var = raw.replace("${USER}", "");
    if let Some(pos) = without_var.find("${") {
        let var: String = without_var[pos..]
            .chars()
            .take_while(|c| *c != '}')
            .collect();
        return Err(format!(
            "only ${{USER}} expands in segment names, found {var}}}"
        ));
    }
    if raw.is_empty() {
        return Err("a segment name cannot be empty".into());
    }
    if raw.starts_with('.') {
        return Err(format!("{raw:?} must not start with '.'"));
    }
    if let Some(bad) = without_var
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{raw:?} has {bad:?}; use letters, digits, '.', '_', '-' and ${{USER}}"
        ));
    }
    Ok(())
}

/// Parses one raw value for `key`. `plain` is false for quoted YAML scalars,
/// which are text even when they look like numbers.
fn parse_value(key: &Key, text: &str, plain: bool, null: bool) -> Result<Value, String> {
    let number = |min: u64, max: u64| -> Result<u64, String> {
        if !plain {
            return Err(format!(
                "expected {}, got the string {text:?}",
                key.kind.expects()
            ));
        }
        let n: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("expected {}, got {text:?}", key.kind.expects()))?;
        if n < min || n > max {
            return Err(format!("expected {}, got {n}", key.kind.expects()));
        }
        Ok(n)
    };
    match key.kind {
        Kind::Count { min, max } | Kind::Millis { min, max } => number(min, max).map(Value::Num),
        Kind::Port => number(1, 65535).map(Value::Num),
        Kind::PortOrOff => number(0, 65535).map(Value::Num),
        Kind::IpAddr => {
            let t = text.trim();
            // `[::1]` is how URLs write it; the brackets are not the address.
            let bare = t
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(t);
            match bare.parse::<IpAddr>() {
                Ok(a) if !null => Ok(Value::Text(a.to_string())),
                _ => Err(format!("expected {}, got {text:?}", key.kind.expects())),
            }
        }
        Kind::AutoOrCount { max } => {
            // `auto` may be quoted; a number must not be, as for counts.
            if text.trim().eq_ignore_ascii_case("auto") {
                return Ok(Value::Text("auto".into()));
            }
            number(0, max).map(Value::Num)
        }
        Kind::Size { min, max } => {
            let n = parse_size(text)?;
            if n < min || n > max {
                return Err(format!(
                    "expected {}, got {} ({n} bytes)",
                    key.kind.expects(),
                    human(n)
                ));
            }
            Ok(Value::Num(n))
        }
        Kind::Choice(names) => {
            let t = text.trim().to_ascii_lowercase();
            if null || !names.contains(&t.as_str()) {
                return Err(format!("expected {}, got {text:?}", key.kind.expects()));
            }
            Ok(Value::Text(if t == "warn" { "warning".into() } else { t }))
        }
        Kind::SegmentName => {
            check_name_chars(text)?;
            Ok(Value::Text(text.to_string()))
        }
        Kind::Path => {
            if null || text.is_empty() {
                return Ok(Value::Text(String::new()));
            }
            if !text.starts_with('/') {
                return Err(format!(
                    "expected an absolute path (starting with /), got {text:?}"
                ));
            }
            Ok(Value::Text(text.to_string()))
        }
        Kind::Group => {
            if null || text.is_empty() {
                return Ok(Value::Text(String::new()));
            }
            let ok = text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(format!("{text:?} is not a group name"));
            }
            Ok(Value::Text(text.to_string()))
        }
    }
}

/// The closest known name, for "did you mean" hints.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != *cb);
                cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn hint(word: &str, candidates: impl IntoIterator<Item = &'static str>) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

struct Collector {
    config: Config,
    problems: Vec<Problem>,
}

impl Collector {
    fn apply(&mut self, key: &Key, origin: Origin, text: &str, plain: bool, null: bool) {
        match parse_value(key, text, plain, null) {
            Ok(v) => (key.set)(&mut self.config, v),
            Err(message) => self.problems.push(Problem {
                origin,
                key: key.path(),
                message,
            }),
        }
    }

    fn walk_file(&mut self, path: &Path, root: Option<Node>) {
        let at = |loc: Loc| Origin::File {
            path: path.to_path_buf(),
            line: loc.line,
            col: loc.col,
        };
        let entries = match root {
            None => return,
            Some(Node::Map { entries, .. }) => entries,
            Some(n) if n.is_null() => return,
            Some(other) => {
                self.problems.push(Problem {
                    origin: at(other.loc()),
                    key: "(top level)".into(),
                    message: format!(
                        "expected a mapping of sections ({}), found {}",
                        sections().join(", "),
                        other.kind_name()
                    ),
                });
                return;
            }
        };
        let mut known = sections();
        known.push("compose");
        for (section, loc, node) in entries {
            if section == "compose" {
                self.walk_compose(&at, node);
                continue;
            }
            if !known.contains(&section.as_str()) {
                self.problems.push(Problem {
                    origin: at(loc),
                    key: section.clone(),
                    message: format!(
                        "unknown section{}; known sections: {}",
                        hint(&section, known.iter().copied()),
                        known.join(", ")
                    ),
                });
                continue;
            }
            let items = match node {
                Node::Map { entries, .. } => entries,
                n if n.is_null() => continue,
                other => {
                    self.problems.push(Problem {
                        origin: at(other.loc()),
                        key: section.clone(),
                        message: format!("expected a mapping of keys, found {}", other.kind_name()),
                    });
                    continue;
                }
            };
            let in_section = || KEYS.iter().filter(|k| k.section == section);
            for (name, loc, value) in items {
                let Some(key) = in_section().find(|k| k.name == name) else {
                    let names: Vec<&str> = in_section().map(|k| k.name).collect();
                    self.problems.push(Problem {
                        origin: at(loc),
                        key: format!("{section}.{name}"),
                        message: format!(
                            "unknown key{}; `{section}` has: {}",
                            hint(&name, names.iter().copied()),
                            names.join(", ")
                        ),
                    });
                    continue;
                };
                match &value {
                    Node::Scalar { text, plain, loc } => {
                        let null = value.is_null();
                        self.apply(key, at(*loc), text, *plain, null)
                    }
                    other => self.problems.push(Problem {
                        origin: at(other.loc()),
                        key: key.path(),
                        message: format!(
                            "expected {}, found {}",
                            key.kind.expects(),
                            other.kind_name()
                        ),
                    }),
                }
            }
        }
    }
}

impl Collector {
    /// `compose:`, a list of `{name, module, params}`.
    fn walk_compose(&mut self, at: &dyn Fn(Loc) -> Origin, node: Node) {
        let mut problem = |loc: Loc, key: String, message: String| {
            self.problems.push(Problem {
                origin: at(loc),
                key,
                message,
            })
        };
        let items = match node {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return,
            other => {
                problem(
                    other.loc(),
                    "compose".into(),
                    format!(
                        "expected a list of pools (`- name: …` with `module:` and optional `params:`), found {}",
                        other.kind_name()
                    ),
                );
                return;
            }
        };
        let mut specs: Vec<PoolSpec> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let key = |field: &str| format!("compose[{i}].{field}");
            let (entries, loc) = match item {
                Node::Map { entries, loc } => (entries, loc),
                other => {
                    problem(
                        other.loc(),
                        format!("compose[{i}]"),
                        format!(
                            "expected a mapping with name, module and params, found {}",
                            other.kind_name()
                        ),
                    );
                    continue;
                }
            };
            let mut name = None;
            let mut module = None;
            let mut params = String::new();
            for (k, kloc, v) in entries {
                match (k.as_str(), &v) {
                    ("name" | "module", Node::Scalar { text, .. }) if !v.is_null() => {
                        if k == "name" {
                            name = Some((text.clone(), v.loc()));
                        } else {
                            module = Some(text.clone());
                        }
                    }
                    ("name" | "module", other) => problem(
                        other.loc(),
                        key(&k),
                        format!(
                            "expected a name, found {}",
                            if other.is_null() {
                                "nothing"
                            } else {
                                other.kind_name()
                            }
                        ),
                    ),
                    ("params", Node::Scalar { text, .. }) if !v.is_null() => params = text.clone(),
                    ("params", other) if other.is_null() => {}
                    ("params", other) => params = yaml_to_json(other).to_string(),
                    (other, _) => problem(
                        kloc,
                        key(other),
                        format!(
                            "unknown key{}; a compose entry has: name, module, params",
                            hint(other, ["name", "module", "params"])
                        ),
                    ),
                }
            }
            let Some((name, name_loc)) = name else {
                problem(loc, key("name"), "missing: every pool needs a name".into());
                continue;
            };
            let Some(module) = module else {
                problem(
                    loc,
                    key("module"),
                    "missing: which module runs this pool (e.g. bdev)".into(),
                );
                continue;
            };
            if let Err(e) = check_pool_name(&name) {
                problem(name_loc, key("name"), e);
                continue;
            }
            if let Some(j) = specs.iter().position(|s| s.name == name) {
                problem(
                    name_loc,
                    key("name"),
                    format!("pool {name:?} is already compose[{j}]"),
                );
                continue;
            }
            specs.push(PoolSpec {
                name,
                module,
                params,
                line: loc.line,
            });
        }
        self.config.compose = specs;
    }
}

/// The file to read: `--config`, else `CHI_SERVER_CONF`, else the system
/// conffile when present, else none (built-in defaults).
pub fn config_file(opts: &LoadOptions, env: &Env) -> Result<Option<PathBuf>, Problem> {
    let named = |path: PathBuf, origin: Origin, key: &str| {
        if path.is_file() {
            Ok(Some(path))
        } else {
            Err(Problem {
                origin,
                key: key.into(),
                message: format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                ),
            })
        }
    };
    if let Some(p) = &opts.config_path {
        return named(p.clone(), Origin::Check, "--config");
    }
    if let Some(p) = env.non_empty(SERVER_CONF_ENV) {
        return named(
            PathBuf::from(p),
            Origin::Env(SERVER_CONF_ENV.into()),
            "config file",
        );
    }
    Ok(opts.system_config.clone().filter(|p| p.is_file()))
}

/// Reads, overlays and validates the configuration against its own rules.
/// All problems are collected together; nothing is created. The error is
/// only for a file that cannot be named or read.
pub fn collect(opts: &LoadOptions, env: &Env) -> Result<Collected, ConfigErrors> {
    let mut c = Collector {
        config: Config::default(),
        problems: Vec::new(),
    };
    let file = config_file(opts, env).map_err(|p| ConfigErrors(vec![p]))?;
    let source = match &file {
        None => ConfigSource::Builtin,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![Problem {
                    origin: Origin::Check,
                    key: "config file".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            match yaml::parse(&text) {
                Ok(root) => c.walk_file(path, root),
                Err(e) => c.problems.push(Problem {
                    origin: Origin::File {
                        path: path.clone(),
                        line: e.loc.line,
                        col: e.loc.col,
                    },
                    key: "(syntax)".into(),
                    message: e.message,
                }),
            }
            ConfigSource::File(path.clone())
        }
    };

    let mut warnings = Vec::new();
    for (name, value) in env.vars() {
        if !name.starts_with("CHI_") || name == SERVER_CONF_ENV {
            continue;
        }
        match KEYS.iter().find(|k| k.env == Some(name)) {
            Some(key) => c.apply(key, Origin::Env(name.to_string()), value, true, false),
            None => warnings.push(format!(
                "environment variable {name} is not a chimaera setting and is ignored{}",
                hint(name, KEYS.iter().filter_map(|k| k.env))
            )),
        }
    }

    for set in &opts.sets {
        let Some((path, value)) = set.split_once('=') else {
            c.problems.push(Problem {
                origin: Origin::Flag,
                key: set.clone(),
                message: "expected KEY=VALUE, e.g. --set workers.sched_threads=4".into(),
            });
            continue;
        };
        let path = path.trim();
        match find_key(path) {
            Some(key) => c.apply(key, Origin::Flag, value, true, false),
            None => {
                let all: Vec<String> = KEYS.iter().map(Key::path).collect();
                let suggestion = closest(path, all.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                c.problems.push(Problem {
                    origin: Origin::Flag,
                    key: path.to_string(),
                    message: format!("unknown key{suggestion}; `chimaera config keys` lists them"),
                });
            }
        }
    }

    let Collector {
        config,
        mut problems,
    } = c;
    let (names, hosts) = validate(&config, env, &mut problems);
    Ok(Collected {
        config,
        source,
        names,
        hosts,
        problems,
        warnings,
    })
}

/// The configuration and every problem with it, before anything looked at
/// the machine (what `crate::preflight` adds).
#[derive(Debug)]
pub struct Collected {
    pub config: Config,
    pub source: ConfigSource,
    pub names: SegmentNames,
    pub hosts: Vec<hostfile::HostEntry>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Collected {
    /// The configuration with what the machine gave (`node_id`,
    /// `cluster_key`), or every problem found.
    pub fn finish(
        self,
        env: &Env,
        node_id: u32,
        cluster_key: Option<chimaera_proto::wire::ClusterKey>,
    ) -> Result<Loaded, ConfigErrors> {
        if !self.problems.is_empty() {
            return Err(ConfigErrors(self.problems));
        }
        let (run_dir, run_dir_configured) = run_dir(&self.config, env);
        Ok(Loaded {
            config: self.config,
            source: self.source,
            names: self.names,
            run_dir,
            run_dir_configured,
            hosts: self.hosts,
            node_id,
            cluster_key,
            warnings: self.warnings,
        })
    }
}

/// Reads, overlays and checks the configuration on its own terms, without
/// the machine: `node_id` is 0 and no cluster key is read.
/// `crate::preflight::load` is what the daemon and `config check` run.
pub fn load(opts: &LoadOptions, env: &Env) -> Result<Loaded, ConfigErrors> {
    collect(opts, env)?.finish(env, 0, None)
}

pub fn check(problems: &mut Vec<Problem>, key: &str, message: String) {
    problems.push(Problem {
        origin: Origin::Check,
        key: key.into(),
        message,
    });
}

/// Rules across keys, and the hostfile the configuration names (read and
/// parsed; which line is this machine is `crate::preflight`'s to say).
fn validate(
    config: &Config,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> (SegmentNames, Vec<hostfile::HostEntry>) {
    let m = &config.memory;
    let total = config.total_segment_size();
    if total > m.shm_size {
        check(
            problems,
            "memory.shm_size",
            format!(
                "Total segment size exceeds shared memory size: main {} + client data {} + runtime data {} = {} > shm_size {}; raise memory.shm_size (CHI_SHM_SIZE) or lower the segment sizes",
                human(m.main_segment_size),
                human(m.client_data_segment_size),
                human(m.runtime_data_segment_size),
                human(total),
                human(m.shm_size)
            ),
        );
    }

    let user = current_user(env);
    let s = &config.shared_memory;
    let names = SegmentNames {
        main: expand_name(&s.main_segment_name, &user),
        client_data: expand_name(&s.client_data_segment_name, &user),
        runtime_data: expand_name(&s.runtime_data_segment_name, &user),
    };
    let labelled = [
        ("shared_memory.main_segment_name", &names.main),
        ("shared_memory.client_data_segment_name", &names.client_data),
        (
            "shared_memory.runtime_data_segment_name",
            &names.runtime_data,
        ),
    ];
    for (key, name) in labelled {
        // NAME_MAX is 255; the discovery file appends ".toml".
        if name.len() > 200 {
            check(
                problems,
                key,
                format!("{name:?} is longer than 200 characters"),
            );
        }
        if let Err(e) = check_name_chars(name) {
            check(problems, key, format!("expands to an unusable name: {e}"));
        }
    }
    for (i, (key_a, a)) in labelled.iter().enumerate() {
        for (key_b, b) in &labelled[i + 1..] {
            if a == b {
                check(
                    problems,
                    key_b,
                    format!("{b:?} is the same name as {key_a}; each segment needs its own"),
                );
            }
        }
    }

    let mut hosts = Vec::new();
    if !config.network.hostfile.is_empty() {
        match std::fs::read_to_string(&config.network.hostfile) {
            Err(e) => check(
                problems,
                "network.hostfile",
                format!("cannot read hostfile {}: {e}", config.network.hostfile),
            ),
            Ok(text) => match hostfile::parse_hostfile(&text) {
                Ok(h) if h.is_empty() => check(
                    problems,
                    "network.hostfile",
                    format!("hostfile {} lists no node", config.network.hostfile),
                ),
                Ok(h) => hosts = h,
                Err(errs) => {
                    for e in errs {
                        check(
                            problems,
                            "network.hostfile",
                            format!("{}: {e}", config.network.hostfile),
                        );
                    }
                }
            },
        }
    }

    let mon = &config.monitoring;
    if mon.metrics_port != 0 && mon.metrics_port == config.network.zmq_port {
        check(
            problems,
            "monitoring.metrics_port",
            format!(
                "port {} is network.zmq_port too: the metrics endpoint needs a port of its own",
                mon.metrics_port
            ),
        );
    }

    (names, hosts)
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
pub fn to_yaml(loaded: &Loaded) -> String {
    let mut c = loaded.config.clone();
    c.shared_memory.main_segment_name = loaded.names.main.clone();
    c.shared_memory.client_data_segment_name = loaded.names.client_data.clone();
    c.shared_memory.runtime_data_segment_name = loaded.names.runtime_data.clone();
    c.runtime.run_dir = loaded.run_dir.display().to_string();
    let body = serde_saphyr::to_string(&c).expect("the configuration always serializes");
    format!(
        "# effective chimaera configuration (source: {}; then CHI_* environment and --set)\n{body}",
        loaded.source
    )
}

#[cfg(test)]
mod tests;
