//! Finding the runtime a configuration names, and the subcommands about it
//! as a whole: `status` and `stop`.

use super::*;

/// What is known about the runtime a configuration points at.
pub(super) enum Found {
    Running {
        path: PathBuf,
        disc: discovery::Discovery,
        /// Open main segment, to wait on its lock; None when not ours to open.
        main: Option<std::fs::File>,
    },
    Stale {
        path: PathBuf,
        disc: discovery::Discovery,
    },
    /// The main segment's lock is held but the discovery file is not the
    /// holder's: a runtime is starting (possibly reclaiming a dead one's
    /// segments) and has not published itself yet.
    Starting {
        segment: String,
        previous_pid: u32,
    },
    Nowhere {
        searched: Vec<PathBuf>,
    },
}

pub(super) fn find_runtime(loc: &Locator, env: &Env) -> Result<Found, String> {
    let (path, disc) = match discovery::find(loc, env) {
        Ok(found) => found,
        Err(discovery::NotFound::Nowhere(searched)) => return Ok(Found::Nowhere { searched }),
        Err(discovery::NotFound::Denied(path, e)) => {
            return Err(format!(
                "cannot read {}: {e}; the runtime's users are root and the members of its shared_memory.group (e.g. `adduser $USER chimaera`, then log in again)",
                path.display()
            ));
        }
    };
    match shm::probe(&disc.segments.main).map_err(|e| e.to_string())? {
        // The discovery file is written after the ready word, so a held lock
        // with a discovery file whose pid is gone (or not the header's owner)
        // is a new runtime between taking the lock and publishing itself.
        Liveness::Alive { header, .. }
            if !crate::sys::pid_alive(disc.pid)
                || header
                    .as_ref()
                    .is_some_and(|h| !h.ready || h.owner_pid != disc.pid) =>
        {
            Ok(Found::Starting {
                segment: disc.segments.main,
                previous_pid: disc.pid,
            })
        }
        Liveness::Alive { header, file } => {
            if let Some(h) = header.filter(|h| h.ready) {
                h.check(&disc.segments.main).map_err(|e| e.to_string())?;
            }
            Ok(Found::Running {
                path,
                disc,
                main: Some(file),
            })
        }
        Liveness::NoAccess if crate::sys::pid_alive(disc.pid) => Ok(Found::Running {
            path,
            disc,
            main: None,
        }),
        Liveness::Dead { .. } | Liveness::Absent | Liveness::NoAccess => {
            Ok(Found::Stale { path, disc })
        }
    }
}

/// Live runtimes whose discovery files lie in `dirs`, but for the one
/// with main segment `except`: (main segment, pid, config).
pub(super) fn other_runtimes(dirs: &[PathBuf], except: &str) -> Vec<(String, u32, String)> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let Ok(d) = discovery::read(&path) else {
                continue;
            };
            if d.segments.main != except && crate::sys::pid_alive(d.pid) {
                found.push((d.segments.main, d.pid, d.config));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

pub(super) fn not_running_message(found: &Found, loc: &Locator, opts: &LoadOptions) -> String {
    match found {
        Found::Nowhere { searched } => {
            let mut m = format!(
                "not running: no runtime on this configuration (no discovery file for segment {} in {})",
                loc.names.main,
                searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let others = other_runtimes(searched, &loc.names.main);
            if !others.is_empty() {
                m.push_str("; other runtimes there: ");
                let list: Vec<String> = others
                    .iter()
                    .map(|(name, pid, config)| format!("{name} (pid {pid}, config {config})"))
                    .collect();
                m.push_str(&list.join(", "));
                m.push_str(&format!(
                    "; name one with the --config and --set it was started with (`{}`)",
                    opts.command_line("status")
                ));
            }
            m
        }
        Found::Stale { path, disc } => format!(
            "not running: a stale discovery file {} is from pid {}, which is gone (the next start reclaims its segments)",
            path.display(),
            disc.pid
        ),
        Found::Starting {
            segment,
            previous_pid,
        } => format!(
            "a runtime is starting: it holds {segment} but has not published itself yet (the discovery file is from pid {previous_pid}); try `{}` again in a moment",
            opts.command_line("status")
        ),
        Found::Running { .. } => unreachable!("only called when not running"),
    }
}

/// Reads what locates the runtime (segment names, run directory: a
/// client's part of the configuration, none of the daemon's checks or
/// secrets) and looks for it; on failure, the exit code (`lookup_failed`
/// when the lookup itself fails).
pub(super) fn locate(opts: &LoadOptions, lookup_failed: u8) -> Result<(Locator, Found), u8> {
    let env = Env::from_process();
    let loc = Locator::load(opts, &env).map_err(|e| {
        fail!("configuration error: {e}");
        exit::CONFIG
    })?;
    let found = find_runtime(&loc, &env).map_err(|e| {
        fail!("{e}");
        lookup_failed
    })?;
    Ok((loc, found))
}

pub(super) fn status(opts: &LoadOptions, json: bool, limit: Duration) -> u8 {
    let (loaded, found) = match locate(opts, exit::STATUS_UNKNOWN) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let Found::Running { path, disc, .. } = &found else {
        if json {
            let (stale_pid, file) = match &found {
                Found::Stale { path, disc } => (Some(disc.pid), Some(path.display().to_string())),
                _ => (None, None),
            };
            println!(
                "{}",
                serde_json::json!({"running": false, "starting": matches!(found, Found::Starting { .. }),
                    "stale_pid": stale_pid, "discovery_file": file, "main_segment": loaded.names.main})
            );
        } else {
            println!("{}", not_running_message(&found, &loaded, opts));
        }
        return exit::NOT_RUNNING;
    };
    let uptime_s = chimaera_proto::unix_ms().saturating_sub(disc.started_unix_ms) / 1000;
    // The peers come from the runtime itself (an admin stats task); a
    // status that may not attach still reports the rest.
    let stats =
        Client::connect_discovery(path.clone(), disc.clone()).and_then(|c| c.stats_timeout(limit));
    if let Err(chimaera_client::ClientError::TimedOut) = stats {
        let msg = format!(
            "chimaera is not responding: pid {} holds its segments but answered no task within {} s (stopped with SIGSTOP, or stuck: see its log)",
            disc.pid,
            limit.as_secs()
        );
        if json {
            println!(
                "{}",
                serde_json::json!({"running": true, "responding": false, "pid": disc.pid, "error": msg})
            );
        } else {
            println!("{msg}");
        }
        return exit::NOT_RESPONDING;
    }
    let cluster = stats.map_err(|e| e.to_string()).and_then(|s| {
        s.cluster
            .ok_or_else(|| "the runtime runs without its network layer".into())
    });
    if json {
        let (peers, cluster_json) = match &cluster {
            Ok(c) => (serde_json::json!(c.peers), serde_json::json!(c)),
            Err(e) => (serde_json::Value::Null, serde_json::json!({"error": e})),
        };
        println!(
            "{}",
            serde_json::json!({
                "running": true,
                "pid": disc.pid,
                "version": disc.version,
                "layout_version": disc.layout_version,
                "node_id": disc.node_id,
                "zmq_port": disc.zmq_port,
                "uptime_s": uptime_s,
                "started_unix_ms": disc.started_unix_ms,
                "config": disc.config,
                "log_file": disc.log_file,
                "discovery_file": path.display().to_string(),
                "segments": {
                    "main": {"name": disc.segments.main, "size": disc.segment_sizes[0]},
                    "client_data": {"name": disc.segments.client_data, "size": disc.segment_sizes[1]},
                    "runtime_data": {"name": disc.segments.runtime_data, "size": disc.segment_sizes[2]},
                },
                "peers": peers,
                "cluster": cluster_json,
            })
        );
    } else {
        println!(
            "chimaera is running (pid {}, version {}, up {}s)",
            disc.pid, disc.version, uptime_s
        );
        println!(
            "  node {}, zmq port {}, config {}",
            disc.node_id, disc.zmq_port, disc.config
        );
        println!(
            "  segments {} ({}), {} ({}), {} ({})",
            disc.segments.main,
            human(disc.segment_sizes[0]),
            disc.segments.client_data,
            human(disc.segment_sizes[1]),
            disc.segments.runtime_data,
            human(disc.segment_sizes[2])
        );
        println!("  discovery file {}", path.display());
        match &cluster {
            Ok(c) if c.nodes > 1 => {
                println!(
                    "  cluster of {} nodes, frames {}",
                    c.nodes,
                    if c.authenticated {
                        "authenticated"
                    } else {
                        "not authenticated"
                    }
                );
                for p in &c.peers {
                    let heard = p
                        .last_heard_ms_ago
                        .map_or("never heard".to_string(), |ms| format!("heard {ms} ms ago"));
                    println!("    node {} {}: {}, {}", p.node, p.addr, p.state, heard);
                }
            }
            Ok(_) => {}
            Err(e) => println!("  peers: unknown ({e})"),
        }
    }
    exit::OK
}

pub(super) fn stop(opts: &LoadOptions, timeout: Duration, json: bool) -> u8 {
    let (loc, found) = match locate(opts, exit::UNAVAILABLE) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let Found::Running { path, disc, main } = found else {
        fail!("{}", not_running_message(&found, &loc, opts));
        return exit::NOT_RUNNING;
    };
    // The admin pool's stop is the runtime's own graceful path and works for
    // any user allowed to submit tasks; a signal is the fallback.
    // The whole stop, the request included, within `timeout`: a frozen
    // runtime does not take the admin request, and gets the signal.
    let started = Instant::now();
    let deadline = started + timeout;
    let via_admin = Client::connect_discovery(path, disc.clone())
        .and_then(|c| c.stop_runtime_timeout(timeout.min(Duration::from_secs(5))));
    let how = if via_admin.is_ok() {
        "admin"
    } else {
        "SIGTERM"
    };
    if let Err(admin_err) = via_admin
        && let Err(e) = crate::sys::send_signal(disc.pid, libc::SIGTERM)
    {
        fail!("the admin stop failed ({admin_err})");
        if e.raw_os_error() == Some(libc::EPERM) {
            fail!(
                "not allowed to stop the runtime (pid {}, uid {}): run as root or as its user",
                disc.pid,
                disc.uid
            );
            return exit::NOPERM;
        }
        fail!("cannot signal the runtime (pid {}): {e}", disc.pid);
        return exit::UNAVAILABLE;
    }
    loop {
        let gone = match &main {
            Some(file) => shm::released(file),
            None => !crate::sys::pid_alive(disc.pid),
        };
        if gone {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"stopped": true, "pid": disc.pid, "how": how,
                        "waited_ms": started.elapsed().as_millis() as u64})
                );
            } else {
                println!("chimaera stopped (pid {})", disc.pid);
            }
            return exit::OK;
        }
        if Instant::now() >= deadline {
            fail!(
                "the runtime (pid {}) is still running {}s after the stop request; see its log, or `kill -9 {}` as a last resort",
                disc.pid,
                timeout.as_secs(),
                disc.pid
            );
            return exit::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `chimaera reload`: SIGHUP to the runtime the configuration names, then
/// its report of what it did.
pub(super) fn reload(opts: &LoadOptions, json: bool, limit: Duration) -> u8 {
    let (loc, found) = match locate(opts, exit::UNAVAILABLE) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let Found::Running { path, disc, .. } = found else {
        fail!("{}", not_running_message(&found, &loc, opts));
        return exit::NOT_RUNNING;
    };
    let report_path = path.with_file_name(discovery::reload_file_name(&disc.segments.main));
    let read = || -> Option<discovery::ReloadReport> {
        let r: discovery::ReloadReport =
            serde_json::from_slice(&std::fs::read(&report_path).ok()?).ok()?;
        (r.pid == disc.pid).then_some(r)
    };
    let before = read().map_or(0, |r| r.seq);
    if let Err(e) = crate::sys::send_signal(disc.pid, libc::SIGHUP) {
        fail!(
            "cannot signal the runtime (pid {}): {e}; run this as its user or root",
            disc.pid
        );
        return if e.raw_os_error() == Some(libc::EPERM) {
            exit::NOPERM
        } else {
            exit::UNAVAILABLE
        };
    }
    let deadline = Instant::now() + limit;
    let report = loop {
        if let Some(r) = read().filter(|r| r.seq > before) {
            break r;
        }
        if Instant::now() >= deadline {
            fail!(
                "sent SIGHUP to pid {}, but it reported nothing within {} s (is it stopped or stuck? see its log)",
                disc.pid,
                limit.as_secs()
            );
            return exit::NOT_RESPONDING;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if json {
        println!("{}", serde_json::to_string(&report).expect("serializable"));
    } else if report.ok {
        println!(
            "reloaded the runtime (pid {}) from {}",
            disc.pid, disc.config
        );
        for a in &report.applied {
            println!("applied: {a}");
        }
        for r in &report.restart_needed {
            println!("needs a restart: {r}");
        }
        if report.applied.is_empty() && report.restart_needed.is_empty() {
            println!("nothing changed");
        }
    } else {
        for r in &report.refused {
            fail!("reload refused, the runtime keeps its configuration: {r}");
        }
    }
    if report.ok { exit::OK } else { exit::CONFIG }
}
