//! kubernetes/ checked offline: there is no API server here.
//!
//! What can be checked without one is checked: `kubectl kustomize` builds
//! the base and every overlay; every object validates against the API
//! schemas (`kubernetes-validate --strict`, which bundles them) and every
//! file is yamllint-clean; the ConfigMap's configuration passes `chimaera
//! config check` with the ConfigMap's hostfile and each pod's node id, on a
//! /dev/shm of the manifest's size; the hostfile lists exactly the
//! StatefulSet's pods and is what kubernetes/hostfile.sh makes; and the
//! production shape the manifests promise (security context, probes,
//! spread, budget, volumes, limits). tests/kubernetes_docker.rs runs the
//! StatefulSet's pods as Docker containers.
//!
//! Tools: kubectl, kubernetes-validate and yamllint (scripts/deps.sh --test
//! installs them).

#[path = "support/deploy.rs"]
mod deploy;
#[path = "support/manifests.rs"]
mod manifests;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use deploy::run;
use manifests::*;

#[test]
fn kustomize_builds_the_production_shape() {
    let b = Built::of(&kubernetes_dir().join("base"));
    let sts = b.sts();
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(
        spec["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "chimaera"
    );
    assert_eq!(labels["app.kubernetes.io/name"], "chimaera");

    // The headless Service gives the peers their names, ready or not.
    let services = b.all("Service");
    assert_eq!(services.len(), 2, "a headless and a client-facing Service");
    let headless = services
        .iter()
        .find(|s| s["metadata"]["name"] == spec["serviceName"])
        .expect("spec.serviceName names a built Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(headless["spec"]["ports"][0]["port"], 5555);
    let client = services
        .iter()
        .find(|s| s["metadata"]["name"] != spec["serviceName"])
        .unwrap();
    assert_ne!(client["spec"]["clusterIP"], "None");
    for s in &services {
        assert_eq!(
            s["spec"]["selector"]["app.kubernetes.io/name"], "chimaera",
            "{s}"
        );
    }
    let port_names: Vec<&str> = b.container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for s in &services {
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = p["targetPort"].as_str().unwrap();
            assert!(
                port_names.contains(&target),
                "{target} is no container port"
            );
        }
    }

    // The budget and the spread.
    let pdb = b.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    let spread = b.pod()["topologySpreadConstraints"].as_array().unwrap();
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    );
    for c in spread {
        assert_eq!(c["maxSkew"], 1);
        assert_eq!(
            c["labelSelector"]["matchLabels"],
            spec["selector"]["matchLabels"]
        );
    }

    // The restricted security context, on the pod and on every container.
    let psc = &b.pod()["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_ne!(psc["runAsUser"], 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let init = b.pod()["initContainers"].as_array().unwrap();
    for c in b.pod()["containers"].as_array().unwrap().iter().chain(init) {
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{}", c["name"]);
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{}",
            c["name"]
        );
        assert_eq!(
            sc["seccompProfile"]["type"], "RuntimeDefault",
            "{}",
            c["name"]
        );
        for what in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c["resources"][what][r].is_string(),
                    "{}: {what}.{r}",
                    c["name"]
                );
            }
        }
    }
    // The seed's limits.
    let res = &b.container()["resources"];
    assert_eq!(res["limits"]["cpu"], "4");
    assert_eq!(bytes(res["limits"]["memory"].as_str().unwrap()), 8 << 30);

    // Probes run `chimaera status`.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            b.container()[probe]["exec"]["command"],
            serde_json::json!(["chimaera", "status"]),
            "{probe}"
        );
    }

    let config = daemon_config(&b);
    assert_eq!(config["workers"]["sched_threads"], "auto");

    // /dev/shm: memory, and room for the three segments.
    let (shm, _) = b.mounted_at("/dev/shm");
    assert_eq!(shm["emptyDir"]["medium"], "Memory");
    let limit = bytes(shm["emptyDir"]["sizeLimit"].as_str().unwrap());
    let m = &config["memory"];
    let segments: u64 = [
        "main_segment_size",
        "client_data_segment_size",
        "runtime_data_segment_size",
    ]
    .iter()
    .map(|k| config_bytes(m[k].as_str().unwrap()))
    .sum();
    assert!(
        limit >= segments && limit >= config_bytes(m["shm_size"].as_str().unwrap()),
        "sizeLimit {limit} < segments {segments}"
    );
    assert!(
        limit < bytes(res["limits"]["memory"].as_str().unwrap()),
        "/dev/shm counts against the memory limit"
    );

    // The ConfigMap: the configuration and the hostfile it names.
    let (cm, mount) = b.mounted_at("/etc/chimaera");
    assert!(cm["configMap"].is_object());
    assert_eq!(mount["readOnly"], true);
    assert_eq!(config["network"]["hostfile"], "/etc/chimaera/hostfile");
    assert!(b.config_map()["data"]["hostfile"].is_string());

    // The cluster key: a Secret mounted as a file of mode 0400, copied by
    // the init container to where the configuration reads it.
    let secret = &b.volume("cluster-key-secret")["secret"];
    assert_eq!(secret["defaultMode"], 0o400);
    assert_eq!(secret["items"][0]["key"], "cluster.key");
    let init = &init[0];
    let src = init["command"][3].as_str().unwrap();
    let dst = init["command"][4].as_str().unwrap();
    assert_eq!(
        &init["command"].as_array().unwrap()[..3],
        ["install", "-m", "0400"]
    );
    assert_eq!(config["network"]["cluster_key_file"], dst);
    let (copy, copy_mount) = b.mounted_at(Path::new(dst).parent().unwrap().to_str().unwrap());
    assert_eq!(copy["emptyDir"]["medium"], "Memory");
    assert_eq!(copy_mount["readOnly"], true);
    assert!(
        src.starts_with(
            init["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "cluster-key-secret")
                .unwrap()["mountPath"]
                .as_str()
                .unwrap()
        )
    );

    // The bdev file pools live on the volume claim.
    let claims = spec["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims.len(), 1);
    let claim = claims[0]["metadata"]["name"].as_str().unwrap();
    let data = b.container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the claim is mounted")["mountPath"]
        .as_str()
        .unwrap();
    let pools = config["compose"].as_array().unwrap();
    assert!(!pools.is_empty());
    for p in pools {
        if p["params"]["kind"] == "file" {
            let path = p["params"]["path"].as_str().unwrap();
            assert!(
                path.starts_with(&format!("{data}/")),
                "{path} is not on the claim"
            );
        }
    }

    // The node id is the pod's ordinal.
    let env = b.container()["env"].as_array().unwrap();
    let node_id = env.iter().find(|e| e["name"] == "CHI_NODE_ID").unwrap();
    assert_eq!(
        node_id["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
}

/// Every kustomization's hostfile lists exactly its StatefulSet's pods, in
/// ordinal order, and is what kubernetes/hostfile.sh makes from the
/// arguments its first line names; an overlay changes the replica count
/// and its hostfile follows.
#[test]
fn hostfiles_list_exactly_the_statefulsets_pods_and_are_generated() {
    let mut counts = Vec::new();
    for dir in kustomizations() {
        let b = Built::of(&dir);
        let hostfile = b.config_map()["data"]["hostfile"].as_str().unwrap();
        let lines: Vec<&str> = hostfile
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        let expected: Vec<String> = (0..b.replicas()).map(|i| b.pod_address(i)).collect();
        assert_eq!(
            lines,
            expected,
            "{}: hostfile vs StatefulSet",
            dir.display()
        );
        counts.push(b.replicas());

        // The committed file is the script's output, byte for byte.
        let file = dir.join("hostfile");
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            hostfile,
            "{}: the ConfigMap is the file",
            file.display()
        );
        let args: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# generated by: kubernetes/hostfile.sh "))
            .unwrap_or_else(|| panic!("{}: no `# generated by` line", file.display()))
            .split_whitespace()
            .collect();
        let script = kubernetes_dir().join("hostfile.sh");
        let mut all = vec![script.to_str().unwrap()];
        all.extend(&args);
        let again = run(30, &all).expect_ok().stdout;
        assert_eq!(
            again,
            text,
            "{} was edited by hand or is stale: regenerate it with kubernetes/hostfile.sh {}",
            file.display(),
            args.join(" ")
        );
    }
    assert!(
        counts[1..].iter().any(|&c| c != counts[0]),
        "an overlay changes the replica count: {counts:?}"
    );
    // The script refuses nonsense rather than writing an empty hostfile.
    let script = kubernetes_dir().join("hostfile.sh");
    for bad in [&["0"][..], &["x"], &[]] {
        let mut all = vec![script.to_str().unwrap()];
        all.extend(bad);
        let r = run(30, &all);
        assert_eq!(r.status, Some(2), "{}", r.describe());
        assert!(r.stdout.is_empty(), "{}", r.describe());
    }
}

#[test]
fn every_object_validates_strictly_against_the_api_schemas() {
    for dir in kustomizations() {
        let b = Built::of(&dir);
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), &b.yaml).unwrap();
        let r = run(
            120,
            &[
                "kubernetes-validate",
                "--strict",
                file.path().to_str().unwrap(),
            ],
        );
        assert!(r.ok(), "{}: {}", dir.display(), r.describe());
        let passed = r.stdout.matches(" passed for resource ").count()
            + r.stderr.matches(" passed for resource ").count();
        assert_eq!(
            passed,
            b.objects.len(),
            "{}: {}",
            dir.display(),
            r.describe()
        );
        eprintln!(
            "{}: {} objects valid: {}",
            dir.display(),
            passed,
            r.stderr
                .lines()
                .chain(r.stdout.lines())
                .next()
                .unwrap_or("")
        );
    }
    // The Secret the StatefulSet mounts, as docs/KUBERNETES.md makes it.
    let b = Built::of(&kubernetes_dir().join("base"));
    let secret = &b.volume("cluster-key-secret")["secret"];
    let r = run(
        60,
        &[
            "kubectl",
            "create",
            "secret",
            "generic",
            secret["secretName"].as_str().unwrap(),
            "--namespace",
            b.namespace(),
            &format!(
                "--from-literal={}={}",
                secret["items"][0]["key"].as_str().unwrap(),
                "00".repeat(32)
            ),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
    )
    .expect_ok();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &r.stdout).unwrap();
    run(
        60,
        &[
            "kubernetes-validate",
            "--strict",
            file.path().to_str().unwrap(),
        ],
    )
    .expect_ok();

    // The validator is not a rubber stamp: a misspelt field fails it.
    let bad = b
        .yaml
        .replacen("podManagementPolicy:", "podManagmentPolicy:", 1);
    assert_ne!(bad, b.yaml);
    fs::write(file.path(), &bad).unwrap();
    let r = run(
        60,
        &[
            "kubernetes-validate",
            "--strict",
            file.path().to_str().unwrap(),
        ],
    );
    assert!(!r.ok(), "a misspelt field passed: {}", r.describe());
}

#[test]
fn yaml_is_lint_clean() {
    require_tools();
    let dir = kubernetes_dir();
    let r = run(
        60,
        &[
            "yamllint",
            "--strict",
            "-c",
            dir.join(".yamllint.yaml").to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    );
    assert!(r.ok(), "{}", r.describe());
    // It does look: a line of 120 columns is refused.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("long.yaml"),
        format!("key: {}\n", "x".repeat(120)),
    )
    .unwrap();
    let r = run(
        60,
        &[
            "yamllint",
            "--strict",
            "-c",
            dir.join(".yamllint.yaml").to_str().unwrap(),
            tmp.path().to_str().unwrap(),
        ],
    );
    assert!(!r.ok(), "{}", r.describe());
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// `chimaera config check` of the ConfigMap's configuration, with its
/// hostfile and each pod's node id (CHI_NODE_ID, as the pod's environment
/// gives it), run as root in a private mount namespace whose /dev/shm is a
/// tmpfs of the manifest's sizeLimit (elsewhere: on this host's /dev/shm).
/// The files the configuration names by their paths in the pod are given
/// by CHI_HOSTFILE and CHI_CLUSTER_KEY_FILE.
#[test]
fn the_configmaps_config_passes_config_check_for_every_pod() {
    let bin = env!("CARGO_BIN_EXE_chimaera");
    let private_shm = euid() == 0 && Path::new("/usr/bin/unshare").exists();
    if !private_shm {
        eprintln!("not root or no unshare(1): checking against this host's /dev/shm");
    }
    for dir in kustomizations() {
        let b = Built::of(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let data = b.config_map()["data"].as_object().unwrap();
        for (name, text) in data {
            fs::write(tmp.path().join(name), text.as_str().unwrap()).unwrap();
        }
        let key = tmp.path().join("cluster.key");
        fs::write(&key, "ab".repeat(32)).unwrap();
        run(10, &["chmod", "0400", key.to_str().unwrap()]).expect_ok();
        let (shm, _) = b.mounted_at("/dev/shm");
        let size = bytes(shm["emptyDir"]["sizeLimit"].as_str().unwrap());
        let config = tmp.path().join("chimaera_config.yaml");
        let check = format!("{bin} config check --config {}", config.display());
        for i in 0..b.replicas() {
            let mut cmd = if private_shm {
                let mut c = Command::new("/usr/bin/unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={size} tmpfs /dev/shm && {check}"
                    ));
                c
            } else {
                let mut c = Command::new("sh");
                c.args(["-c", &check]);
                c
            };
            let out = cmd
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("CHI_NODE_ID", i.to_string())
                .env("CHI_HOSTFILE", tmp.path().join("hostfile"))
                .env("CHI_CLUSTER_KEY_FILE", &key)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{}: pod {i}: {stdout}{stderr}",
                dir.display()
            );
            let line = format!("node {i} of {}", b.replicas());
            assert!(stdout.contains(&line), "{}: {stdout}", dir.display());
            assert!(stdout.contains("workers (auto)"), "{stdout}");
        }
        // An id past the hostfile is refused: the check does look at it.
        let out = Command::new(bin)
            .args(["config", "check", "--config", config.to_str().unwrap()])
            .env_clear()
            .env("CHI_NODE_ID", b.replicas().to_string())
            .env("CHI_HOSTFILE", tmp.path().join("hostfile"))
            .env("CHI_CLUSTER_KEY_FILE", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains("network.node_id"), "{stderr}");
    }
}
