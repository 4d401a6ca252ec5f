//! The StatefulSet of kubernetes/ run for real, as Docker containers built
//! from the manifest (its image, user, read-only root, dropped
//! capabilities, mounts, /dev/shm size, environment, init container, host
//! and DNS names): the cluster comes up, one pod is "rescheduled" (removed
//! and started again under its name at another address) and the others
//! route to it again within a few heartbeats, without restarting; a
//! stranger at its old address is refused. And CPU limits: `docker run
//! --cpus=1` gives `sched_threads: auto` one worker.
//!
//! Each test prints SKIPPED and passes only when no Docker engine answers.

#[path = "support/deploy.rs"]
mod deploy;
#[path = "support/manifests.rs"]
mod manifests;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use deploy::run;
use manifests::*;
use serde_json::Value;

/// The heartbeat interval the Docker cluster runs with (CHI_HEARTBEAT_INTERVAL
/// over the ConfigMap's 1000 ms): short, so that the test is.
const HEARTBEAT_MS: u64 = 500;
/// Heartbeats within which the other nodes must route to a rescheduled pod
/// once it runs.
const BACK_WITHIN_HEARTBEATS: u64 = 5;

/// A Docker network of this test, removed when dropped.
struct Network {
    name: String,
    /// "172.N": the subnet is 172.N.0.0/16.
    prefix: String,
}

impl Network {
    fn create() -> Network {
        let name = deploy::unique("k8s-net");
        let label = format!("{}={}", deploy::LABEL, std::process::id());
        // Another test (of this or another worktree) may take the subnet
        // between the look and the create: look again.
        for _ in 0..5 {
            let prefix = deploy::free_subnet();
            let r = run(
                60,
                &[
                    "docker",
                    "network",
                    "create",
                    "--label",
                    &label,
                    "--subnet",
                    &format!("{prefix}.0.0/16"),
                    &name,
                ],
            );
            if r.ok() {
                return Network { name, prefix };
            }
            eprintln!("docker network create: {}", r.describe());
        }
        panic!("could not create a Docker network for the test");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = run(60, &["docker", "network", "rm", &self.name]);
    }
}

/// The host side of the pods' volumes, made as the kubelet would.
struct Host {
    /// ConfigMap data, one file per key (mode 0644).
    config: tempfile::TempDir,
    /// The Secret's items, with the mode the kubelet gives them.
    secret: tempfile::TempDir,
    /// Each ordinal's volume claim: it survives the pod.
    claims: Vec<tempfile::TempDir>,
}

fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    std::os::unix::fs::chown(path, uid, gid).unwrap_or_else(|e| {
        panic!(
            "chown {}: {e} (the Docker tests run as root)",
            path.display()
        )
    });
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn id_of(v: &Value) -> Option<u32> {
    v.as_u64().map(|n| n as u32)
}

impl Host {
    fn make(b: &Built) -> Host {
        let psc = &b.pod()["securityContext"];
        let (uid, fs_group) = (id_of(&psc["runAsUser"]), id_of(&psc["fsGroup"]));
        let config = tempfile::tempdir_in(deploy::work_dir()).unwrap();
        for (name, text) in b.config_map()["data"].as_object().unwrap() {
            let f = config.path().join(name);
            fs::write(&f, text.as_str().unwrap()).unwrap();
            chmod(&f, 0o644);
        }
        chmod(config.path(), 0o755);
        // A fresh key, as docs/KUBERNETES.md makes one.
        let secret = tempfile::tempdir_in(deploy::work_dir()).unwrap();
        let sv = &b.volume("cluster-key-secret")["secret"];
        let mode = sv["defaultMode"].as_u64().unwrap() as u32;
        for item in sv["items"].as_array().unwrap() {
            let f = secret.path().join(item["path"].as_str().unwrap());
            let key: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
            fs::write(&f, key).unwrap();
            // The kubelet owns a Secret's files as root and, with an
            // fsGroup, gives them to that group and makes them readable by
            // it: 0400 becomes 0440.
            chown(&f, Some(0), fs_group);
            chmod(
                &f,
                if fs_group.is_some() {
                    mode | 0o440
                } else {
                    mode
                },
            );
        }
        chmod(secret.path(), 0o755);
        let claims = (0..b.replicas())
            .map(|_| {
                let d = tempfile::tempdir_in(deploy::work_dir()).unwrap();
                chown(d.path(), uid, fs_group);
                chmod(d.path(), 0o2770);
                d
            })
            .collect();
        Host {
            config,
            secret,
            claims,
        }
    }
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u8
}

/// One pod of the StatefulSet as Docker runs it.
struct Pod {
    ordinal: u64,
    name: String,
    fqdn: String,
    ip: String,
    container: deploy::Container,
    /// `stat` of the Secrets' files as its init containers see them.
    init_saw: String,
    /// Its emptyDirs (other than /dev/shm): gone with the pod.
    _empty_dirs: Vec<tempfile::TempDir>,
}

/// `docker run` flags for a container of the manifest: user, groups, the
/// security context, its volume mounts (host paths from `dirs`), and the
/// environment with the pod's ordinal.
fn container_flags(
    b: &Built,
    c: &Value,
    ordinal: u64,
    dirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let psc = &b.pod()["securityContext"];
    let mut f = Vec::new();
    if let Some(uid) = id_of(&psc["runAsUser"]) {
        let gid = id_of(&psc["runAsGroup"]).unwrap_or(uid);
        f.push(format!("--user={uid}:{gid}"));
    }
    if let Some(g) = id_of(&psc["fsGroup"]) {
        f.push(format!("--group-add={g}"));
    }
    let sc = &c["securityContext"];
    if sc["readOnlyRootFilesystem"] == true {
        f.push("--read-only".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        f.push("--security-opt=no-new-privileges".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        f.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    // RuntimeDefault is Docker's default seccomp profile: nothing to add.
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let path = m["mountPath"].as_str().unwrap();
        let vol = m["name"].as_str().unwrap();
        if path == "/dev/shm" {
            continue; // --shm-size
        }
        let host = dirs
            .get(vol)
            .unwrap_or_else(|| panic!("the test has no host side for volume {vol}"));
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        f.push(format!("--volume={host}:{path}{ro}"));
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.labels['apps.kubernetes.io/pod-index']"
        {
            ordinal.to_string()
        } else {
            panic!("the test cannot give {name} its value: {e}");
        };
        f.push(format!("--env={name}={value}"));
    }
    f
}

impl Pod {
    /// Starts pod `ordinal` at `ip`: its init containers to completion, then
    /// the daemon's container, named and aliased as the pod would be.
    fn start(b: &Built, host: &Host, net: &Network, ordinal: u64, ip: &str) -> Pod {
        let image = deploy::image();
        let sts = b.sts();
        let name = format!("{}-{ordinal}", sts["metadata"]["name"].as_str().unwrap());
        let fqdn = b.pod_address(ordinal).trim_end_matches(":5555").to_string();
        let psc = &b.pod()["securityContext"];
        let (uid, fs_group) = (id_of(&psc["runAsUser"]), id_of(&psc["fsGroup"]));

        // Host sides of the volumes. emptyDirs of medium Memory are
        // directories in this host's /dev/shm (a tmpfs), new for each pod;
        // /dev/shm itself is the container's --shm-size.
        let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
            .as_str()
            .unwrap();
        let mut dirs = BTreeMap::new();
        let mut empty_dirs = Vec::new();
        dirs.insert(
            claim.to_string(),
            host.claims[ordinal as usize].path().display().to_string(),
        );
        let mut shm_size = None;
        for v in b.pod()["volumes"].as_array().unwrap() {
            let vname = v["name"].as_str().unwrap().to_string();
            if v["configMap"].is_object() {
                dirs.insert(vname, host.config.path().display().to_string());
            } else if v["secret"].is_object() {
                dirs.insert(vname, host.secret.path().display().to_string());
            } else if v["emptyDir"].is_object() {
                let size = bytes(v["emptyDir"]["sizeLimit"].as_str().unwrap());
                let mounted_at_shm = b.container()["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == vname.as_str() && m["mountPath"] == "/dev/shm");
                if mounted_at_shm {
                    assert_eq!(v["emptyDir"]["medium"], "Memory");
                    shm_size = Some(size);
                    continue;
                }
                let base = if v["emptyDir"]["medium"] == "Memory" {
                    "/dev/shm".into()
                } else {
                    deploy::work_dir()
                };
                let d = tempfile::Builder::new()
                    .prefix("chi-test-k8s-")
                    .tempdir_in(base)
                    .unwrap();
                chown(d.path(), uid, fs_group);
                chmod(d.path(), 0o2770);
                dirs.insert(vname, d.path().display().to_string());
                empty_dirs.push(d);
            } else {
                panic!("the test does not know this kind of volume: {v}");
            }
        }
        let label = format!("{}={}", deploy::LABEL, std::process::id());

        let mut init_saw = String::new();
        for init in b.pod()["initContainers"].as_array().into_iter().flatten() {
            assert_eq!(init["image"], image, "the init container runs the image");
            let cmd: Vec<&str> = init["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let mut all: Vec<String> = ["docker", "run", "--rm", "--label", &label]
                .map(String::from)
                .to_vec();
            all.extend(container_flags(b, init, ordinal, &dirs));
            // What the init container sees of its Secrets, first.
            let secrets: Vec<String> = init["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| b.volume(m["name"].as_str().unwrap())["secret"].is_object())
                .map(|m| format!("{}/*", m["mountPath"].as_str().unwrap()))
                .collect();
            let mut look = all.clone();
            look.extend([
                "--entrypoint=sh".into(),
                image.into(),
                "-c".into(),
                format!("stat -c '%n %a %u %g' {}", secrets.join(" ")),
            ]);
            let look: Vec<&str> = look.iter().map(String::as_str).collect();
            init_saw += &run(120, &look).expect_ok().stdout;
            all.push(format!("--entrypoint={}", cmd[0]));
            all.push(image.into());
            all.extend(cmd[1..].iter().map(|s| s.to_string()));
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            let r = run(120, &args);
            assert!(
                r.ok(),
                "init container {} of {name}: {}",
                init["name"],
                r.describe()
            );
        }

        let c = b.container();
        assert_eq!(
            c["image"], image,
            "the manifest runs the image the tests build"
        );
        let limits = &c["resources"]["limits"];
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpus = limits["cpu"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            .min(nproc);
        let mut args: Vec<String> = vec![
            format!("--hostname={name}"),
            format!("--network={}", net.name),
            format!("--ip={ip}"),
            format!("--network-alias={fqdn}"),
            format!("--shm-size={}", shm_size.expect("an emptyDir at /dev/shm")),
            format!("--memory={}", bytes(limits["memory"].as_str().unwrap())),
            format!("--cpus={cpus}"),
            format!("--env=CHI_HEARTBEAT_INTERVAL={HEARTBEAT_MS}"),
        ];
        args.extend(container_flags(b, c, ordinal, &dirs));
        args.push(image.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let container = deploy::Container::start(&name, &args);
        Pod {
            ordinal,
            name,
            fqdn,
            ip: ip.into(),
            container,
            init_saw,
            _empty_dirs: empty_dirs,
        }
    }

    fn exec(&self, args: &[&str]) -> deploy::Run {
        self.container.exec(args)
    }

    fn status(&self) -> Value {
        let r = self.exec(&["chimaera", "status", "--json"]);
        assert!(r.ok(), "{}: {}", self.name, r.describe());
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// `chimaera ping --node N` from this pod; true when it answered.
    fn pings(&self, node: u64) -> bool {
        self.exec(&[
            "chimaera",
            "ping",
            "--node",
            &node.to_string(),
            "--timeout",
            "2",
        ])
        .ok()
    }
}

fn diagnostics(pods: &[&Pod]) -> String {
    pods.iter()
        .map(|p| {
            let s = p.exec(&["chimaera", "status"]);
            format!(
                "\n===== {} ({})\n{}{}--- logs\n{}",
                p.name,
                p.container.name,
                s.stdout,
                s.stderr,
                p.container.logs()
            )
        })
        .collect()
}

/// Waits until `chimaera ping --all` from `pod` reaches every node.
fn wait_all_answer(pod: &Pod, pods: &[&Pod], within: Duration) {
    let start = Instant::now();
    loop {
        let r = pod.exec(&["chimaera", "ping", "--all", "--timeout", "2"]);
        if r.ok() {
            for p in pods {
                assert!(
                    r.stdout.contains(&format!("node {}: 1 ping(s)", p.ordinal)),
                    "{}",
                    r.stdout
                );
            }
            return;
        }
        assert!(
            start.elapsed() < within,
            "ping --all from {} within {within:?}: {}\n{}",
            pod.name,
            r.describe(),
            diagnostics(pods)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The base StatefulSet as three containers: the manifest's image, user,
/// read-only root, dropped capabilities, mounts (ConfigMap, Secret through
/// the init container, memory /dev/shm of the sizeLimit, the claim), pod
/// hostnames and DNS names. The cluster comes up (`ping --all` from each),
/// then pod 2 is rescheduled: its container removed, and started again
/// under its name at another address, on its claim. The others route to
/// it again within 5 heartbeats of its start, without a restart of their
/// own; and a stranger at its old address is refused.
#[test]
fn the_statefulset_runs_on_docker_and_survives_a_reschedule() {
    if deploy::skip_without_docker("the_statefulset_runs_on_docker_and_survives_a_reschedule") {
        return;
    }
    let b = Built::of(&kubernetes_dir().join("base"));
    assert_eq!(b.replicas(), 3);
    deploy::image();
    let host = Host::make(&b);
    let net = Network::create();
    let ip = |i: u64| format!("{}.0.{}", net.prefix, 10 + i);
    let mut pods: Vec<Pod> = (0..b.replicas())
        .map(|i| Pod::start(&b, &host, &net, i, &ip(i)))
        .collect();
    for p in &pods {
        p.container.wait_healthy(Duration::from_secs(120));
    }

    // The pods look as the manifest says.
    let uid = b.pod()["securityContext"]["runAsUser"].as_u64().unwrap();
    let fs_group = b.pod()["securityContext"]["fsGroup"].as_u64().unwrap();
    let (shm_vol, _) = b.mounted_at("/dev/shm");
    let shm = bytes(shm_vol["emptyDir"]["sizeLimit"].as_str().unwrap());
    let key_file = daemon_config(&b)["network"]["cluster_key_file"]
        .as_str()
        .unwrap()
        .to_string();
    for p in &pods {
        let r = p
            .exec(&[
                "sh",
                "-c",
                "hostname; stat -c %u /proc/1; df -k --output=size /dev/shm | tail -1; \
                 touch /etc/x 2>&1 || true",
            ])
            .expect_ok();
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], p.name, "hostname");
        assert_eq!(
            lines[1],
            uid.to_string(),
            "the daemon (PID 1) runs as runAsUser"
        );
        assert_eq!(
            lines[2].trim(),
            (shm / 1024).to_string(),
            "/dev/shm is the sizeLimit"
        );
        assert!(lines[3].contains("Read-only file system"), "{}", r.stdout);
        assert_eq!(
            p.container.inspect("{{.HostConfig.ReadonlyRootfs}}"),
            "true"
        );
        let hostfile = b.config_map()["data"]["hostfile"].as_str().unwrap();
        let same = p
            .exec(&["cat", "/etc/chimaera/hostfile"])
            .expect_ok()
            .stdout;
        assert_eq!(same, hostfile, "the ConfigMap's hostfile at its path");
        // The Secret as the kubelet leaves it, and the daemon's private copy.
        assert_eq!(
            p.init_saw,
            format!("/run/secrets/chimaera/cluster.key 440 0 {fs_group}\n"),
            "the Secret's file as the kubelet leaves it"
        );
        let r = p.exec(&["stat", "-c", "%a %u", &key_file]).expect_ok();
        assert_eq!(r.stdout, format!("400 {uid}\n"), "the daemon's copy");
        // Its DNS name resolves, from the others, to its address.
        for q in &pods {
            let r = q.exec(&["getent", "hosts", &p.fqdn]).expect_ok();
            assert!(r.stdout.starts_with(&format!("{} ", p.ip)), "{}", r.stdout);
        }
        let s = p.status();
        assert_eq!(s["node_id"], p.ordinal);
        assert_eq!(s["cluster"]["authenticated"], true);
    }
    for p in &pods {
        wait_all_answer(p, &pods.iter().collect::<Vec<_>>(), Duration::from_secs(30));
    }
    eprintln!("three pods up, every one reaches every other");
    // The bdev pool lives on the claim.
    assert!(host.claims[2].path().join("data0.img").is_file());

    // The others, before: their daemons must not restart.
    let before: Vec<(String, Value)> = pods[..2]
        .iter()
        .map(|p| {
            (
                p.container
                    .inspect("{{.State.StartedAt}} {{.RestartCount}}"),
                p.status()["started_unix_ms"].clone(),
            )
        })
        .collect();

    // Reschedule pod 2: gone, then back under its name at another address.
    let old = pods.pop().unwrap();
    let (old_ip, ordinal) = (old.ip.clone(), old.ordinal);
    drop(old);
    let new_ip = format!("{}.1.{}", net.prefix, 10 + ordinal);
    let moved = Pod::start(&b, &host, &net, ordinal, &new_ip);
    let started = loop {
        if moved.exec(&["chimaera", "status"]).ok() {
            break Instant::now();
        }
        assert_eq!(
            moved.container.inspect("{{.State.Status}}"),
            "running",
            "{}",
            moved.container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let budget = Duration::from_millis(BACK_WITHIN_HEARTBEATS * HEARTBEAT_MS);
    for p in &pods {
        loop {
            if p.pings(ordinal) {
                break;
            }
            let all: Vec<&Pod> = pods.iter().chain([&moved]).collect();
            assert!(
                started.elapsed() < budget,
                "{} does not route to rescheduled node {ordinal} ({new_ip}) {:?} after it runs\n{}",
                p.name,
                started.elapsed(),
                diagnostics(&all)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} routes to rescheduled node {ordinal} (was {old_ip}, now {new_ip}) {:.2}s after it runs (budget {:?})",
            p.name,
            started.elapsed().as_secs_f64(),
            budget
        );
    }
    let all: Vec<&Pod> = pods.iter().chain([&moved]).collect();
    wait_all_answer(&moved, &all, Duration::from_secs(10));
    for (p, (was, epoch)) in pods.iter().zip(&before) {
        assert_eq!(
            &p.container
                .inspect("{{.State.StartedAt}} {{.RestartCount}}"),
            was,
            "{} restarted",
            p.name
        );
        assert_eq!(
            &p.status()["started_unix_ms"],
            epoch,
            "{}'s daemon restarted",
            p.name
        );
        let logs = p.container.logs();
        assert!(
            logs.contains(&format!("node {ordinal} ({}:5555) restarted", moved.fqdn)),
            "{logs}"
        );
    }
    // It found its pool again on its claim.
    assert!(moved.container.logs().contains("created pool data0"));

    // A stranger at the old address, claiming to be node 2 (with the
    // hostfile, but without the DNS name), is refused: the allowlist
    // follows the name, not the addresses it once had.
    let denied_before: Vec<u64> = pods
        .iter()
        .map(|p| {
            p.status()["cluster"]["counters"]["zap_denied"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let stranger = {
        let label = format!("{}={}", deploy::LABEL, std::process::id());
        let tmp = host.config.path().display().to_string();
        let data = tempfile::tempdir_in(deploy::work_dir()).unwrap();
        chown(data.path(), Some(uid as u32), None);
        let data_mount = format!("{}:/var/lib/chimaera", data.path().display());
        let name = deploy::unique("k8s-stranger");
        let r = run(
            120,
            &[
                "docker",
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                &label,
                "--network",
                &net.name,
                "--ip",
                &old_ip,
                "--shm-size=2304m",
                "-v",
                &format!("{tmp}:/etc/chimaera:ro"),
                "-v",
                &data_mount,
                "-e",
                &format!("CHI_NODE_ID={ordinal}"),
                "-e",
                "CHI_CLUSTER_KEY_FILE=",
                "-e",
                "CHI_RUN_DIR=/tmp",
                "-e",
                "CHI_HEARTBEAT_INTERVAL=200",
                deploy::IMAGE,
            ],
        );
        assert!(r.ok(), "{}", r.describe());
        (deploy::Container { name }, data)
    };
    let stranger = &stranger.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    for (p, before) in pods.iter().zip(denied_before) {
        loop {
            let denied = p.status()["cluster"]["counters"]["zap_denied"]
                .as_u64()
                .unwrap();
            if denied > before
                && p.container
                    .logs()
                    .contains(&format!("refused a connection from {old_ip}"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not refuse the stranger at {old_ip}\n{}\n--- stranger\n{}",
                p.name,
                diagnostics(&[p]),
                stranger.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // And the real node 2 is still reached.
    for p in &pods {
        assert!(p.pings(ordinal), "{}", diagnostics(&all));
    }
}

/// `docker run --cpus=1` is a CPU quota, not a CPU set: the container still
/// sees every CPU, but `auto` starts one worker and says why; an explicit
/// count above the quota starts as given, with a warning.
#[test]
fn a_cpu_quota_gives_auto_one_worker() {
    if deploy::skip_without_docker("a_cpu_quota_gives_auto_one_worker") {
        return;
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    if nproc < 2 {
        eprintln!("SKIPPED a_cpu_quota_gives_auto_one_worker: one CPU, no quota below the CPU set");
        return;
    }
    let image = deploy::image();
    let small = [
        "--shm-size=128m",
        "-e",
        "CHI_MAIN_SEGMENT_SIZE=64M",
        "-e",
        "CHI_CLIENT_DATA_SEGMENT_SIZE=16M",
        "-e",
        "CHI_RUNTIME_DATA_SEGMENT_SIZE=16M",
        "-e",
        "CHI_SHM_SIZE=96M",
    ];
    let workers_of = |c: &deploy::Container| -> usize {
        let r = c.exec(&["sh", "-c", "cat /proc/1/task/*/comm"]).expect_ok();
        r.stdout
            .lines()
            .filter(|l| l.starts_with("chi-worker-"))
            .count()
    };
    for (cpus, setting, expect, says) in [
        (
            "1",
            "auto",
            1,
            "workers.sched_threads is auto: 1 worker(s), one per CPU this process may use: the cgroup CPU quota (100000 us per 100000 us (1.00 CPUs) in /sys/fs/cgroup/",
        ),
        (
            "1.5",
            "auto",
            2,
            "workers.sched_threads is auto: 2 worker(s)",
        ),
        (
            "1",
            "2",
            2,
            "2 workers, but the cgroup CPU quota (100000 us per 100000 us (1.00 CPUs) in /sys/fs/cgroup/",
        ),
    ] {
        let mut args = vec![
            format!("--cpus={cpus}"),
            "-e".into(),
            format!("CHI_SCHED_WORKERS={setting}"),
        ];
        args.extend(small.iter().map(|s| s.to_string()));
        args.push(image.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = deploy::Container::start("cpus", &args);
        c.wait_healthy(Duration::from_secs(120));
        let logs = c.logs();
        assert!(
            logs.contains(says),
            "--cpus={cpus} sched_threads {setting}: no `{says}` in\n{logs}"
        );
        assert_eq!(
            workers_of(&c),
            expect,
            "--cpus={cpus} sched_threads {setting}:\n{logs}"
        );
        // Every CPU is still in its CPU set: the quota alone decided.
        let set = c.exec(&["nproc"]).expect_ok().stdout;
        assert_eq!(set.trim(), nproc.to_string());
        if setting == "2" {
            assert!(
                logs.contains("allows 1 CPU(s): workers share CPU time"),
                "{logs}"
            );
        }
    }
}
