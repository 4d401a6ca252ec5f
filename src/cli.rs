//! The command line. Each subcommand is a few lines that call the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::config::size::human;
use crate::config::{self, Env, KEYS, LoadOptions, Loaded};
use crate::exit;
use crate::service;
use crate::shm::{self, Liveness};
use chimaera_client::discovery;
use chimaera_client::{Client, Locator};

#[derive(Parser, Debug)]
#[command(
    name = "chimaera",
    version,
    about = "Chimaera distributed task-execution runtime"
)]
pub struct Cli {
    /// Configuration file (default: $CHI_SERVER_CONF, else
    /// /etc/chimaera/chimaera_config.yaml when present, else built-in defaults).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the runtime daemon in the foreground.
    Run(RunArgs),
    /// Stop the running runtime and wait until it is gone.
    Stop(StopArgs),
    /// Tell whether the runtime runs (exit 0) or not (exit 3).
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check, show or list the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure the runtime against this machine's floor (starts its own daemon).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create, destroy or list the runtime's pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Send admin no-op tasks to the runtime (or through it to other nodes)
    /// and print their round trips.
    Ping {
        /// How many pings (per node).
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Ping node N of the hostfile, through the local runtime.
        #[arg(long, value_name = "N", conflicts_with = "all")]
        node: Option<u32>,
        /// Ping every node of the hostfile, one after another.
        #[arg(long, conflicts_with = "broadcast")]
        all: bool,
        /// One broadcast ping to every node at once, answered by all of them.
        #[arg(long, conflicts_with = "node")]
        broadcast: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Override a key, highest precedence: --set workers.sched_threads=4
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the runtime to finish.
    #[arg(long, default_value_t = service::DEFAULT_STOP_TIMEOUT.as_secs())]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Local tasks through shared memory: round trip, pipelined and multi-client rates.
    Local {
        /// Print one JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Tasks routed to another node over loopback (two daemons of its own),
    /// against plain ZeroMQ sockets in the same run.
    Remote {
        /// Print one JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Block I/O on a RAM bdev pool (4 KiB and 1 MiB writes and reads)
    /// against memcpy in the same run.
    Bdev {
        /// Print one JSON object instead of a line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// List the pools: id, name, module.
    List {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Create a pool, or find the one of that name and module (get-or-create).
    Create {
        name: String,
        module: String,
        /// The module's parameters, JSON (e.g. '{"kind":"ram","size":"64M"}' for bdev).
        #[arg(long, default_value = "")]
        params: String,
    },
    /// Destroy a pool, named by name or by id.
    Destroy {
        /// A pool name, or its id (a number).
        pool: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate exactly as the daemon does (file, CHI_* environment, /dev/shm); exit 78 on problems.
    Check {
        /// The file to check (default: as for `run`).
        file: Option<PathBuf>,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Print the effective configuration (after the environment) as YAML.
    Show {
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List every key: name, environment variable, default, meaning (tab-separated).
    Keys,
}

/// Entry point of all three binaries.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> u8 {
    main_with_registry(args, crate::modules::builtin_registry())
}

/// The command line of a runtime with these modules (see
/// [`crate::RuntimeBuilder`]).
pub fn main_with_registry(
    args: impl IntoIterator<Item = OsString>,
    registry: crate::engine::pools::Registry,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 64 } else { exit::OK };
        }
    };
    let opts = |sets: Vec<String>| LoadOptions {
        config_path: cli.config.clone(),
        sets,
        ..LoadOptions::default()
    };
    match cli.command {
        Command::Run(args) => service::run(opts(args.sets), registry),
        Command::Stop(args) => stop(&opts(Vec::new()), Duration::from_secs(args.timeout)),
        Command::Status { json } => status(&opts(Vec::new()), json),
        Command::Config(ConfigCommand::Check { file, sets }) => {
            let mut o = opts(sets);
            if file.is_some() {
                o.config_path = file;
            }
            config_check(&o)
        }
        Command::Config(ConfigCommand::Show { sets }) => config_show(&opts(sets)),
        Command::Bench(BenchCommand::Local { json }) => {
            report_bench(crate::bench::local(), json, |r| {
                format!(
                    "rtt p50 {} ns p99 {} ns | floor p50 {} ns ({:.2}x) | async {:.0} tasks/s | {} clients {:.0} tasks/s",
                    r.rtt_p50_ns,
                    r.rtt_p99_ns,
                    r.floor_rtt_ns,
                    r.rtt_over_floor,
                    r.async_tasks_per_s,
                    r.clients,
                    r.multi_client_tasks_per_s
                )
            })
        }
        Command::Bench(BenchCommand::Remote { json }) => {
            report_bench(crate::bench::remote::remote(), json, |r| {
                format!(
                    "remote rtt p50 {} ns p99 {} ns | raw zmq p50 {} ns ({:.2}x) | {:.0} tasks/s vs raw {:.0} msgs/s ({:.2}x)",
                    r.rtt_p50_ns,
                    r.rtt_p99_ns,
                    r.raw_zmq_rtt_p50_ns,
                    r.rtt_over_raw,
                    r.tasks_per_s,
                    r.raw_zmq_msgs_per_s,
                    r.throughput_over_raw
                )
            })
        }
        Command::Bench(BenchCommand::Bdev { json }) => {
            report_bench(crate::bench::bdev::bdev(), json, |r| {
                format!(
                    "1 MiB write {:.2} GB/s read {:.2} GB/s ({:.2}x, {:.2}x memcpy {:.2} GB/s) | 4 KiB write {:.2} GB/s read {:.2} GB/s ({:.0}/{:.0} IOPS)",
                    r.write_1m_gbps,
                    r.read_1m_gbps,
                    r.write_1m_over_memcpy,
                    r.read_1m_over_memcpy,
                    r.memcpy_gbps,
                    r.write_4k_gbps,
                    r.read_4k_gbps,
                    r.write_4k_iops,
                    r.read_4k_iops
                )
            })
        }
        Command::Pool(cmd) => pool(&opts(Vec::new()), cmd),
        Command::Ping {
            count,
            node,
            all,
            broadcast,
            json,
        } => {
            let target = match (node, all, broadcast) {
                (Some(n), _, _) => PingTarget::Node(n),
                (None, true, _) => PingTarget::All,
                (None, false, true) => PingTarget::Broadcast,
                (None, false, false) => PingTarget::Local,
            };
            ping(&opts(Vec::new()), count.max(1), target, json)
        }
        Command::Config(ConfigCommand::Keys) => {
            let defaults = config::Config::default();
            for k in KEYS {
                println!(
                    "{}\t{}\t{}\t{}",
                    k.path(),
                    k.env.unwrap_or("-"),
                    k.get(&defaults),
                    k.help
                );
            }
            exit::OK
        }
    }
}

/// `chimaera_start_runtime [ARGS]` is `chimaera run [ARGS]`; likewise stop.
pub fn compat_main(subcommand: &str) -> u8 {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = if args.is_empty() {
        OsString::from("chimaera")
    } else {
        args.remove(0)
    };
    let mut full = vec![argv0, OsString::from(subcommand)];
    full.extend(args);
    main_with_args(full)
}

fn load_or_report(opts: &LoadOptions, env: &Env) -> Result<Loaded, u8> {
    crate::preflight::load(opts, env).map_err(|errors| {
        service::report_config_errors(&errors);
        exit::CONFIG
    })
}

fn config_check(opts: &LoadOptions) -> u8 {
    let env = Env::from_process();
    match crate::preflight::load_and_check(opts, &env) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("chimaera: warning: {w}");
            }
            println!(
                "configuration OK ({}): {} workers, segments {} in {} of shared memory, zmq port {}, node {} of {}",
                loaded.source,
                loaded.config.workers.sched_threads,
                human(loaded.config.total_segment_size()),
                human(loaded.config.memory.shm_size),
                loaded.config.network.zmq_port,
                loaded.node_id,
                loaded.hosts.len().max(1)
            );
            exit::OK
        }
        Err(errors) => {
            service::report_config_errors(&errors);
            exit::CONFIG
        }
    }
}

fn config_show(opts: &LoadOptions) -> u8 {
    let env = Env::from_process();
    match load_or_report(opts, &env) {
        Ok(loaded) => {
            print!("{}", config::to_yaml(&loaded));
            exit::OK
        }
        Err(code) => code,
    }
}

/// What is known about the runtime a configuration points at.
enum Found {
    Running {
        path: PathBuf,
        disc: discovery::Discovery,
        /// Open main segment, to wait on its lock; None when not ours to open.
        main: Option<std::fs::File>,
    },
    Stale {
        path: PathBuf,
        disc: discovery::Discovery,
    },
    /// The main segment's lock is held but the discovery file is not the
    /// holder's: a runtime is starting (possibly reclaiming a dead one's
    /// segments) and has not published itself yet.
    Starting {
        segment: String,
        previous_pid: u32,
    },
    Nowhere {
        searched: Vec<PathBuf>,
    },
}

fn find_runtime(loc: &Locator, env: &Env) -> Result<Found, String> {
    let (path, disc) = match discovery::find(loc, env) {
        Ok(found) => found,
        Err(discovery::NotFound::Nowhere(searched)) => return Ok(Found::Nowhere { searched }),
        Err(discovery::NotFound::Denied(path, e)) => {
            return Err(format!(
                "cannot read {}: {e}; the runtime's users are root and the members of its shared_memory.group (e.g. `adduser $USER chimaera`, then log in again)",
                path.display()
            ));
        }
    };
    match shm::probe(&disc.segments.main).map_err(|e| e.to_string())? {
        // The discovery file is written after the ready word, so a held lock
        // with a discovery file whose pid is gone (or not the header's owner)
        // is a new runtime between taking the lock and publishing itself.
        Liveness::Alive { header, .. }
            if !crate::sys::pid_alive(disc.pid)
                || header
                    .as_ref()
                    .is_some_and(|h| !h.ready || h.owner_pid != disc.pid) =>
        {
            Ok(Found::Starting {
                segment: disc.segments.main,
                previous_pid: disc.pid,
            })
        }
        Liveness::Alive { header, file } => {
            if let Some(h) = header.filter(|h| h.ready) {
                h.check(&disc.segments.main).map_err(|e| e.to_string())?;
            }
            Ok(Found::Running {
                path,
                disc,
                main: Some(file),
            })
        }
        Liveness::NoAccess if crate::sys::pid_alive(disc.pid) => Ok(Found::Running {
            path,
            disc,
            main: None,
        }),
        Liveness::Dead { .. } | Liveness::Absent | Liveness::NoAccess => {
            Ok(Found::Stale { path, disc })
        }
    }
}

fn not_running_message(found: &Found) -> String {
    match found {
        Found::Nowhere { searched } => format!(
            "chimaera is not running (no discovery file in {})",
            searched
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Found::Stale { path, disc } => format!(
            "chimaera is not running (stale discovery file {} from pid {}, which is gone; the next start reclaims its segments)",
            path.display(),
            disc.pid
        ),
        Found::Starting {
            segment,
            previous_pid,
        } => format!(
            "chimaera is starting: a runtime holds {segment} but has not published itself yet (the discovery file is from pid {previous_pid}); try again in a moment"
        ),
        Found::Running { .. } => unreachable!("only called when not running"),
    }
}

/// Reads what locates the runtime (segment names, run directory: a
/// client's part of the configuration, none of the daemon's checks or
/// secrets) and looks for it; on failure, the exit code (`lookup_failed`
/// when the lookup itself fails).
fn locate(opts: &LoadOptions, lookup_failed: u8) -> Result<(Locator, Found), u8> {
    let env = Env::from_process();
    let loc = Locator::load(opts, &env).map_err(|e| {
        eprintln!("chimaera: configuration error: {e}");
        exit::CONFIG
    })?;
    let found = find_runtime(&loc, &env).map_err(|e| {
        eprintln!("chimaera: {e}");
        lookup_failed
    })?;
    Ok((loc, found))
}

fn status(opts: &LoadOptions, json: bool) -> u8 {
    let (loaded, found) = match locate(opts, exit::STATUS_UNKNOWN) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let Found::Running { path, disc, .. } = &found else {
        if json {
            let (stale_pid, file) = match &found {
                Found::Stale { path, disc } => (Some(disc.pid), Some(path.display().to_string())),
                _ => (None, None),
            };
            println!(
                "{}",
                serde_json::json!({"running": false, "starting": matches!(found, Found::Starting { .. }),
                    "stale_pid": stale_pid, "discovery_file": file, "main_segment": loaded.names.main})
            );
        } else {
            println!("{}", not_running_message(&found));
        }
        return exit::NOT_RUNNING;
    };
    let uptime_s = chimaera_proto::unix_ms().saturating_sub(disc.started_unix_ms) / 1000;
    // The peers come from the runtime itself (an admin stats task); a
    // status that may not attach still reports the rest.
    let cluster = Client::connect_discovery(path.clone(), disc.clone())
        .and_then(|c| c.stats())
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s.cluster
                .ok_or_else(|| "the runtime runs without its network layer".into())
        });
    if json {
        let (peers, cluster_json) = match &cluster {
            Ok(c) => (serde_json::json!(c.peers), serde_json::json!(c)),
            Err(e) => (serde_json::Value::Null, serde_json::json!({"error": e})),
        };
        println!(
            "{}",
            serde_json::json!({
                "running": true,
                "pid": disc.pid,
                "version": disc.version,
                "layout_version": disc.layout_version,
                "node_id": disc.node_id,
                "zmq_port": disc.zmq_port,
                "uptime_s": uptime_s,
                "started_unix_ms": disc.started_unix_ms,
                "config": disc.config,
                "log_file": disc.log_file,
                "discovery_file": path.display().to_string(),
                "segments": {
                    "main": {"name": disc.segments.main, "size": disc.segment_sizes[0]},
                    "client_data": {"name": disc.segments.client_data, "size": disc.segment_sizes[1]},
                    "runtime_data": {"name": disc.segments.runtime_data, "size": disc.segment_sizes[2]},
                },
                "peers": peers,
                "cluster": cluster_json,
            })
        );
    } else {
        println!(
            "chimaera is running (pid {}, version {}, up {}s)",
            disc.pid, disc.version, uptime_s
        );
        println!(
            "  node {}, zmq port {}, config {}",
            disc.node_id, disc.zmq_port, disc.config
        );
        println!(
            "  segments {} ({}), {} ({}), {} ({})",
            disc.segments.main,
            human(disc.segment_sizes[0]),
            disc.segments.client_data,
            human(disc.segment_sizes[1]),
            disc.segments.runtime_data,
            human(disc.segment_sizes[2])
        );
        println!("  discovery file {}", path.display());
        match &cluster {
            Ok(c) if c.nodes > 1 => {
                println!(
                    "  cluster of {} nodes, frames {}",
                    c.nodes,
                    if c.authenticated {
                        "authenticated"
                    } else {
                        "not authenticated"
                    }
                );
                for p in &c.peers {
                    let heard = p
                        .last_heard_ms_ago
                        .map_or("never heard".to_string(), |ms| format!("heard {ms} ms ago"));
                    println!("    node {} {}: {}, {}", p.node, p.addr, p.state, heard);
                }
            }
            Ok(_) => {}
            Err(e) => println!("  peers: unknown ({e})"),
        }
    }
    exit::OK
}

fn stop(opts: &LoadOptions, timeout: Duration) -> u8 {
    let found = match locate(opts, exit::UNAVAILABLE) {
        Ok((_, f)) => f,
        Err(code) => return code,
    };
    let Found::Running { path, disc, main } = found else {
        eprintln!("chimaera: {}", not_running_message(&found));
        return exit::NOT_RUNNING;
    };
    // The admin pool's stop is the runtime's own graceful path and works for
    // any user allowed to submit tasks; a signal is the fallback.
    let via_admin = Client::connect_discovery(path, disc.clone()).and_then(|c| c.stop_runtime());
    if let Err(admin_err) = via_admin
        && let Err(e) = crate::sys::send_signal(disc.pid, libc::SIGTERM)
    {
        eprintln!("chimaera: the admin stop failed ({admin_err})");
        if e.raw_os_error() == Some(libc::EPERM) {
            eprintln!(
                "chimaera: not allowed to stop the runtime (pid {}, uid {}): run as root or as its user",
                disc.pid, disc.uid
            );
            return exit::NOPERM;
        }
        eprintln!(
            "chimaera: cannot signal the runtime (pid {}): {e}",
            disc.pid
        );
        return exit::UNAVAILABLE;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match &main {
            Some(file) => shm::released(file),
            None => !crate::sys::pid_alive(disc.pid),
        };
        if gone {
            println!("chimaera stopped (pid {})", disc.pid);
            return exit::OK;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "chimaera: the runtime (pid {}) is still running {}s after the stop request; see its log, or `kill -9 {}` as a last resort",
                disc.pid,
                timeout.as_secs(),
                disc.pid
            );
            return exit::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, Clone, Copy)]
enum PingTarget {
    Local,
    Node(u32),
    All,
    Broadcast,
}

/// Prints a benchmark's report (one JSON object, or `line`) and gives the
/// exit code.
fn report_bench<R: serde::Serialize>(
    report: Result<R, String>,
    json: bool,
    line: impl FnOnce(&R) -> String,
) -> u8 {
    match report {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string(&r).expect("serializable"));
            } else {
                println!("{}", line(&r));
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("chimaera: bench failed: {e}");
            exit::SOFTWARE
        }
    }
}

/// A client of the running runtime, or the exit code that says why not.
fn connect_running(opts: &LoadOptions) -> Result<Client, u8> {
    let (_, found) = locate(opts, exit::UNAVAILABLE)?;
    let Found::Running { path, disc, .. } = found else {
        eprintln!("chimaera: {}", not_running_message(&found));
        return Err(exit::NOT_RUNNING);
    };
    Client::connect_discovery(path, disc).map_err(|e| {
        eprintln!("chimaera: {e}");
        exit::UNAVAILABLE
    })
}

fn pool(opts: &LoadOptions, cmd: PoolCommand) -> u8 {
    let client = match connect_running(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cmd {
        PoolCommand::List { json } => client.list_pools().map(|pools| {
            if json {
                println!("{}", serde_json::to_string(&pools).expect("serializable"));
            } else {
                for p in pools {
                    println!("{}\t{}\t{}", p.id, p.name, p.module);
                }
            }
        }),
        PoolCommand::Create {
            name,
            module,
            params,
        } => client
            .create_pool(&name, &module, &params)
            .map(|p| println!("pool {} (id {}, module {})", p.name, p.id, p.module)),
        PoolCommand::Destroy { pool } => {
            let req = match pool.parse::<u32>() {
                Ok(id) => crate::modules::admin::PoolRef::Id { id },
                Err(_) => crate::modules::admin::PoolRef::Name { name: pool },
            };
            client
                .destroy_pool_ref(&req)
                .map(|p| println!("destroyed pool {} (id {})", p.name, p.id))
        }
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("chimaera: {e}");
            // The runtime answered: the request itself was refused.
            exit::FAILURE
        }
    }
}

/// `count` broadcast pings: each round trip lasts until every node
/// answered (or was found unavailable); exit 0 only if all answered, every time.
fn ping_broadcast(client: &Client, count: u32, json: bool) -> u8 {
    let ping = chimaera_client::Task::new(
        crate::modules::admin::POOL_ID,
        crate::modules::admin::method::PING,
        &[],
    );
    let mut rtts = Vec::with_capacity(count as usize);
    let mut failures: Vec<(u32, String)> = Vec::new();
    let mut nodes = 0;
    for _ in 0..count {
        let t = Instant::now();
        let replies = match client.broadcast(&ping) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("chimaera: broadcast ping failed: {e}");
                return exit::UNAVAILABLE;
            }
        };
        rtts.push(t.elapsed().as_nanos() as u64);
        nodes = replies.len();
        for r in replies.into_iter().filter(|r| r.status != 0) {
            let why = String::from_utf8_lossy(&r.output).into_owned();
            if !failures.iter().any(|(n, _)| *n == r.node) {
                failures.push((r.node, why));
            }
        }
    }
    let (min, p50, max) = rtt_summary(&rtts);
    if json {
        let failed: Vec<_> = failures
            .iter()
            .map(|(n, e)| serde_json::json!({"node": n, "error": e}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"count": count, "nodes": nodes, "ok": failures.is_empty(),
                "failed": failed, "rtt_ns": rtts, "min_ns": min, "p50_ns": p50, "max_ns": max})
        );
    } else {
        println!(
            "broadcast to {nodes} node(s): {count} ping(s), min {:.1} us, median {:.1} us, max {:.1} us",
            min as f64 / 1e3,
            p50 as f64 / 1e3,
            max as f64 / 1e3
        );
        for (n, e) in &failures {
            println!("node {n}: {e}");
        }
    }
    if failures.is_empty() {
        exit::OK
    } else {
        exit::UNAVAILABLE
    }
}

/// `count` round trips of an admin ping (to `node`, or here); the error
/// ends the series.
fn ping_series(client: &Client, node: Option<u32>, count: u32) -> Result<Vec<u64>, String> {
    (0..count)
        .map(|_| {
            match node {
                Some(n) => client.ping_node(n),
                None => client.ping(),
            }
            .map(|d| d.as_nanos() as u64)
            .map_err(|e| e.to_string())
        })
        .collect()
}

fn rtt_summary(rtts: &[u64]) -> (u64, u64, u64) {
    let mut sorted = rtts.to_vec();
    sorted.sort_unstable();
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

fn ping(opts: &LoadOptions, count: u32, target: PingTarget, json: bool) -> u8 {
    let client = match connect_running(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let nodes: Vec<u32> = match target {
        PingTarget::Local => {
            return match ping_series(&client, None, count) {
                Ok(rtts) => {
                    let (min, p50, max) = rtt_summary(&rtts);
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"count": count, "rtt_ns": rtts, "min_ns": min, "p50_ns": p50, "max_ns": max})
                        );
                    } else {
                        for r in &rtts {
                            println!("admin ping: {:.1} us", *r as f64 / 1e3);
                        }
                        if count > 1 {
                            println!(
                                "{count} pings: min {:.1} us, median {:.1} us, max {:.1} us",
                                min as f64 / 1e3,
                                p50 as f64 / 1e3,
                                max as f64 / 1e3
                            );
                        }
                    }
                    exit::OK
                }
                Err(e) => {
                    eprintln!("chimaera: ping failed: {e}");
                    exit::UNAVAILABLE
                }
            };
        }
        PingTarget::Broadcast => return ping_broadcast(&client, count, json),
        PingTarget::Node(n) => vec![n],
        PingTarget::All => match client.stats() {
            Ok(s) => (0..s.cluster.map_or(1, |c| c.nodes)).collect(),
            Err(e) => {
                eprintln!("chimaera: cannot read the cluster's size: {e}");
                return exit::UNAVAILABLE;
            }
        },
    };
    let mut all_ok = true;
    let mut results = Vec::new();
    for n in nodes {
        match ping_series(&client, Some(n), count) {
            Ok(rtts) => {
                let (min, p50, max) = rtt_summary(&rtts);
                if !json {
                    println!(
                        "node {n}: {count} ping(s), min {:.1} us, median {:.1} us, max {:.1} us",
                        min as f64 / 1e3,
                        p50 as f64 / 1e3,
                        max as f64 / 1e3
                    );
                }
                results.push(serde_json::json!({"node": n, "ok": true, "rtt_ns": rtts, "min_ns": min, "p50_ns": p50, "max_ns": max}));
            }
            Err(e) => {
                all_ok = false;
                if !json {
                    println!("node {n}: {e}");
                }
                results.push(serde_json::json!({"node": n, "ok": false, "error": e}));
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({"count": count, "nodes": results}));
    }
    if all_ok { exit::OK } else { exit::UNAVAILABLE }
}
