use super::*;
use crate::preflight::{check_shm_space, load};
use std::io::Write;

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_yaml(text: &str, env: &Env) -> Result<Loaded, ConfigErrors> {
    let f = write_temp(text);
    load(
        &LoadOptions {
            config_path: Some(f.path().to_path_buf()),
            ..isolated()
        },
        env,
    )
}

/// Options that never read the machine's /etc/chimaera.
fn isolated() -> LoadOptions {
    LoadOptions {
        config_path: None,
        sets: vec![],
        system_config: None,
    }
}

fn no_env() -> Env {
    Env::from_pairs([("USER", "tester")])
}

/// A valid value for every key (as YAML text, as its stored form) that
/// differs from the default and keeps the cross-key rules satisfied.
fn sample(key: &Key, hostfile: &str) -> (String, String) {
    match key.path().as_str() {
        "memory.shm_size" => ("4G".into(), (4u64 << 30).to_string()),
        "memory.main_segment_size" => ("64M".into(), (64u64 << 20).to_string()),
        "memory.client_data_segment_size" | "memory.runtime_data_segment_size" => {
            ("2M".into(), (2u64 << 20).to_string())
        }
        "network.hostfile" => (hostfile.into(), hostfile.into()),
        "network.cluster_key_file" => {
            // A real key file: validation reads it.
            use std::os::unix::fs::PermissionsExt;
            let path = std::env::temp_dir().join(format!("chi-test-key-{}", std::process::id()));
            std::fs::write(&path, [b'k'; 32]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let p = path.display().to_string();
            (p.clone(), p)
        }
        "logging.level" => ("debug".into(), "debug".into()),
        "logging.file" => ("/tmp/x/chimaera.log".into(), "/tmp/x/chimaera.log".into()),
        "performance.stack_size" => ("128K".into(), "131072".into()),
        "workers.sched_threads" => ("auto".into(), "auto".into()),
        "performance.lane_map_policy" => ("map_by_pid_tid".into(), "map_by_pid_tid".into()),
        "shared_memory.group" => ("root".into(), "root".into()),
        "runtime.run_dir" => ("/tmp/chi-run".into(), "/tmp/chi-run".into()),
        "modules.path" => ("/opt/a:/opt/b".into(), "/opt/a:/opt/b".into()),
        "modules.load" => ("kv, /opt/libx.so".into(), "kv,/opt/libx.so".into()),
        // Written the way a URL would, to show the brackets are accepted.
        "monitoring.metrics_address" => ("[::1]".into(), "::1".into()),
        p if p.ends_with("_segment_name") => (
            format!("t_{}_${{USER}}", key.name),
            format!("t_{}_${{USER}}", key.name),
        ),
        _ => match key.kind {
            Kind::Count { min, .. } | Kind::Millis { min, .. } => {
                ((min + 2).to_string(), (min + 2).to_string())
            }
            Kind::Port => ("6123".into(), "6123".into()),
            Kind::PortOrOff => ("9464".into(), "9464".into()),
            // Node 0 is valid with or without the one-line hostfile.
            Kind::AutoOrCount { min, .. } => (min.to_string(), min.to_string()),
            _ => panic!("no sample for {}", key.path()),
        },
    }
}

#[test]
fn defaults_file_equals_builtin_defaults() {
    let from_walker = load_yaml(DEFAULT_YAML, &no_env()).unwrap();
    assert_eq!(from_walker.config, Config::default());
    // And a strict serde reading of the same file agrees, so the file has
    // every key and nothing else.
    let from_serde: Config = serde_saphyr::from_str(DEFAULT_YAML).unwrap();
    assert_eq!(from_serde, Config::default());
}

#[test]
fn seed_readme_example_is_accepted() {
    let seed = r#"
workers:
  sched_threads: 8
  process_reaper_threads: 1
memory:
  main_segment_size: 1073741824      # 1GB
  client_data_segment_size: 536870912 # 512MB
  runtime_data_segment_size: 536870912 # 512MB
network:
  zmq_port: 5555
logging:
  level: "info"
  file: "/var/log/chimaera/chimaera.log"
performance:
  stack_size: 65536
  queue_depth: 10000
  lane_map_policy: "round_robin"
shared_memory:
  main_segment_name: "chi_main_segment_${USER}"
  client_data_segment_name: "chi_client_data_segment_${USER}"
  runtime_data_segment_name: "chi_runtime_data_segment_${USER}"
runtime:
  heartbeat_interval: 1000
  task_timeout: 30000
"#;
    let loaded = load_yaml(seed, &no_env()).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert_eq!(loaded.names.main, "chi_main_segment_tester");
}

#[test]
fn every_key_is_read_from_yaml() {
    let hosts = write_temp("127.0.0.1\n");
    let hostfile = hosts.path().to_str().unwrap();
    for key in KEYS {
        let (text, stored) = sample(key, hostfile);
        let yaml = format!("{}:\n  {}: \"{}\"\n", key.section, key.name, text);
        let yaml = match key.kind {
            // Numbers must be written as numbers.
            Kind::Count { .. }
            | Kind::Millis { .. }
            | Kind::Port
            | Kind::PortOrOff
            | Kind::AutoOrCount { .. } => yaml.replace('"', ""),
            _ => yaml,
        };
        let loaded = load_yaml(&yaml, &no_env()).unwrap_or_else(|e| panic!("{}: {e}", key.path()));
        assert_eq!(key.get(&loaded.config), stored, "{}", key.path());
        assert_ne!(
            key.get(&Config::default()),
            stored,
            "sample for {} equals the default",
            key.path()
        );
    }
}

#[test]
fn every_env_variable_overrides_the_file() {
    let hosts = write_temp("127.0.0.1\n");
    let hostfile = hosts.path().to_str().unwrap();
    let mut with_env = 0;
    for key in KEYS {
        let Some(var) = key.env else { continue };
        with_env += 1;
        let (text, stored) = sample(key, hostfile);
        let env = Env::from_pairs([("USER", "tester"), (var, text.as_str())]);
        let loaded = load_yaml("", &env).unwrap_or_else(|e| panic!("{var}: {e}"));
        assert_eq!(key.get(&loaded.config), stored, "{var}");
    }
    // The seed's table has 14 variables; CHI_SERVER_CONF names the file
    // rather than a key, so 13 of them are keys, plus our additions.
    let seed = [
        "CHI_SCHED_WORKERS",
        "CHI_PROCESS_REAPER_WORKERS",
        "CHI_MAIN_SEGMENT_SIZE",
        "CHI_CLIENT_DATA_SEGMENT_SIZE",
        "CHI_RUNTIME_DATA_SEGMENT_SIZE",
        "CHI_ZMQ_PORT",
        "CHI_LOG_LEVEL",
        "CHI_STACK_SIZE",
        "CHI_QUEUE_DEPTH",
        "CHI_HEARTBEAT_INTERVAL",
        "CHI_TASK_TIMEOUT",
        "CHI_SHM_SIZE",
        "CHI_HOSTFILE",
    ];
    for var in seed {
        assert!(
            KEYS.iter().any(|k| k.env == Some(var)),
            "{var} is not a key's variable"
        );
    }
    assert!(with_env >= seed.len());
}

#[test]
fn chi_server_conf_names_the_file() {
    let f = write_temp("workers:\n  sched_threads: 3\n");
    let env = Env::from_pairs([("USER", "t"), (SERVER_CONF_ENV, f.path().to_str().unwrap())]);
    let loaded = load(&isolated(), &env).unwrap();
    assert_eq!(loaded.config.workers.sched_threads, WorkerCount::Count(3));
    assert_eq!(loaded.source, ConfigSource::File(f.path().to_path_buf()));
    // --config wins over CHI_SERVER_CONF.
    let g = write_temp("workers:\n  sched_threads: 5\n");
    let opts = LoadOptions {
        config_path: Some(g.path().to_path_buf()),
        ..isolated()
    };
    assert_eq!(
        load(&opts, &env).unwrap().config.workers.sched_threads,
        WorkerCount::Count(5)
    );
    // A named file that is missing is an error, not a silent fallback.
    let env = Env::from_pairs([(SERVER_CONF_ENV, "/nonexistent/chimaera.yaml")]);
    let err = load(&isolated(), &env).unwrap_err();
    assert!(err.to_string().contains("CHI_SERVER_CONF"), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/chimaera.yaml"),
        "{err}"
    );
}

#[test]
fn precedence_defaults_file_env_flags() {
    let f = write_temp(
        "workers:\n  sched_threads: 3\n  process_reaper_threads: 2\nruntime:\n  task_timeout: 500\n",
    );
    let env = Env::from_pairs([
        ("USER", "t"),
        ("CHI_SCHED_WORKERS", "4"),
        ("CHI_TASK_TIMEOUT", "600"),
    ]);
    let opts = LoadOptions {
        config_path: Some(f.path().to_path_buf()),
        sets: vec!["runtime.task_timeout=700".into()],
        ..isolated()
    };
    let c = load(&opts, &env).unwrap().config;
    assert_eq!(
        c.workers.sched_threads,
        WorkerCount::Count(4),
        "env beats file"
    );
    assert_eq!(c.workers.process_reaper_threads, 2, "file beats default");
    assert_eq!(c.runtime.task_timeout, 700, "flag beats env");
    assert_eq!(c.runtime.heartbeat_interval, 1000, "default stays");
}

#[test]
fn sizes_take_suffixes_everywhere() {
    let env = Env::from_pairs([
        ("USER", "t"),
        ("CHI_MAIN_SEGMENT_SIZE", "1G"),
        ("CHI_SHM_SIZE", "2147483648"),
    ]);
    let c = load_yaml(
        "memory:\n  client_data_segment_size: 512M\n  runtime_data_segment_size: 524288K\n",
        &env,
    )
    .unwrap()
    .config;
    assert_eq!(c.memory.main_segment_size, 1073741824);
    assert_eq!(c.memory.client_data_segment_size, 536870912);
    assert_eq!(c.memory.runtime_data_segment_size, 536870912);
    assert_eq!(c.memory.shm_size, 2147483648);
}

#[test]
fn user_expansion_is_never_empty() {
    let l = load(&isolated(), &Env::from_pairs([("USER", "alice")])).unwrap();
    assert_eq!(l.names.main, "chi_main_segment_alice");
    assert_eq!(l.names.client_data, "chi_client_data_segment_alice");
    assert_eq!(l.names.runtime_data, "chi_runtime_data_segment_alice");
    for env in [Env::default(), Env::from_pairs([("USER", "")])] {
        let user = current_user(&env);
        assert!(!user.is_empty());
        let uid = crate::sys::euid();
        let expected = crate::sys::user_name(uid).unwrap_or_else(|| uid.to_string());
        assert_eq!(user, expected);
        let l = load(&isolated(), &env).unwrap();
        assert_eq!(l.names.main, format!("chi_main_segment_{expected}"));
    }
}

#[test]
fn all_problems_are_reported_with_locations() {
    let text = "workers:\n  sched_threads: 0\n  bogus: 1\nlogging:\n  level: loud\nperformance:\n  queue_depth: -5\n";
    let env = Env::from_pairs([("USER", "t"), ("CHI_ZMQ_PORT", "99999")]);
    let errs = load_yaml(text, &env).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "workers.sched_threads",
            "workers.bogus",
            "logging.level",
            "performance.queue_depth",
            "network.zmq_port"
        ]
    );
    assert!(
        matches!(
            &errs[0].origin,
            Origin::File {
                line: 2,
                col: 18,
                ..
            }
        ),
        "{:?}",
        errs[0]
    );
    assert!(
        matches!(
            &errs[2].origin,
            Origin::File {
                line: 5,
                col: 10,
                ..
            }
        ),
        "{:?}",
        errs[2]
    );
    assert_eq!(errs[4].origin, Origin::Env("CHI_ZMQ_PORT".into()));
}

#[test]
fn segment_sum_must_fit_the_declared_size() {
    let env = Env::from_pairs([("USER", "t"), ("CHI_SHM_SIZE", "1G")]);
    let err = load(&isolated(), &env).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].key, "memory.shm_size");
    assert!(
        err.0[0]
            .message
            .contains("Total segment size exceeds shared memory size")
    );
}

#[test]
fn shm_space_check_uses_the_mounted_filesystem() {
    let mut c = Config::default();
    c.memory.main_segment_size = 1 << 20;
    c.memory.client_data_segment_size = 1 << 20;
    c.memory.runtime_data_segment_size = 1 << 20;
    assert_eq!(check_shm_space(&c, Path::new("/dev/shm")), Ok(()));
    c.memory.main_segment_size = 1 << 50;
    let p = check_shm_space(&c, Path::new("/dev/shm")).unwrap_err();
    assert!(
        p.message
            .contains("Total segment size exceeds shared memory size"),
        "{p}"
    );
    let p = check_shm_space(&c, Path::new("/nonexistent-shm")).unwrap_err();
    assert!(p.message.contains("cannot inspect"), "{p}");
}

#[test]
fn flags_name_unknown_keys_with_a_suggestion() {
    let opts = LoadOptions {
        config_path: None,
        sets: vec!["workers.sched_thread=4".into(), "nonsense".into()],
        ..isolated()
    };
    let errs = load(&opts, &no_env()).unwrap_err().0;
    assert_eq!(errs.len(), 2);
    assert!(
        errs[0]
            .message
            .contains("did you mean `workers.sched_threads`"),
        "{}",
        errs[0]
    );
    assert!(errs[1].message.contains("KEY=VALUE"));
}

#[test]
fn unknown_chi_variables_warn_but_do_not_stop() {
    let env = Env::from_pairs([("USER", "t"), ("CHI_SCHED_WORKER", "4")]);
    let l = load(&isolated(), &env).unwrap();
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].contains("did you mean `CHI_SCHED_WORKERS`"),
        "{}",
        l.warnings[0]
    );
}

#[test]
fn reload_diff_names_changed_keys() {
    let a = Config::default();
    let mut b = a.clone();
    b.logging.level = LogLevel::Debug;
    b.workers.sched_threads = WorkerCount::Count(2);
    let changed: Vec<(String, bool)> = changed_keys(&a, &b)
        .iter()
        .map(|(k, _, _)| (k.path(), k.live))
        .collect();
    assert_eq!(
        changed,
        [
            ("workers.sched_threads".into(), false),
            ("logging.level".into(), true)
        ]
    );
}

#[test]
fn effective_yaml_reads_back_to_the_same_config() {
    let env = Env::from_pairs([("USER", "t"), ("CHI_QUEUE_DEPTH", "64")]);
    let loaded = load(&isolated(), &env).unwrap();
    let text = to_yaml(&loaded);
    let again = load_yaml(&text, &Env::from_pairs([("USER", "someone-else")])).unwrap();
    assert_eq!(again.config.performance.queue_depth, 64);
    assert_eq!(again.names, loaded.names, "names are written expanded");
}

#[test]
fn run_dir_defaults() {
    let c = Config::default();
    let (dir, configured) = run_dir(
        &c,
        &Env::from_pairs([("RUNTIME_DIRECTORY", "/run/chimaera-x")]),
    );
    assert_eq!(
        (dir.as_path(), configured),
        (Path::new("/run/chimaera-x"), false)
    );
    let mut c2 = c.clone();
    c2.runtime.run_dir = "/srv/chi".into();
    assert_eq!(
        run_dir(&c2, &Env::default()),
        (PathBuf::from("/srv/chi"), true)
    );
    let dirs = default_run_dirs(&Env::from_pairs([("XDG_RUNTIME_DIR", "/run/user/1000")]));
    if crate::sys::euid() == 0 {
        assert_eq!(dirs[0], Path::new("/run/chimaera"));
    } else {
        assert_eq!(dirs[0], Path::new("/run/user/1000/chimaera"));
    }
}

#[test]
fn hostfile_line_with_our_zmq_port_is_this_node() {
    // Several nodes on one machine: 127.0.0.1 with a port each.
    let hosts =
        write_temp("# three on loopback\n127.0.0.1:41101\n127.0.0.1:41102\n\n127.0.0.1:41103\n");
    let path = hosts.path().to_str().unwrap();
    let at = |port: &str, node_id: Option<&str>| {
        let mut vars = vec![
            ("USER", "t"),
            ("CHI_HOSTFILE", path),
            ("CHI_ZMQ_PORT", port),
        ];
        vars.extend(node_id.map(|n| ("CHI_NODE_ID", n)));
        load(&isolated(), &Env::from_pairs(vars))
    };
    for (port, id) in [("41101", 0), ("41102", 1), ("41103", 2)] {
        let loaded = at(port, None).unwrap();
        assert_eq!(loaded.node_id, id, "port {port}");
        assert_eq!(loaded.hosts.len(), 3);
    }
    assert_eq!(at("41102", Some("1")).unwrap().node_id, 1);

    // No line with our port: a config error naming the hostfile and the way out.
    let err = at("41104", None).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].key, "network.hostfile");
    let msg = err.to_string();
    assert!(
        msg.contains("this node is not in the hostfile") && msg.contains("port 41104"),
        "{msg}"
    );
    assert!(
        msg.contains(path) && msg.contains("network.node_id"),
        "{msg}"
    );

    // A given id that is out of range, or on another port.
    let err = at("41101", Some("3")).unwrap_err();
    assert_eq!(err.0[0].key, "network.node_id", "{err}");
    let err = at("41101", Some("1")).unwrap_err();
    assert_eq!(err.0[0].key, "network.node_id", "{err}");
    assert!(
        err.to_string().contains("line 3 (127.0.0.1:41102)"),
        "{err}"
    );

    // A node id without a hostfile.
    let err = load(
        &isolated(),
        &Env::from_pairs([("USER", "t"), ("CHI_NODE_ID", "2")]),
    )
    .unwrap_err();
    assert_eq!(err.0[0].key, "network.node_id", "{err}");
    assert_eq!(load(&isolated(), &no_env()).unwrap().node_id, 0);
}

#[test]
fn node_id_is_auto_or_a_number_and_shows_back() {
    let loaded = load_yaml("network:\n  node_id: auto\n", &no_env()).unwrap();
    assert_eq!(loaded.config.network.node_id, NodeIdSetting::Auto);
    let loaded = load_yaml("network:\n  node_id: \"AUTO\"\n", &no_env()).unwrap();
    assert_eq!(loaded.config.network.node_id, NodeIdSetting::Auto);
    assert!(
        to_yaml(&loaded).contains("node_id: auto"),
        "{}",
        to_yaml(&loaded)
    );
    let err = load_yaml("network:\n  node_id: first\n", &no_env()).unwrap_err();
    assert!(
        err.to_string()
            .contains("network.node_id: expected auto, or a whole number"),
        "{err}"
    );
    assert!(load_yaml("network:\n  node_id: -1\n", &no_env()).is_err());
    assert!(load_yaml("network:\n  node_id: \"0\"\n", &no_env()).is_err());

    let loaded = load_yaml("network:\n  node_id: 0\n", &no_env()).unwrap();
    let text = to_yaml(&loaded);
    let again = load_yaml(&text, &no_env()).unwrap();
    assert_eq!(again.config.network.node_id, NodeIdSetting::Id(0), "{text}");
    let key = find_key("network.node_id").unwrap();
    assert_eq!(key.get(&Config::default()), "auto");
    assert_eq!(key.get(&again.config), "0");
}

#[test]
fn sched_threads_is_auto_or_a_count_from_every_source() {
    let loaded = load_yaml("workers:\n  sched_threads: auto\n", &no_env()).unwrap();
    assert_eq!(loaded.config.workers.sched_threads, WorkerCount::Auto);
    // preflight resolved it against this machine's CPUs.
    assert_eq!(
        loaded.workers,
        loaded.cpu.usable().unwrap_or(1),
        "{:?}",
        loaded.cpu
    );
    assert!(to_yaml(&loaded).contains("sched_threads: auto"));
    let again = load_yaml(&to_yaml(&loaded), &no_env()).unwrap();
    assert_eq!(again.config.workers.sched_threads, WorkerCount::Auto);
    let serde: Config = serde_saphyr::from_str(&to_yaml(&loaded)).unwrap();
    assert_eq!(serde.workers.sched_threads, WorkerCount::Auto);

    let env = Env::from_pairs([("USER", "t"), ("CHI_SCHED_WORKERS", "auto")]);
    let l = load(&isolated(), &env).unwrap();
    assert_eq!(l.config.workers.sched_threads, WorkerCount::Auto);
    let opts = LoadOptions {
        sets: vec!["workers.sched_threads=AUTO".into()],
        ..isolated()
    };
    let l = load(&opts, &no_env()).unwrap();
    assert_eq!(l.config.workers.sched_threads, WorkerCount::Auto);
    assert_eq!(
        find_key("workers.sched_threads").unwrap().get(&l.config),
        "auto"
    );
    // A count is still a count, from 1: 0 workers is no runtime.
    let l = load_yaml("workers:\n  sched_threads: 3\n", &no_env()).unwrap();
    assert_eq!(l.workers, 3);
    let err = load_yaml("workers:\n  sched_threads: 0\n", &no_env()).unwrap_err();
    assert!(
        err.to_string().contains(
            "workers.sched_threads: expected auto, or a whole number from 1 to 1024, got 0"
        ),
        "{err}"
    );

    // The resolution itself: the CPU set, cut down by the quota.
    let quota = |q| crate::cpus::Quota {
        quota_us: q,
        period_us: 100_000,
        file: "/sys/fs/cgroup/cpu.max".into(),
    };
    let limit = |set, q: Option<u64>| CpuLimit {
        cpu_set: set,
        quota: q.map(quota),
    };
    assert_eq!(WorkerCount::Auto.resolve(&limit(Some(2), Some(100_000))), 1);
    assert_eq!(WorkerCount::Auto.resolve(&limit(Some(8), Some(150_000))), 2);
    assert_eq!(WorkerCount::Auto.resolve(&limit(Some(4), None)), 4);
    assert_eq!(WorkerCount::Auto.resolve(&limit(None, None)), 1);
    assert_eq!(WorkerCount::Auto.resolve(&limit(Some(4096), None)), 1024);
    assert_eq!(
        WorkerCount::Count(6).resolve(&limit(Some(2), Some(100_000))),
        6
    );
}

#[test]
fn compose_lists_pools_with_params_as_json() {
    let l = load_yaml(
        "compose:\n  - name: ram0\n    module: bdev\n    params:\n      kind: ram\n      size: 64M\n      block_size: 4096\n      direct: false\n  - name: raw.json\n    module: bdev\n    params: '{\"kind\":\"ram\"}'\n  - name: bare\n    module: admin\n",
        &no_env(),
    )
    .unwrap();
    let c = &l.config.compose;
    assert_eq!(c.len(), 3);
    assert_eq!(
        (c[0].name.as_str(), c[0].module.as_str(), c[0].line),
        ("ram0", "bdev", 2)
    );
    let p: serde_json::Value = serde_json::from_str(&c[0].params).unwrap();
    assert_eq!(
        p,
        serde_json::json!({"kind": "ram", "size": "64M", "block_size": 4096, "direct": false})
    );
    assert_eq!(
        c[1].params, r#"{"kind":"ram"}"#,
        "a scalar is passed as written"
    );
    assert_eq!(c[2].params, "");
    // `config show` writes it back, and a strict reading of that agrees.
    let shown = crate::config::to_yaml(&l);
    let again: Config = serde_saphyr::from_str(&shown).unwrap();
    assert!(
        again.compose.iter().zip(c).all(|(a, b)| a.same_pool(b)),
        "{shown}"
    );
}

#[test]
fn every_compose_problem_is_reported_with_its_line() {
    let text = "compose:\n  - name: ok\n    module: bdev\n  - module: bdev\n  - name: ok\n    module: bdev\n  - name: bad name\n    module: bdev\n  - name: admin\n    module: admin\n  - name: x\n    modul: bdev\n  - just a string\n";
    let errs = load_yaml(text, &no_env()).unwrap_err().0;
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |key: &str, line: usize, words: &str| {
        assert!(
            errs.iter().any(|e| e.key == key
                && matches!(&e.origin, Origin::File { line: l, .. } if *l == line)
                && e.message.contains(words)),
            "no {key} at line {line} with {words:?} in {all:#?}"
        );
    };
    has("compose[1].name", 4, "every pool needs a name");
    has("compose[2].name", 5, "already compose[0]");
    has("compose[3].name", 7, "' ' in pool name");
    has("compose[4].name", 9, "the runtime's own pool");
    has("compose[5].modul", 12, "did you mean `module`");
    has("compose[6]", 13, "expected a mapping");
    let errs = load_yaml("compose:\n  name: x\n", &no_env()).unwrap_err().0;
    assert!(
        errs[0].message.contains("expected a list of pools"),
        "{}",
        errs[0]
    );
}

#[test]
fn monitoring_port_and_address_are_checked() {
    // Off by default, on loopback when turned on.
    let d = Config::default().monitoring;
    assert_eq!(
        (d.metrics_port, d.metrics_address.to_string()),
        (0, "127.0.0.1".into())
    );
    let ok = load_yaml(
        "monitoring:\n  metrics_port: 9464\n  metrics_address: \"::\"\n",
        &no_env(),
    )
    .unwrap();
    assert_eq!(ok.config.monitoring.metrics_port, 9464);
    assert_eq!(ok.config.monitoring.metrics_address.to_string(), "::");
    let env = Env::from_pairs([("USER", "t"), ("CHI_METRICS_ADDRESS", "localhost")]);
    let err = load_yaml("monitoring:\n  metrics_port: 65536\n", &env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(":2:17: monitoring.metrics_port: expected 0 (off) or a TCP port"),
        "{text}"
    );
    assert!(
        text.contains("environment CHI_METRICS_ADDRESS (monitoring.metrics_address): expected an IPv4 or IPv6 address"),
        "{text}"
    );
    // Quoted numbers are text, as for every port.
    let err = load_yaml("monitoring:\n  metrics_port: \"9464\"\n", &no_env()).unwrap_err();
    assert!(err.to_string().contains("got the string"), "{err}");
    // One port cannot serve both.
    let err = load_yaml(
        "network:\n  zmq_port: 7000\nmonitoring:\n  metrics_port: 7000\n",
        &no_env(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("monitoring.metrics_port: port 7000 is network.zmq_port too"),
        "{err}"
    );
}

#[test]
fn module_lists_come_as_yaml_lists_or_separated_text() {
    let l = load_yaml(
        "modules:\n  path: [/opt/m, /usr/lib/m]\n  load:\n    - kv\n    - /opt/m/libecho_c.so\n",
        &no_env(),
    )
    .unwrap();
    assert_eq!(l.config.modules.path.0, ["/opt/m", "/usr/lib/m"]);
    assert_eq!(l.config.modules.load.0, ["kv", "/opt/m/libecho_c.so"]);
    let env = Env::from_pairs([
        ("USER", "tester"),
        ("CHI_MODULES_PATH", "/a:/b"),
        ("CHI_MODULES_LOAD", "x,y"),
    ]);
    let l = load_yaml("", &env).unwrap();
    assert_eq!(l.config.modules.path.0, ["/a", "/b"]);
    assert_eq!(l.config.modules.load.0, ["x", "y"]);
    let errs = load_yaml(
        "modules:\n  path: [relative/dir]\n  load: [kv, ../libx.so, \"a b\", kv]\n",
        &no_env(),
    )
    .unwrap_err()
    .0;
    let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    assert!(
        text[0].contains(":2:") && text[0].contains("modules.path") && text[0].contains("absolute"),
        "{text:?}"
    );
    assert!(
        text[1].contains(":3:")
            && text[1].contains("modules.load")
            && text[1].contains("relative path"),
        "{text:?}"
    );
}
