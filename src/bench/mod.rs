//! `chimaera bench local`: the local task path against the hardware floor,
//! measured in one run so the ratio means something on a noisy machine.
//!
//! - floor: two processes bounce one atomic word in shared memory; each
//!   round trip is timed exactly as a task's is, clock reads included;
//! - rtt: one client thread, synchronous no-op (admin ping) tasks,
//!   submit → complete;
//! - async: one client thread keeps a window of tasks in flight;
//! - multi-client: several clients (separate connections, separate
//!   threads) do the same at once.
//!
//! The bench starts its own daemon (this binary, `run`) on private segment
//! names with one worker, so the client and the worker each have a core.
//!
//! `chimaera bench remote` is in [`remote`].

pub mod bdev;
pub mod cluster;
pub mod remote;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::modules::admin;
use chimaera_client::{Client, Task};
use chimaera_proto::sync::now_ns;

#[derive(Debug, Serialize)]
pub struct LocalReport {
    pub rtt_p50_ns: u64,
    pub rtt_p99_ns: u64,
    pub floor_rtt_ns: u64,
    pub floor_rtt_p99_ns: u64,
    pub rtt_over_floor: f64,
    pub async_tasks_per_s: f64,
    pub multi_client_tasks_per_s: f64,
    pub clients: u32,
    pub workers: u32,
    pub window: usize,
    pub rtt_samples: usize,
    /// Round trip and pipelined rate as a user meets them: a daemon with
    /// the default worker count and lane policy, a client thread the
    /// scheduler places (not pinned), as `chimaera ping` is.
    pub default_config_rtt_p50_ns: u64,
    pub default_config_rtt_p99_ns: u64,
    pub default_config_async_tasks_per_s: f64,
    pub default_config_workers: u32,
    pub default_config_lane_policy: String,
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn cpus() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Raw cross-process ping-pong on one atomic word: the floor under any
/// shared-memory round trip on this machine.
fn floor_rtts(ids: &[core_affinity::CoreId], samples: usize) -> Result<Vec<u64>, String> {
    let len = 4096;
    // SAFETY: a fresh anonymous shared mapping; checked for failure below.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping is page-aligned, zeroed and 4096 bytes long.
    let word: &AtomicU32 = unsafe { &*(mem as *const AtomicU32) };
    // SAFETY: the bench forks before it starts any thread; the child only
    // spins on the atomic and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    let rounds = samples as u32 + 1000;
    if pid == 0 {
        if let Some(c) = ids.last() {
            core_affinity::set_for_current(*c);
        }
        for i in 0..rounds {
            let ping = 2 * i + 1;
            let mut spins = 0u64;
            while word.load(Ordering::Acquire) != ping {
                std::hint::spin_loop();
                spins += 1;
                if spins > 2_000_000_000 {
                    // SAFETY: leaving the forked child without running destructors.
                    unsafe { libc::_exit(1) };
                }
            }
            word.store(ping + 1, Ordering::Release);
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    if let Some(c) = ids.first() {
        core_affinity::set_for_current(*c);
    }
    let mut out = Vec::with_capacity(samples);
    for i in 0..rounds {
        let ping = 2 * i + 1;
        let t = now_ns();
        word.store(ping, Ordering::Release);
        while word.load(Ordering::Acquire) != ping + 1 {
            std::hint::spin_loop();
        }
        let dt = now_ns() - t;
        if i >= 1000 {
            out.push(dt);
        }
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: unmapping the mapping made above; `word` is not used after.
    unsafe { libc::munmap(mem, len) };
    Ok(out)
}

/// The bench's daemons that run now (pid, directory), for the signal
/// handler: a bench interrupted (SIGINT, SIGTERM) stops them and removes
/// their directories before it goes.
static RUNNING: std::sync::Mutex<Vec<(u32, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Prepares a bench run: removes what benches that died left (their
/// daemons died with them, see [`BenchDaemon::start_with`]: only their
/// directories remain), and makes SIGINT and SIGTERM stop this bench's
/// daemons and remove their directories.
pub fn prepare() {
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("chimaera-bench-") else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| p != std::process::id() && !crate::sys::pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let mut signals = match signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) {
        Ok(s) => s,
        Err(_) => return,
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|p| p.into_inner()));
            for (pid, _) in &running {
                let _ = crate::sys::send_signal(*pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            for (pid, dir) in &running {
                while crate::sys::pid_alive(*pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = std::fs::remove_dir_all(dir);
            }
            eprintln!("chimaera: bench interrupted; its daemons are stopped");
            std::process::exit(128 + sig);
        }
    });
}

/// A client of the bench daemon whose configuration is `config`: located by
/// that file alone, as the daemon was started with it alone (no `CHI_*`
/// variable of the caller's, as set in a container, moves either).
pub(crate) fn connect_to(config: &std::path::Path) -> Result<Client, String> {
    let opts = crate::config::LoadOptions {
        config_path: Some(config.to_path_buf()),
        sets: vec![],
        system_config: None,
    };
    let none = chimaera_client::Env::default();
    let loc = chimaera_client::Locator::load(&opts, &none)?;
    Client::connect_located(&loc, &none).map_err(|e| e.to_string())
}

/// A daemon of our own, stopped and cleaned up on drop.
pub(crate) struct BenchDaemon {
    child: Child,
    dir: PathBuf,
    config: PathBuf,
    /// Its segments' names, for a daemon the bench kills itself.
    segments: [String; 3],
}

/// The memory section of a bench daemon: room for a million tasks in flight.
const BENCH_MEMORY: &str = "  main_segment_size: 64M\n  client_data_segment_size: 32M\n  runtime_data_segment_size: 32M\n  shm_size: 128M\n";

/// A TCP port nobody listens on right now ([`crate::sys::free_listen_port`]).
pub(crate) fn free_port() -> Result<u16, String> {
    crate::sys::free_listen_port().map_err(|e| format!("no free TCP port: {e}"))
}

impl BenchDaemon {
    fn start(workers: u32) -> Result<BenchDaemon, String> {
        BenchDaemon::start_with("local", workers, free_port()?, "")
    }

    /// A daemon named `name` (several may run at once) on `port`, with
    /// `network` lines (indented YAML keys) added to its network section.
    pub(crate) fn start_with(
        name: &str,
        workers: u32,
        port: u16,
        network: &str,
    ) -> Result<BenchDaemon, String> {
        BenchDaemon::start_sized(name, workers, port, network, BENCH_MEMORY, "", "warning")
    }

    /// As [`BenchDaemon::start_with`], with `memory` the YAML of the
    /// memory section (indented keys) and `runtime` extra runtime keys.
    pub(crate) fn start_sized(
        name: &str,
        workers: u32,
        port: u16,
        network: &str,
        memory: &str,
        runtime: &str,
        level: &str,
    ) -> Result<BenchDaemon, String> {
        let dir =
            std::env::temp_dir().join(format!("chimaera-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tag = format!("chibench_{}_{name}", std::process::id());
        let config = dir.join("bench.yaml");
        let yaml = format!(
            "workers:\n  sched_threads: {workers}\n  process_reaper_threads: 1\n\
             memory:\n{memory}\
             network:\n  zmq_port: {port}\n{network}\
             logging:\n  level: {level}\n  file: \"\"\n\
             performance:\n  queue_depth: 4096\n\
             shared_memory:\n  main_segment_name: {tag}_main\n  client_data_segment_name: {tag}_client\n  runtime_data_segment_name: {tag}_runtime\n\
             runtime:\n  run_dir: {}\n{runtime}",
            dir.display()
        );
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CHI_") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // The daemon dies with the bench, however the bench ends (SIGKILL
        // included): the kernel sends it SIGTERM, and it cleans up.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours;
        // the bench starts its daemons from its main thread, which lives
        // as long as the bench (PDEATHSIG follows the forking thread).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the bench daemon: {e}"))?;
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((child.id(), dir.clone()));
        let segments = ["main", "client", "runtime"].map(|s| format!("{tag}_{s}"));
        Ok(BenchDaemon {
            child,
            dir,
            config,
            segments,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would: the daemon cleans nothing up, so the
    /// bench removes its segments (the rest goes when it is dropped).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for s in &self.segments {
            let _ = chimaera_proto::sys::shm_unlink(s);
        }
    }

    pub(crate) fn connect(&mut self) -> Result<Client, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match connect_to(&self.config) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("bench daemon did not come up: {e}"));
                }
                Err(_) => {}
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("bench daemon exited: {st}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = crate::sys::send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let pid = self.child.id();
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _)| *p != pid);
    }
}

const PING: Task<'static> = Task {
    pool: admin::POOL_ID,
    method: admin::method::PING,
    input: &[],
    route: chimaera_proto::wire::Route::Local,
};

fn sync_rtts(client: &Client, samples: usize) -> Result<Vec<u64>, String> {
    for _ in 0..10_000 {
        client.call(&PING).map_err(|e| e.to_string())?;
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = now_ns();
        client
            .submit(&PING)
            .and_then(|h| h.wait())
            .map_err(|e| e.to_string())?;
        out.push(now_ns() - t);
    }
    Ok(out)
}

/// Tasks per second with `window` in flight, for `time`.
pub(crate) fn pipelined(
    client: &Client,
    task: &Task<'_>,
    window: usize,
    time: Duration,
) -> Result<f64, String> {
    let mut inflight = VecDeque::with_capacity(window);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < time {
        for _ in 0..256 {
            if inflight.len() == window {
                let h: chimaera_client::TaskHandle = inflight.pop_front().expect("window is full");
                h.wait().map_err(|e| e.to_string())?;
                done += 1;
            }
            inflight.push_back(client.submit(task).map_err(|e| e.to_string())?);
        }
    }
    for h in inflight {
        h.wait().map_err(|e| e.to_string())?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

pub fn local() -> Result<LocalReport, String> {
    let samples = 100_000;
    // The floor pins this thread; the daemon must not inherit that.
    let mask = crate::sys::affinity().map_err(|e| e.to_string())?;
    let ids = cpus();
    // Before any thread exists: the floor forks.
    let mut floor = floor_rtts(&ids, samples)?;
    floor.sort_unstable();
    crate::sys::set_affinity(&mask).map_err(|e| e.to_string())?;
    let workers = 1;
    let mut daemon = BenchDaemon::start(workers)?;
    let client = daemon.connect()?;
    // The daemon pins its worker to the first allowed CPU; the client takes the last.
    if let Some(c) = ids.last() {
        core_affinity::set_for_current(*c);
    }
    let mut rtts = sync_rtts(&client, samples)?;
    rtts.sort_unstable();
    let window = 1024;
    let async_rate = pipelined(&client, &PING, window, Duration::from_secs(2))?;
    let clients = 2u32;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let config = daemon.config.clone();
            std::thread::spawn(move || -> Result<f64, String> {
                let c = connect_to(&config)?;
                pipelined(&c, &PING, window, Duration::from_secs(2))
            })
        })
        .collect();
    let mut multi = 0.0;
    for h in handles {
        multi += h
            .join()
            .map_err(|_| "a bench client panicked".to_string())??;
    }
    drop(client);
    drop(daemon);
    // The daemon inherits this thread's CPU set: all of them again.
    crate::sys::set_affinity(&mask).map_err(|e| e.to_string())?;
    let defaults = crate::config::Config::default();
    // What a daemon on the defaults runs (`auto` resolved as it would be).
    let default_workers = defaults
        .workers
        .sched_threads
        .resolve(&crate::cpus::CpuLimit::this_process());
    let mut daemon = BenchDaemon::start_with("defaults", default_workers, free_port()?, "")?;
    // Up and answering before the measuring thread starts.
    drop(daemon.connect()?);
    let config = daemon.config.clone();
    // A thread of its own with the mask the bench started with: the pinned
    // client above is not how a user's program runs.
    let (d_rtts, d_async) = std::thread::spawn(move || -> Result<(Vec<u64>, f64), String> {
        crate::sys::set_affinity(&mask).map_err(|e| e.to_string())?;
        let c = connect_to(&config)?;
        let mut r = sync_rtts(&c, 20_000)?;
        r.sort_unstable();
        let rate = pipelined(&c, &PING, window, Duration::from_secs(2))?;
        Ok((r, rate))
    })
    .join()
    .map_err(|_| "a bench client panicked".to_string())??;
    drop(daemon);
    let report = LocalReport {
        rtt_p50_ns: percentile(&rtts, 0.5),
        rtt_p99_ns: percentile(&rtts, 0.99),
        floor_rtt_ns: percentile(&floor, 0.5),
        floor_rtt_p99_ns: percentile(&floor, 0.99),
        rtt_over_floor: percentile(&rtts, 0.5) as f64 / percentile(&floor, 0.5).max(1) as f64,
        async_tasks_per_s: async_rate,
        multi_client_tasks_per_s: multi,
        clients,
        workers,
        window,
        rtt_samples: samples,
        default_config_rtt_p50_ns: percentile(&d_rtts, 0.5),
        default_config_rtt_p99_ns: percentile(&d_rtts, 0.99),
        default_config_async_tasks_per_s: d_async,
        default_config_workers: default_workers,
        default_config_lane_policy: defaults.performance.lane_map_policy.to_string(),
    };
    Ok(report)
}
