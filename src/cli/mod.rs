//! The command line. Each subcommand is a few lines that call the library.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

mod runtime;
mod tasks;

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
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Print the shell completion script for bash, zsh or fish (the .deb
    /// installs them).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
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
    /// Create a pool, or find the one of that name, module and params (get-or-create).
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
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 64 } else { exit::OK };
        }
    };
    if matches!(cli.command, Command::Bench(_)) {
        if cli.config.is_some() {
            eprintln!(
                "chimaera: bench runs daemons of its own, on a configuration of its own: --config is not used"
            );
            return 64;
        }
        crate::bench::prepare();
    }
    if !matches!(cli.command, Command::Run(_)) {
        // A reader that closes the pipe early (`| head -1`) ends a printing
        // subcommand quietly (exit 141, as for any Unix tool).
        crate::sys::default_sigpipe();
    }
    let opts = |sets: Vec<String>| LoadOptions {
        config_path: cli.config.clone(),
        sets,
        ..LoadOptions::default()
    };
    match cli.command {
        Command::Run(args) => service::run(opts(args.sets), registry),
        Command::Stop(args) => stop(&opts(Vec::new()), Duration::from_secs(args.timeout)),
        Command::Status { json, timeout } => {
            status(&opts(Vec::new()), json, Duration::from_secs(timeout))
        }
        Command::Config(ConfigCommand::Check { file, sets }) => {
            let mut o = opts(sets);
            if file.is_some() {
                o.config_path = file;
            }
            config_check(&o)
        }
        Command::Config(ConfigCommand::Show { sets }) => config_show(&opts(sets)),
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
            ping(&opts(Vec::new()), count, target, json, quiet, limit)
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
            let auto = match loaded.config.workers.sched_threads {
                config::WorkerCount::Auto => " (auto)",
                config::WorkerCount::Count(_) => "",
            };
            println!(
                "configuration OK ({}): {} workers{auto}, segments {} in {} of shared memory, zmq port {}, node {} of {}",
                loaded.source,
                loaded.workers,
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
