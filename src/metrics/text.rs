//! The Prometheus text exposition format (0.0.4) of a [`Snapshot`].

use std::fmt::{Display, Write as _};

use chimaera_proto::admin::ClusterStats;

use super::snapshot::Snapshot;
use crate::engine::meter::BUCKETS;
use crate::net::PEER_UP;

/// The exposition text being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                escape_label(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the text format needs it: backslash, quote and newline
/// escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn method_label(m: Option<u32>) -> String {
    m.map_or_else(|| "other".into(), |m| m.to_string())
}

/// Seconds from ns, as the text format writes a float.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The Prometheus text exposition (format 0.0.4) of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.family(
        "chimaera_build_info",
        "gauge",
        "Always 1; the labels say which chimaera runs.",
    );
    o.sample(
        "chimaera_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    o.family(
        "chimaera_uptime_seconds",
        "gauge",
        "Seconds since the runtime started.",
    );
    o.sample("chimaera_uptime_seconds", &[], s.uptime_s);

    o.family(
        "chimaera_tasks_total",
        "counter",
        "Tasks whose method ran to completion on this node, by pool, module and method number (tasks that timed out in their lane or named no pool are only in chimaera_worker_tasks_total).",
    );
    for t in &s.tasks {
        let method = method_label(t.method);
        o.sample(
            "chimaera_tasks_total",
            &[
                ("module", &t.module),
                ("method", &method),
                ("pool", &t.pool),
            ],
            t.count,
        );
    }
    o.family(
        "chimaera_task_duration_seconds",
        "histogram",
        "Time from a worker taking a task up to its completion (time queued in the lane not included), for the first task of each worker, pool and method in each tick of the coarse clock (a few ms): every task of a method run less often, a sample of busier ones.",
    );
    for d in &s.durations {
        let method = method_label(d.method);
        let name = "chimaera_task_duration_seconds";
        for (i, n) in d.cumulative.iter().enumerate() {
            let le = BUCKETS.get(i).map_or("+Inf", |b| b.1);
            o.sample(
                &format!("{name}_bucket"),
                &[("module", &d.module), ("method", &method), ("le", le)],
                n,
            );
        }
        let labels = [("module", d.module.as_str()), ("method", method.as_str())];
        o.sample(&format!("{name}_sum"), &labels, seconds(d.sum_ns));
        o.sample(
            &format!("{name}_count"),
            &labels,
            d.cumulative.last().copied().unwrap_or(0),
        );
    }

    o.family(
        "chimaera_worker_tasks_total",
        "counter",
        "Tasks each worker completed, whatever their outcome.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_worker_tasks_total",
            &[("worker", &i.to_string())],
            w.tasks_done,
        );
    }
    o.family(
        "chimaera_lane_depth",
        "gauge",
        "Tasks queued in each worker's lane.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_lane_depth",
            &[("worker", &i.to_string())],
            w.lane_depth,
        );
    }
    o.family(
        "chimaera_network_lane_depth",
        "gauge",
        "Tasks with a route that clients queued for the network thread.",
    );
    o.sample("chimaera_network_lane_depth", &[], s.network_lane_depth);
    o.family(
        "chimaera_worker_parked_tasks",
        "gauge",
        "Tasks parked on each worker, waiting for a subtask or yielding.",
    );
    for (i, w) in s.workers.iter().enumerate() {
        o.sample(
            "chimaera_worker_parked_tasks",
            &[("worker", &i.to_string())],
            w.parked,
        );
    }
    o.family(
        "chimaera_task_records",
        "gauge",
        "Task records of the main segment: in use, and how many it holds.",
    );
    o.sample(
        "chimaera_task_records",
        &[("state", "in_use")],
        s.records_in_use,
    );
    o.sample(
        "chimaera_task_records",
        &[("state", "capacity")],
        s.records_capacity,
    );
    o.family(
        "chimaera_shm_rejected_total",
        "counter",
        "Words read from shared memory that failed their checks, by kind: the task was ended with BAD_INPUT or, where none could be named, the word was dropped.",
    );
    let r = &s.rejected;
    for (kind, v) in [
        ("record_index", r.record_index),
        ("payload", r.payload),
        ("waker", r.waker),
        ("state", r.state),
    ] {
        o.sample("chimaera_shm_rejected_total", &[("kind", kind)], v);
    }
    o.family(
        "chimaera_segment_bytes",
        "gauge",
        "Shared-memory segments: bytes in use, bytes ever carved (high-water mark) and capacity (main: engine structures and task records; data segments: their allocators' blocks).",
    );
    for seg in &s.segments {
        for (state, v) in [
            ("used", seg.used),
            ("carved", seg.carved),
            ("capacity", seg.capacity),
        ] {
            o.sample(
                "chimaera_segment_bytes",
                &[("segment", seg.segment), ("state", state)],
                v,
            );
        }
    }
    o.family(
        "chimaera_clients",
        "gauge",
        "Client processes attached to this runtime.",
    );
    o.sample("chimaera_clients", &[], s.clients);
    o.family("chimaera_pools", "gauge", "Pools, the admin pool included.");
    o.sample("chimaera_pools", &[], s.pools);

    if let Some(c) = &s.cluster {
        render_cluster(&mut o, c);
    }
    o.0
}

fn render_cluster(o: &mut Out, c: &ClusterStats) {
    o.family(
        "chimaera_cluster_nodes",
        "gauge",
        "Nodes of the hostfile, this one included (1 without a hostfile).",
    );
    o.sample("chimaera_cluster_nodes", &[], c.nodes);
    o.family(
        "chimaera_peer_up",
        "gauge",
        "1 while this node hears from the peer, 0 when it is down or was never heard from.",
    );
    for p in &c.peers {
        let up = u8::from(p.state == crate::net::peer_state_name(PEER_UP));
        o.sample(
            "chimaera_peer_up",
            &[("node", &p.node.to_string()), ("addr", &p.addr)],
            up,
        );
    }
    o.family(
        "chimaera_peer_rtt_seconds",
        "gauge",
        "Round trip of the last heartbeat answered by each peer (0 before the first).",
    );
    for p in &c.peers {
        o.sample(
            "chimaera_peer_rtt_seconds",
            &[("node", &p.node.to_string()), ("addr", &p.addr)],
            p.rtt_us / 1e6,
        );
    }
    let k = &c.counters;
    o.family(
        "chimaera_transport_frames_total",
        "counter",
        "Frames accepted from and sent to other nodes.",
    );
    o.sample(
        "chimaera_transport_frames_total",
        &[("direction", "in")],
        k.frames_in,
    );
    o.sample(
        "chimaera_transport_frames_total",
        &[("direction", "out")],
        k.frames_out,
    );
    o.family(
        "chimaera_transport_messages_total",
        "counter",
        "ZeroMQ messages from and to other nodes; a message holds one frame or, when several were queued for a peer at once, a batch of them.",
    );
    o.sample(
        "chimaera_transport_messages_total",
        &[("direction", "in")],
        k.messages_in,
    );
    o.sample(
        "chimaera_transport_messages_total",
        &[("direction", "out")],
        k.messages_out,
    );
    o.family(
        "chimaera_transport_frames_dropped_total",
        "counter",
        "Frames from other nodes dropped, by reason.",
    );
    for (reason, n) in [
        ("bad_frame", k.dropped_bad_frame),
        ("missing_tag", k.dropped_missing_tag),
        ("bad_tag", k.dropped_bad_tag),
        ("unexpected_tag", k.dropped_unexpected_tag),
        ("wrong_node", k.dropped_wrong_node),
        ("replay", k.dropped_replay),
        ("late_reply", k.dropped_late_reply),
    ] {
        o.sample(
            "chimaera_transport_frames_dropped_total",
            &[("reason", reason)],
            n,
        );
    }
    o.family(
        "chimaera_transport_tasks_total",
        "counter",
        "Tasks sent to other nodes (each broadcast leg counts) and run here for them.",
    );
    o.sample(
        "chimaera_transport_tasks_total",
        &[("direction", "forwarded")],
        k.tasks_forwarded,
    );
    o.sample(
        "chimaera_transport_tasks_total",
        &[("direction", "served")],
        k.tasks_served,
    );
    o.family(
        "chimaera_transport_connections_refused_total",
        "counter",
        "Connections refused because their address is not in the hostfile.",
    );
    o.sample(
        "chimaera_transport_connections_refused_total",
        &[],
        k.zap_denied,
    );
    o.family(
        "chimaera_transport_send_failures_total",
        "counter",
        "Frames that could not be handed to ZeroMQ (peer not connected, queue full).",
    );
    o.sample("chimaera_transport_send_failures_total", &[], k.send_failed);
}

// ----- the HTTP endpoint ----------------------------------------------------
