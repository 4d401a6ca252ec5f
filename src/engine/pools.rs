//! The engine's pools and modules: which container serves each pool id
//! ([`PoolTable`]), and which modules a runtime can make pools of
//! ([`Registry`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chimaera_module::{Container, Module, PoolInfo};

pub(crate) struct Pool {
    pub info: PoolInfo,
    pub container: Arc<dyn Container>,
    /// The parameters it was created with, to tell a repeated create (the
    /// same pool) from a conflicting one.
    pub params: String,
}

/// Pools by id. Workers keep a snapshot and refresh it when the generation
/// moves, so the hot path takes no lock.
#[derive(Default)]
pub(crate) struct PoolTable {
    pools: RwLock<Vec<Option<Arc<Pool>>>>,
    generation: AtomicU64,
}

impl PoolTable {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Vec<Option<Arc<Pool>>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn list(&self) -> Vec<PoolInfo> {
        self.snapshot()
            .into_iter()
            .flatten()
            .map(|p| p.info.clone())
            .collect()
    }

    pub fn find(&self, name: &str) -> Option<PoolInfo> {
        self.list().into_iter().find(|p| p.name == name)
    }

    /// The pool named `name` and the parameters it was created with.
    pub fn find_with_params(&self, name: &str) -> Option<(PoolInfo, String)> {
        self.snapshot()
            .into_iter()
            .flatten()
            .find(|p| p.info.name == name)
            .map(|p| (p.info.clone(), p.params.clone()))
    }

    /// Adds a pool with the next free id (or `id` when given).
    pub fn insert(
        &self,
        id: Option<u32>,
        name: &str,
        module: &str,
        params: &str,
        make: impl FnOnce(&PoolInfo) -> Result<Arc<dyn Container>, String>,
    ) -> Result<PoolInfo, String> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        if pools.iter().flatten().any(|p| p.info.name == name) {
            return Err(format!("a pool named {name:?} exists"));
        }
        let id = id.unwrap_or_else(|| {
            pools
                .iter()
                .position(Option::is_none)
                .unwrap_or(pools.len()) as u32
        });
        let info = PoolInfo {
            id,
            name: name.to_string(),
            module: module.to_string(),
        };
        let container = make(&info)?;
        if pools.len() <= id as usize {
            pools.resize(id as usize + 1, None);
        }
        pools[id as usize] = Some(Arc::new(Pool {
            info: info.clone(),
            container,
            params: params.to_string(),
        }));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(info)
    }

    /// The module of pool `id`, if there is such a pool.
    pub fn module_of(&self, id: u32) -> Option<String> {
        let pools = self.pools.read().unwrap_or_else(|p| p.into_inner());
        Some(pools.get(id as usize)?.as_ref()?.info.module.clone())
    }

    pub fn remove(&self, id: u32) -> Option<PoolInfo> {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        let pool = pools.get_mut(id as usize)?.take()?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(pools);
        pool.container.destroy();
        Some(pool.info.clone())
    }
}

/// Modules by name.
#[derive(Default, Clone)]
pub struct Registry {
    modules: HashMap<String, Arc<dyn Module>>,
}

impl Registry {
    pub fn register(&mut self, module: Arc<dyn Module>) {
        self.modules.insert(module.name().to_string(), module);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Module>> {
        self.modules.get(name).cloned()
    }

    /// The modules, in name order.
    pub fn modules(&self) -> Vec<Arc<dyn Module>> {
        self.names().iter().filter_map(|n| self.get(n)).collect()
    }

    /// The names no other module may take: these modules' and the admin
    /// module's, which every engine adds.
    pub fn taken_names(&self) -> Vec<String> {
        let mut n = self.names();
        n.push(chimaera_proto::admin::POOL_NAME.to_string());
        n
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.modules.keys().cloned().collect();
        n.sort();
        n
    }
}
