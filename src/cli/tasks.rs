//! The subcommands that run tasks through a client (`pool`, `ping`,
//! `call`), and `module check`.

use super::runtime::{Found, locate, not_running_message};
use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum PingTarget {
    Local,
    Node(u32),
    All,
    Broadcast,
}

/// A client of the running runtime, or the exit code that says why not.
pub(super) fn connect_running(opts: &LoadOptions) -> Result<Client, u8> {
    let (loc, found) = locate(opts, exit::UNAVAILABLE)?;
    let Found::Running { path, disc, .. } = found else {
        fail!("{}", not_running_message(&found, &loc, opts));
        return Err(exit::NOT_RUNNING);
    };
    Client::connect_discovery(path, disc).map_err(|e| {
        fail!("{e}");
        exit::UNAVAILABLE
    })
}

pub(super) fn pool(opts: &LoadOptions, cmd: PoolCommand, limit: Duration) -> u8 {
    let client = match connect_running(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    client.set_admin_timeout(Some(limit));
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
            json,
        } => client.create_pool(&name, &module, &params).map(|p| {
            if json {
                println!("{}", serde_json::to_string(&p).expect("serializable"));
            } else {
                println!("pool {} (id {}, module {})", p.name, p.id, p.module);
            }
        }),
        PoolCommand::Destroy { pool, json } => {
            let req = match pool.parse::<u32>() {
                Ok(id) => crate::modules::admin::PoolRef::Id { id },
                Err(_) => crate::modules::admin::PoolRef::Name { name: pool },
            };
            client.destroy_pool_ref(&req).map(|p| {
                if json {
                    println!("{}", serde_json::to_string(&p).expect("serializable"));
                } else {
                    println!("destroyed pool {} (id {})", p.name, p.id);
                }
            })
        }
    };
    match result {
        Ok(()) => exit::OK,
        Err(chimaera_client::ClientError::TimedOut) => {
            fail!(
                "the runtime did not answer within {} s (stopped, or stuck?)",
                limit.as_secs()
            );
            exit::NOT_RESPONDING
        }
        Err(e) => {
            fail!("{e}");
            // The runtime answered: the request itself was refused.
            exit::FAILURE
        }
    }
}

/// `chimaera module check FILE`: the daemon's own loading and checks.
pub(super) fn module_check(file: &std::path::Path, taken: &[String]) -> u8 {
    let lib = match crate::plugin::open(file) {
        Ok(l) => l,
        Err(e) => {
            println!("file: {}", file.display());
            println!("compatible: no");
            fail!("{}: not loadable: {e}", file.display());
            return exit::CONFIG;
        }
    };
    println!("file: {}", lib.file.display());
    println!("module: {}", lib.name);
    println!("version: {}", lib.version);
    println!(
        "abi: {} (this daemon: {}, layout hash {:#018x})",
        lib.abi_version,
        chimaera_module::abi::ABI_VERSION,
        chimaera_module::abi::LAYOUT_HASH
    );
    println!("sdk: {}", lib.sdk_version);
    if taken.contains(&lib.name) {
        println!("compatible: no");
        fail!(
            "{}: module name {:?} is taken by a module built into this daemon",
            file.display(),
            lib.name
        );
        return exit::CONFIG;
    }
    println!("compatible: yes");
    exit::OK
}

pub(super) struct CallArgs {
    pub pool: String,
    pub method: u32,
    pub input: Option<String>,
    pub hex: bool,
    pub node: Option<u32>,
    pub limit: Duration,
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if !t.len().is_multiple_of(2) {
        return Err(format!("{text:?} is not hex: an odd number of digits"));
    }
    (0..t.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&t[i..i + 2], 16)
                .map_err(|_| format!("{text:?} is not hex: {:?}", &t[i..i + 2]))
        })
        .collect()
}

/// The input `call` was given: text (hex with `--hex`), `@FILE` or `@-`.
fn call_input(input: Option<&str>, hex: bool) -> Result<Vec<u8>, String> {
    use std::io::Read;
    match input {
        None => Ok(Vec::new()),
        Some("@-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(b)
        }
        Some(s) if s.starts_with('@') => {
            std::fs::read(&s[1..]).map_err(|e| format!("cannot read {}: {e}", &s[1..]))
        }
        Some(s) if hex => from_hex(s),
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

/// `chimaera call POOL METHOD [INPUT]`: one task, its output on stdout.
pub(super) fn call(opts: &LoadOptions, a: CallArgs) -> u8 {
    use std::io::Write;
    let input = match call_input(a.input.as_deref(), a.hex) {
        Ok(i) => i,
        Err(e) => {
            fail!("{e}");
            return exit::USAGE;
        }
    };
    let client = match connect_running(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    client.set_admin_timeout(Some(a.limit));
    let pools = match client.list_pools() {
        Ok(p) => p,
        Err(chimaera_client::ClientError::TimedOut) => {
            fail!(
                "the runtime did not answer within {} s (stopped, or stuck?)",
                a.limit.as_secs()
            );
            return exit::NOT_RESPONDING;
        }
        Err(e) => {
            fail!("cannot list the pools: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let by_id = a.pool.parse::<u32>().ok();
    let Some(pool) = pools
        .iter()
        .find(|p| p.name == a.pool || Some(p.id) == by_id)
    else {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        fail!(
            "no pool {:?}; the pools are: {} (chimaera pool list)",
            a.pool,
            names.join(", ")
        );
        return exit::FAILURE;
    };
    let mut task = chimaera_client::Task::new(pool.id, a.method, &input);
    if let Some(n) = a.node {
        task = task.on_node(n);
    }
    match client.call_timeout(&task, a.limit) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            let written = if a.hex {
                let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(stdout, "{hex}")
            } else {
                stdout.write_all(&out)
            };
            // A reader that went away early is not a failed call.
            let _ = written.and_then(|()| stdout.flush());
            exit::OK
        }
        Err(chimaera_client::ClientError::TimedOut) => {
            fail!(
                "pool {} method {}: no answer within {} s (the task may still run)",
                pool.name,
                a.method,
                a.limit.as_secs()
            );
            exit::NOT_RESPONDING
        }
        Err(e) => {
            fail!(
                "pool {} (module {}) method {}: {e}",
                pool.name,
                pool.module,
                a.method
            );
            exit::FAILURE
        }
    }
}

/// `count` broadcast pings: each round trip lasts until every node
/// answered (or was found unavailable); exit 0 only if all answered, every time.
pub(super) fn ping_broadcast(client: &Client, count: u32, json: bool) -> u8 {
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
                fail!("broadcast ping failed: {e}");
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
pub(super) fn rtt_summary(rtts: &[u64]) -> (u64, u64, u64) {
    let mut sorted = rtts.to_vec();
    sorted.sort_unstable();
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

/// A series of pings to one runtime (this node's, or node `node` of the
/// cluster): what was sent and how each went.
struct Series {
    node: Option<u32>,
    sent: u32,
    rtts: Vec<u64>,
    errors: Vec<String>,
}

/// Lines for stdout, written out together at most every 50 ms.
struct LineBuffer {
    on: bool,
    text: String,
    since: Instant,
}

impl LineBuffer {
    const EVERY: Duration = Duration::from_millis(50);

    fn new(on: bool) -> LineBuffer {
        LineBuffer {
            on,
            text: String::new(),
            since: Instant::now(),
        }
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        if !self.on {
            return;
        }
        use std::fmt::Write as _;
        let _ = writeln!(self.text, "{args}");
        if self.since.elapsed() >= Self::EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        use std::io::Write as _;
        if !self.text.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(self.text.as_bytes());
            let _ = out.flush();
            self.text.clear();
        }
        self.since = Instant::now();
    }
}

impl Series {
    /// Pings as ping(8) does: a line per reply as it comes (unless `quiet`
    /// or `json`), each within `limit`, until `count` are sent or SIGINT.
    fn run(
        client: &Client,
        node: Option<u32>,
        count: u32,
        limit: Duration,
        print: bool,
        interrupted: &std::sync::atomic::AtomicBool,
    ) -> Series {
        let mut s = Series {
            node,
            sent: 0,
            rtts: Vec::with_capacity(count as usize),
            errors: Vec::new(),
        };
        let who = node.map_or("admin ping".to_string(), |n| format!("node {n}"));
        let ping = chimaera_client::Task::new(
            crate::modules::admin::POOL_ID,
            crate::modules::admin::method::PING,
            &[],
        );
        // Lines go out at most every 50 ms, not one write per reply: back
        // to back, a reply takes well under a microsecond, and a write per
        // line woke the reader (a terminal, a pipe) each time, which then
        // took a CPU from this client or its worker and made the round
        // trips being measured 10-20 µs instead of 0.3-0.8.
        let mut lines = LineBuffer::new(print);
        while s.sent < count && !interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            s.sent += 1;
            let reply = match node {
                None => client.ping_timeout(limit),
                Some(n) => {
                    let t = Instant::now();
                    client
                        .call_timeout(&ping.on_node(n), limit)
                        .map(|_| t.elapsed())
                }
            };
            match reply {
                Ok(d) => {
                    let ns = d.as_nanos() as u64;
                    s.rtts.push(ns);
                    lines.line(format_args!("{who}: {:.1} us", ns as f64 / 1e3));
                }
                Err(e) => {
                    lines.line(format_args!("{who}: {e}"));
                    s.errors.push(e.to_string());
                }
            }
        }
        lines.flush();
        s
    }

    fn lost(&self) -> u32 {
        self.errors.len() as u32
    }

    fn ok(&self) -> bool {
        self.lost() == 0 && !self.rtts.is_empty()
    }

    /// min, median, p99, max.
    fn figures(&self) -> [Option<u64>; 4] {
        let mut sorted = self.rtts.clone();
        sorted.sort_unstable();
        [0.0, 0.5, 0.99, 1.0]
            .map(|p| (!sorted.is_empty()).then(|| crate::bench::percentile(&sorted, p)))
    }

    fn to_json(&self, count: u32) -> serde_json::Value {
        let [min, p50, p99, max] = self.figures();
        let mut v = serde_json::json!({"count": self.sent, "answered": self.rtts.len(),
            "lost": self.lost(), "interrupted": self.sent < count, "rtt_ns": self.rtts,
            "min_ns": min, "p50_ns": p50, "p99_ns": p99, "max_ns": max, "errors": self.errors});
        if let Some(n) = self.node {
            v["node"] = n.into();
            v["ok"] = self.ok().into();
            if let Some(e) = self.errors.first() {
                v["error"] = e.clone().into();
            }
        }
        v
    }

    fn summary(&self) -> String {
        let [min, p50, p99, max] = self.figures();
        let us =
            |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.1} us", v as f64 / 1e3));
        let head = match self.node {
            None => format!("{} pings:", self.sent),
            Some(n) => format!("node {n}: {} ping(s),", self.sent),
        };
        format!(
            "{head} min {}, median {}, p99 {}, max {}; {} answered, {} lost ({:.0}%)",
            us(min),
            us(p50),
            us(p99),
            us(max),
            self.rtts.len(),
            self.lost(),
            f64::from(self.lost()) * 100.0 / f64::from(self.sent.max(1)),
        )
    }
}

pub(super) fn ping(
    opts: &LoadOptions,
    count: u32,
    target: PingTarget,
    json: bool,
    quiet: bool,
    limit: Duration,
) -> u8 {
    let client = match connect_running(opts) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let nodes: Vec<Option<u32>> = match target {
        PingTarget::Local => vec![None],
        PingTarget::Broadcast => return ping_broadcast(&client, count, json),
        PingTarget::Node(n) => vec![Some(n)],
        PingTarget::All => match client.stats_timeout(limit) {
            Ok(s) => (0..s.cluster.map_or(1, |c| c.nodes)).map(Some).collect(),
            Err(e) => {
                fail!("cannot read the cluster's size: {e}");
                return exit::UNAVAILABLE;
            }
        },
    };
    // ping(8): Ctrl-C ends the series and still prints the summary.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone());
    let mut all_ok = true;
    let mut results = Vec::new();
    for node in nodes {
        let s = Series::run(&client, node, count, limit, !json && !quiet, &interrupted);
        all_ok &= s.ok();
        if !json {
            println!("{}", s.summary());
        }
        results.push(s.to_json(count));
    }
    if json {
        match target {
            PingTarget::Local => println!("{}", results[0]),
            _ => println!("{}", serde_json::json!({"count": count, "nodes": results})),
        }
    }
    if all_ok { exit::OK } else { exit::UNAVAILABLE }
}
