//! The command line. Each subcommand is a few lines that call the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

/// An error line: "chimaera: ..." on stderr, or, when the subcommand was
/// asked for JSON, `{"error": "..."}` on stdout, so that a script reading
/// the JSON gets the reason too (the exit code is non-zero either way).
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::cli::fail_line(&format!($($arg)*))
    };
}

mod runtime;
mod tasks;

static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn fail_line(message: &str) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        println!("{}", serde_json::json!({ "error": message }));
    } else {
        eprintln!("chimaera: {message}");
    }
}

use runtime::{status, stop};
use tasks::{PingTarget, ping, pool};

use crate::config::size::human;
use crate::config::{self, Env, KEYS, LoadOptions, Loaded};
use crate::exit;
use crate::service;
use crate::shm::{self, Liveness};
use chimaera_client::discovery;
use chimaera_client::{Client, Locator};

/// `--version`: the release, the commit it was built from and the
/// shared-memory layout version (a client and a runtime must share it).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHIMAERA_GIT_COMMIT"),
    ", shared-memory layout ",
    // Kept equal to chimaera_proto::header::LAYOUT_VERSION by a test.
    "3",
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "chimaera",
    version = LONG_VERSION,
    about = "Chimaera distributed task-execution runtime"
)]
pub struct Cli {
    /// Configuration file (default: $CHI_SERVER_CONF, else
    /// /etc/chimaera/chimaera_config.yaml when present, else built-in defaults).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a key, highest precedence: --set workers.sched_threads=4.
    /// Every subcommand that reaches a runtime takes the --config and --set
    /// it was started with, to find it.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the runtime daemon in the foreground.
    Run(RunArgs),
    /// Stop the running runtime and wait until it is gone.
    Stop(StopArgs),
    /// Make the runtime re-read its configuration (SIGHUP) and print what
    /// it applied, what needs a restart, or why it refused the new one.
    Reload {
        /// Print the runtime's report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the runtime's report.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Tell whether the runtime runs (exit 0) or not (exit 3).
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the runtime's answer; exit 75 ("not
        /// responding") past them.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Check, show or list the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure the runtime against this machine's floor (starts its own daemon).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create, destroy or list the runtime's pools.
    Pool(PoolArgs),
    /// Print the shell completion script for bash, zsh or fish (the .deb
    /// installs them).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Plugin module libraries: check one as the daemon would load it.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Run a method of a pool (any module's) and print its output.
    Call {
        /// The pool's name or id.
        pool: String,
        /// The method number.
        method: u32,
        /// The task's input: text, or @FILE for a file's bytes, or @- for
        /// standard input. None: empty.
        input: Option<String>,
        /// Print the output as hex (the input, when given as text, is hex
        /// too).
        #[arg(long)]
        hex: bool,
        /// Run it on node N of the cluster instead of here.
        #[arg(long, value_name = "N")]
        node: Option<u32>,
        /// Seconds to wait for the output.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Send admin no-op tasks to the runtime (or through it to other nodes)
    /// and print their round trips.
    Ping {
        /// How many pings (per node), at least 1.
        #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
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
        /// Print only the summary.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Seconds each ping may take before it counts as lost.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the runtime to finish.
    #[arg(long, default_value_t = service::DEFAULT_STOP_TIMEOUT.as_secs())]
    timeout: u64,
    /// Print what was done as one JSON object.
    #[arg(long)]
    json: bool,
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
    /// N daemons on loopback ports, for each N: broadcast round trip
    /// against a single remote one, idle CPU per daemon, and how many
    /// heartbeats every other node takes to see one of them gone.
    Cluster {
        /// Cluster sizes, 2 to 16, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "2,4,8,16")]
        nodes: Vec<u32>,
        /// Heartbeat interval of the daemons, ms.
        #[arg(long, default_value_t = 1000)]
        heartbeat_ms: u64,
        /// Seconds the idle CPU is measured over.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct PoolArgs {
    /// Seconds to wait for the runtime's answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    cmd: PoolCommand,
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// List the pools: id, name, module.
    List {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Create a pool, or find the one of that name, module and params (get-or-create).
    Create {
        name: String,
        module: String,
        /// The module's parameters, JSON (e.g. '{"kind":"ram","size":"64M"}' for bdev).
        #[arg(long, default_value = "")]
        params: String,
        /// Print the pool as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Destroy a pool, named by name or by id.
    Destroy {
        /// A pool name, or its id (a number).
        pool: String,
        /// Print the destroyed pool as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ModuleCommand {
    /// Load FILE as `modules.load` would; print its name, version and ABI,
    /// and whether this daemon can load it (exit 0) or why not (exit 78).
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate exactly as the daemon does (file, CHI_* environment, /dev/shm); exit 78 on problems.
    Check {
        /// The file to check (default: as for `run`).
        file: Option<PathBuf>,
        /// Print the result as one JSON object: the summary, or the
        /// problems (key, origin, message).
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (after the environment) as YAML.
    Show {
        /// As one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// List every key: name, environment variable, default, meaning (tab-separated).
    Keys,
}

/// The shells `chimaera completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
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
    let args: Vec<OsString> = args.into_iter().collect();
    // `bench cluster`'s echo processes: started under a name of their own
    // rather than as a subcommand, which every shell's completion would
    // offer.
    if args.first().is_some_and(|a0| {
        std::path::Path::new(a0).file_name() == Some(crate::bench::cluster::ZMQ_ECHO_ARG0.as_ref())
    }) {
        return crate::bench::cluster::zmq_echo_main(&args[1..]);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let json = match &cli.command {
        Command::Status { json, .. }
        | Command::Reload { json, .. }
        | Command::Ping { json, .. }
        | Command::Stop(StopArgs { json, .. })
        | Command::Config(ConfigCommand::Check { json, .. } | ConfigCommand::Show { json })
        | Command::Pool(PoolArgs {
            cmd:
                PoolCommand::List { json }
                | PoolCommand::Create { json, .. }
                | PoolCommand::Destroy { json, .. },
            ..
        })
        | Command::Bench(
            BenchCommand::Local { json }
            | BenchCommand::Remote { json }
            | BenchCommand::Bdev { json }
            | BenchCommand::Cluster { json, .. },
        ) => *json,
        _ => false,
    };
    JSON_ERRORS.store(json, std::sync::atomic::Ordering::Relaxed);
    if matches!(cli.command, Command::Bench(_)) {
        if cli.config.is_some() || !cli.sets.is_empty() {
            fail!(
                "bench runs daemons of its own, on a configuration of its own: --config and --set are not used"
            );
            return exit::USAGE;
        }
        crate::bench::prepare();
    }
    if !matches!(cli.command, Command::Run(_)) {
        // A reader that closes the pipe early (`| head -1`) ends a printing
        // subcommand quietly (exit 141, as for any Unix tool).
        crate::sys::default_sigpipe();
    }
    let opts = || LoadOptions {
        config_path: cli.config.clone(),
        sets: cli.sets.clone(),
        ..LoadOptions::default()
    };
    match cli.command {
        Command::Run(_) => service::run(opts(), registry),
        Command::Stop(args) => stop(&opts(), Duration::from_secs(args.timeout), args.json),
        Command::Reload { json, timeout } => {
            runtime::reload(&opts(), json, Duration::from_secs(timeout))
        }
        Command::Status { json, timeout } => status(&opts(), json, Duration::from_secs(timeout)),
        Command::Config(ConfigCommand::Check { file, json }) => {
            let mut o = opts();
            if file.is_some() {
                o.config_path = file;
            }
            config_check(&o, &registry.modules(), json)
        }
        Command::Config(ConfigCommand::Show { json }) => config_show(&opts(), json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let out = &mut std::io::stdout();
            match shell {
                Shell::Bash => {
                    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "chimaera", out)
                }
                Shell::Zsh => {
                    clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "chimaera", out)
                }
                Shell::Fish => {
                    clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "chimaera", out)
                }
            }
            exit::OK
        }
        Command::Bench(BenchCommand::Local { json }) => {
            report_bench(crate::bench::local(), json, |r| {
                format!(
                    "rtt p50 {} ns p99 {} ns | floor p50 {} ns ({:.2}x) | async {:.0} tasks/s | {} clients {:.0} tasks/s | defaults ({} workers, {}): rtt p50 {} ns, async {:.0} tasks/s",
                    r.rtt_p50_ns,
                    r.rtt_p99_ns,
                    r.floor_rtt_ns,
                    r.rtt_over_floor,
                    r.async_tasks_per_s,
                    r.clients,
                    r.multi_client_tasks_per_s,
                    r.default_config_workers,
                    r.default_config_lane_policy,
                    r.default_config_rtt_p50_ns,
                    r.default_config_async_tasks_per_s
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
        Command::Bench(BenchCommand::Cluster {
            nodes,
            heartbeat_ms,
            idle_secs,
            json,
        }) => report_bench(
            crate::bench::cluster::cluster(&nodes, heartbeat_ms, Duration::from_secs(idle_secs)),
            json,
            |r| {
                r.points
                    .iter()
                    .map(|p| {
                        format!(
                            "{} nodes: broadcast p50 {} ns p99 {} ns, remote p50 {} ns ({:.2}x; plain ZeroMQ {} / {} ns, {:.2}x) | idle CPU {:.2}% mean {:.2}% max | loss seen in {:.2}-{:.2} heartbeats",
                            p.nodes,
                            p.broadcast_rtt_p50_ns,
                            p.broadcast_rtt_p99_ns,
                            p.remote_rtt_p50_ns,
                            p.broadcast_over_remote,
                            p.raw_zmq_broadcast_rtt_p50_ns,
                            p.raw_zmq_remote_rtt_p50_ns,
                            p.raw_zmq_broadcast_over_remote,
                            p.idle_cpu_pct_mean,
                            p.idle_cpu_pct_max,
                            p.loss_seen_heartbeats_min,
                            p.loss_seen_heartbeats_max
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ),
        Command::Pool(a) => pool(&opts(), a.cmd, Duration::from_secs(a.timeout)),
        Command::Module(ModuleCommand::Check { file }) => {
            tasks::module_check(&file, &registry.taken_names())
        }
        Command::Call {
            pool,
            method,
            input,
            hex,
            node,
            timeout,
        } => tasks::call(
            &opts(),
            tasks::CallArgs {
                pool,
                method,
                input,
                hex,
                node,
                limit: Duration::from_secs(timeout),
            },
        ),
        Command::Ping {
            count,
            node,
            all,
            broadcast,
            json,
            quiet,
            timeout,
        } => {
            let target = match (node, all, broadcast) {
                (Some(n), _, _) => PingTarget::Node(n),
                (None, true, _) => PingTarget::All,
                (None, false, true) => PingTarget::Broadcast,
                (None, false, false) => PingTarget::Local,
            };
            let limit = Duration::from_secs(timeout);
            ping(&opts(), count, target, json, quiet, limit)
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
        for p in &errors.0 {
            fail!("configuration error: {p}");
        }
        exit::CONFIG
    })
}

fn config_check(
    opts: &LoadOptions,
    modules: &[std::sync::Arc<dyn chimaera_module::Module>],
    json: bool,
) -> u8 {
    let env = Env::from_process();
    match crate::preflight::load_and_check(opts, &env, modules) {
        Ok(crate::preflight::Checked { loaded, plugins }) => {
            let c = &loaded.config;
            if json {
                let modules: Vec<serde_json::Value> = plugins
                    .iter()
                    .map(|p| {
                        let l = p.library();
                        serde_json::json!({"name": l.name, "version": l.version,
                            "file": l.file.display().to_string()})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "source": loaded.source.to_string(),
                        "workers": loaded.workers,
                        "segments_bytes": c.total_segment_size(),
                        "shm_size": c.memory.shm_size, "zmq_port": c.network.zmq_port,
                        "node_id": loaded.node_id, "nodes": loaded.hosts.len().max(1),
                        "modules": modules, "warnings": loaded.warnings})
                );
                return exit::OK;
            }
            for w in &loaded.warnings {
                eprintln!("chimaera: warning: {w}");
            }
            let auto = match loaded.config.workers.sched_threads {
                config::WorkerCount::Auto => " (auto)",
                config::WorkerCount::Count(_) => "",
            };
            println!(
                "configuration OK ({}): {} workers{auto}, segments {} in {} of shared memory, zmq port {}, node {} of {}",
                loaded.source,
                loaded.workers,
                human(c.total_segment_size()),
                human(c.memory.shm_size),
                c.network.zmq_port,
                loaded.node_id,
                loaded.hosts.len().max(1)
            );
            for p in &plugins {
                let l = p.library();
                println!("module {} {} from {}", l.name, l.version, l.file.display());
            }
            exit::OK
        }
        Err(refused) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "exit_code": refused.exit_code(),
                        "problems": refused.to_json()})
                );
            } else {
                service::report_refusal(&refused);
            }
            refused.exit_code()
        }
    }
}

fn config_show(opts: &LoadOptions, json: bool) -> u8 {
    let env = Env::from_process();
    match load_or_report(opts, &env) {
        Ok(loaded) if json => {
            println!("{}", config::to_json(&loaded));
            exit::OK
        }
        Ok(loaded) => {
            print!("{}", config::to_yaml(&loaded));
            exit::OK
        }
        Err(code) => code,
    }
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
            fail!("bench failed: {e}");
            exit::SOFTWARE
        }
    }
}
