use super::http::{head_end, respond};
use super::*;
use crate::engine::meter::{Durations, TaskCount};

fn text(r: &[u8]) -> String {
    String::from_utf8(r.to_vec()).unwrap()
}

#[test]
fn requests_are_routed_and_garbage_refused() {
    let body = || "x 1\n".to_string();
    let ok = text(&respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &body));
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
        "{ok}"
    );
    assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nx 1\n"));
    let q = text(&respond(b"GET /metrics?x=1 HTTP/1.0\n\n", &body));
    assert!(q.starts_with("HTTP/1.1 200 "), "{q}");
    let head = text(&respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &body));
    assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
        (b"get /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
        (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
    ] {
        let r = text(&respond(req, &body));
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {r}",
            String::from_utf8_lossy(req)
        );
        assert!(!r.contains("x 1"), "{r}");
    }
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
}

fn sample_snapshot() -> Snapshot {
    let mut cumulative = vec![0; BUCKETS.len() + 1];
    for (i, c) in cumulative.iter_mut().enumerate() {
        *c = if i < 3 { 0 } else { 5 };
    }
    Snapshot {
        uptime_s: 1.5,
        tasks: vec![TaskCount {
            pool: "we\"ird\\pool\n".into(),
            module: "admin".into(),
            method: Some(7),
            count: 5,
        }],
        durations: vec![Durations {
            module: "admin".into(),
            method: None,
            cumulative,
            sum_ns: 12_000,
        }],
        workers: vec![
            WorkerRow {
                tasks_done: 5,
                lane_depth: 2,
                parked: 0,
            };
            2
        ],
        network_lane_depth: 4,
        records_in_use: 3,
        records_capacity: 100,
        segments: vec![SegmentRow {
            segment: "main",
            used: 10,
            carved: 20,
            capacity: 30,
        }],
        clients: 1,
        pools: 1,
        cluster: None,
        rejected: Default::default(),
    }
}

#[test]
fn exposition_has_help_type_escaped_labels_and_whole_histograms() {
    let t = render(&sample_snapshot());
    assert!(
        t.contains(
            "chimaera_tasks_total{module=\"admin\",method=\"7\",pool=\"we\\\"ird\\\\pool\\n\"} 5\n"
        ),
        "{t}"
    );
    assert!(t.contains(
        "chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"1e-06\"} 0\n"
    ));
    assert!(t.contains("chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"2.5e-06\"} 5\n"));
    assert!(t.contains(
        "chimaera_task_duration_seconds_bucket{module=\"admin\",method=\"other\",le=\"+Inf\"} 5\n"
    ));
    assert!(
        t.contains("chimaera_task_duration_seconds_count{module=\"admin\",method=\"other\"} 5\n")
    );
    assert!(t.contains(
        "chimaera_task_duration_seconds_sum{module=\"admin\",method=\"other\"} 0.000012\n"
    ));
    assert!(t.contains("chimaera_lane_depth{worker=\"1\"} 2\n"));
    assert!(t.contains("\nchimaera_network_lane_depth 4\n"));
    assert!(t.contains("chimaera_segment_bytes{segment=\"main\",state=\"carved\"} 20\n"));
    assert!(t.contains("chimaera_uptime_seconds 1.5\n"));
    // Every sample's family was announced, with HELP then TYPE.
    let mut announced = Vec::new();
    for line in t.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            announced.push(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                announced.iter().any(|f| name == f
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                "{line} before its TYPE"
            );
        }
    }
    assert_eq!(t.matches("# HELP ").count(), t.matches("# TYPE ").count());
    assert!(!t.contains("chimaera_peer_up"), "no network, no peers");
}
