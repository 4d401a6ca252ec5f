//! The checks of a configuration that need this machine, above the pure
//! configuration: which hostfile line is this node (its addresses), the
//! cluster key file (the daemon's secret), the shared-memory group, whether
//! the main segment holds the engine's layout (for as many workers as
//! `auto` gives on this machine's CPUs and cgroup quota), and the free
//! space of /dev/shm. The daemon and `chimaera config check` run them; a client needs
//! none of them.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use chimaera_module::Module;

use crate::config::size::human;
use crate::config::{
    Config, ConfigErrors, Env, LoadOptions, Loaded, Origin, Problem, check, collect,
};

/// Loads the configuration and runs every check but the /dev/shm one: all
/// problems, of the file and of the machine, together.
pub fn load(opts: &LoadOptions, env: &Env) -> Result<Loaded, ConfigErrors> {
    let mut c = collect(opts, env)?;
    let config = &c.config;
    let problems = &mut c.problems;
    let m = &config.memory;
    let cpu = crate::cpus::CpuLimit::this_process();
    if let Err(e) = chimaera_proto::layout::Layout::compute(
        m.main_segment_size,
        crate::shm::HEADER_SIZE,
        config.workers.sched_threads.resolve(&cpu),
        config.performance.queue_depth,
    ) {
        check(problems, "memory.main_segment_size", e);
    }

    let s = &config.shared_memory;
    if !s.group.is_empty() && crate::sys::group_id(&s.group).is_none() {
        check(
            problems,
            "shared_memory.group",
            format!("group {:?} does not exist on this system", s.group),
        );
    }

    let hosts = &c.hosts;
    // Which line is this node: only once the hostfile itself is fine.
    let mut node_id = 0;
    if problems.is_empty() {
        let n = &config.network;
        match crate::cluster::identify_here(hosts, n.zmq_port, n.node_id.explicit()) {
            Ok(id) => node_id = id,
            Err(e) if hosts.is_empty() => check(problems, e.key(), e.to_string()),
            Err(e) => check(problems, e.key(), format!("{}: {e}", n.hostfile)),
        }
    }

    let mut cluster_key = None;
    if !config.network.cluster_key_file.is_empty() {
        match chimaera_proto::wire::ClusterKey::from_file(&config.network.cluster_key_file) {
            Ok(k) => cluster_key = Some(k),
            Err(e) => check(problems, "network.cluster_key_file", e.to_string()),
        }
    }

    c.finish(env, node_id, cluster_key, cpu)
}

/// A configuration that passed every check, and the plugin modules it
/// loads.
pub struct Checked {
    pub loaded: Loaded,
    pub plugins: Vec<crate::plugin::Plugin>,
}

/// Why the daemon would not start: the configuration (exit 78), or a
/// resource it needs is taken or missing (exit 69).
#[derive(Debug)]
pub enum Refused {
    Config(ConfigErrors),
    Unavailable(ListenError),
}

impl Refused {
    pub fn exit_code(&self) -> u8 {
        match self {
            Refused::Config(_) => crate::exit::CONFIG,
            Refused::Unavailable(_) => crate::exit::UNAVAILABLE,
        }
    }

    /// The problems as JSON objects (key, origin, message).
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        match self {
            Refused::Config(errors) => errors.0.iter().map(|p| p.to_json()).collect(),
            Refused::Unavailable(e) => vec![serde_json::json!({
                "key": e.key(), "origin": "check", "message": e.to_string()
            })],
        }
    }

    /// What `run` and `config check` both print, a line each.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Refused::Config(errors) => errors
                .0
                .iter()
                .map(|p| format!("configuration error: {p}"))
                .collect(),
            Refused::Unavailable(e) => vec![e.to_string()],
        }
    }
}

impl From<ConfigErrors> for Refused {
    fn from(e: ConfigErrors) -> Refused {
        Refused::Config(e)
    }
}

/// A listening socket the daemon would not get.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "network.zmq_port {port} is already in use on this host: stop what holds it or choose another port (CHI_ZMQ_PORT)"
    )]
    ZmqPortInUse { port: u16 },
    #[error("cannot listen on tcp port {port} (network.zmq_port): {source}")]
    ZmqBind { port: u16, source: io::Error },
    #[error(
        "monitoring.metrics_port {port} is already in use on {addr}: stop what holds it or choose another port (CHI_METRICS_PORT)"
    )]
    MetricsPortInUse { addr: IpAddr, port: u16 },
    #[error(
        "monitoring.metrics_address {addr} is not an address of this host: give one of its addresses, 127.0.0.1, 0.0.0.0 or :: (CHI_METRICS_ADDRESS)"
    )]
    MetricsNotLocal { addr: IpAddr },
    #[error(
        "cannot serve metrics on {addr} (monitoring.metrics_port, monitoring.metrics_address): {source}"
    )]
    MetricsBind { addr: SocketAddr, source: io::Error },
}

impl ListenError {
    /// The key to change.
    pub fn key(&self) -> &'static str {
        match self {
            ListenError::ZmqPortInUse { .. } | ListenError::ZmqBind { .. } => "network.zmq_port",
            ListenError::MetricsPortInUse { .. } | ListenError::MetricsBind { .. } => {
                "monitoring.metrics_port"
            }
            ListenError::MetricsNotLocal { .. } => "monitoring.metrics_address",
        }
    }
}

/// The metrics endpoint's listener, or why not: the probe and the endpoint
/// itself bind through here, so they fail alike.
pub fn metrics_listener(addr: IpAddr, port: u16) -> Result<TcpListener, ListenError> {
    let at = SocketAddr::new(addr, port);
    TcpListener::bind(at).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::MetricsPortInUse { addr, port },
        io::ErrorKind::AddrNotAvailable => ListenError::MetricsNotLocal { addr },
        _ => ListenError::MetricsBind {
            addr: at,
            source: e,
        },
    })
}

/// Whether the ports the daemon listens on can be had: the ZeroMQ port (on
/// every IPv4 address, as the transport binds it) and the metrics endpoint.
/// Bound and let go at once.
fn probe_listeners(config: &Config) -> Result<(), ListenError> {
    let port = config.network.zmq_port;
    TcpListener::bind((IpAddr::from([0, 0, 0, 0]), port)).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => ListenError::ZmqPortInUse { port },
        _ => ListenError::ZmqBind { port, source: e },
    })?;
    let m = &config.monitoring;
    if m.metrics_port != 0 {
        metrics_listener(m.metrics_address, m.metrics_port)?;
    }
    Ok(())
}

/// Every `compose:` entry names a module this daemon has (built in, or a
/// plugin just loaded) with parameters that module accepts.
fn check_compose(
    config: &Config,
    modules: &[Arc<dyn Module>],
    plugins: &[crate::plugin::Plugin],
    problems: &mut Vec<crate::config::Problem>,
) {
    let admin = chimaera_proto::admin::POOL_NAME;
    let all: Vec<Arc<dyn Module>> = modules
        .iter()
        .cloned()
        .chain(plugins.iter().map(|p| p.as_module()))
        .collect();
    for (i, spec) in config.compose.iter().enumerate() {
        let at = spec.at(i);
        if spec.module == admin {
            continue;
        }
        match all.iter().find(|m| m.name() == spec.module) {
            None => {
                let mut names: Vec<&str> = all.iter().map(|m| m.name()).collect();
                names.push(admin);
                names.sort();
                check(
                    problems,
                    &format!("{at}.module"),
                    format!(
                        "no module {:?} in this runtime; it has: {} (plugins: modules.load)",
                        spec.module,
                        names.join(", ")
                    ),
                )
            }
            Some(m) => {
                if let Err(e) = m.check_params(&spec.name, spec.params.as_bytes()) {
                    check(problems, &format!("{at}.params"), e);
                }
            }
        }
    }
}

/// [`load`], then the plugin libraries, `compose:` against the modules,
/// the /dev/shm rule and the listening ports: everything that makes the
/// daemon refuse to start before it serves, and so everything `chimaera
/// config check` checks. `modules` are the ones the binary has without
/// plugins (bdev, a `RuntimeBuilder`'s; admin is implied).
///
/// The ports are probed only when no runtime holds this configuration's
/// segments: a running one holds them itself (and `run` would be refused
/// as already running, by the segments' lock).
pub fn load_and_check(
    opts: &LoadOptions,
    env: &Env,
    modules: &[Arc<dyn Module>],
) -> Result<Checked, Refused> {
    let loaded = load(opts, env)?;
    let mut problems = Vec::new();
    let mut taken: Vec<String> = modules.iter().map(|m| m.name().to_string()).collect();
    taken.push(chimaera_proto::admin::POOL_NAME.to_string());
    let plugins = crate::plugin::load_all(&loaded.config, &taken).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    if problems.is_empty() {
        check_compose(&loaded.config, modules, &plugins, &mut problems);
    }
    if let Err(p) = check_shm_space(&loaded.config, Path::new(crate::shm::SHM_DIR)) {
        problems.push(p);
    }
    if !problems.is_empty() {
        return Err(Refused::Config(ConfigErrors(problems)));
    }
    let running = matches!(
        crate::shm::probe(&loaded.names.main),
        Ok(crate::shm::Liveness::Alive { .. })
    );
    if !running {
        probe_listeners(&loaded.config).map_err(Refused::Unavailable)?;
    }
    Ok(Checked { loaded, plugins })
}

/// The /dev/shm rule: the segments must fit in the free space of the shm
/// filesystem actually mounted, not only in the declared size.
pub fn check_shm_space(config: &Config, shm_dir: &Path) -> Result<(), Problem> {
    let total = config.total_segment_size();
    let (size, free) = crate::sys::fs_space(shm_dir).map_err(|e| Problem {
        origin: Origin::Check,
        key: "memory.shm_size".into(),
        message: format!(
            "cannot inspect {} ({e}); POSIX shared memory needs a tmpfs mounted there",
            shm_dir.display()
        ),
    })?;
    if total > free {
        return Err(Problem {
            origin: Origin::Check,
            key: "memory.shm_size".into(),
            message: format!(
                "Total segment size exceeds shared memory size: the segments need {} but {} has {} free (of {}); give the container more (docker run --shm-size, compose shm_size) or lower the segment sizes",
                human(total),
                shm_dir.display(),
                human(free),
                human(size)
            ),
        });
    }
    Ok(())
}
