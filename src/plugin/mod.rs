//! Plugin modules: shared libraries the daemon loads at start
//! (`modules.load`), each exporting one module through the C ABI of
//! `chimaera_module::abi`. Loading is a check like the others before the
//! daemon creates anything: a library that is missing, is not a module, or
//! was built for another ABI stops the start (and `config check`) with one
//! line naming the key, the file and the fault.
//!
//! Libraries are never unloaded: their code may be on any worker's stack.

mod host;
pub mod library;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimaera_module::Module;

use crate::config::{Config, Problem, check};
pub use host::PluginModule;
pub use library::{Library, LoadError, open};

/// A module `modules.load` asked for, loaded and checked.
pub struct Plugin {
    /// The `modules.load` entry that named it.
    pub entry: String,
    pub module: Arc<PluginModule>,
}

impl Plugin {
    pub fn library(&self) -> &Library {
        self.module.library()
    }

    pub fn as_module(&self) -> Arc<dyn Module> {
        self.module.clone()
    }
}

/// The file names a module name is looked for as, in order.
pub fn file_names(name: &str) -> [String; 2] {
    [format!("lib{name}.so"), format!("lib{name}_plugin.so")]
}

/// Where `entry` (a name or an absolute path) is: the first match on
/// `path`, or why none.
pub fn resolve(entry: &str, path: &[String]) -> Result<PathBuf, String> {
    if entry.contains('/') {
        return Ok(PathBuf::from(entry));
    }
    let names = file_names(entry);
    for dir in path {
        for n in &names {
            let f = Path::new(dir).join(n);
            if f.exists() {
                return Ok(f);
            }
        }
    }
    Err(format!(
        "module {entry:?} not found: no {} in {} (modules.path, CHI_MODULES_PATH)",
        names.join(" or "),
        if path.is_empty() {
            "an empty search path".to_string()
        } else {
            path.join(", ")
        }
    ))
}

/// Loads every module `config.modules.load` names, checking each library
/// and that no two modules, and no module and one of `taken` (the built-in
/// and compiled-in modules), share a name. All problems together.
pub fn load_all(config: &Config, taken: &[String]) -> Result<Vec<Plugin>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut plugins: Vec<Plugin> = Vec::new();
    let m = &config.modules;
    for (i, entry) in m.load.0.iter().enumerate() {
        let key = format!("modules.load[{i}]");
        let file = match resolve(entry, &m.path.0) {
            Ok(f) => f,
            Err(e) => {
                check(&mut problems, &key, e);
                continue;
            }
        };
        let lib = match library::open(&file) {
            Ok(l) => l,
            Err(e) => {
                check(&mut problems, &key, format!("{}: {e}", file.display()));
                continue;
            }
        };
        if !entry.contains('/') && lib.name != *entry {
            check(
                &mut problems,
                &key,
                format!(
                    "{}: the library holds module {:?}, not {entry:?}; name it {:?} or give the file's path",
                    file.display(),
                    lib.name,
                    lib.name
                ),
            );
            continue;
        }
        if taken.contains(&lib.name) {
            check(
                &mut problems,
                &key,
                format!(
                    "{}: module name {:?} is taken by a module built into this daemon",
                    file.display(),
                    lib.name
                ),
            );
            continue;
        }
        if let Some(other) = plugins.iter().find(|p| p.library().name == lib.name) {
            check(
                &mut problems,
                &key,
                format!(
                    "{}: module name {:?} is taken by {} ({})",
                    file.display(),
                    lib.name,
                    other.library().file.display(),
                    other.entry
                ),
            );
            continue;
        }
        plugins.push(Plugin {
            entry: entry.clone(),
            module: Arc::new(PluginModule::new(lib)),
        });
    }
    if problems.is_empty() {
        Ok(plugins)
    } else {
        Err(problems)
    }
}
