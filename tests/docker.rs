//! The Docker image, the compose cluster and the .deb, on the real Docker
//! engine. Each test prints "SKIPPED …: <reason>" and passes only when no
//! engine answers; any other failure fails the test.
//!
//! The tests build what they need when it is missing or stale: the .deb with
//! `cargo deb`, debian:bookworm-slim with scripts/build-base-image.sh (no
//! registry is reachable here), and chimaera-runtime:latest with
//! `docker build` on docker/Dockerfile. Containers, networks and volumes get
//! unique names and a label, and are removed even when a test fails.

#[path = "support/deploy.rs"]
mod deploy;

use deploy::{Container, run, run_in, skip_without_docker, wait_for_logs};
use std::fs;
use std::time::{Duration, Instant};

const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

#[test]
fn image_is_non_root_with_healthcheck_stopsignal_and_port() {
    if skip_without_docker("image_is_non_root_with_healthcheck_stopsignal_and_port") {
        return;
    }
    let image = deploy::image();
    let r = run(
        60,
        &[
            "docker",
            "image",
            "inspect",
            "-f",
            "{{.Config.User}}|{{.Config.StopSignal}}|{{json .Config.Healthcheck.Test}}|{{json .Config.ExposedPorts}}|{{json .Config.Entrypoint}}",
            image,
        ],
    )
    .expect_ok();
    let f: Vec<&str> = r.stdout.trim().split('|').collect();
    assert_eq!(
        f[0], "chimaera",
        "image must run as the non-root user chimaera"
    );
    assert_eq!(f[1], "SIGTERM");
    assert!(
        f[2].contains("chimaera") && f[2].contains("status"),
        "HEALTHCHECK: {}",
        f[2]
    );
    assert!(f[3].contains("5555/tcp"), "EXPOSE: {}", f[3]);
    assert!(f[4].contains("chimaera-entrypoint"), "ENTRYPOINT: {}", f[4]);
    // FROM debian:bookworm-slim, with the package installed by dpkg.
    let c = run(
        120,
        &[
            "docker",
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            "cat /etc/debian_version; dpkg-query -W -f '${Status}' chimaera; id -u",
        ],
    )
    .expect_ok();
    assert!(c.stdout.starts_with("12."), "not bookworm: {}", c.stdout);
    assert!(c.stdout.contains("install ok installed"), "{}", c.stdout);
    assert!(
        !c.stdout.trim_end().ends_with("\n0"),
        "runs as root: {}",
        c.stdout
    );
}

/// `docker run --shm-size=2g` with the default (2 GiB) segments becomes
/// healthy, runs the daemon as PID 1 under the non-root user, logs to stdout
/// and /var/log/chimaera; `docker stop` then ends it cleanly and quickly.
#[test]
fn default_container_becomes_healthy_and_stops_cleanly() {
    if skip_without_docker("default_container_becomes_healthy_and_stops_cleanly") {
        return;
    }
    let image = deploy::image();
    let c = Container::start("default", &["--shm-size=2g", image]);
    c.wait_healthy(HEALTHY_WITHIN);

    let pid1 = c.exec(&["cat", "/proc/1/comm"]).expect_ok();
    assert_eq!(pid1.stdout.trim(), "chimaera", "the daemon must be PID 1");
    let user = c
        .exec(&["sh", "-c", "stat -c %U /proc/1; id -un"])
        .expect_ok();
    assert_eq!(user.stdout, "chimaera\nchimaera\n");
    c.exec(&["chimaera", "status"]).expect_ok();
    let shm = c.exec(&["ls", "-l", "/dev/shm"]).expect_ok().stdout;
    assert_eq!(
        shm.matches("chimaera chimaera").count(),
        3,
        "three segments, owned by chimaera:\n{shm}"
    );
    let log = c
        .exec(&["cat", "/var/log/chimaera/chimaera.log"])
        .expect_ok()
        .stdout;
    assert!(log.contains("ready"), "log file:\n{log}");
    assert!(c.logs().contains("ready"), "docker logs:\n{}", c.logs());

    let started = Instant::now();
    run(60, &["docker", "stop", "--time", "30", &c.name]).expect_ok();
    let took = started.elapsed();
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "logs:\n{}", c.logs());
    assert!(
        took < Duration::from_secs(10),
        "docker stop took {took:?} of its 30 s"
    );
    let logs = c.logs();
    assert!(logs.contains("stopped"), "no \"stopped\" line:\n{logs}");
    eprintln!("docker stop took {:.2}s", took.as_secs_f64());
}

#[test]
fn small_shm_is_refused_with_a_clear_message() {
    if skip_without_docker("small_shm_is_refused_with_a_clear_message") {
        return;
    }
    let image = deploy::image();
    let c = Container::start("smallshm", &["--shm-size=64m", image]);
    let code = c.wait_exit(Duration::from_secs(60));
    let logs = c.logs();
    assert_ne!(code, 0, "{logs}");
    assert!(
        logs.contains("Total segment size exceeds shared memory size"),
        "docker logs:\n{logs}"
    );
    assert!(
        !logs.contains("ready"),
        "the daemon must not start:\n{logs}"
    );
}

#[test]
fn bad_variable_exits_78_naming_it() {
    if skip_without_docker("bad_variable_exits_78_naming_it") {
        return;
    }
    let image = deploy::image();
    let c = Container::start(
        "badenv",
        &["--shm-size=2g", "-e", "CHI_SCHED_WORKERS=abc", image],
    );
    let code = c.wait_exit(Duration::from_secs(60));
    let logs = c.logs();
    assert_eq!(code, 78, "{logs}");
    assert!(logs.contains("CHI_SCHED_WORKERS"), "docker logs:\n{logs}");
}

/// A YAML file mounted over /etc/chimaera/chimaera_config.yaml decides the
/// segments the daemon creates (names and sizes), and CHI_* still override it.
#[test]
fn mounted_config_file_is_honoured() {
    if skip_without_docker("mounted_config_file_is_honoured") {
        return;
    }
    let image = deploy::image();
    let dir = tempfile::tempdir_in(deploy::work_dir()).unwrap();
    let conf = dir.path().join("chimaera_config.yaml");
    fs::write(
        &conf,
        "workers:\n  sched_threads: 3\n\
         memory:\n  main_segment_size: 48M\n  client_data_segment_size: 8M\n  runtime_data_segment_size: 8M\n  shm_size: 64M\n\
         logging:\n  level: debug\n\
         shared_memory:\n  main_segment_name: mounted_main\n  client_data_segment_name: mounted_client\n  runtime_data_segment_name: mounted_runtime\n",
    )
    .unwrap();
    // Readable by the container's user whatever its uid.
    run(10, &["chmod", "0755", dir.path().to_str().unwrap()]).expect_ok();
    run(10, &["chmod", "0644", conf.to_str().unwrap()]).expect_ok();
    let mount = format!("{}:/etc/chimaera/chimaera_config.yaml:ro", conf.display());
    let c = Container::start(
        "mounted",
        &[
            "--shm-size=128m",
            "-v",
            &mount,
            "-e",
            "CHI_RUNTIME_DATA_SEGMENT_SIZE=4M",
            image,
        ],
    );
    c.wait_healthy(HEALTHY_WITHIN);
    let shm = c
        .exec(&[
            "stat",
            "-c",
            "%n %s",
            "/dev/shm/mounted_main",
            "/dev/shm/mounted_client",
            "/dev/shm/mounted_runtime",
        ])
        .expect_ok();
    assert_eq!(
        shm.stdout,
        format!(
            "/dev/shm/mounted_main {}\n/dev/shm/mounted_client {}\n/dev/shm/mounted_runtime {}\n",
            48 << 20,
            8 << 20,
            4 << 20
        )
    );
    let shown = c.exec(&["chimaera", "config", "show"]).expect_ok().stdout;
    assert!(
        shown.contains("sched_threads: 3") && shown.contains("level: debug"),
        "{shown}"
    );
    c.exec(&["chimaera", "status"]).expect_ok();
    // The image's release build logs at debug too (slog compiles debug
    // lines out of release builds unless told otherwise): the reaper's
    // line about the status client that just left.
    wait_for_logs(
        &c.name,
        Duration::from_secs(10),
        "no debug line at level debug",
        |logs| logs.contains("left; slot"),
    );
}

/// CHI_CLUSTER_KEY_FILE in the container, as docker-compose.yml's comment
/// mounts it: a key owned by the image's user with mode 0600, read-only at
/// /run/secrets, passes the entrypoint's check and authenticates the frames
/// (status says so) without the key appearing in the logs; the same key
/// readable by others stops the container at the check, exit 78, naming it.
#[test]
fn cluster_key_file_is_checked_and_used_in_container() {
    if skip_without_docker("cluster_key_file_is_checked_and_used_in_container") {
        return;
    }
    let image = deploy::image();
    let uid = run(120, &["docker", "run", "--rm", image, "id", "-u"]).expect_ok();
    let uid = uid.stdout.trim().to_string();
    let dir = tempfile::tempdir_in(deploy::work_dir()).unwrap();
    run(10, &["chmod", "0755", dir.path().to_str().unwrap()]).expect_ok();
    let key_hex = "5eed".repeat(16);
    for (name, mode) in [("good.key", "0600"), ("open.key", "0644")] {
        fs::write(dir.path().join(name), format!("{key_hex}\n")).unwrap();
        // Owned by the container's user whatever the user running the tests:
        // chown'd by a root container on the same bind mount.
        let script = format!("chown {uid} /k/{name} && chmod {mode} /k/{name}");
        let mount = format!("{}:/k", dir.path().display());
        run(
            120,
            &[
                "docker", "run", "--rm", "-u", "0", "-v", &mount, image, "sh", "-c", &script,
            ],
        )
        .expect_ok();
    }
    let secret = "/run/secrets/chimaera_cluster_key";
    let env = format!("CHI_CLUSTER_KEY_FILE={secret}");
    let small = [
        "-e",
        "CHI_MAIN_SEGMENT_SIZE=32M",
        "-e",
        "CHI_CLIENT_DATA_SEGMENT_SIZE=16M",
        "-e",
        "CHI_RUNTIME_DATA_SEGMENT_SIZE=16M",
        "-e",
        "CHI_SHM_SIZE=64M",
        "-e",
        "CHI_SCHED_WORKERS=2",
    ];

    let good = format!("{}:{secret}:ro", dir.path().join("good.key").display());
    let mut args = vec!["--shm-size=128m", "-v", &good, "-e", &env];
    args.extend_from_slice(&small);
    args.push(image);
    let c = Container::start("key", &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    let v: serde_json::Value = loop {
        let r = c.exec(&["chimaera", "status", "--json"]);
        if r.ok() {
            break serde_json::from_str(&r.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline && c.inspect("{{.State.Status}}") == "running",
            "{}\nlogs:\n{}",
            r.describe(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(v["cluster"]["authenticated"], true, "{v}\n{}", c.logs());
    assert_eq!(v["peers"], serde_json::json!([]), "{v}");
    let shown = c.exec(&["chimaera", "config", "show"]).expect_ok().stdout;
    assert!(shown.contains(secret), "{shown}");
    let logs = c.logs();
    assert!(
        !logs.contains(&key_hex) && !shown.contains(&key_hex),
        "the key is in the logs or config show:\n{logs}"
    );

    let open = format!("{}:{secret}:ro", dir.path().join("open.key").display());
    let mut args = vec!["--shm-size=128m", "-v", &open, "-e", &env];
    args.extend_from_slice(&small);
    args.push(image);
    let c = Container::start("openkey", &args);
    let code = c.wait_exit(Duration::from_secs(60));
    let logs = c.logs();
    assert_eq!(code, 78, "{logs}");
    assert!(
        logs.contains("network.cluster_key_file") && logs.contains(secret),
        "docker logs:\n{logs}"
    );
    assert!(
        !logs.contains("ready"),
        "the daemon must not start:\n{logs}"
    );
}

/// Which compose command this machine has: the v2 plugin or v1's docker-compose.
fn compose_command() -> Vec<&'static str> {
    if deploy::have(&["docker", "compose", "version"]) {
        vec!["docker", "compose"]
    } else if deploy::have(&["docker-compose", "version"]) {
        vec!["docker-compose"]
    } else {
        panic!(
            "a Docker engine runs but neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)"
        );
    }
}

/// The compose project of one test; `down --volumes` runs when dropped.
struct Project {
    cmd: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    name: String,
}

impl Project {
    fn run(&self, limit: u64, args: &[&str]) -> deploy::Run {
        let file = deploy::repo().join("docker/docker-compose.yml");
        let mut all = self.cmd.clone();
        all.extend_from_slice(&["-p", &self.name, "-f", file.to_str().unwrap()]);
        all.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_in(Some(&deploy::repo().join("docker")), &env, limit, &all)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.run(
            300,
            &["down", "--volumes", "--remove-orphans", "--timeout", "30"],
        );
    }
}

/// `docker compose up -d` brings three healthy nodes on their static
/// addresses with published ports, which ping each other through their
/// runtimes, see each other up, and see a stopped node down and back (see
/// `cluster_pings_peers_and_marks_a_stopped_node_down`); `docker compose
/// down` removes them.
#[test]
fn compose_cluster_of_three_healthy_nodes() {
    if skip_without_docker("compose_cluster_of_three_healthy_nodes") {
        return;
    }
    deploy::image();
    let cmd = compose_command();
    let name = deploy::unique("compose");
    let net = deploy::free_subnet();
    let dir = tempfile::tempdir_in(deploy::work_dir()).unwrap();
    let hostfile = dir.path().join("hostfile");
    fs::write(&hostfile, format!("{net}.0.10\n{net}.0.11\n{net}.0.12\n")).unwrap();
    run(10, &["chmod", "0755", dir.path().to_str().unwrap()]).expect_ok();
    run(10, &["chmod", "0644", hostfile.to_str().unwrap()]).expect_ok();
    // Same file as users run; only what would clash with a real cluster on
    // this host differs: names, loopback-only random host ports, subnet.
    let project = Project {
        cmd,
        env: vec![
            ("CHIMAERA_NAME_PREFIX", name.clone()),
            ("CHIMAERA_NODE1_PORT", "127.0.0.1:".into()),
            ("CHIMAERA_NODE2_PORT", "127.0.0.1:".into()),
            ("CHIMAERA_NODE3_PORT", "127.0.0.1:".into()),
            ("CHIMAERA_NET", net.clone()),
            ("CHIMAERA_HOSTFILE", hostfile.to_string_lossy().into_owned()),
        ],
        name: name.clone(),
    };
    project.run(600, &["up", "-d", "--no-build"]).expect_ok();

    let nodes: Vec<String> = (1..=3).map(|i| format!("{name}-node{i}")).collect();
    for node in &nodes {
        deploy::wait_healthy(node, Duration::from_secs(180));
    }
    for (i, node) in nodes.iter().enumerate() {
        let addr = run(
            60,
            &[
                "docker",
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                node,
            ],
        )
        .expect_ok();
        assert_eq!(addr.stdout.trim(), format!("{net}.0.{}", 10 + i));
        // Each node found its own line of the shared hostfile by its address.
        let status = run(
            60,
            &["docker", "exec", node, "chimaera", "status", "--json"],
        )
        .expect_ok();
        let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        assert_eq!(v["node_id"], i, "{node}: {}", status.stdout);
        let shm = run(
            60,
            &[
                "docker",
                "exec",
                node,
                "df",
                "-k",
                "--output=size",
                "/dev/shm",
            ],
        )
        .expect_ok();
        assert_eq!(
            shm.stdout.lines().last().unwrap().trim(),
            (2u64 << 20).to_string(),
            "shm_size 2gb"
        );
        run(
            60,
            &[
                "docker",
                "exec",
                node,
                "test",
                "-s",
                "/var/log/chimaera/chimaera.log",
            ],
        )
        .expect_ok();
        let env = run(
            60,
            &[
                "docker",
                "exec",
                node,
                "printenv",
                "CHI_HOSTFILE",
                "CHI_SHM_SIZE",
            ],
        )
        .expect_ok();
        assert_eq!(env.stdout, "/etc/chimaera/hostfile\n2147483648\n");
        // The published port answers on the host's loopback.
        let port = run(60, &["docker", "port", node, "5555/tcp"]).expect_ok();
        let hostport = port.stdout.lines().next().unwrap().trim().to_string();
        assert!(hostport.starts_with("127.0.0.1:"), "{hostport}");
        std::net::TcpStream::connect_timeout(&hostport.parse().unwrap(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{node}: published zmq port {hostport}: {e}"));
    }
    let ps = project.run(120, &["ps"]).expect_ok();
    assert_eq!(ps.stdout.matches("(healthy)").count(), 3, "{}", ps.stdout);

    // The cluster transport across the containers, on the cluster that is
    // already up: bringing it up is the slow part.
    bench_runs_inside_a_cluster_node(&nodes[0]);
    cluster_pings_peers_and_marks_a_stopped_node_down(&nodes, &net);

    let down = project
        .run(300, &["down", "--volumes", "--timeout", "30"])
        .expect_ok();
    for node in &nodes {
        assert!(
            !run(60, &["docker", "inspect", node]).ok(),
            "{node} still exists after down:\n{}",
            down.describe()
        );
    }
    let left = run(
        60,
        &[
            "docker",
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={name}"),
        ],
    )
    .expect_ok();
    assert!(left.stdout.trim().is_empty(), "network left after down");
    let vols = run(
        60,
        &[
            "docker",
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={name}"),
        ],
    )
    .expect_ok();
    assert!(
        vols.stdout.trim().is_empty(),
        "volumes left after down --volumes: {}",
        vols.stdout
    );
}

/// The compose file's heartbeat interval (CHI_HEARTBEAT_INTERVAL), ms.
const HEARTBEAT_MS: u64 = 1000;
/// How long the peers of a freshly started node may take to be "up": a few
/// heartbeats once both daemons listen.
const PEERS_UP_WITHIN: Duration = Duration::from_secs(30);

/// `docker logs --tail` and `chimaera status` of every node, for failures.
fn cluster_diagnostics(nodes: &[String]) -> String {
    let mut out = String::new();
    for node in nodes {
        let state = run(30, &["docker", "inspect", "-f", "{{.State.Status}}", node]);
        let status = run(30, &["docker", "exec", node, "chimaera", "status"]);
        let logs = run(30, &["docker", "logs", "--tail", "60", node]);
        out += &format!(
            "\n===== {node} ({})\n--- chimaera status\n{}{}--- docker logs --tail 60\n{}{}",
            state.stdout.trim(),
            status.stdout,
            status.stderr,
            logs.stdout,
            logs.stderr
        );
    }
    out
}

/// The bench works inside a container as on a host: its own daemons on a
/// configuration of its own, whatever CHI_* variables (CHI_HOSTFILE, the
/// run directory, the ports) the container sets for the node's daemon,
/// and without touching that daemon.
fn bench_runs_inside_a_cluster_node(node: &str) {
    let before = status_json(&[node.to_string()], node);
    for bench in ["local", "remote"] {
        let r = chimaera_in(node, 180, &["bench", bench, "--json"]);
        assert!(r.ok(), "bench {bench} in {node}: {}", r.describe());
        let v: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("bench {bench} printed no JSON ({e}): {}", r.stdout));
        assert!(v["rtt_p50_ns"].as_u64().unwrap_or(0) > 0, "{v}");
    }
    let after = status_json(&[node.to_string()], node);
    assert_eq!(
        before["pid"], after["pid"],
        "the node's daemon is the same one"
    );
    let left = run(
        30,
        &[
            "docker",
            "exec",
            node,
            "sh",
            "-c",
            "ls /dev/shm | grep -c chibench || true",
        ],
    )
    .expect_ok();
    assert_eq!(left.stdout.trim(), "0", "the bench left segments behind");
}

/// `docker exec <node> chimaera <args…>`, with a time limit.
fn chimaera_in(node: &str, limit: u64, args: &[&str]) -> deploy::Run {
    let mut all = vec!["docker", "exec", node, "chimaera"];
    all.extend_from_slice(args);
    run(limit, &all)
}

/// `chimaera status --json` of a running node.
fn status_json(nodes: &[String], node: &str) -> serde_json::Value {
    let r = chimaera_in(node, 60, &["status", "--json"]);
    if !r.ok() {
        panic!("{}\n{}", r.describe(), cluster_diagnostics(nodes));
    }
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("status --json of {node} is not JSON ({e}):\n{}", r.stdout))
}

/// Runs `chimaera ping --all -n <count> --json` in `node` until it exits 0
/// with every one of `expect` nodes ok (peers are "up" only once they answered
/// a heartbeat), at most `within`; returns its output and how long it took.
fn wait_ping_all_ok(
    nodes: &[String],
    node: &str,
    count: u32,
    expect: usize,
    within: Duration,
) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let count_s = count.to_string();
    loop {
        let r = chimaera_in(node, 60, &["ping", "--all", "-n", &count_s, "--json"]);
        let v: Option<serde_json::Value> = serde_json::from_str(&r.stdout).ok();
        if let Some(v) = &v
            && r.ok()
        {
            let all = v["nodes"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|n| n["ok"] == true).count());
            assert_eq!(
                all, expect,
                "ping --all exited 0 without {expect} nodes ok: {}",
                r.stdout
            );
            return (v.clone(), start.elapsed());
        }
        // Exit 69 with JSON is "some node did not answer (yet)", exit 3 "this
        // node's runtime is not (yet) running" (a container just started);
        // anything else is wrong at once.
        let retry = (v.is_some() && r.status == Some(69)) || r.status == Some(3);
        if !retry || start.elapsed() > within {
            panic!(
                "`chimaera ping --all` in {node} did not reach all {expect} nodes within {within:?} (after {:.1}s):\n{}\n{}",
                start.elapsed().as_secs_f64(),
                r.describe(),
                cluster_diagnostics(nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The peers of `status --json`: every other node, each "up", in both the
/// `peers` array and `cluster.peers`; and the rest of `cluster`.
fn assert_peers_up(nodes: &[String], net: &str, i: usize, v: &serde_json::Value) {
    let ctx = || format!("{}: {v}\n{}", nodes[i], cluster_diagnostics(nodes));
    let c = &v["cluster"];
    assert_eq!(c["node_id"], i, "{}", ctx());
    assert_eq!(c["nodes"], nodes.len(), "{}", ctx());
    assert_eq!(c["authenticated"], false, "{}", ctx());
    assert_eq!(c["heartbeat_interval_ms"], HEARTBEAT_MS, "{}", ctx());
    assert_eq!(v["peers"], c["peers"], "{}", ctx());
    let peers = v["peers"].as_array().unwrap_or_else(|| panic!("{}", ctx()));
    let ids: Vec<u64> = peers.iter().filter_map(|p| p["node"].as_u64()).collect();
    let others: Vec<u64> = (0..nodes.len() as u64).filter(|&j| j != i as u64).collect();
    assert_eq!(ids, others, "the peers are every other node: {}", ctx());
    for p in peers {
        let j = p["node"].as_u64().unwrap();
        assert_eq!(p["addr"], format!("{net}.0.{}:5555", 10 + j), "{}", ctx());
        assert_eq!(p["state"], "up", "{}", ctx());
        let ago = p["last_heard_ms_ago"].as_u64().unwrap_or(u64::MAX);
        assert!(ago < 3 * HEARTBEAT_MS, "last heard {ago} ms ago: {}", ctx());
        assert!(p["rtt_us"].as_f64().unwrap_or(0.0) > 0.0, "{}", ctx());
    }
    assert!(
        c["counters"]["frames_in"].as_u64().unwrap_or(0) > 0
            && c["counters"]["frames_out"].as_u64().unwrap_or(0) > 0,
        "{}",
        ctx()
    );
}

/// Once the three containers are healthy: `ping --all` reaches the three
/// nodes from each container (waiting until peers are up), `status` in each
/// lists the two others up and counts the tasks it ran for the others; a
/// `docker stop`ped node fails pings with "node unavailable" within about 3
/// heartbeats, and answers again once started.
fn cluster_pings_peers_and_marks_a_stopped_node_down(nodes: &[String], net: &str) {
    let n = nodes.len();
    // (a) ping --all from the first container, waiting for its peers.
    const COUNT: u32 = 3;
    let (v, took) = wait_ping_all_ok(nodes, &nodes[0], COUNT, n, PEERS_UP_WITHIN);
    eprintln!(
        "ping --all from {}: all {n} nodes answered after {:.1}s: {v}",
        nodes[0],
        took.as_secs_f64()
    );
    assert_eq!(v["count"], COUNT, "{v}");
    let replies = v["nodes"].as_array().unwrap();
    for (j, r) in replies.iter().enumerate() {
        assert_eq!(r["node"], j, "{v}");
        let rtts = r["rtt_ns"].as_array().unwrap();
        assert_eq!(rtts.len(), COUNT as usize, "{v}");
        assert!(rtts.iter().all(|t| t.as_u64().unwrap() > 0), "{v}");
        let (min, p50, max) = (
            r["min_ns"].as_u64().unwrap(),
            r["p50_ns"].as_u64().unwrap(),
            r["max_ns"].as_u64().unwrap(),
        );
        assert!(min <= p50 && p50 <= max, "{v}");
    }
    // The same from the two other containers, in text.
    for (i, node) in nodes.iter().enumerate().skip(1) {
        wait_ping_all_ok(nodes, node, 1, n, PEERS_UP_WITHIN);
        let r = chimaera_in(node, 60, &["ping", "--all"]);
        assert!(r.ok(), "{}\n{}", r.describe(), cluster_diagnostics(nodes));
        for j in 0..n {
            assert!(
                r.stdout.contains(&format!("node {j}: 1 ping(s), min ")),
                "ping --all in {node} (node {i}):\n{}",
                r.stdout
            );
        }
    }

    // One broadcast ping from the second container (which has seen every
    // peer answer by now) reaches all three at once.
    let r = chimaera_in(&nodes[1], 60, &["ping", "--broadcast", "-n", "3", "--json"]);
    assert!(r.ok(), "{}\n{}", r.describe(), cluster_diagnostics(nodes));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["nodes"].as_u64(), Some(n as u64), "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["rtt_ns"].as_array().map(Vec::len), Some(3), "{v}");

    // (b) Each node lists the two others up; the pings above were served by
    // the remote nodes themselves (their tasks_served counters).
    for (i, node) in nodes.iter().enumerate() {
        let deadline = Instant::now() + PEERS_UP_WITHIN;
        let v = loop {
            let v = status_json(nodes, node);
            let up = v["peers"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|p| p["state"] == "up").count());
            if up == n - 1 || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        assert_peers_up(nodes, net, i, &v);
        let counters = &v["cluster"]["counters"];
        // Node 0 sent COUNT pings to each other node, the others one
        // `--all -n 1` (at least; the wait may have retried) to each other.
        let served = counters["tasks_served"].as_u64().unwrap_or(0);
        let forwarded = counters["tasks_forwarded"].as_u64().unwrap_or(0);
        let expect_served = if i == 0 { 2 } else { COUNT as u64 + 1 };
        assert!(
            served >= expect_served && forwarded >= 2,
            "{node}: tasks_served {served} (expected >= {expect_served}), tasks_forwarded {forwarded}: {v}"
        );
        // The text status has a line per peer.
        let text = chimaera_in(node, 60, &["status"]);
        assert!(text.ok(), "{}", text.describe());
        assert!(
            text.stdout
                .contains("cluster of 3 nodes, frames not authenticated"),
            "{}",
            text.stdout
        );
        for j in (0..n).filter(|&j| j != i) {
            let line = format!("node {j} {net}.0.{}:5555: up, heard ", 10 + j);
            assert!(
                text.stdout.contains(&line),
                "no `{line}` in:\n{}",
                text.stdout
            );
        }
    }

    // (c) Stop the last node: pings to it from the first fail with "node
    // unavailable" (at once when the connection is known gone, else when it
    // is marked down), and it is marked down within 3 heartbeats (plus the
    // time of `docker exec`).
    let (down_id, down) = (n - 1, &nodes[n - 1]);
    let stop = run(60, &["docker", "stop", "--time", "30", down]);
    if !stop.ok() {
        panic!("{}\n{}", stop.describe(), cluster_diagnostics(nodes));
    }
    let stopped = Instant::now();
    let within = Duration::from_millis(3 * HEARTBEAT_MS) + Duration::from_secs(4);
    let down_s = down_id.to_string();
    let unavailable = format!("node {down_id}: node unavailable: ");
    let r = loop {
        let r = chimaera_in(&nodes[0], 30, &["ping", "--node", &down_s]);
        if r.status == Some(69) && r.stdout.contains(&unavailable) {
            break r;
        }
        // Until then a ping may still succeed (the node answered a moment
        // ago); any other failure is wrong.
        if !r.ok() || stopped.elapsed() > within {
            panic!(
                "ping --node {down_id} from {} did not fail with \"node unavailable\" within {within:?} of `docker stop` ({:.1}s):\n{}\n{}",
                nodes[0],
                stopped.elapsed().as_secs_f64(),
                r.describe(),
                cluster_diagnostics(nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "{down} stopped: ping --node {down_id} failed {:.2}s after `docker stop` returned: {}",
        stopped.elapsed().as_secs_f64(),
        r.stdout.trim()
    );
    let s = loop {
        let s = status_json(nodes, &nodes[0]);
        if s["peers"][down_id - 1]["state"] == "down" {
            break s;
        }
        if stopped.elapsed() > within {
            panic!(
                "{} does not see node {down_id} down {:.1}s after `docker stop`: {s}\n{}",
                nodes[0],
                stopped.elapsed().as_secs_f64(),
                cluster_diagnostics(nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "{down} marked down by {} {:.2}s after `docker stop` returned: {}",
        nodes[0],
        stopped.elapsed().as_secs_f64(),
        s["peers"][down_id - 1]
    );
    let r = chimaera_in(&nodes[0], 30, &["ping", "--node", &down_s]);
    assert_eq!(r.status, Some(69), "{}", r.describe());
    assert!(
        r.stdout.starts_with(&format!(
            "node {down_id}: node unavailable: node {down_id} ({net}.0.{}:5555) is down, last heard ",
            10 + down_id
        )),
        "{}",
        r.describe()
    );
    // ping --all: the others still answer, the stopped one does not, exit 69.
    let r = chimaera_in(&nodes[0], 30, &["ping", "--all", "--json"]);
    assert_eq!(r.status, Some(69), "{}", r.describe());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for (j, reply) in v["nodes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(reply["ok"], j != down_id, "{v}");
    }
    let err = v["nodes"][down_id]["error"].as_str().unwrap_or("");
    assert!(err.starts_with("node unavailable: "), "{v}");

    // Started again, it is reached again, and reaches the others.
    let start = run(60, &["docker", "start", down]);
    if !start.ok() {
        panic!("{}\n{}", start.describe(), cluster_diagnostics(nodes));
    }
    let restart_within = Duration::from_secs(60);
    let (_, back) = wait_ping_all_ok(nodes, &nodes[0], 1, n, restart_within);
    let (_, from_it) = wait_ping_all_ok(nodes, down, 1, n, restart_within);
    eprintln!(
        "{down} started again: ping --all ok from {} after {:.1}s, from {down} after {:.1}s more",
        nodes[0],
        back.as_secs_f64(),
        from_it.as_secs_f64()
    );
    // The first node logged both (the line may follow the state by a moment).
    let (missed, again) = (
        format!("node {down_id} ({net}.0.{}:5555) missed", 10 + down_id),
        format!("node {down_id} ({net}.0.{}:5555) is up again", 10 + down_id),
    );
    wait_for_logs(
        &nodes[0],
        Duration::from_secs(5),
        &format!("logged no `{missed}` and `{again}`"),
        |logs| logs.contains(&missed) && logs.contains(&again),
    );
}

/// The .deb in a fresh container of the base image: apt installs it with its
/// dependencies, postinst creates the user, group and log directory, the
/// packaged daemon runs as `chimaera` with the packaged conffile, and
/// `apt-get purge` leaves the file system as it found it.
#[test]
fn deb_installs_runs_and_purges_in_base_image() {
    if skip_without_docker("deb_installs_runs_and_purges_in_base_image") {
        return;
    }
    deploy::base_image();
    let deb = deploy::deb();
    let mount = format!("{}:/tmp/chimaera.deb:ro", deb.display());
    let script = r#"
set -eu
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /var/lib/apt \
        -o -path /var/lib/dpkg -o -path /var/cache -o -path /var/log/apt -o -path /run \) -prune -o -print \
        | grep -v -e '^/var/log/dpkg.log$' -e '^/var/log/alternatives.log$' -e '^/etc/ld.so.cache$' \
            -e '^/etc/shadow-$' -e '^/etc/gshadow-$' -e '^/etc/passwd-$' -e '^/etc/group-$' | sort
    # (the *- files are backups the shadow tools keep of the account files;
    # the account files themselves must come back unchanged:)
    cat /etc/passwd /etc/group /etc/shadow /etc/gshadow | md5sum
}
echo '== apt-get update'
apt-get update -qq
# Dependencies first, so that the snapshot only differs by what the
# package itself installs and creates.
apt-get install -y -qq --no-install-recommends $(dpkg-deb -f /tmp/chimaera.deb Depends | sed 's/([^)]*)//g; s/,/ /g') >/dev/null
snapshot >/tmp/before
echo '== install'
apt-get install -y -qq /tmp/chimaera.deb >/dev/null
getent passwd chimaera
getent group chimaera
stat -c '%U:%G %a %n' /var/log/chimaera
dpkg-query -W -f '${Conffiles}\n' chimaera
test -x /usr/bin/chimaera_start_runtime && test -x /usr/bin/chimaera_stop_runtime
# (the slim image's dpkg excludes /usr/share/doc and man pages from disk)
dpkg -L chimaera | grep -qx /usr/share/doc/chimaera/examples/hostfile
dpkg -L chimaera | grep -qx /usr/share/man/man8/chimaera-runtime.8.gz
fail() { echo "FAILED: $*"; exit 1; }
echo '== config check (packaged conffile, with the group present, small segments)'
export CHI_MAIN_SEGMENT_SIZE=32M CHI_CLIENT_DATA_SEGMENT_SIZE=16M CHI_RUNTIME_DATA_SEGMENT_SIZE=16M CHI_SHM_SIZE=64M CHI_SCHED_WORKERS=2
chimaera config check
echo '== run as chimaera'
install -d -o chimaera -g chimaera -m 0750 /run/chimaera
setpriv --reuid=chimaera --regid=chimaera --init-groups chimaera_start_runtime >/tmp/daemon.out 2>&1 &
i=0
until chimaera status >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -lt 120 ] || { cat /tmp/daemon.out; exit 1; }; sleep 0.5
done
chimaera status
stat -c '%U:%G %a %n' /dev/shm/chi_main_segment
chimaera_stop_runtime --timeout 30
wait
grep stopped /var/log/chimaera/chimaera.log
if chimaera status >/dev/null 2>&1; then fail "still running after stop"; fi
test ! -e /dev/shm/chi_main_segment
echo '== purge'
apt-get purge -y -qq chimaera >/dev/null
if getent passwd chimaera; then fail "user chimaera left after purge"; fi
if getent group chimaera; then fail "group chimaera left after purge"; fi
test ! -e /var/log/chimaera && test ! -e /etc/chimaera && test ! -e /usr/bin/chimaera
snapshot >/tmp/after
diff /tmp/before /tmp/after && echo 'PURGE CLEAN'
"#;
    let c = Container::start(
        "deb",
        &[
            "--shm-size=256m",
            "-v",
            &mount,
            deploy::BASE_IMAGE,
            "sh",
            "-c",
            script,
        ],
    );
    let code = c.wait_exit(Duration::from_secs(600));
    let logs = c.logs();
    assert_eq!(code, 0, "install/run/purge script failed:\n{logs}");
    assert!(
        logs.contains("chimaera:x:") && logs.contains("chimaera:chimaera 750 /var/log/chimaera"),
        "{logs}"
    );
    assert!(
        logs.contains("/etc/chimaera/chimaera_config.yaml"),
        "conffile not registered:\n{logs}"
    );
    assert!(
        logs.contains("chimaera:chimaera 660 /dev/shm/chi_main_segment"),
        "segments not shared with group chimaera:\n{logs}"
    );
    assert!(logs.contains("PURGE CLEAN"), "{logs}");
}

/// The packaged unit under a real systemd (252, bookworm's), PID 1 of a
/// container: postinst enables and starts it; Type=notify readiness and
/// STATUS=, the sandbox (PrivateDevices, PrivateUsers, …) with segments
/// shared with group `chimaera` through the host's /dev/shm, WATCHDOG=1,
/// reload by SIGHUP, a bad config stopping after ExecStartPre without a
/// restart loop, a clean stop, and purge under systemd.
#[test]
fn systemd_runs_the_packaged_unit() {
    if skip_without_docker("systemd_runs_the_packaged_unit") {
        return;
    }
    deploy::base_image();
    let deb = deploy::deb();
    let image = "chimaera-systemd-test:latest";
    {
        let _guard = deploy::lock("systemd-image");
        let ctx = tempfile::tempdir_in(deploy::work_dir()).unwrap();
        fs::write(
            ctx.path().join("Dockerfile"),
            "FROM debian:bookworm-slim\n\
             RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv \
             && rm -rf /var/lib/apt/lists/* && rm -f /usr/sbin/policy-rc.d\n\
             CMD [\"/lib/systemd/systemd\"]\n",
        )
        .unwrap();
        run(
            900,
            &[
                "docker",
                "build",
                "-q",
                "-t",
                image,
                ctx.path().to_str().unwrap(),
            ],
        )
        .expect_ok();
    }
    // systemd as PID 1 needs CAP_SYS_ADMIN (mount namespaces for the
    // sandbox), a writable cgroup tree and tmpfs on /run; --privileged is
    // not needed (and not allowed on every engine).
    let c = Container::start(
        "systemd",
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--shm-size=256m",
            image,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = c.exec(&["systemctl", "is-system-running"]);
        if matches!(r.stdout.trim(), "running" | "degraded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "systemd did not boot: {}\n{}",
            r.describe(),
            c.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    run(
        120,
        &[
            "docker",
            "cp",
            deb.to_str().unwrap(),
            &format!("{}:/root/chimaera.deb", c.name),
        ],
    )
    .expect_ok();

    let script = r#"
set -eu
fail() { echo "FAILED: $*"; journalctl -u chimaera --no-pager | tail -n 30; exit 1; }
prop() { systemctl show -p "$1" --value chimaera; }
wait_for() { i=0; until eval "$1"; do i=$((i + 1)); [ "$i" -lt 60 ] || fail "timeout: $1"; sleep 0.5; done; }
# Segments that fit the container's 256 MiB /dev/shm; the unit reads this.
printf '%s\n' CHI_MAIN_SEGMENT_SIZE=32M CHI_CLIENT_DATA_SEGMENT_SIZE=16M \
    CHI_RUNTIME_DATA_SEGMENT_SIZE=16M CHI_SHM_SIZE=64M CHI_SCHED_WORKERS=2 >/etc/default/chimaera

echo '== install (postinst enables and starts the unit)'
apt-get install -y -qq /root/chimaera.deb >/dev/null 2>&1 || fail "apt-get install"
[ "$(systemctl is-enabled chimaera)" = enabled ] || fail "not enabled"
wait_for '[ "$(systemctl is-active chimaera)" = active ]'
echo "active, status: $(prop StatusText)"
[ -n "$(prop StatusText)" ] || fail "no STATUS= from the daemon"
stat -c '%U:%G %a %n' /dev/shm/chi_main_segment
echo "exposure: $(systemd-analyze security chimaera --no-pager | tail -n 1)"

echo '== group chimaera may use it, others may not'
useradd -G chimaera alice && useradd bob
runuser -u alice -- chimaera status >/dev/null || fail "alice (group chimaera) cannot see the runtime"
if runuser -u bob -- chimaera status >/dev/null 2>&1; then fail "bob (not in the group) sees the runtime"; fi
echo 'group access OK'

echo '== watchdog (WatchdogSec=2s drop-in: a silent daemon would be killed)'
mkdir -p /etc/systemd/system/chimaera.service.d
printf '[Service]\nWatchdogSec=2s\n' >/etc/systemd/system/chimaera.service.d/watchdog.conf
systemctl daemon-reload && systemctl restart chimaera
pid=$(prop MainPID); sleep 7
[ "$(prop MainPID)" = "$pid" ] && [ "$(prop NRestarts)" = 0 ] && [ "$(systemctl is-active chimaera)" = active ] \
    || fail "watchdog killed the daemon"
echo 'watchdog OK'

echo '== reload'
systemctl reload chimaera || fail "reload"
[ "$(prop MainPID)" = "$pid" ] || fail "reload restarted the daemon"
journalctl -u chimaera --no-pager | grep -q SIGHUP || fail "no SIGHUP in the journal"
echo 'reload OK'

echo '== bad config: ExecStartPre refuses it, no endless restarts'
cp /etc/chimaera/chimaera_config.yaml /root/good.yaml
sed -i 's/sched_threads: 8/sched_threads: abc/' /etc/chimaera/chimaera_config.yaml
if systemctl restart chimaera 2>/dev/null; then fail "started with a bad config"; fi
wait_for '[ "$(systemctl is-active chimaera)" = failed ]'
journalctl -u chimaera --no-pager | grep -q 'chimaera_config.yaml:[0-9]*:[0-9]*: workers.sched_threads' || fail "no file:line:col"
echo "bad config OK after $(prop NRestarts) restarts"
cp /root/good.yaml /etc/chimaera/chimaera_config.yaml
systemctl reset-failed chimaera && systemctl start chimaera

echo '== stop'
systemctl stop chimaera
[ "$(prop Result)" = success ] && [ "$(prop ExecMainStatus)" = 0 ] || fail "unclean stop"
journalctl -u chimaera --no-pager | grep -q 'stopped' || fail "no stopped line"
if ls /dev/shm/chi_* 2>/dev/null; then fail "segments left"; fi
[ ! -e /run/chimaera ] || fail "runtime directory left"
echo 'stop OK'

echo '== purge (running service)'
# What the administrator (this test) added is not the package's to remove.
rm -rf /etc/systemd/system/chimaera.service.d /etc/default/chimaera
gpasswd -d alice chimaera >/dev/null
systemctl daemon-reload
printf '%s\n' CHI_MAIN_SEGMENT_SIZE=32M CHI_CLIENT_DATA_SEGMENT_SIZE=16M \
    CHI_RUNTIME_DATA_SEGMENT_SIZE=16M CHI_SHM_SIZE=64M >/run/chimaera-env
systemctl set-environment $(cat /run/chimaera-env)
systemctl start chimaera
apt-get purge -y -qq chimaera >/dev/null 2>&1 || fail "purge"
[ "$(systemctl is-active chimaera)" != active ] || fail "still running after purge"
if getent passwd chimaera || getent group chimaera; then fail "user or group left"; fi
left=$(find / -xdev -name '*chimaera*' -not -path '/proc/*' -not -path '/root/*' 2>/dev/null)
[ -z "$left" ] || fail "left after purge: $left"
echo 'SYSTEMD OK'
"#;
    let r = c.exec(&["sh", "-c", script]);
    assert!(
        r.ok() && r.stdout.contains("SYSTEMD OK"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("chimaera:chimaera 660 /dev/shm/chi_main_segment"),
        "{}",
        r.stdout
    );
    eprintln!("{}", r.stdout);
}
