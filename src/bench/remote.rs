//! `chimaera bench remote`: tasks routed to another node over loopback,
//! against plain ZeroMQ sockets moving messages of the same sizes in the
//! same run.
//!
//! - ours: two daemons (one worker each) on 127.0.0.1, one hostfile; a
//!   client of node 0 sends admin pings routed to node 1 (client → network
//!   lane → node 0's network thread → ZeroMQ → node 1's network thread,
//!   which runs the ping, a quick method → and back);
//! - raw: a DEALER in this process and a ROUTER echo thread with its own
//!   ZeroMQ context (so its own I/O thread, as a second daemon has), over
//!   TCP loopback, sending the request and reply sizes our frames have.
//!
//! The two alternate in rounds, for the round trips and for throughput.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchDaemon, free_port, percentile, pipelined};
use crate::modules::admin;
use chimaera_client::Task;
use chimaera_proto::sync::now_ns;
use chimaera_proto::wire::{self, Frame, HeaderFields, Route};

#[derive(Debug, Serialize)]
pub struct RemoteReport {
    pub rtt_p50_ns: u64,
    pub rtt_p99_ns: u64,
    pub tasks_per_s: f64,
    pub raw_zmq_rtt_p50_ns: u64,
    pub raw_zmq_rtt_p99_ns: u64,
    pub raw_zmq_msgs_per_s: f64,
    /// rtt_p50_ns / raw_zmq_rtt_p50_ns (target ≤ 1.0).
    pub rtt_over_raw: f64,
    /// tasks_per_s / raw_zmq_msgs_per_s (target ≥ 1.0: batches of frames
    /// against one message per request).
    pub throughput_over_raw: f64,
    pub request_bytes: usize,
    pub reply_bytes: usize,
    pub window: usize,
    pub rtt_samples: usize,
}

/// The wire sizes of a no-op task and its reply.
pub(super) fn frame_sizes() -> (usize, usize) {
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

/// Plain ZeroMQ: a DEALER here and a ROUTER echo thread with a context of
/// its own, kept up for the whole run so that its rounds can alternate with
/// ours.
struct RawZmq {
    dealer: zmq::Socket,
    req: Vec<u8>,
    port: u16,
    ctx: zmq::Context,
    echo: Option<std::thread::JoinHandle<()>>,
}

impl RawZmq {
    fn start(req_len: usize, rep_len: usize) -> Result<RawZmq, String> {
        let port = free_port()?;
        let zerr = |e: zmq::Error| e.to_string();
        // Both sides as the transport sets them: a ROUTER drops what does not
        // fit under its high-water mark, which a window over 1000 would hit.
        let tune = |s: &zmq::Socket| -> Result<(), String> {
            s.set_linger(0).map_err(zerr)?;
            s.set_sndhwm(100_000).map_err(zerr)?;
            s.set_rcvhwm(100_000).map_err(zerr)
        };
        let server_ctx = zmq::Context::new();
        let router = server_ctx.socket(zmq::ROUTER).map_err(zerr)?;
        tune(&router)?;
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
        tune(&dealer)?;
        dealer
            .connect(&format!("tcp://127.0.0.1:{port}"))
            .map_err(zerr)?;
        Ok(RawZmq {
            dealer,
            req: vec![1u8; req_len],
            port,
            ctx,
            echo: Some(echo),
        })
    }

    fn round_trips(&self, n: usize, into: &mut Vec<u64>) -> Result<(), String> {
        let zerr = |e: zmq::Error| e.to_string();
        for _ in 0..n {
            let t = now_ns();
            self.dealer.send(&self.req[..], 0).map_err(zerr)?;
            self.dealer.recv_bytes(0).map_err(zerr)?;
            into.push(now_ns() - t);
        }
        Ok(())
    }

    /// Messages per second with `window` in flight, for `time`.
    fn pipelined(&self, window: usize, time: Duration) -> Result<(u64, Duration), String> {
        let zerr = |e: zmq::Error| e.to_string();
        let start = Instant::now();
        let mut inflight = 0usize;
        let mut done = 0u64;
        while start.elapsed() < time {
            for _ in 0..256 {
                if inflight == window {
                    self.dealer.recv_bytes(0).map_err(zerr)?;
                    inflight -= 1;
                    done += 1;
                }
                self.dealer.send(&self.req[..], 0).map_err(zerr)?;
                inflight += 1;
            }
        }
        while inflight > 0 {
            self.dealer.recv_bytes(0).map_err(zerr)?;
            inflight -= 1;
            done += 1;
        }
        Ok((done, start.elapsed()))
    }
}

impl Drop for RawZmq {
    fn drop(&mut self) {
        // Two parts (id, body) make the echo answer; one part tells it to stop.
        if let Ok(stopper) = self.ctx.socket(zmq::DEALER) {
            let _ = stopper.set_linger(1000);
            if stopper
                .connect(&format!("tcp://127.0.0.1:{}", self.port))
                .is_ok()
            {
                let _ = stopper.send_multipart([&b""[..], &b""[..]], 0);
            }
        }
        if let Some(e) = self.echo.take() {
            let _ = e.join();
        }
    }
}

/// Rounds the measurement is cut into. The two sides alternate round by
/// round, so that a change of the machine's pace (this VM has several)
/// weighs on both alike instead of on whichever ran second.
const ROUNDS: usize = 10;

pub fn remote() -> Result<RemoteReport, String> {
    let samples = 20_000;
    let window = 1024;
    let (req_len, rep_len) = frame_sizes();
    let raw = RawZmq::start(req_len, rep_len)?;
    let mut warm = Vec::new();
    raw.round_trips(2000, &mut warm)?;

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
        let per_round = samples / ROUNDS;
        let mut ours = Vec::with_capacity(samples);
        let mut theirs = Vec::with_capacity(samples);
        for _ in 0..ROUNDS {
            raw.round_trips(per_round, &mut theirs)?;
            for _ in 0..per_round {
                let t = now_ns();
                client.call(&task).map_err(|e| e.to_string())?;
                ours.push(now_ns() - t);
            }
        }
        // Throughput in alternating halves as well.
        let half = Duration::from_secs(1);
        let (mut raw_done, mut raw_time) = (0u64, Duration::ZERO);
        let mut rates = Vec::new();
        for _ in 0..2 {
            let (n, t) = raw.pipelined(window, half)?;
            raw_done += n;
            raw_time += t;
            rates.push(pipelined(&client, &task, window, half)?);
        }
        let rate = rates.iter().sum::<f64>() / rates.len() as f64;
        let raw_rate = raw_done as f64 / raw_time.as_secs_f64();
        drop(client);
        drop(d1);
        drop(d0);
        Ok((ours, rate, theirs, raw_rate))
    })();
    let _ = std::fs::remove_file(&hostfile);
    drop(raw);
    let (mut rtts, rate, mut raw, raw_rate) = result?;
    rtts.sort_unstable();
    raw.sort_unstable();
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
