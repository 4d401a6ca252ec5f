//! The checks of a configuration that need this machine, above the pure
//! configuration: which hostfile line is this node (its addresses), the
//! cluster key file (the daemon's secret), the shared-memory group, whether
//! the main segment holds the engine's layout (for as many workers as
//! `auto` gives on this machine's CPUs and cgroup quota), and the free
//! space of /dev/shm. The daemon and `chimaera config check` run them; a client needs
//! none of them.

use std::path::Path;

use crate::config::size::human;
use crate::config::{
    Config, ConfigErrors, Env, LoadOptions, Loaded, Origin, Problem, check, collect,
};

/// Loads the configuration and runs every check but the /dev/shm one: all
/// problems, of the file and of the machine, together.
pub fn load(opts: &LoadOptions, env: &Env) -> Result<Loaded, ConfigErrors> {
    let mut c = collect(opts, env)?;
    let config = &c.config;
    let problems = &mut c.problems;
    let m = &config.memory;
    let cpu = crate::cpus::CpuLimit::this_process();
    if let Err(e) = chimaera_proto::layout::Layout::compute(
        m.main_segment_size,
        crate::shm::HEADER_SIZE,
        config.workers.sched_threads.resolve(&cpu),
        config.performance.queue_depth,
    ) {
        check(problems, "memory.main_segment_size", e);
    }

    let s = &config.shared_memory;
    if !s.group.is_empty() && crate::sys::group_id(&s.group).is_none() {
        check(
            problems,
            "shared_memory.group",
            format!("group {:?} does not exist on this system", s.group),
        );
    }

    let hosts = &c.hosts;
    // Which line is this node: only once the hostfile itself is fine.
    let mut node_id = 0;
    if problems.is_empty() {
        let n = &config.network;
        match crate::cluster::identify_here(hosts, n.zmq_port, n.node_id.explicit()) {
            Ok(id) => node_id = id,
            Err(e) if hosts.is_empty() => check(problems, e.key(), e.to_string()),
            Err(e) => check(problems, e.key(), format!("{}: {e}", n.hostfile)),
        }
    }

    let mut cluster_key = None;
    if !config.network.cluster_key_file.is_empty() {
        match chimaera_proto::wire::ClusterKey::from_file(&config.network.cluster_key_file) {
            Ok(k) => cluster_key = Some(k),
            Err(e) => check(problems, "network.cluster_key_file", e.to_string()),
        }
    }

    c.finish(env, node_id, cluster_key, cpu)
}

/// [`load`], then the /dev/shm rule: everything the daemon checks before it
/// creates anything, and so everything `chimaera config check` checks.
pub fn load_and_check(opts: &LoadOptions, env: &Env) -> Result<Loaded, ConfigErrors> {
    let loaded = load(opts, env)?;
    check_shm_space(&loaded.config, Path::new(crate::shm::SHM_DIR))
        .map_err(|p| ConfigErrors(vec![p]))?;
    Ok(loaded)
}

/// The /dev/shm rule: the segments must fit in the free space of the shm
/// filesystem actually mounted, not only in the declared size.
pub fn check_shm_space(config: &Config, shm_dir: &Path) -> Result<(), Problem> {
    let total = config.total_segment_size();
    let (size, free) = crate::sys::fs_space(shm_dir).map_err(|e| Problem {
        origin: Origin::Check,
        key: "memory.shm_size".into(),
        message: format!(
            "cannot inspect {} ({e}); POSIX shared memory needs a tmpfs mounted there",
            shm_dir.display()
        ),
    })?;
    if total > free {
        return Err(Problem {
            origin: Origin::Check,
            key: "memory.shm_size".into(),
            message: format!(
                "Total segment size exceeds shared memory size: the segments need {} but {} has {} free (of {}); give the container more (docker run --shm-size, compose shm_size) or lower the segment sizes",
                human(total),
                shm_dir.display(),
                human(free),
                human(size)
            ),
        });
    }
    Ok(())
}
