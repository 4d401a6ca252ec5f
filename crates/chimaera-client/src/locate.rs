//! How a client finds the runtime: the segment names and run directory its
//! configuration gives, with `${USER}` expanded, and nothing else.
//!
//! A client reads the same file, `CHI_*` variables and `--set` flags as the
//! daemon, but only the keys that locate a runtime
//! (`shared_memory.*_segment_name`, `runtime.run_dir`). It runs none of the
//! daemon's checks: those need the daemon's privileges (a cluster key file)
//! or its machine, and a client has neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chimaera_proto::header::SegmentNames;
use serde::Deserialize;

/// The conffile the package installs.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/chimaera/chimaera_config.yaml";
/// The environment variable naming the configuration file.
pub const SERVER_CONF_ENV: &str = "CHI_SERVER_CONF";
/// The environment variable of `runtime.run_dir`.
pub const RUN_DIR_ENV: &str = "CHI_RUN_DIR";

/// Default segment names (the seed README's).
pub const DEFAULT_MAIN_SEGMENT: &str = "chi_main_segment_${USER}";
pub const DEFAULT_CLIENT_DATA_SEGMENT: &str = "chi_client_data_segment_${USER}";
pub const DEFAULT_RUNTIME_DATA_SEGMENT: &str = "chi_runtime_data_segment_${USER}";

/// The process environment as read once, so that loading is a pure function
/// of its inputs and tests never touch the real environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A variable that is set and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Every variable, by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What to load: the `--config` file and `--set` flags of the command line.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub config_path: Option<PathBuf>,
    pub sets: Vec<String>,
    /// The conffile used when nothing names a file; None never looks.
    pub system_config: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            config_path: None,
            sets: Vec::new(),
            system_config: Some(PathBuf::from(SYSTEM_CONFIG_PATH)),
        }
    }
}

impl LoadOptions {
    /// The `chimaera` command line that names the runtime these options
    /// describe: what a hint tells the user to run, with the options they
    /// gave (`chimaera --config F --set K=V stop`).
    pub fn command_line(&self, subcommand: &str) -> String {
        let mut line = String::from("chimaera");
        if let Some(c) = &self.config_path {
            line.push_str(&format!(" --config {}", c.display()));
        }
        for s in &self.sets {
            line.push_str(&format!(" --set {s}"));
        }
        line.push(' ');
        line.push_str(subcommand);
        line
    }
}

/// Where a named file came from, for an error that says which to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOrigin {
    /// `--config`.
    Flag,
    /// `CHI_SERVER_CONF`.
    Env,
    /// The system conffile, present.
    System,
}

/// The file to read: `--config`, else `CHI_SERVER_CONF`, else the system
/// conffile when present, else none (built-in defaults). A named file that
/// is not there is an error, with where it was named.
pub fn config_file(
    opts: &LoadOptions,
    env: &Env,
) -> Result<Option<(PathBuf, FileOrigin)>, (FileOrigin, String)> {
    let named = |path: PathBuf, origin: FileOrigin| {
        if path.is_file() {
            Ok(Some((path, origin)))
        } else {
            Err((
                origin,
                format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                ),
            ))
        }
    };
    if let Some(p) = &opts.config_path {
        return named(p.clone(), FileOrigin::Flag);
    }
    if let Some(p) = env.non_empty(SERVER_CONF_ENV) {
        return named(PathBuf::from(p), FileOrigin::Env);
    }
    Ok(opts
        .system_config
        .clone()
        .filter(|p| p.is_file())
        .map(|p| (p, FileOrigin::System)))
}

/// The user the `${USER}` of segment names stands for: $USER, else the name of
/// the effective uid, else the uid itself. Never empty, so two users never
/// share segments by accident.
pub fn current_user(env: &Env) -> String {
    if let Some(user) = env.non_empty("USER") {
        return user.to_string();
    }
    let uid = chimaera_proto::sys::euid();
    chimaera_proto::sys::user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// Expands `${USER}` in a segment name.
pub fn expand_name(raw: &str, user: &str) -> String {
    raw.replace("${USER}", user)
}

/// Where a runtime may have put its discovery file when none is configured,
/// most likely first. Clients search them all, since the daemon may run as
/// another user (systemd's `chimaera`, or root).
pub fn default_run_dirs(env: &Env) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(rd) = env.non_empty("RUNTIME_DIRECTORY") {
        dirs.push(PathBuf::from(rd.split(':').next().unwrap_or(rd)));
    }
    let uid = chimaera_proto::sys::euid();
    let xdg = env
        .non_empty("XDG_RUNTIME_DIR")
        .map(|x| PathBuf::from(x).join("chimaera"));
    let system = PathBuf::from("/run/chimaera");
    let tmp = PathBuf::from(format!("/tmp/chimaera-{uid}"));
    if uid == 0 {
        dirs.push(system);
        dirs.extend(xdg);
    } else {
        dirs.extend(xdg);
        dirs.push(tmp);
        dirs.push(system);
    }
    dirs.dedup();
    dirs
}

/// Where a runtime is: its segments' names and where its discovery file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    pub names: SegmentNames,
    /// The configured run directory; None: search [`default_run_dirs`].
    pub run_dir: Option<PathBuf>,
    /// The configuration file read, if any.
    pub config: Option<PathBuf>,
}

/// The keys a client reads; the daemon's own are not a client's business.
#[derive(Debug, Default, Deserialize)]
struct ClientView {
    #[serde(default)]
    shared_memory: Option<SharedMemoryView>,
    #[serde(default)]
    runtime: Option<RuntimeView>,
}

#[derive(Debug, Default, Deserialize)]
struct SharedMemoryView {
    main_segment_name: Option<String>,
    client_data_segment_name: Option<String>,
    runtime_data_segment_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeView {
    run_dir: Option<String>,
}

impl Locator {
    /// Reads what locates a runtime from the configuration `opts` and `env`
    /// name: the file's values, then `CHI_RUN_DIR`, then `--set`.
    pub fn load(opts: &LoadOptions, env: &Env) -> Result<Locator, String> {
        let mut main = DEFAULT_MAIN_SEGMENT.to_string();
        let mut client_data = DEFAULT_CLIENT_DATA_SEGMENT.to_string();
        let mut runtime_data = DEFAULT_RUNTIME_DATA_SEGMENT.to_string();
        let mut run_dir = String::new();
        let file = config_file(opts, env).map_err(|(_, message)| message)?;
        if let Some((path, _)) = &file {
            let view = read_view(path)?;
            if let Some(s) = view.shared_memory {
                main = s.main_segment_name.unwrap_or(main);
                client_data = s.client_data_segment_name.unwrap_or(client_data);
                runtime_data = s.runtime_data_segment_name.unwrap_or(runtime_data);
            }
            if let Some(r) = view.runtime {
                run_dir = r.run_dir.unwrap_or(run_dir);
            }
        }
        if let Some(v) = env.get(RUN_DIR_ENV) {
            run_dir = v.to_string();
        }
        for set in &opts.sets {
            let Some((key, value)) = set.split_once('=') else {
                continue;
            };
            let value = value.to_string();
            match key.trim() {
                "shared_memory.main_segment_name" => main = value,
                "shared_memory.client_data_segment_name" => client_data = value,
                "shared_memory.runtime_data_segment_name" => runtime_data = value,
                "runtime.run_dir" => run_dir = value,
                _ => {}
            }
        }
        let user = current_user(env);
        Ok(Locator {
            names: SegmentNames {
                main: expand_name(&main, &user),
                client_data: expand_name(&client_data, &user),
                runtime_data: expand_name(&runtime_data, &user),
            },
            run_dir: (!run_dir.is_empty()).then(|| PathBuf::from(run_dir)),
            config: file.map(|(p, _)| p),
        })
    }

    /// The directories to look in for the discovery file.
    pub fn search_dirs(&self, env: &Env) -> Vec<PathBuf> {
        match &self.run_dir {
            Some(dir) => vec![dir.clone()],
            None => default_run_dirs(env),
        }
    }
}

fn read_view(path: &Path) -> Result<ClientView, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ClientView::default());
    }
    serde_saphyr::from_str::<Option<ClientView>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(path: &Path) -> LoadOptions {
        LoadOptions {
            config_path: Some(path.to_path_buf()),
            sets: Vec::new(),
            system_config: None,
        }
    }

    #[test]
    fn reads_only_what_locates_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "workers:\n  sched_threads: 4\nnetwork:\n  cluster_key_file: /root/secret\nshared_memory:\n  main_segment_name: m_${USER}\nruntime:\n  run_dir: /tmp/rd\n",
        )
        .unwrap();
        let env = Env::from_pairs([("USER", "ann")]);
        let loc = Locator::load(&opts(&path), &env).unwrap();
        assert_eq!(loc.names.main, "m_ann");
        assert_eq!(loc.names.client_data, "chi_client_data_segment_ann");
        assert_eq!(loc.run_dir, Some(PathBuf::from("/tmp/rd")));
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "runtime:\n  run_dir: /tmp/a\n").unwrap();
        let env = Env::from_pairs([("USER", "bo"), (RUN_DIR_ENV, "/tmp/b")]);
        let mut o = opts(&path);
        assert_eq!(
            Locator::load(&o, &env).unwrap().run_dir,
            Some(PathBuf::from("/tmp/b"))
        );
        o.sets = vec![
            "runtime.run_dir=/tmp/c".into(),
            "shared_memory.runtime_data_segment_name=r".into(),
        ];
        let loc = Locator::load(&o, &env).unwrap();
        assert_eq!(loc.run_dir, Some(PathBuf::from("/tmp/c")));
        assert_eq!(loc.names.runtime_data, "r");
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let e =
            Locator::load(&opts(Path::new("/nonexistent/c.yaml")), &Env::default()).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }
}
