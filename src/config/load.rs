//! Loading: the YAML walk, the `CHI_*` overlay and `--set`, applied in
//! that order to the defaults, then the rules across keys. Every problem is
//! collected; nothing is created and the machine is not consulted.

use super::*;

pub(super) struct Collector {
    config: Config,
    problems: Vec<Problem>,
}

impl Collector {
    fn apply(&mut self, key: &Key, origin: Origin, text: &str, plain: bool, null: bool) {
        match parse_value(key, text, plain, null) {
            Ok(v) => (key.set)(&mut self.config, v),
            Err(message) => self.problems.push(Problem {
                origin,
                key: key.path(),
                message,
            }),
        }
    }

    fn walk_file(&mut self, path: &Path, root: Option<Node>) {
        let at = |loc: Loc| Origin::File {
            path: path.to_path_buf(),
            line: loc.line,
            col: loc.col,
        };
        let entries = match root {
            None => return,
            Some(Node::Map { entries, .. }) => entries,
            Some(n) if n.is_null() => return,
            Some(other) => {
                self.problems.push(Problem {
                    origin: at(other.loc()),
                    key: "(top level)".into(),
                    message: format!(
                        "expected a mapping of sections ({}), found {}",
                        sections().join(", "),
                        other.kind_name()
                    ),
                });
                return;
            }
        };
        let mut known = sections();
        known.push("compose");
        for (section, loc, node) in entries {
            if section == "compose" {
                self.walk_compose(&at, node);
                continue;
            }
            if !known.contains(&section.as_str()) {
                self.problems.push(Problem {
                    origin: at(loc),
                    key: section.clone(),
                    message: format!(
                        "unknown section{}; known sections: {}",
                        hint(&section, known.iter().copied()),
                        known.join(", ")
                    ),
                });
                continue;
            }
            let items = match node {
                Node::Map { entries, .. } => entries,
                n if n.is_null() => continue,
                other => {
                    self.problems.push(Problem {
                        origin: at(other.loc()),
                        key: section.clone(),
                        message: format!("expected a mapping of keys, found {}", other.kind_name()),
                    });
                    continue;
                }
            };
            let in_section = || KEYS.iter().filter(|k| k.section == section);
            for (name, loc, value) in items {
                let Some(key) = in_section().find(|k| k.name == name) else {
                    let names: Vec<&str> = in_section().map(|k| k.name).collect();
                    self.problems.push(Problem {
                        origin: at(loc),
                        key: format!("{section}.{name}"),
                        message: format!(
                            "unknown key{}; `{section}` has: {}",
                            hint(&name, names.iter().copied()),
                            names.join(", ")
                        ),
                    });
                    continue;
                };
                match &value {
                    Node::Scalar { text, plain, loc } => {
                        let null = value.is_null();
                        self.apply(key, at(*loc), text, *plain, null)
                    }
                    Node::Seq { items, loc } if key.kind.is_list() => {
                        // Each item on its own line: the kind's parser
                        // splits lines as it splits `:` or `,`.
                        let mut texts = Vec::new();
                        for item in items {
                            match item {
                                Node::Scalar { text, .. } if !text.contains('\n') => {
                                    texts.push(text.clone())
                                }
                                other => self.problems.push(Problem {
                                    origin: at(other.loc()),
                                    key: key.path(),
                                    message: format!(
                                        "expected {}, found {} in the list",
                                        key.kind.expects(),
                                        other.kind_name()
                                    ),
                                }),
                            }
                        }
                        self.apply(key, at(*loc), &texts.join("\n"), true, false)
                    }
                    other => self.problems.push(Problem {
                        origin: at(other.loc()),
                        key: key.path(),
                        message: format!(
                            "expected {}, found {}",
                            key.kind.expects(),
                            other.kind_name()
                        ),
                    }),
                }
            }
        }
    }
}

impl Collector {
    /// `compose:`, a list of `{name, module, params}`.
    fn walk_compose(&mut self, at: &dyn Fn(Loc) -> Origin, node: Node) {
        let mut problem = |loc: Loc, key: String, message: String| {
            self.problems.push(Problem {
                origin: at(loc),
                key,
                message,
            })
        };
        let items = match node {
            Node::Seq { items, .. } => items,
            n if n.is_null() => return,
            other => {
                problem(
                    other.loc(),
                    "compose".into(),
                    format!(
                        "expected a list of pools (`- name: …` with `module:` and optional `params:`), found {}",
                        other.kind_name()
                    ),
                );
                return;
            }
        };
        let mut specs: Vec<PoolSpec> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let key = |field: &str| format!("compose[{i}].{field}");
            let (entries, loc) = match item {
                Node::Map { entries, loc } => (entries, loc),
                other => {
                    problem(
                        other.loc(),
                        format!("compose[{i}]"),
                        format!(
                            "expected a mapping with name, module and params, found {}",
                            other.kind_name()
                        ),
                    );
                    continue;
                }
            };
            let mut name = None;
            let mut module = None;
            let mut params = String::new();
            for (k, kloc, v) in entries {
                match (k.as_str(), &v) {
                    ("name" | "module", Node::Scalar { text, .. }) if !v.is_null() => {
                        if k == "name" {
                            name = Some((text.clone(), v.loc()));
                        } else {
                            module = Some(text.clone());
                        }
                    }
                    ("name" | "module", other) => problem(
                        other.loc(),
                        key(&k),
                        format!(
                            "expected a name, found {}",
                            if other.is_null() {
                                "nothing"
                            } else {
                                other.kind_name()
                            }
                        ),
                    ),
                    ("params", Node::Scalar { text, .. }) if !v.is_null() => params = text.clone(),
                    ("params", other) if other.is_null() => {}
                    ("params", other) => params = yaml_to_json(other).to_string(),
                    (other, _) => problem(
                        kloc,
                        key(other),
                        format!(
                            "unknown key{}; a compose entry has: name, module, params",
                            hint(other, ["name", "module", "params"])
                        ),
                    ),
                }
            }
            let Some((name, name_loc)) = name else {
                problem(loc, key("name"), "missing: every pool needs a name".into());
                continue;
            };
            let Some(module) = module else {
                problem(
                    loc,
                    key("module"),
                    "missing: which module runs this pool (e.g. bdev)".into(),
                );
                continue;
            };
            if let Err(e) = check_pool_name(&name) {
                problem(name_loc, key("name"), e);
                continue;
            }
            if let Some(j) = specs.iter().position(|s| s.name == name) {
                problem(
                    name_loc,
                    key("name"),
                    format!("pool {name:?} is already compose[{j}]"),
                );
                continue;
            }
            specs.push(PoolSpec {
                name,
                module,
                params,
                line: loc.line,
            });
        }
        self.config.compose = specs;
    }
}

/// The file to read: `--config`, else `CHI_SERVER_CONF`, else the system
/// conffile when present, else none (built-in defaults).
pub fn config_file(opts: &LoadOptions, env: &Env) -> Result<Option<PathBuf>, Problem> {
    let named = |path: PathBuf, origin: Origin, key: &str| {
        if path.is_file() {
            Ok(Some(path))
        } else {
            Err(Problem {
                origin,
                key: key.into(),
                message: format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                ),
            })
        }
    };
    if let Some(p) = &opts.config_path {
        return named(p.clone(), Origin::Check, "--config");
    }
    if let Some(p) = env.non_empty(SERVER_CONF_ENV) {
        return named(
            PathBuf::from(p),
            Origin::Env(SERVER_CONF_ENV.into()),
            "config file",
        );
    }
    Ok(opts.system_config.clone().filter(|p| p.is_file()))
}

/// Reads, overlays and validates the configuration against its own rules.
/// All problems are collected together; nothing is created. The error is
/// only for a file that cannot be named or read.
pub fn collect(opts: &LoadOptions, env: &Env) -> Result<Collected, ConfigErrors> {
    let mut c = Collector {
        config: Config::default(),
        problems: Vec::new(),
    };
    let file = config_file(opts, env).map_err(|p| ConfigErrors(vec![p]))?;
    let source = match &file {
        None => ConfigSource::Builtin,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![Problem {
                    origin: Origin::Check,
                    key: "config file".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            match yaml::parse(&text) {
                Ok(root) => c.walk_file(path, root),
                Err(e) => c.problems.push(Problem {
                    origin: Origin::File {
                        path: path.clone(),
                        line: e.loc.line,
                        col: e.loc.col,
                    },
                    key: "(syntax)".into(),
                    message: e.message,
                }),
            }
            ConfigSource::File(path.clone())
        }
    };

    let mut warnings = Vec::new();
    for (name, value) in env.vars() {
        if !name.starts_with("CHI_") || name == SERVER_CONF_ENV {
            continue;
        }
        match KEYS.iter().find(|k| k.env == Some(name)) {
            Some(key) => c.apply(key, Origin::Env(name.to_string()), value, true, false),
            None => warnings.push(format!(
                "environment variable {name} is not a chimaera setting and is ignored{}",
                hint(name, KEYS.iter().filter_map(|k| k.env))
            )),
        }
    }

    for set in &opts.sets {
        let Some((path, value)) = set.split_once('=') else {
            c.problems.push(Problem {
                origin: Origin::Flag,
                key: set.clone(),
                message: "expected KEY=VALUE, e.g. --set workers.sched_threads=4".into(),
            });
            continue;
        };
        let path = path.trim();
        match find_key(path) {
            Some(key) => c.apply(key, Origin::Flag, value, true, false),
            None => {
                let all: Vec<String> = KEYS.iter().map(Key::path).collect();
                let suggestion = closest(path, all.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                c.problems.push(Problem {
                    origin: Origin::Flag,
                    key: path.to_string(),
                    message: format!("unknown key{suggestion}; `chimaera config keys` lists them"),
                });
            }
        }
    }

    let Collector {
        config,
        mut problems,
    } = c;
    let (names, hosts) = validate(&config, env, &mut problems);
    Ok(Collected {
        config,
        source,
        names,
        hosts,
        problems,
        warnings,
    })
}

/// The configuration and every problem with it, before anything looked at
/// the machine (what `crate::preflight` adds).
#[derive(Debug)]
pub struct Collected {
    pub config: Config,
    pub source: ConfigSource,
    pub names: SegmentNames,
    pub hosts: Vec<hostfile::HostEntry>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Collected {
    /// The configuration with what the machine gave (`node_id`,
    /// `cluster_key`, the CPUs `auto` workers count on), or every problem
    /// found.
    pub fn finish(
        self,
        env: &Env,
        node_id: u32,
        cluster_key: Option<chimaera_proto::wire::ClusterKey>,
        cpu: CpuLimit,
    ) -> Result<Loaded, ConfigErrors> {
        if !self.problems.is_empty() {
            return Err(ConfigErrors(self.problems));
        }
        let (run_dir, run_dir_configured) = run_dir(&self.config, env);
        let workers = self.config.workers.sched_threads.resolve(&cpu);
        Ok(Loaded {
            workers,
            cpu,
            config: self.config,
            source: self.source,
            names: self.names,
            run_dir,
            run_dir_configured,
            hosts: self.hosts,
            node_id,
            cluster_key,
            warnings: self.warnings,
        })
    }
}

/// Reads, overlays and checks the configuration on its own terms, without
/// the machine: `node_id` is 0, no cluster key is read and `auto` workers
/// are 1. `crate::preflight::load` is what the daemon and `config check` run.
pub fn load(opts: &LoadOptions, env: &Env) -> Result<Loaded, ConfigErrors> {
    collect(opts, env)?.finish(env, 0, None, CpuLimit::default())
}

/// Rules across keys, and the hostfile the configuration names (read and
/// parsed; which line is this machine is `crate::preflight`'s to say).
pub(super) fn validate(
    config: &Config,
    env: &Env,
    problems: &mut Vec<Problem>,
) -> (SegmentNames, Vec<hostfile::HostEntry>) {
    let m = &config.memory;
    let total = config.total_segment_size();
    if total > m.shm_size {
        check(
            problems,
            "memory.shm_size",
            format!(
                "Total segment size exceeds shared memory size: main {} + client data {} + runtime data {} = {} > shm_size {}; raise memory.shm_size (CHI_SHM_SIZE) or lower the segment sizes",
                human(m.main_segment_size),
                human(m.client_data_segment_size),
                human(m.runtime_data_segment_size),
                human(total),
                human(m.shm_size)
            ),
        );
    }

    let user = current_user(env);
    let s = &config.shared_memory;
    let names = SegmentNames {
        main: expand_name(&s.main_segment_name, &user),
        client_data: expand_name(&s.client_data_segment_name, &user),
        runtime_data: expand_name(&s.runtime_data_segment_name, &user),
    };
    let labelled = [
        ("shared_memory.main_segment_name", &names.main),
        ("shared_memory.client_data_segment_name", &names.client_data),
        (
            "shared_memory.runtime_data_segment_name",
            &names.runtime_data,
        ),
    ];
    for (key, name) in labelled {
        // NAME_MAX is 255; the discovery file appends ".toml".
        if name.len() > 200 {
            check(
                problems,
                key,
                format!("{name:?} is longer than 200 characters"),
            );
        }
        if let Err(e) = check_name_chars(name) {
            check(problems, key, format!("expands to an unusable name: {e}"));
        }
    }
    for (i, (key_a, a)) in labelled.iter().enumerate() {
        for (key_b, b) in &labelled[i + 1..] {
            if a == b {
                check(
                    problems,
                    key_b,
                    format!("{b:?} is the same name as {key_a}; each segment needs its own"),
                );
            }
        }
    }

    let mut hosts = Vec::new();
    if !config.network.hostfile.is_empty() {
        match std::fs::read_to_string(&config.network.hostfile) {
            Err(e) => check(
                problems,
                "network.hostfile",
                format!("cannot read hostfile {}: {e}", config.network.hostfile),
            ),
            Ok(text) => match hostfile::parse_hostfile(&text) {
                Ok(h) if h.is_empty() => check(
                    problems,
                    "network.hostfile",
                    format!("hostfile {} lists no node", config.network.hostfile),
                ),
                Ok(h) => hosts = h,
                Err(errs) => {
                    for e in errs {
                        check(
                            problems,
                            "network.hostfile",
                            format!("{}: {e}", config.network.hostfile),
                        );
                    }
                }
            },
        }
    }

    let mon = &config.monitoring;
    if mon.metrics_port != 0 && mon.metrics_port == config.network.zmq_port {
        check(
            problems,
            "monitoring.metrics_port",
            format!(
                "port {} is network.zmq_port too: the metrics endpoint needs a port of its own",
                mon.metrics_port
            ),
        );
    }

    (names, hosts)
}
