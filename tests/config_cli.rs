//! Bad configuration never starts anything: each case below goes through the
//! real binary (`config check` and `run`) and must exit 78 naming the key.

mod common;

use common::Node;

struct Case {
    yaml: &'static str,
    env: &'static [(&'static str, &'static str)],
    /// Text the error line must contain: the key, and where it came from.
    expect: &'static [&'static str],
}

const fn y(yaml: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        yaml,
        env: &[],
        expect,
    }
}

const fn e(env: &'static [(&'static str, &'static str)], expect: &'static [&'static str]) -> Case {
    Case {
        yaml: "",
        env,
        expect,
    }
}

const CASES: &[Case] = &[
    y(
        "workers:\n  sched_threads: 0\n",
        &["workers.sched_threads", ":2:18:"],
    ),
    y(
        "workers:\n  sched_threads: 5000\n",
        &["workers.sched_threads", "1 to 1024"],
    ),
    y(
        "workers:\n  sched_threads: \"8\"\n",
        &["workers.sched_threads", "string"],
    ),
    y(
        "workers:\n  sched_threads: [1, 2]\n",
        &["workers.sched_threads", "found a list"],
    ),
    y(
        "workers:\n  process_reaper_threads: -1\n",
        &["workers.process_reaper_threads"],
    ),
    y(
        "workers:\n  sched_thread: 4\n",
        &["workers.sched_thread", "did you mean `sched_threads`"],
    ),
    y(
        "worker:\n  sched_threads: 4\n",
        &["worker", "unknown section", "did you mean `workers`"],
    ),
    y("workers: 8\n", &["workers", "expected a mapping"]),
    y(
        "memory:\n  main_segment_size: 1.5G\n",
        &["memory.main_segment_size", ":2:22:"],
    ),
    y(
        "memory:\n  main_segment_size: 12X\n",
        &["memory.main_segment_size", "suffix"],
    ),
    y(
        "memory:\n  main_segment_size: 1K\n",
        &["memory.main_segment_size", "from 1 MiB"],
    ),
    y(
        "memory:\n  client_data_segment_size: lots\n",
        &["memory.client_data_segment_size"],
    ),
    y(
        "memory:\n  runtime_data_segment_size: \"\"\n",
        &["memory.runtime_data_segment_size"],
    ),
    y(
        "memory:\n  shm_size: 1G\n",
        &[
            "memory.shm_size",
            "Total segment size exceeds shared memory size",
        ],
    ),
    y(
        "network:\n  zmq_port: 0\n",
        &["network.zmq_port", "1 to 65535"],
    ),
    y("network:\n  zmq_port: 70000\n", &["network.zmq_port"]),
    y(
        "network:\n  hostfile: relative/hosts\n",
        &["network.hostfile", "absolute"],
    ),
    y(
        "network:\n  hostfile: /nonexistent/hostfile\n",
        &["network.hostfile", "cannot read"],
    ),
    y(
        "network:\n  node_id: first\n",
        &["network.node_id", ":2:12:", "auto, or a whole number"],
    ),
    y(
        "network:\n  node_id: 2\n",
        &["network.node_id", "single node"],
    ),
    e(
        &[("CHI_NODE_ID", "-1")],
        &["CHI_NODE_ID", "network.node_id"],
    ),
    y("logging:\n  level: loud\n", &["logging.level", "one of"]),
    y(
        "logging:\n  file: chimaera.log\n",
        &["logging.file", "absolute"],
    ),
    y(
        "performance:\n  stack_size: 1K\n",
        &["performance.stack_size"],
    ),
    y(
        "performance:\n  queue_depth: 0\n",
        &["performance.queue_depth"],
    ),
    y(
        "performance:\n  lane_map_policy: fastest\n",
        &["performance.lane_map_policy", "round_robin"],
    ),
    y(
        "shared_memory:\n  main_segment_name: \"a/b\"\n",
        &["shared_memory.main_segment_name", "'/'"],
    ),
    y(
        "shared_memory:\n  main_segment_name: \"chi_${HOME}\"\n",
        &["shared_memory.main_segment_name", "${USER}"],
    ),
    y(
        "shared_memory:\n  client_data_segment_name: \"\"\n",
        &["shared_memory.client_data_segment_name", "empty"],
    ),
    y(
        "shared_memory:\n  runtime_data_segment_name: chi_main_segment_${USER}\n",
        &["shared_memory.runtime_data_segment_name", "same name"],
    ),
    y(
        "shared_memory:\n  group: no-such-group-chimaera\n",
        &["shared_memory.group", "does not exist"],
    ),
    y(
        "runtime:\n  heartbeat_interval: 1\n",
        &["runtime.heartbeat_interval", "10 to"],
    ),
    y("runtime:\n  task_timeout: 0\n", &["runtime.task_timeout"]),
    y(
        "runtime:\n  run_dir: run\n",
        &["runtime.run_dir", "absolute"],
    ),
    y(
        "runtime:\n  task_timeout: 1\n  task_timeout: 2\n",
        &["duplicate key `task_timeout`", ":3:"],
    ),
    y(
        "workers:\n  sched_threads: [1\n",
        &["(syntax)", "YAML syntax error"],
    ),
    y("- just\n- a list\n", &["(top level)", "expected a mapping"]),
    e(
        &[("CHI_SCHED_WORKERS", "abc")],
        &["CHI_SCHED_WORKERS", "workers.sched_threads"],
    ),
    e(
        &[("CHI_PROCESS_REAPER_WORKERS", "0")],
        &[
            "CHI_PROCESS_REAPER_WORKERS",
            "workers.process_reaper_threads",
        ],
    ),
    e(
        &[("CHI_MAIN_SEGMENT_SIZE", "1Q")],
        &["CHI_MAIN_SEGMENT_SIZE", "memory.main_segment_size"],
    ),
    e(
        &[("CHI_CLIENT_DATA_SEGMENT_SIZE", "-5")],
        &["CHI_CLIENT_DATA_SEGMENT_SIZE"],
    ),
    e(
        &[("CHI_RUNTIME_DATA_SEGMENT_SIZE", "9T")],
        &["CHI_RUNTIME_DATA_SEGMENT_SIZE"],
    ),
    e(
        &[("CHI_ZMQ_PORT", "http")],
        &["CHI_ZMQ_PORT", "network.zmq_port"],
    ),
    e(
        &[("CHI_LOG_LEVEL", "verbose")],
        &["CHI_LOG_LEVEL", "logging.level"],
    ),
    e(
        &[("CHI_STACK_SIZE", "1G")],
        &["CHI_STACK_SIZE", "performance.stack_size"],
    ),
    e(
        &[("CHI_QUEUE_DEPTH", "10k")],
        &["CHI_QUEUE_DEPTH", "performance.queue_depth"],
    ),
    e(
        &[("CHI_HEARTBEAT_INTERVAL", "1s")],
        &["CHI_HEARTBEAT_INTERVAL", "runtime.heartbeat_interval"],
    ),
    e(
        &[("CHI_TASK_TIMEOUT", "")],
        &["CHI_TASK_TIMEOUT", "runtime.task_timeout"],
    ),
    e(
        &[("CHI_SHM_SIZE", "1M")],
        &["CHI_SHM_SIZE", "memory.shm_size"],
    ),
    e(
        &[("CHI_HOSTFILE", "/nonexistent/hosts")],
        &["network.hostfile"],
    ),
    e(
        &[("CHI_SERVER_CONF", "/nonexistent/chimaera.yaml")],
        &["CHI_SERVER_CONF", "does not exist"],
    ),
    e(&[("CHI_LANE_MAP_POLICY", "LIFO")], &["CHI_LANE_MAP_POLICY"]),
];

#[test]
fn every_bad_input_exits_78_naming_the_key() {
    assert!(CASES.len() >= 30);
    let node = Node::new("bad");
    for (i, case) in CASES.iter().enumerate() {
        let path = node.dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&path, case.yaml).unwrap();
        for sub in [&["config", "check"][..], &["run"][..]] {
            let mut cmd = node.chimaera(sub);
            cmd.env("CHI_SERVER_CONF", &path).env("USER", "tester");
            cmd.envs(case.env.iter().copied());
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(78),
                "case {i} ({sub:?}): {:?} {:?}\n{err}",
                case.yaml,
                case.env
            );
            for want in case.expect {
                assert!(
                    err.contains(want),
                    "case {i} ({sub:?}): {want:?} missing from:\n{err}"
                );
            }
            assert!(
                err.lines()
                    .all(|l| l.starts_with("chimaera: configuration error: ")),
                "one line per problem: {err}"
            );
        }
    }
    // Nothing was created by any of the refused starts.
    assert!(node.segments_present().is_empty());
}

#[test]
fn several_problems_are_all_reported() {
    let node = Node::new("many");
    let path = node.dir.path().join("many.yaml");
    std::fs::write(
        &path,
        "workers:\n  sched_threads: 0\nlogging:\n  level: loud\nbogus: 1\n",
    )
    .unwrap();
    let out = node
        .chimaera(&["config", "check"])
        .env("CHI_SERVER_CONF", &path)
        .env("CHI_ZMQ_PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 4, "{err}");
    for key in [
        "workers.sched_threads",
        "logging.level",
        "bogus",
        "CHI_ZMQ_PORT",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn check_accepts_good_files_and_a_file_argument() {
    let node = Node::new("good");
    let out = node.output(&["config", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    // The shipped defaults validate.
    let defaults = concat!(env!("CARGO_MANIFEST_DIR"), "/config/chimaera_default.yaml");
    let out = node.output(&["config", "check", defaults]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn show_prints_the_effective_config_after_the_environment() {
    let node = Node::new("show");
    let out = node
        .chimaera(&["config", "show", "--set", "runtime.task_timeout=1234"])
        .env("CHI_SCHED_WORKERS", "6")
        .env("CHI_QUEUE_DEPTH", "64")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sched_threads: 6"), "{text}");
    assert!(text.contains("queue_depth: 64"), "{text}");
    assert!(text.contains("task_timeout: 1234"), "{text}");
    assert!(
        text.contains(&format!("main_segment_name: {}_main", node.tag)),
        "{text}"
    );
    // What `show` prints is itself a valid configuration with the same meaning.
    let path = node.dir.path().join("shown.yaml");
    std::fs::write(&path, text.as_bytes()).unwrap();
    let again = node
        .chimaera(&["config", "show"])
        .env("CHI_SERVER_CONF", &path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn keys_lists_every_key_with_its_variable_and_default() {
    let out = Node::new("keys").output(&["config", "keys"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), chimaera::config::KEYS.len());
    assert!(text.contains("workers.sched_threads\tCHI_SCHED_WORKERS\t8\t"));
    assert!(text.contains("memory.shm_size\tCHI_SHM_SIZE\t2147483648\t"));
}

/// A runtime started with `--set` is found by every subcommand given the
/// same `--set`; without it, `status` lists it among the other runtimes of
/// the run directory, and the hints repeat the options the user gave.
#[test]
fn every_client_subcommand_finds_a_runtime_started_with_set() {
    let node = Node::new("setrun");
    let main = format!("{}_other", node.segment_names()[0]);
    let set = format!("shared_memory.main_segment_name={main}");
    let with = |args: &[&str]| {
        let mut all = vec!["--set", set.as_str()];
        all.extend_from_slice(args);
        node.output(&all)
    };
    let mut child = node
        .chimaera(&["run", "--set", &set])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while with(&["status"]).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "never found: {}",
            node.log()
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for args in [
        vec!["ping", "-q"],
        vec!["pool", "list"],
        vec!["call", "admin", "0"],
        vec!["config", "show"],
    ] {
        let out = with(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    }
    // Without the --set: not this configuration's runtime, but named.
    let plain = node.output(&["status"]);
    assert_eq!(plain.status.code(), Some(3), "{plain:?}");
    let said = String::from_utf8_lossy(&plain.stdout);
    assert!(
        said.contains(&format!("{main} (pid {}", child.id())),
        "{said}"
    );
    assert!(
        said.contains(&node.config_path().display().to_string()),
        "{said}"
    );
    // A second start with the same options is told how to stop the first.
    let again = node.chimaera(&["--set", &set, "run"]).output().unwrap();
    assert_eq!(again.status.code(), Some(69));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(&format!("`chimaera --set {set} stop`")),
        "the hint repeats --set: {err}"
    );
    let stop = with(&["stop", "--timeout", "10"]);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `--json` on config check/show, pool create/destroy, stop and reload, and
/// errors in JSON mode as JSON on stdout with a non-zero exit.
#[test]
fn json_output_and_errors_and_reload() {
    let mut node = Node::new("jsonall");
    let ok = node.output(&["config", "check", "--json"]);
    assert_eq!(ok.status.code(), Some(0));
    let v = json_of(&ok);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["zmq_port"], node.port, "{v}");
    let bad = node
        .chimaera(&["config", "check", "--json"])
        .env("CHI_SCHED_WORKERS", "abc")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78));
    let v = json_of(&bad);
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["key"], "workers.sched_threads", "{v}");
    assert_eq!(
        v["problems"][0]["origin"], "environment CHI_SCHED_WORKERS",
        "{v}"
    );
    let show = json_of(&node.output(&["config", "show", "--json"]));
    assert_eq!(show["network"]["zmq_port"], node.port, "{show}");
    // Not running: the error is JSON too.
    let none = node.output(&["ping", "--json"]);
    assert_eq!(none.status.code(), Some(3));
    assert!(
        json_of(&none)["error"]
            .as_str()
            .unwrap()
            .contains("not running")
    );

    let d = node.spawn(&[]);
    node.wait_running(d);
    let made = node.output(&[
        "pool",
        "create",
        "ram0",
        "bdev",
        "--params",
        r#"{"kind":"ram","size":"1M"}"#,
        "--json",
    ]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let p = json_of(&made);
    assert_eq!(
        (p["name"].as_str(), p["module"].as_str()),
        (Some("ram0"), Some("bdev"))
    );
    let refused = node.output(&["pool", "create", "x", "nosuch", "--json"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        json_of(&refused)["error"]
            .as_str()
            .unwrap()
            .contains("nosuch")
    );
    let gone = json_of(&node.output(&["pool", "destroy", "ram0", "--json"]));
    assert_eq!(gone["id"], p["id"]);

    // reload: what was applied, what needs a restart, what was refused.
    let text = std::fs::read_to_string(node.config_path()).unwrap();
    std::fs::write(
        node.config_path(),
        text.replace("level: info", "level: debug").replace(
            &format!("zmq_port: {}", node.port),
            &format!("zmq_port: {}", node.port + 1),
        ),
    )
    .unwrap();
    let r = node.output(&["reload"]);
    assert_eq!(r.status.code(), Some(0), "{r:?}");
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(
        said.contains("applied: logging.level = debug (was info)"),
        "{said}"
    );
    assert!(
        said.contains("needs a restart: network.zmq_port changed"),
        "{said}"
    );
    // Still naming the same runtime (segments, run directory), but wrong.
    std::fs::write(
        node.config_path(),
        format!("{text}workers:\n  sched_threads: lots\n"),
    )
    .unwrap();
    let r = node.output(&["reload", "--json"]);
    assert_eq!(r.status.code(), Some(78), "{r:?}");
    let v = json_of(&r);
    assert_eq!(v["ok"], false);
    assert!(
        v["refused"][0]
            .as_str()
            .unwrap()
            .contains("workers.sched_threads"),
        "{v}"
    );
    assert_eq!(v["seq"], 2);
    std::fs::write(node.config_path(), text).unwrap();
    let stop = node.output(&["stop", "--json"]);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    let v = json_of(&stop);
    assert_eq!(v["stopped"], true);
    assert_eq!(v["pid"], node.pid(d));
    assert_eq!(
        node.wait_exit(d, std::time::Duration::from_secs(10)).code(),
        Some(0)
    );
}
