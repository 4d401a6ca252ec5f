//! The key table ([`KEYS`]): every key once, with its section, `CHI_*`
//! variable, kind, whether SIGHUP applies it, and its meaning; and how a raw
//! value of each kind is parsed.

use super::*;

/// What a key accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A whole number written as a number.
    Count {
        min: u64,
        max: u64,
    },
    /// `auto`, or a whole number from min to max written as a number.
    AutoOrCount {
        min: u64,
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
    /// Absolute directories: a YAML list, or `:`-separated.
    PathList,
    /// Module names or absolute library paths: a YAML list, or
    /// `,`-separated.
    ModuleList,
}

impl Kind {
    /// True for the kinds a YAML list gives.
    pub(super) fn is_list(&self) -> bool {
        matches!(self, Kind::PathList | Kind::ModuleList)
    }
}

impl Kind {
    pub(super) fn expects(&self) -> String {
        match self {
            Kind::Count { min, max } => format!("a whole number from {min} to {max}"),
            Kind::AutoOrCount { min, max } => {
                format!("auto, or a whole number from {min} to {max}")
            }
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
            Kind::PathList => "a list of absolute directories (':'-separated outside YAML)".into(),
            Kind::ModuleList => {
                "a list of module names or absolute .so paths (','-separated outside YAML)".into()
            }
        }
    }
}

/// A parsed value, before it is stored in its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(u64),
    Text(String),
}

pub(super) trait FromValue {
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

/// List kinds travel as one text, an item per line.
impl FromValue for SearchPath {
    fn from_value(v: Value) -> Self {
        SearchPath(split_lines(&String::from_value(v)))
    }
}

impl FromValue for ModuleList {
    fn from_value(v: Value) -> Self {
        ModuleList(split_lines(&String::from_value(v)))
    }
}

fn split_lines(t: &str) -> Vec<String> {
    t.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
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

impl FromValue for WorkerCount {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Num(n) => WorkerCount::Count(u32::from_value(Value::Num(n))),
            Value::Text(_) => WorkerCount::Auto,
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
    pub(super) set: fn(&mut Config, Value),
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

pub(super) const TIB: u64 = 1 << 40;
pub(super) const MIB: u64 = 1 << 20;

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
    workers.sched_threads, Some("CHI_SCHED_WORKERS"), Kind::AutoOrCount { min: 1, max: 1024 }, false,
        "Scheduler worker threads, each pinned to its own core; auto: one per CPU this process may use (its CPU set, limited by its cgroup's CPU quota, rounded up).";
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
    network.node_id, Some("CHI_NODE_ID"), Kind::AutoOrCount { min: 0, max: 65535 }, false,
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
    modules.path, Some("CHI_MODULES_PATH"), Kind::PathList, false,
        "Directories searched, in order, for the modules `modules.load` names (lib<name>.so, else lib<name>_plugin.so).";
    modules.load, Some("CHI_MODULES_LOAD"), Kind::ModuleList, false,
        "Plugin modules loaded at start: names found on `modules.path`, or absolute paths of .so files. A library that is missing or not built for this daemon's module ABI stops the start.";
}

pub fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path() == path)
}

pub(super) fn sections() -> Vec<&'static str> {
    let mut s: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
    s.dedup();
    s
}

/// Parses one raw value for `key`. `plain` is false for quoted YAML scalars,
/// which are text even when they look like numbers.
pub(super) fn parse_value(key: &Key, text: &str, plain: bool, null: bool) -> Result<Value, String> {
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
        Kind::AutoOrCount { min, max } => {
            // `auto` may be quoted; a number must not be, as for counts.
            if text.trim().eq_ignore_ascii_case("auto") {
                return Ok(Value::Text("auto".into()));
            }
            number(min, max).map(Value::Num)
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
        Kind::PathList | Kind::ModuleList if null => Ok(Value::Text(String::new())),
        Kind::PathList => {
            let mut dirs = Vec::new();
            for d in text
                .split(['\n', ':'])
                .map(str::trim)
                .filter(|d| !d.is_empty())
            {
                if !d.starts_with('/') {
                    return Err(format!(
                        "expected absolute directories (starting with /), got {d:?}"
                    ));
                }
                dirs.push(d);
            }
            Ok(Value::Text(dirs.join("\n")))
        }
        Kind::ModuleList => {
            let mut items = Vec::new();
            for m in text
                .split(['\n', ','])
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                if m.contains('/') {
                    if !m.starts_with('/') {
                        return Err(format!(
                            "{m:?} is a relative path; give a module name or an absolute path"
                        ));
                    }
                } else {
                    chimaera_module::check_module_name(m)?;
                }
                if items.contains(&m) {
                    return Err(format!("{m:?} is listed twice"));
                }
                items.push(m);
            }
            Ok(Value::Text(items.join("\n")))
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

pub(super) fn check_name_chars(raw: &str) -> Result<(), String> {
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
