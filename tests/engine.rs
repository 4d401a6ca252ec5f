//! The task engine through the real daemon and the real client library.

mod common;

use std::time::{Duration, Instant};

use chimaera::client::{ClientError, Task};
use chimaera::modules::admin::{self, method};
use common::Node;

fn started(name: &str, extra: &str) -> Node {
    let mut node = Node::new(name);
    node.write_config("info", extra);
    let d = node.spawn(&[]);
    node.wait_running(d);
    node
}

#[test]
fn ping_echo_and_payloads_of_every_size() {
    let node = started("echo", "");
    let c = node.client();
    assert!(c.ping().unwrap() < Duration::from_secs(1));
    for len in [0usize, 1, 63, 64, 65, 4096, 100_000, 1 << 20] {
        let input: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let out = c
            .call(&Task::new(admin::POOL_ID, method::ECHO, &input))
            .unwrap();
        assert_eq!(out.len(), len);
        assert!(out == input, "echo of {len} bytes differs");
    }
    // Unknown pool and method are typed errors, not hangs.
    assert!(matches!(
        c.call(&Task::new(77, 0, &[])),
        Err(ClientError::NoSuchPool(77))
    ));
    match c.call(&Task::new(admin::POOL_ID, 999, &[])) {
        Err(ClientError::Module { message, .. }) => {
            assert!(message.contains("no method 999"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats_pools_and_flush() {
    let node = started("pools", "");
    let c = node.client();
    let s = c.stats().unwrap();
    assert_eq!(s.workers.len(), 8);
    assert_eq!(s.queue_depth, 64);
    assert!(s.clients >= 1);
    assert_eq!(c.list_pools().unwrap().len(), 1, "the admin pool");
    let p = c.create_pool("extra", "admin", "").unwrap();
    assert_eq!(p.name, "extra");
    let again = c.create_pool("extra", "admin", "").unwrap();
    assert_eq!(again, p, "get-or-create returns the existing pool");
    assert!(matches!(
        c.create_pool("extra", "nosuch", ""),
        Err(ClientError::Module { .. })
    ));
    assert!(c.call(&Task::new(p.id, method::PING, &[])).is_ok());
    assert_eq!(c.list_pools().unwrap().len(), 2);
    c.destroy_pool("extra").unwrap();
    assert!(matches!(
        c.call(&Task::new(p.id, method::PING, &[])),
        Err(ClientError::NoSuchPool(_))
    ));
    c.flush().unwrap();
    let done: u64 = c
        .stats()
        .unwrap()
        .workers
        .iter()
        .map(|w| w.tasks_done)
        .sum();
    assert!(done >= 8, "{done}");
}

#[test]
fn a_task_waits_on_its_subtasks_with_one_worker() {
    let node = started("subtasks", "workers:\n  sched_threads: 1\n");
    let c = node.client();
    let out = c
        .call(&Task::new(
            admin::POOL_ID,
            method::FAN_OUT,
            &200u32.to_le_bytes(),
        ))
        .unwrap();
    assert_eq!(u32::from_le_bytes(out.try_into().unwrap()), 200);
    // Meanwhile the single worker keeps serving others: a sleeping task yields.
    let sleeper = c
        .submit(&Task::new(
            admin::POOL_ID,
            method::SLEEP,
            &300u64.to_le_bytes(),
        ))
        .unwrap();
    let t = Instant::now();
    c.ping().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "ping waited for the sleeper: {:?}",
        t.elapsed()
    );
    sleeper.wait().unwrap();
}

#[test]
fn task_timeout_bounds_yielding_stuck_and_queued_tasks() {
    let node = started(
        "timeout",
        "workers:\n  sched_threads: 1\nruntime:\n  task_timeout: 300\n",
    );
    let c = node.client();
    // A task that yields past its deadline.
    let t = Instant::now();
    let r = c.call(&Task::new(
        admin::POOL_ID,
        method::SLEEP,
        &5000u64.to_le_bytes(),
    ));
    assert!(matches!(r, Err(ClientError::TimedOut)), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // A task that never yields (its worker is stuck), and one queued behind it.
    let t = Instant::now();
    let stuck = c
        .submit(&Task::new(
            admin::POOL_ID,
            method::SPIN,
            &2000u64.to_le_bytes(),
        ))
        .unwrap();
    let queued = c
        .submit(&Task::new(admin::POOL_ID, method::PING, &[]))
        .unwrap();
    assert!(matches!(stuck.wait(), Err(ClientError::TimedOut)));
    assert!(matches!(queued.wait(), Err(ClientError::TimedOut)));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // The worker comes back and serves again.
    std::thread::sleep(Duration::from_millis(2000));
    c.ping().unwrap();
}

#[test]
fn a_full_lane_is_back_pressure_not_loss() {
    let node = started(
        "full",
        "workers:\n  sched_threads: 1\nperformance:\n  queue_depth: 4\n",
    );
    let c = node.client();
    let blocker = c
        .submit(&Task::new(
            admin::POOL_ID,
            method::SPIN,
            &400u64.to_le_bytes(),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut queued = Vec::new();
    let full = loop {
        match c.try_submit(&Task::new(
            admin::POOL_ID,
            method::ECHO,
            &[queued.len() as u8],
        )) {
            Ok(h) => queued.push(h),
            Err(e) => break e,
        }
        assert!(queued.len() <= 4, "more accepted than the lane holds");
    };
    assert!(matches!(full, ClientError::QueueFull), "{full:?}");
    assert_eq!(queued.len(), 4);
    // The blocking submit waits for room instead.
    let late = c
        .submit(&Task::new(admin::POOL_ID, method::ECHO, &[99]))
        .unwrap();
    blocker.wait().unwrap();
    for (i, h) in queued.into_iter().enumerate() {
        assert_eq!(h.wait().unwrap(), [i as u8]);
    }
    assert_eq!(late.wait().unwrap(), [99]);
}

#[test]
fn waiting_clients_learn_the_runtime_is_gone_within_a_second() {
    let mut node = Node::new("gone");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let c = node.client();
    let h = c
        .submit(&Task::new(
            admin::POOL_ID,
            method::SLEEP,
            &20_000u64.to_le_bytes(),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    node.signal(d, libc::SIGKILL);
    let t = Instant::now();
    let r = h.wait();
    assert!(matches!(r, Err(ClientError::RuntimeGone(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(matches!(
        c.call(&Task::new(admin::POOL_ID, method::PING, &[])),
        Err(ClientError::RuntimeGone(_))
    ));
    // A new runtime reclaims the names; the old client keeps its (dead)
    // mapping intact and still says "gone", a new client works.
    let d2 = node.spawn(&[]);
    node.wait_running(d2);
    assert!(matches!(
        c.call(&Task::new(admin::POOL_ID, method::PING, &[])),
        Err(ClientError::RuntimeGone(_))
    ));
    assert!(node.client().ping().is_ok());
}

#[test]
fn connect_errors_are_typed() {
    let node = Node::new("noconnect");
    let opts = chimaera::config::LoadOptions {
        config_path: Some(node.config_path()),
        sets: vec![],
        system_config: None,
    };
    assert!(matches!(
        chimaera::client::Client::connect_with(&opts),
        Err(ClientError::NotRunning(_))
    ));
    let mut node = node;
    let d = node.spawn(&[]);
    node.wait_running(d);
    let path = node.discovery_path();
    let mut disc = chimaera::service::discovery::read(&path).unwrap();
    disc.layout_version = 99;
    disc.version = "9.9.9".into();
    match chimaera::client::Client::connect_discovery(path, disc) {
        Err(e @ ClientError::VersionMismatch { .. }) => {
            assert!(e.to_string().contains("9.9.9"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("connected across layouts"),
    }
}

#[test]
fn stop_goes_through_the_admin_pool() {
    let mut node = Node::new("adminstop");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let c = node.client();
    c.stop_runtime().unwrap();
    assert_eq!(node.wait_exit(d, Duration::from_secs(10)).code(), Some(0));
    assert!(node.segments_present().is_empty());
}

#[test]
fn every_lane_policy_spreads_or_keeps_tasks() {
    for (policy, spread) in [
        ("round_robin", true),
        ("random", true),
        ("map_by_pid_tid", false),
    ] {
        let node = started(
            policy,
            &format!("workers:\n  sched_threads: 4\nperformance:\n  lane_map_policy: {policy}\n"),
        );
        let c = node.client();
        let hs = c
            .submit_batch((0..400).map(|_| Task::new(admin::POOL_ID, method::PING, &[])))
            .unwrap();
        for h in hs {
            h.wait().unwrap();
        }
        let busy = c
            .stats()
            .unwrap()
            .workers
            .iter()
            .filter(|w| w.tasks_done >= 50)
            .count();
        if spread {
            assert_eq!(busy, 4, "{policy} uses every lane");
        } else {
            assert!(
                busy <= 2,
                "{policy} keeps one thread's tasks on one lane (+ the stats call)"
            );
        }
    }
}

/// round_robin gives a caller that waits for each task alone a lane whose
/// worker is pinned to another CPU than the caller's (sharing a CPU with
/// the worker costs each round trip two context switches), and still
/// spreads a pipelining caller over every lane.
#[test]
fn round_robin_keeps_a_waiting_caller_off_its_workers_cpu() {
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let node = started(
        "rrcpu",
        "workers:\n  sched_threads: 4\nperformance:\n  lane_map_policy: round_robin\n",
    );
    let here = cpus[0];
    let (stats, done_here) = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(core_affinity::set_for_current(here), "pin the caller");
            let c = node.client();
            let before = c.stats().unwrap();
            for _ in 0..1000 {
                c.call(&Task::new(admin::POOL_ID, method::PING, &[]))
                    .unwrap();
            }
            let after = c.stats().unwrap();
            let done: Vec<u64> = after
                .workers
                .iter()
                .zip(&before.workers)
                .map(|(a, b)| a.tasks_done - b.tasks_done)
                .collect();
            (after, done)
        })
        .join()
        .unwrap()
    });
    let (mine, others): (Vec<_>, Vec<_>) = stats
        .workers
        .iter()
        .zip(&done_here)
        .partition(|(w, _)| w.cpu == here.id as u32);
    assert!(!mine.is_empty() && !others.is_empty(), "{stats:?}");
    // The first stats call may have gone anywhere; the pings did not.
    let on_mine: u64 = mine.iter().map(|(_, d)| **d).sum();
    let on_others: u64 = others.iter().map(|(_, d)| **d).sum();
    assert!(
        on_mine <= 1 && on_others >= 1000,
        "pings on workers of the caller's CPU: {on_mine}, elsewhere: {on_others}"
    );
    // Run by run (64 tasks each), a waiting caller still moves between
    // the lanes of the other CPU.
    assert!(
        others.iter().filter(|(_, d)| **d >= 64).count() >= 2,
        "{done_here:?}"
    );
}

/// An idle daemon with 8 workers sleeps: under 1% of one core.
#[test]
fn an_idle_daemon_costs_almost_nothing() {
    let node = started("idle", "workers:\n  sched_threads: 8\n");
    let c = node.client();
    c.ping().unwrap();
    drop(c);
    let pid = node.pid(0);
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    let (t0, c0) = (Instant::now(), ticks());
    std::thread::sleep(Duration::from_secs(3));
    let used = (ticks() - c0) as f64 / 100.0; // USER_HZ
    let share = used / t0.elapsed().as_secs_f64();
    assert!(
        share < 0.01,
        "idle daemon used {:.2}% of a core",
        share * 100.0
    );
}

#[test]
fn ping_and_stop_from_the_command_line() {
    let mut node = Node::new("cliping");
    let d = node.spawn(&[]);
    node.wait_running(d);
    let out = node.output(&["ping", "-n", "3"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("admin ping: "))
            .count(),
        3,
        "{text}"
    );
    assert!(text.contains("3 pings: min"), "{text}");
    let out = node.output(&["ping", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["p50_ns"].as_u64().unwrap() > 0);
    let out = node.output(&["stop"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.wait_exit(d, Duration::from_secs(5)).code(), Some(0));
    // With no runtime, ping says so and exits 3, like status.
    let out = node.output(&["ping"]);
    assert_eq!(out.status.code(), Some(3));
}

/// Workers are pinned one per allowed CPU in turn, and only within the
/// process's allowed set (what a container cpuset gives it).
#[test]
fn workers_are_pinned_within_the_allowed_cpu_set() {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut node = Node::new("pinned");
    node.write_config("info", "workers:\n  sched_threads: 3\n");
    // Restricted to the last CPU, as a cpuset would.
    let last = (ncpu - 1).to_string();
    let mut cmd = node.command("taskset", &["-c", &last, common::BIN, "run"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    node.children.push(cmd.spawn().unwrap());
    node.wait_running(0);
    let c = node.client();
    let cpus: Vec<u32> = c.stats().unwrap().workers.iter().map(|w| w.cpu).collect();
    assert_eq!(
        cpus,
        vec![ncpu as u32 - 1; 3],
        "all workers on the one allowed CPU"
    );
    // The kernel agrees: each worker thread may run on that CPU only.
    let pid = node.pid(0);
    let mut seen = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("chi-worker-") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let allowed = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .unwrap();
            assert_eq!(
                allowed.split_whitespace().nth(1),
                Some(last.as_str()),
                "{comm}: {allowed}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
    drop(c);

    // Unrestricted, workers take the allowed CPUs in turn.
    let node2 = started("spread", "workers:\n  sched_threads: 2\n");
    let cpus: Vec<u32> = node2
        .client()
        .stats()
        .unwrap()
        .workers
        .iter()
        .map(|w| w.cpu)
        .collect();
    if ncpu >= 2 {
        assert_ne!(cpus[0], cpus[1], "two workers on two CPUs: {cpus:?}");
    }
}

/// A client that leaves with tasks in flight keeps its slot (and with it the
/// owner tag of its buffers) out of reach of new clients until they finish.
#[test]
fn a_departed_clients_slot_waits_for_its_tasks() {
    let node = started("leaving", "workers:\n  sched_threads: 1\n");
    let a = node.client();
    let a_slot = a.slot();
    let h = a
        .submit(&Task::new(
            admin::POOL_ID,
            method::SLEEP,
            &400u64.to_le_bytes(),
        ))
        .unwrap();
    // A big payload in the client data segment, tagged with A's slot.
    let big = vec![7u8; 4096];
    let e = a
        .submit(&Task::new(admin::POOL_ID, method::ECHO, &big))
        .unwrap();
    drop(h);
    drop(e);
    drop(a);
    let b = node.client();
    assert_ne!(
        b.slot(),
        a_slot,
        "the slot of a client with tasks in flight is not reused"
    );
    // Once those tasks are done, the reaper frees the slot.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = node.client();
        if c.slot() == a_slot {
            break;
        }
        drop(c);
        assert!(Instant::now() < deadline, "slot {a_slot} never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = b.stats().unwrap();
    assert_eq!(
        s.client_data.allocated_blocks, 0,
        "the abandoned echo's input was freed with its record"
    );
}
