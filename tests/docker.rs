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

use deploy::{Container, run, run_in, skip_without_docker};
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

/// A /16 of 172.16.0.0/12 that no Docker network uses, preferring the
/// compose file's own 172.20.
fn free_subnet() -> String {
    let ids = run(60, &["docker", "network", "ls", "-q"])
        .expect_ok()
        .stdout;
    let mut used = String::new();
    for id in ids.split_whitespace() {
        used += &run(
            60,
            &[
                "docker",
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                id,
            ],
        )
        .stdout;
    }
    let routes = run(10, &["ip", "route"]).stdout;
    (20..32)
        .chain(16..20)
        .map(|n| format!("172.{n}"))
        .find(|p| !used.contains(&format!("{p}.")) && !routes.contains(&format!("{p}.")))
        .expect("no free 172.x.0.0/16 for the test cluster")
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
/// addresses with published ports; `docker compose down` removes them.
#[test]
fn compose_cluster_of_three_healthy_nodes() {
    if skip_without_docker("compose_cluster_of_three_healthy_nodes") {
        return;
    }
    deploy::image();
    let cmd = compose_command();
    let name = deploy::unique("compose");
    let net = free_subnet();
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
