//! The daemon's life: validate, create, announce, serve, stop, clean up.
//!
//! Start order (as in the original runtime, minus its faults): configuration
//! → shared-memory segments → task engine (workers, reapers) → network
//! endpoint → metrics endpoint (when configured) → discovery file → READY=1.
//! A failure at any step undoes the steps before it and exits with a code that
//! says which kind of failure it was.

pub mod log;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use slog::{debug, error, info, warn};

pub use chimaera_client::discovery;
use chimaera_module::Module;
use chimaera_proto::layout::WorkerSlot;

use crate::config::size::human;
use crate::config::{self, Env, LoadOptions, Loaded, changed_keys};
use crate::engine::Engine;
use crate::engine::runtime::RuntimeCore;
use crate::exit;
use crate::modules::admin::AdminModule;
use crate::net::Net;
use crate::shm::{Access, Segments};

/// Tells systemd (when NOTIFY_SOCKET is set) how the start is going. Failures
/// to notify are not worth stopping for, but are logged.
fn notify(log: &slog::Logger, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(log, "cannot notify the service manager"; "error" => %e);
    }
}

fn status_line(loaded: &Loaded) -> String {
    format!(
        "running: segments {} ({}), zmq port {}, node {} of {}",
        loaded.names.main,
        human(loaded.config.total_segment_size()),
        loaded.config.network.zmq_port,
        loaded.node_id,
        loaded.hosts.len().max(1),
    )
}

/// Sends WATCHDOG=1 at half the interval systemd asked for, until told to
/// stop, but only while every worker makes progress: a worker that sat in
/// the same task for a whole interval without a single pass of its loop is
/// stuck (modules cannot be preempted), and withholding the ping lets
/// systemd restart the service. Idle workers pass their loop at least once
/// a second, so idleness is progress.
fn start_watchdog(
    log: &slog::Logger,
    core: Arc<RuntimeCore>,
    net_executor: Option<Arc<WorkerSlot>>,
) -> Option<(mpsc::Sender<()>, thread::JoinHandle<()>)> {
    let timeout = sd_notify::watchdog_enabled()?;
    let every = timeout / 2;
    info!(log, "systemd watchdog enabled"; "timeout_ms" => timeout.as_millis() as u64);
    let (tx, rx) = mpsc::channel::<()>();
    let wlog = log.clone();
    let handle = thread::Builder::new()
        .name("chi-watchdog".into())
        .spawn(move || {
            // The workers, then the network thread's executor: a peer's
            // task for a method that claims to be quick but blocks would
            // hold the whole network layer (heartbeats included).
            let net = net_executor;
            let slots = || core.view.workers.iter().chain(net.as_deref());
            let mut last: Vec<u64> = slots().map(|w| w.progress.load(Ordering::Relaxed)).collect();
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let mut stuck = Vec::new();
                for (i, w) in slots().enumerate() {
                    let p = w.progress.load(Ordering::Relaxed);
                    if p == last[i] && w.running.load(Ordering::Relaxed) != chimaera_proto::record::NONE {
                        stuck.push(i);
                    }
                    last[i] = p;
                }
                if stuck.is_empty() {
                    notify(&wlog, &[NotifyState::Watchdog]);
                    continue;
                }
                let workers = core.view.workers.len();
                let (net_stuck, workers_stuck): (Vec<usize>, Vec<usize>) = stuck.into_iter().partition(|&i| i == workers);
                if !workers_stuck.is_empty() {
                    warn!(wlog, "worker(s) {:?} stuck in one task for {:?} or more; withholding the watchdog ping", workers_stuck, every);
                }
                if !net_stuck.is_empty() {
                    warn!(wlog, "the network thread is stuck in a peer's task for {:?} or more (a module method marked quick blocks); withholding the watchdog ping", every);
                }
            }
        })
        .ok()?;
    Some((tx, handle))
}

struct Running {
    opts: LoadOptions,
    loaded: Loaded,
    log: slog::Logger,
    log_handle: log::LogHandle,
    reloads: u64,
}

impl Running {
    /// SIGHUP: re-read the configuration; apply what can change live (log
    /// level, log file, which is also reopened for logrotate) and say what
    /// needs a restart. A configuration that no longer validates is refused
    /// and the running one kept.
    fn reload(&mut self) {
        let monotonic = NotifyState::monotonic_usec_now().ok();
        let mut states = vec![
            NotifyState::Reloading,
            NotifyState::Status("reloading configuration"),
        ];
        states.extend(monotonic);
        notify(&self.log, &states);
        info!(self.log, "SIGHUP: reloading configuration"; "source" => %self.loaded.source);
        self.reloads += 1;
        let mut report = discovery::ReloadReport {
            seq: self.reloads,
            pid: std::process::id(),
            ok: true,
            ..Default::default()
        };
        match crate::preflight::load(&self.opts, &Env::from_process()) {
            Err(errors) => {
                report.ok = false;
                for p in &errors.0 {
                    error!(
                        self.log,
                        "reload refused, keeping the running configuration: {}", p
                    );
                    report.refused.push(p.to_string());
                }
            }
            Ok(new) => {
                for (key, old, now) in changed_keys(&self.loaded.config, &new.config) {
                    if key.live {
                        info!(self.log, "applied {} = {} (was {})", key.path(), now, old);
                        report
                            .applied
                            .push(format!("{} = {now} (was {old})", key.path()));
                    } else {
                        warn!(
                            self.log,
                            "{} changed from {} to {}; restart chimaera to apply it",
                            key.path(),
                            old,
                            now
                        );
                        report
                            .restart_needed
                            .push(format!("{} changed from {old} to {now}", key.path()));
                    }
                }
                // Membership and pools are fixed at start: say so rather
                // than silently keep the old ones.
                let old_pools = &self.loaded.config.compose;
                let new_pools = &new.config.compose;
                if old_pools.len() != new_pools.len()
                    || old_pools
                        .iter()
                        .zip(new_pools)
                        .any(|(a, b)| !a.same_pool(b))
                {
                    warn!(
                        self.log,
                        "compose changed; restart chimaera to apply it (pools are created at start)"
                    );
                    report
                        .restart_needed
                        .push("compose changed (pools are created at start)".into());
                }
                let members = |l: &Loaded| -> Vec<(String, Option<u16>)> {
                    l.hosts.iter().map(|h| (h.host.clone(), h.port)).collect()
                };
                if members(&new) != members(&self.loaded) || new.node_id != self.loaded.node_id {
                    let m = format!(
                        "the hostfile's nodes changed (this node: {} of {}, was {} of {})",
                        new.node_id,
                        new.hosts.len().max(1),
                        self.loaded.node_id,
                        self.loaded.hosts.len().max(1)
                    );
                    warn!(self.log, "{}; restart chimaera to apply it", m);
                    report.restart_needed.push(m);
                }
                self.log_handle.set_level(new.config.logging.level);
                self.loaded.config.logging = new.config.logging;
            }
        }
        if let Err(e) = self.log_handle.reopen(&self.loaded.config.logging.file) {
            warn!(self.log, "{}", e);
        }
        debug!(self.log, "reload complete"; "level" => %self.loaded.config.logging.level);
        let path = self
            .loaded
            .run_dir
            .join(discovery::reload_file_name(&self.loaded.names.main));
        if let Err(e) = write_report(&path, &report) {
            warn!(
                self.log,
                "cannot write the reload report {}: {}",
                path.display(),
                e
            );
        }
        notify(
            &self.log,
            &[
                NotifyState::Ready,
                NotifyState::Status(&status_line(&self.loaded)),
            ],
        );
    }
}

/// Writes `report` whole or not at all (a reader never sees half a file).
fn write_report(path: &std::path::Path, report: &discovery::ReloadReport) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Prints each problem on its own line, naming the key.
pub fn report_config_errors(errors: &config::ConfigErrors) {
    for p in &errors.0 {
        eprintln!("chimaera: configuration error: {p}");
    }
}

/// Prints why the start is refused, a line each: what `run` and `config
/// check` both say.
pub fn report_refusal(refused: &crate::preflight::Refused) {
    for line in refused.lines() {
        eprintln!("chimaera: {line}");
    }
}

/// `chimaera run`: the daemon in the foreground. Returns the exit code.
pub fn run(opts: LoadOptions, mut registry: crate::engine::pools::Registry) -> u8 {
    crate::engine::guard::install_hook();
    let env = Env::from_process();
    let (loaded, plugins) = match crate::preflight::load_and_check(&opts, &env, &registry.modules())
    {
        Ok(c) => (c.loaded, c.plugins),
        Err(refused) => {
            report_refusal(&refused);
            return refused.exit_code();
        }
    };
    let (log, log_handle, log_problem) =
        log::init(loaded.config.logging.level, &loaded.config.logging.file);
    if let Some(p) = log_problem {
        warn!(log, "{}", p);
    }
    for w in &loaded.warnings {
        warn!(log, "{}", w);
    }
    for p in &plugins {
        let l = p.library();
        info!(log, "loaded module {} {}", l.name, l.version;
            "file" => %l.file.display(), "abi" => l.abi_version, "sdk" => &l.sdk_version);
        registry.register(p.as_module());
    }
    // Before anything exists, so that a signal during start-up is handled by
    // the loop below (and cleans up) instead of killing a half-built runtime.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            error!(log, "cannot install signal handlers: {}", e);
            return exit::SOFTWARE;
        }
    };
    info!(log, "chimaera {} starting", env!("CARGO_PKG_VERSION");
        "pid" => std::process::id(), "config" => %loaded.source);

    notify(&log, &[NotifyState::Status("creating shared memory")]);
    let gid = match loaded.config.shared_memory.group.as_str() {
        "" => None,
        g => crate::sys::group_id(g),
    };
    let m = &loaded.config.memory;
    let segments = match Segments::create(
        &loaded.names,
        [
            m.main_segment_size,
            m.client_data_segment_size,
            m.runtime_data_segment_size,
        ],
        Access { gid },
    ) {
        Ok(s) => s,
        Err(e @ crate::shm::ShmError::AlreadyRunning { .. }) => {
            // The hint names the runtime as the user did, so that it works.
            error!(log, "{} (`{}`)", e, opts.command_line("stop"));
            return exit::UNAVAILABLE;
        }
        Err(e) => {
            error!(log, "{}", e);
            return exit::UNAVAILABLE;
        }
    };
    for r in &segments.reclaimed {
        match r.previous_pid {
            Some(pid) => warn!(
                log,
                "reclaimed stale segment {} left by dead runtime pid {}", r.segment, pid
            ),
            None => warn!(
                log,
                "reclaimed stale segment {} (no readable header)", r.segment
            ),
        }
    }
    for s in segments.all() {
        info!(
            log,
            "created {} segment {} ({}), mode {:o}",
            s.kind().label(),
            s.name(),
            human(s.len()),
            Access { gid }.mode()
        );
    }
    notify(&log, &[NotifyState::Status("starting workers")]);
    let admin = |core| Arc::new(AdminModule::new(core)) as Arc<dyn Module>;
    let mut engine = match Engine::start(&loaded, segments, registry, admin, &log) {
        Ok(e) => e,
        Err(e) => {
            error!(log, "cannot start the task engine: {}", e);
            return exit::SOFTWARE;
        }
    };

    match engine.compose(&loaded.config.compose) {
        Ok(pools) => {
            for p in pools {
                info!(
                    log,
                    "created pool {} (id {}, module {}) from compose", p.name, p.id, p.module
                );
            }
        }
        Err(e) => {
            error!(log, "configuration error: {}", e);
            return exit::CONFIG;
        }
    }

    notify(&log, &[NotifyState::Status("binding the network endpoint")]);
    let net_cfg = crate::net::NetConfig {
        node_id: loaded.node_id,
        hosts: loaded.hosts.clone(),
        zmq_port: loaded.config.network.zmq_port,
        heartbeat: Duration::from_millis(loaded.config.runtime.heartbeat_interval),
        key: loaded.cluster_key.clone(),
        wake: Some((
            loaded
                .run_dir
                .join(discovery::wake_socket_name(&loaded.names.main)),
            Access { gid },
        )),
        epoch_file: Some(loaded.run_dir.join(format!("{}.epoch", loaded.names.main))),
    };
    let (zmq_port, wake_socket, net_executor) = match Net::start(engine.core.clone(), net_cfg, &log)
    {
        Ok(net) => {
            let found = (
                net.port,
                net.wake_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                net.shared.executor.clone(),
            );
            engine.attach_network(net.shared.clone(), Box::new(net));
            found
        }
        Err(e) => {
            error!(log, "{}", e);
            return exit::UNAVAILABLE;
        }
    };
    info!(log, "listening for other nodes on tcp port {}", zmq_port);
    if loaded.hosts.is_empty() {
        info!(log, "node 0 of 1 (no hostfile: a single node)");
    } else {
        let how = match loaded.config.network.node_id {
            config::NodeIdSetting::Auto => "found by this machine's addresses and port",
            config::NodeIdSetting::Id(_) => "set by network.node_id",
        };
        info!(
            log,
            "node {} of {}: line {} ({}) of hostfile {}, {}",
            loaded.node_id,
            loaded.hosts.len(),
            loaded.hosts[loaded.node_id as usize].line,
            loaded.hosts[loaded.node_id as usize],
            loaded.config.network.hostfile,
            how
        );
    }

    // Declared after the engine, so that an early return drops (stops) it
    // first: it reads the engine's segments.
    let metrics = match start_metrics(&loaded, &engine, &log) {
        Ok(m) => m,
        Err(e) => {
            error!(log, "{}", e);
            return exit::UNAVAILABLE;
        }
    };

    let disc = discovery::Discovery {
        version: env!("CARGO_PKG_VERSION").into(),
        layout_version: crate::shm::LAYOUT_VERSION,
        pid: std::process::id(),
        uid: crate::sys::euid(),
        node_id: loaded.node_id,
        zmq_port,
        started_unix_ms: chimaera_proto::unix_ms(),
        config: loaded.source.to_string(),
        log_file: loaded.config.logging.file.clone(),
        segments: loaded.names.clone(),
        segment_sizes: engine.segments().all().map(|s| s.len()),
        wake_socket,
    };
    // Clients may attach from here on; the discovery file tells them where.
    engine.segments().publish();
    let disc_path: PathBuf = match discovery::write(&loaded.run_dir, &disc) {
        Ok(p) => p,
        Err(e) => {
            error!(
                log,
                "cannot write the discovery file in {}: {}; set runtime.run_dir (CHI_RUN_DIR) to a writable directory",
                loaded.run_dir.display(),
                e
            );
            return exit::UNAVAILABLE;
        }
    };
    info!(log, "discovery file {}", disc_path.display());

    let watchdog = start_watchdog(&log, engine.core.clone(), Some(net_executor));
    let mut running = Running {
        opts,
        loaded,
        log: log.clone(),
        log_handle,
        reloads: 0,
    };
    notify(
        &log,
        &[
            NotifyState::Ready,
            NotifyState::Status(&status_line(&running.loaded)),
        ],
    );
    info!(log, "chimaera runtime ready"; "pid" => std::process::id());

    let mut stop_signal = "";
    for sig in signals.forever() {
        match sig {
            SIGHUP => running.reload(),
            SIGTERM => {
                stop_signal = "SIGTERM";
                break;
            }
            _ => {
                stop_signal = "SIGINT";
                break;
            }
        }
    }
    notify(
        &log,
        &[NotifyState::Stopping, NotifyState::Status("stopping")],
    );
    info!(log, "{} received: stopping", stop_signal);
    if let Some((tx, handle)) = watchdog {
        drop(tx);
        let _ = handle.join();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    // This run's reload report goes with it (absent unless it reloaded).
    let _ = std::fs::remove_file(
        disc_path.with_file_name(discovery::reload_file_name(&running.loaded.names.main)),
    );
    // Discovery first: a client must not find a runtime that is going away.
    if let Err(e) = std::fs::remove_file(&disc_path) {
        warn!(
            log,
            "cannot remove discovery file {}: {}",
            disc_path.display(),
            e
        );
    }
    let segments = engine.stop();
    info!(log, "workers stopped");
    let names: Vec<String> = segments
        .all()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    drop(segments);
    info!(log, "removed segments {}", names.join(", "));
    info!(log, "chimaera runtime stopped");
    exit::OK
}

/// The Prometheus endpoint, when `monitoring.metrics_port` asks for one.
fn start_metrics(
    loaded: &Loaded,
    engine: &Engine,
    log: &slog::Logger,
) -> Result<Option<crate::metrics::Server>, crate::metrics::MetricsError> {
    let m = &loaded.config.monitoring;
    if m.metrics_port == 0 {
        return Ok(None);
    }
    let server = crate::metrics::Server::start(
        m.metrics_address,
        m.metrics_port,
        engine.core.clone(),
        engine.segments().main.len(),
        log,
    )?;
    info!(log, "serving metrics on http://{}/metrics", server.addr());
    Ok(Some(server))
}

/// How long `chimaera stop` waits by default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
