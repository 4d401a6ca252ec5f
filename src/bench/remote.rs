//! `chimaera bench remote`: tasks routed to another node over loopback,
//! against plain ZeroMQ sockets moving messages of the same sizes in the
//! same run.
//!
//! - ours: two daemons (one worker each) on 127.0.0.1, one hostfile; a
//!   client of node 0 sends admin pings routed to node 1 (client → shared
//!   memory → worker → network thread → ZeroMQ → node 1's network thread →
//!   its worker → and back);
//! - raw: a DEALER in this process and a ROUTER echo thread with its own
//!   ZeroMQ context (so its own I/O thread, as a second daemon has), over
//!   TCP loopback, sending the request and reply sizes our frames have.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchDaemon, free_port, percentile, pipelined};
use crate::client::Task;
use crate::engine::sync::now_ns;
use crate::modules::admin;
use crate::wire::{self, Frame, HeaderFields, Route};

#[derive(Debug, Serialize)]
pub struct RemoteReport {
    pub rtt_p50_ns: u64,
    pub rtt_p99_ns: u64,
    pub tasks_per_s: f64,
    pub raw_zmq_rtt_p50_ns: u64,
    pub raw_zmq_rtt_p99_ns: u64,
    pub raw_zmq_msgs_per_s: f64,
    /// rtt_p50_ns / raw_zmq_rtt_p50_ns (target ≤ 1.3).
    pub rtt_over_raw: f64,
    /// tasks_per_s / raw_zmq_msgs_per_s (target ≥ 0.5).
    pub throughput_over_raw: f64,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub window: usize,
    pub rtt_samples: usize,
}

/// The wire sizes of a no-op task and its reply.
fn frame_sizes() -> (usize, usize) {
    let hdr = HeaderFields {
        src_node: 0,
        dst_node: 1,
        seq: 1,
        dst_epoch: 1,
    };
    let mut req = Vec::new();
    let task = Frame::Task {
        task_id: 1,
        pool: admin::POOL_ID,
        method: admin::method::PING,
        route: Route::Direct(1),
        timeout_ms: 1000,
        payload: &[],
    };
    wire::encode(&task, &hdr, None, &mut req).expect("a no-op task encodes");
    let mut rep = Vec::new();
    let reply = Frame::Reply {
        task_id: 1,
        status: 0,
        payload: &[],
    };
    wire::encode(&reply, &hdr, None, &mut rep).expect("a reply encodes");
    (req.len(), rep.len())
}

/// Plain ZeroMQ: round trips and pipelined messages per second.
fn raw_zmq(
    samples: usize,
    window: usize,
    time: Duration,
    req_len: usize,
    rep_len: usize,
) -> Result<(Vec<u64>, f64), String> {
    let port = free_port()?;
    let zerr = |e: zmq::Error| e.to_string();
    let server_ctx = zmq::Context::new();
    let router = server_ctx.socket(zmq::ROUTER).map_err(zerr)?;
    router.set_linger(0).map_err(zerr)?;
    // Both sides as the transport sets them: a ROUTER drops what does not
    // fit under its high-water mark, which a window over 1000 would hit.
    router.set_sndhwm(100_000).map_err(zerr)?;
    router.set_rcvhwm(100_000).map_err(zerr)?;
    router
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .map_err(zerr)?;
    let echo = std::thread::spawn(move || {
        let reply = vec![0u8; rep_len];
        loop {
            let Ok(parts) = router.recv_multipart(0) else {
                return;
            };
            if parts.len() != 2 {
                return; // the stop message
            }
            let out: [&[u8]; 2] = [&parts[0], &reply];
            if router.send_multipart(out, 0).is_err() {
                return;
            }
        }
    });
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).map_err(zerr)?;
    dealer.set_linger(0).map_err(zerr)?;
    dealer.set_sndhwm(100_000).map_err(zerr)?;
    dealer.set_rcvhwm(100_000).map_err(zerr)?;
    dealer
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .map_err(zerr)?;
    let req = vec![1u8; req_len];
    for _ in 0..2000 {
        dealer.send(&req[..], 0).map_err(zerr)?;
        dealer.recv_bytes(0).map_err(zerr)?;
    }
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = now_ns();
        dealer.send(&req[..], 0).map_err(zerr)?;
        dealer.recv_bytes(0).map_err(zerr)?;
        rtts.push(now_ns() - t);
    }
    let start = Instant::now();
    let mut inflight = 0usize;
    let mut done = 0u64;
    while start.elapsed() < time {
        for _ in 0..256 {
            if inflight == window {
                dealer.recv_bytes(0).map_err(zerr)?;
                inflight -= 1;
                done += 1;
            }
            dealer.send(&req[..], 0).map_err(zerr)?;
            inflight += 1;
        }
    }
    while inflight > 0 {
        dealer.recv_bytes(0).map_err(zerr)?;
        inflight -= 1;
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    // Two parts (id, body) make the echo answer; one part tells it to stop.
    let stopper = ctx.socket(zmq::DEALER).map_err(zerr)?;
    stopper
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .map_err(zerr)?;
    let _ = stopper.send_multipart([&b""[..], &b""[..]], 0);
    drop(dealer);
    let _ = echo.join();
    Ok((rtts, rate))
}

pub fn remote() -> Result<RemoteReport, String> {
    let samples = 20_000;
    let window = 1024;
    let (req_len, rep_len) = frame_sizes();

    let (mut raw, raw_rate) = raw_zmq(samples, window, Duration::from_secs(2), req_len, rep_len)?;
    raw.sort_unstable();

    let ports = [free_port()?, free_port()?];
    let hostfile =
        std::env::temp_dir().join(format!("chimaera-bench-{}-hostfile", std::process::id()));
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .map_err(|e| format!("{}: {e}", hostfile.display()))?;
    let network = format!("  hostfile: {}\n  node_id: {{}}\n", hostfile.display());
    let start = |i: usize| {
        BenchDaemon::start_with(
            &format!("node{i}"),
            1,
            ports[i],
            &network.replace("{}", &i.to_string()),
        )
    };
    let result = (|| {
        let mut d0 = start(0)?;
        let mut d1 = start(1)?;
        let client = d0.connect()?;
        d1.connect()?;
        // Node 1 is usable once it answered a heartbeat of node 0.
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.ping_node(1).is_err() {
            if Instant::now() > deadline {
                return Err("node 1 never came up for node 0".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let task = Task::new(admin::POOL_ID, admin::method::PING, &[]).on_node(1);
        for _ in 0..2000 {
            client.call(&task).map_err(|e| e.to_string())?;
        }
        let mut rtts = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = now_ns();
            client.call(&task).map_err(|e| e.to_string())?;
            rtts.push(now_ns() - t);
        }
        rtts.sort_unstable();
        let rate = pipelined(&client, &task, window, Duration::from_secs(2))?;
        drop(client);
        drop(d1);
        drop(d0);
        Ok((rtts, rate))
    })();
    let _ = std::fs::remove_file(&hostfile);
    let (rtts, rate) = result?;
    let p50 = percentile(&rtts, 0.5);
    let raw50 = percentile(&raw, 0.5);
    Ok(RemoteReport {
        rtt_p50_ns: p50,
        rtt_p99_ns: percentile(&rtts, 0.99),
        tasks_per_s: rate,
        raw_zmq_rtt_p50_ns: raw50,
        raw_zmq_rtt_p99_ns: percentile(&raw, 0.99),
        raw_zmq_msgs_per_s: raw_rate,
        rtt_over_raw: p50 as f64 / raw50.max(1) as f64,
        throughput_over_raw: rate / raw_rate.max(1.0),
        request_bytes: req_len,
        reply_bytes: rep_len,
        window,
        rtt_samples: samples,
    })
}
