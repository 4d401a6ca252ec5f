//! The reaper threads: dead clients' records and buffers reclaimed, their
//! slots freed; reaper 0 is also the timekeeper.

use super::*;

/// One reaper thread: clients with `slot % count == index`; index 0 also
/// keeps time.
pub fn run_reaper(core: Arc<RuntimeCore>, index: u32, count: u32, stop: mpsc::Receiver<()>) {
    let tick_ns = (core.task_timeout_ns / 4).clamp(1_000_000, 100_000_000);
    let tick = Duration::from_nanos(tick_ns);
    let mut last_progress: Vec<u64> = vec![0; core.view.workers.len()];
    let mut liveness_due = 0u64;
    let mut reclaiming_since: Vec<u64> = vec![0; core.view.clients.len()];
    loop {
        match stop.recv_timeout(tick) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = coarse_now_ns();
        if index == 0 {
            timekeep(&core, now, &mut last_progress);
        }
        if now >= liveness_due {
            liveness_due = now + 100_000_000;
            for (i, slot) in core.view.clients.iter().enumerate() {
                if i as u32 % count != index {
                    continue;
                }
                reap_slot(&core, i, slot, now, &mut reclaiming_since[i]);
            }
        }
    }
}

pub(super) fn timekeep(core: &RuntimeCore, now: u64, last_progress: &mut [u64]) {
    for (w, slot) in core.view.workers.iter().enumerate() {
        let running = slot.running.load(Ordering::Relaxed);
        if let Some(rec) = core.view.records.checked(running)
            && now > rec.deadline_ns.load(Ordering::Relaxed)
        {
            core.finish(running, status::TIMED_OUT, None, false);
        }
        // A worker that made no pass since the last tick is stuck in one
        // task: time out what waits in its lane, too.
        let progress = slot.progress.load(Ordering::Relaxed);
        let stuck = progress == last_progress[w] && running != record::NONE;
        last_progress[w] = progress;
        if stuck {
            for idx in core.view.lanes[w].queued() {
                let Some(rec) = core.view.records.checked(idx) else {
                    continue;
                };
                if now > rec.deadline_ns.load(Ordering::Relaxed) {
                    core.finish(idx, status::TIMED_OUT, None, false);
                }
            }
        }
    }
}

/// Takes a client slot from `from` to RECLAIMING; false if it moved on.
pub(super) fn begin_reclaim(slot: &layout::ClientSlot, from: u32) -> bool {
    slot.state
        .compare_exchange(
            from,
            layout::CLIENT_RECLAIMING,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

pub(super) fn reap_slot(
    core: &RuntimeCore,
    i: usize,
    slot: &layout::ClientSlot,
    now: u64,
    since: &mut u64,
) {
    let state = slot.state.load(Ordering::Acquire);
    let pid = slot.pid.load(Ordering::Relaxed);
    if state == layout::CLIENT_ACTIVE {
        let started = slot.start_time.load(Ordering::Relaxed);
        if process_start_time(pid) == Some(started) {
            return;
        }
        if !begin_reclaim(slot, layout::CLIENT_ACTIVE) {
            return;
        }
        *since = now;
        info!(
            core.log,
            "client pid {} is gone; reclaiming what it held", pid
        );
    } else if state == layout::CLIENT_CLAIMING {
        // A connect takes a few stores from claiming to active; a slot still
        // claiming a second later belongs to a client that died connecting.
        if *since == 0 {
            *since = now;
            return;
        }
        if now.saturating_sub(*since) < 1_000_000_000
            || !begin_reclaim(slot, layout::CLIENT_CLAIMING)
        {
            return;
        }
        info!(
            core.log,
            "client slot {} was left half-claimed; reclaiming it", i
        );
    } else if state != layout::CLIENT_RECLAIMING && state != layout::CLIENT_LEAVING {
        *since = 0;
        return;
    }
    let leaving = state == layout::CLIENT_LEAVING;
    if *since == 0 {
        *since = now;
    }
    let owner = i as u32 + 1;
    let records = core.view.records;
    let carved = (records.header.carved.load(Ordering::Acquire) as usize).min(records.owners.len());
    let mut left = Vec::new();
    for idx in 0..carved as u32 {
        // The state first, then the owner: if the index was freed and reused
        // in between, the generation in `seen` no longer matches and the
        // checked release leaves the new owner's record alone.
        let seen = records.get(idx).state.load(Ordering::Acquire);
        if records.owners[idx as usize].load(Ordering::Acquire) != owner {
            continue;
        }
        records.release_checked(idx, REF_CLIENT, Some(seen), |r| {
            core.free_payloads_of(idx, r)
        });
        if records.owners[idx as usize].load(Ordering::Acquire) != owner {
            continue;
        }
        let now_state = records.get(idx).state.load(Ordering::Acquire);
        if now_state & record::CLIENT_FREEING != 0 && records.finish_abandoned_free(idx, now_state)
        {
            continue;
        }
        left.push(idx);
    }
    if !left.is_empty() {
        // A client killed between marking a record submitted and pushing it
        // leaves a runtime reference nobody will drop. A live task is always
        // in a lane (the network's included), shown as running by a worker
        // (set before it leaves the lane), or parked or forwarded to the
        // network (both marked before it stops showing as running, or leaves
        // the network lane); so,
        // read in that order, a SUBMITTED record in none of them is held by
        // nobody.
        let queued: HashSet<u32> = core
            .view
            .lanes
            .iter()
            .chain([&core.view.net_lane])
            .flat_map(|l| l.queued().collect::<Vec<_>>())
            .collect();
        let running: HashSet<u32> = core
            .view
            .workers
            .iter()
            .map(|w| w.running.load(Ordering::Acquire))
            .collect();
        left.retain(|&idx| {
            let rec = records.get(idx);
            let orphan = !queued.contains(&idx)
                && !running.contains(&idx)
                && rec.flags.load(Ordering::Acquire) & (FLAG_PARKED | FLAG_FORWARDED) == 0
                && rec.phase() == record::SUBMITTED;
            if orphan {
                core.release(idx, REF_RUNTIME);
            }
            !orphan
        });
    }
    if left.is_empty() {
        let blocks =
            core.client_arena.reclaim_owner(owner) + core.runtime_arena.reclaim_owner(owner);
        slot.state.store(layout::CLIENT_FREE, Ordering::Release);
        *since = 0;
        if leaving {
            slog::debug!(core.log, "client pid {} left; slot {} free", pid, i);
        } else {
            info!(
                core.log,
                "reclaimed client pid {}: slot {} free, {} stray buffer(s)", pid, i, blocks
            );
        }
    } else if now.saturating_sub(*since) > 10_000_000_000 {
        warn!(
            core.log,
            "client pid {} still has {} task(s) in flight after 10 s",
            pid,
            left.len()
        );
        *since = now;
    }
}
