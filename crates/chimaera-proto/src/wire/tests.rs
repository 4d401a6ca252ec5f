//! Unit tests of the wire module: round trips, the documented layout,
//! tampering, truncation and malformed frames, the replay window (also
//! against a naive model), key files, and randomized garbage that must decode
//! canonically or not at all. They sit in one file because most of them
//! cross the submodules (frames tagged with a key, decoded headers admitted
//! by a window) and share fixtures (`samples`, `key`, `enc`); their paths
//! stay `wire::tests::*`.

use super::frame::{BODY_LEN_AT, REPLY_FIXED};
use super::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

const HDR: HeaderFields = HeaderFields {
    src_node: 2,
    dst_node: 7,
    seq: 0x0123_4567_89ab_cdef,
    dst_epoch: 0x1111_2222_3333_4444,
};

fn key() -> ClusterKey {
    ClusterKey::from_bytes(&[0x5a; 32]).unwrap()
}

fn samples() -> Vec<Frame<'static>> {
    vec![
        Frame::Task {
            task_id: 1,
            pool: 3,
            method: 9,
            route: Route::Local,
            timeout_ms: 5000,
            payload: b"",
        },
        Frame::Task {
            task_id: u64::MAX,
            pool: u32::MAX,
            method: 0,
            route: Route::Direct(u32::MAX),
            timeout_ms: 1,
            payload: b"hello world",
        },
        Frame::Task {
            task_id: 42,
            pool: 1,
            method: 2,
            route: Route::Hash(0xdead_beef_cafe_f00d),
            timeout_ms: 0,
            payload: &[0xff; 300],
        },
        Frame::Task {
            task_id: 43,
            pool: 1,
            method: 2,
            route: Route::Broadcast,
            timeout_ms: 7,
            payload: b"x",
        },
        Frame::Reply {
            task_id: 42,
            status: -17,
            payload: b"result bytes",
        },
        Frame::Reply {
            task_id: 0,
            status: 0,
            payload: b"",
        },
        Frame::Heartbeat {
            epoch: 1_700_000_000_000_000_000,
            sent_ns: 123,
        },
        Frame::HeartbeatAck {
            epoch: 9,
            echo_sent_ns: 123,
        },
        Frame::Error {
            task_id: 5,
            code: 404,
            message: "no such pool: ünïcödé",
        },
        Frame::Error {
            task_id: 6,
            code: 0,
            message: "",
        },
    ]
}

fn enc(frame: &Frame<'_>, key: Option<&ClusterKey>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(frame, &HDR, key, &mut out).unwrap();
    out
}

#[test]
fn every_kind_round_trips_with_and_without_key() {
    let k = key();
    for key in [None, Some(&k)] {
        for f in samples() {
            let buf = enc(&f, key);
            assert_eq!(buf.len(), f.encoded_len(key.is_some()));
            let (h, g) = decode(&buf, key).unwrap();
            assert_eq!(g, f);
            assert_eq!(h.kind, f.kind());
            assert_eq!(h.fields(), HDR);
            assert_eq!(h.authenticated, key.is_some());
            assert_eq!(h.body_len as usize, f.body_len());
        }
    }
}

#[test]
fn decode_borrows_payload_from_input() {
    let buf = enc(&samples()[2], None);
    let (_, f) = decode(&buf, None).unwrap();
    let Frame::Task { payload, .. } = f else {
        panic!("not a task")
    };
    let range = buf.as_ptr_range();
    assert!(range.contains(&payload.as_ptr()));
}

#[test]
fn encode_appends_and_tags_only_its_own_bytes() {
    let k = key();
    let mut out = b"prefix".to_vec();
    for f in samples() {
        let start = out.len();
        encode(&f, &HDR, Some(&k), &mut out).unwrap();
        assert_eq!(decode(&out[start..], Some(&k)).unwrap().1, f);
    }
    assert!(out.starts_with(b"prefix"));
}

#[test]
fn header_layout_is_as_documented() {
    let buf = enc(&samples()[6], Some(&key()));
    assert_eq!(&buf[0..4], b"CHMR");
    assert_eq!(buf[4], 1);
    assert_eq!(buf[5], Kind::Heartbeat as u8);
    assert_eq!(&buf[6..8], &[1, 0]);
    assert_eq!(&buf[8..12], &2u32.to_le_bytes());
    assert_eq!(&buf[12..16], &7u32.to_le_bytes());
    assert_eq!(&buf[16..24], &HDR.seq.to_le_bytes());
    assert_eq!(&buf[24..32], &HDR.dst_epoch.to_le_bytes());
    assert_eq!(&buf[32..36], &16u32.to_le_bytes());
    assert_eq!(buf.len(), HEADER_LEN + 16 + TAG_LEN);
}

#[test]
fn every_tampered_byte_of_an_authenticated_frame_is_rejected() {
    let k = key();
    for f in samples() {
        let buf = enc(&f, Some(&k));
        for i in 0..buf.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut t = buf.clone();
                t[i] ^= flip;
                let err = decode(&t, Some(&k)).unwrap_err();
                // Bytes outside magic/version/flags/body_len can only be
                // caught by the tag.
                let structural = i < 8 || (BODY_LEN_AT..HEADER_LEN).contains(&i);
                if !structural {
                    assert!(
                        matches!(err, DecodeError::BadTag { .. }),
                        "byte {i} of {f:?}: {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn auth_mismatches_have_distinct_errors() {
    let k = key();
    let other = ClusterKey::from_bytes(&[0xa5; 32]).unwrap();
    let f = samples()[0];
    assert_eq!(
        decode(&enc(&f, None), Some(&k)).unwrap_err(),
        DecodeError::MissingTag { src_node: 2 }
    );
    assert_eq!(
        decode(&enc(&f, Some(&k)), None).unwrap_err(),
        DecodeError::UnexpectedTag { src_node: 2 }
    );
    assert_eq!(
        decode(&enc(&f, Some(&other)), Some(&k)).unwrap_err(),
        DecodeError::BadTag { src_node: 2 }
    );
    // Stripping the tag and clearing the flag does not help.
    let mut stripped = enc(&f, Some(&k));
    stripped.truncate(stripped.len() - TAG_LEN);
    stripped[6] = 0;
    assert!(matches!(
        decode(&stripped, Some(&k)),
        Err(DecodeError::MissingTag { .. })
    ));
}

#[test]
fn truncation_at_every_length_is_an_error() {
    let k = key();
    for key in [None, Some(&k)] {
        for f in samples() {
            let buf = enc(&f, key);
            for n in 0..buf.len() {
                let need = if n < HEADER_LEN {
                    HEADER_LEN
                } else {
                    buf.len()
                };
                assert_eq!(
                    decode(&buf[..n], key).unwrap_err(),
                    DecodeError::Truncated { need, have: n },
                    "{f:?} cut at {n}"
                );
            }
        }
    }
}

#[test]
fn trailing_bytes_are_a_length_mismatch() {
    let mut buf = enc(&samples()[4], None);
    let expected = buf.len();
    buf.push(0);
    assert_eq!(
        decode(&buf, None).unwrap_err(),
        DecodeError::LengthMismatch {
            expected,
            actual: expected + 1
        }
    );
}

#[test]
fn wrong_version_is_named() {
    let mut buf = enc(&samples()[0], None);
    buf[4] = 2;
    let err = decode(&buf, None).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion { found: 2 });
    assert!(err.to_string().contains("this node speaks 1"), "{err}");
    // Even a bare 5-byte prefix says so.
    assert_eq!(decode(&buf[..5], None).unwrap_err(), err);
}

#[test]
fn bad_magic_even_when_short() {
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n", None),
        Err(DecodeError::BadMagic { found }) if &found == b"GET "
    ));
    assert!(matches!(
        decode(b"X", None),
        Err(DecodeError::BadMagic { .. })
    ));
    assert_eq!(
        decode(b"", None).unwrap_err(),
        DecodeError::Truncated {
            need: HEADER_LEN,
            have: 0
        }
    );
}

#[test]
fn malformed_headers_and_bodies() {
    let task = enc(&samples()[1], None);
    let mut b = task.clone();
    b[5] = 0;
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::UnknownKind { kind: 0 }
    );
    let mut b = task.clone();
    b[7] = 0x80;
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::UnknownFlags { flags: 0x8000 }
    );
    // Huge body_len: refused before anything looks at (or allocates for) it.
    let mut b = task.clone();
    b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::TooLarge { body_len: u32::MAX }
    );
    let mut b = task.clone();
    b[HEADER_LEN + 20] = 9;
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::BadRoute { tag: 9 }
    );
    let mut b = task.clone();
    b[HEADER_LEN + 28] = 1; // Direct node id above u32
    assert!(matches!(
        decode(&b, None),
        Err(DecodeError::BadRouteNode { .. })
    ));
    let mut b = task.clone();
    b[HEADER_LEN + 22] = 1;
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::Reserved { kind: Kind::Task }
    );
    let mut b = enc(&samples()[3], None); // Broadcast with an argument
    b[HEADER_LEN + 24] = 1;
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::Reserved { kind: Kind::Task }
    );

    let mut b = enc(&samples()[8], None);
    let last = b.len() - 1;
    b[last] = 0xff;
    assert_eq!(decode(&b, None).unwrap_err(), DecodeError::BadUtf8);

    // A heartbeat body of the wrong size, consistent with body_len.
    let mut b = enc(&samples()[6], None);
    b.push(0);
    b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&17u32.to_le_bytes());
    assert_eq!(
        decode(&b, None).unwrap_err(),
        DecodeError::BodyLength {
            kind: Kind::Heartbeat,
            need: 16,
            exact: true,
            have: 17
        }
    );
    // A task body shorter than its fixed part.
    let mut b = task[..HEADER_LEN + 8].to_vec();
    b[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&8u32.to_le_bytes());
    let err = decode(&b, None).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BodyLength {
            kind: Kind::Task,
            need: 32,
            exact: false,
            have: 8
        }
    );
    assert_eq!(
        err.to_string(),
        "a Task body is at least 32 bytes, this one has 8"
    );
}

#[test]
fn oversized_frame_is_refused_by_encode() {
    let big = vec![0u8; MAX_BODY - REPLY_FIXED + 1];
    let f = Frame::Reply {
        task_id: 1,
        status: 0,
        payload: &big,
    };
    let mut out = b"keep".to_vec();
    assert_eq!(
        encode(&f, &HDR, None, &mut out).unwrap_err(),
        EncodeError::TooLarge {
            body_len: MAX_BODY + 1
        }
    );
    assert_eq!(out, b"keep");
    // Exactly at the limit is fine.
    let f = Frame::Reply {
        task_id: 1,
        status: 0,
        payload: &big[1..],
    };
    encode(&f, &HDR, None, &mut out).unwrap();
    assert!(decode(&out[4..], None).is_ok());
}

#[test]
fn replay_window_in_order_and_out_of_order() {
    let mut w = ReplayWindow::new();
    for s in 100..200 {
        w.check_and_mark(s).unwrap();
    }
    assert_eq!(w.newest(), Some(199));
    // Out of order within the window.
    let mut w = ReplayWindow::new();
    w.check_and_mark(3000).unwrap();
    w.check_and_mark(3005).unwrap();
    w.check_and_mark(3003).unwrap();
    w.check_and_mark(3001).unwrap();
    w.check_and_mark(3005 - REPLAY_WINDOW + 1).unwrap(); // oldest in window
    assert_eq!(w.newest(), Some(3005));
    // Gaps are fine; seqs from another incarnation far above are fine.
    w.check_and_mark(1_000_000).unwrap();
    w.check_and_mark(999_999).unwrap();
}

#[test]
fn replay_window_refuses_duplicates_and_too_old() {
    let mut w = ReplayWindow::new();
    w.check_and_mark(5000).unwrap();
    w.check_and_mark(4990).unwrap();
    assert_eq!(w.check_and_mark(5000), Err(Replay::Duplicate { seq: 5000 }));
    assert_eq!(w.check_and_mark(4990), Err(Replay::Duplicate { seq: 4990 }));
    assert_eq!(
        w.check_and_mark(5000 - REPLAY_WINDOW),
        Err(Replay::TooOld {
            seq: 5000 - REPLAY_WINDOW,
            newest: 5000
        })
    );
    assert_eq!(
        w.check_and_mark(0),
        Err(Replay::TooOld {
            seq: 0,
            newest: 5000
        })
    );
    // Sliding forward forgets the slots it passes: 4990 + 1024 is new.
    w.check_and_mark(4990 + REPLAY_WINDOW).unwrap();
    assert_eq!(
        w.check_and_mark(4990),
        Err(Replay::TooOld {
            seq: 4990,
            newest: 4990 + REPLAY_WINDOW
        })
    );
    // 5000 is still remembered as seen.
    assert_eq!(w.check_and_mark(5000), Err(Replay::Duplicate { seq: 5000 }));
    // A refused seq leaves no trace; `check` alone marks nothing.
    assert!(w.check(5001).is_ok());
    assert!(w.check(5001).is_ok());
    // Extremes.
    w.check_and_mark(u64::MAX).unwrap();
    assert!(w.check_and_mark(u64::MAX).is_err());
    w.check_and_mark(u64::MAX - 1).unwrap();
}

#[test]
fn replay_window_matches_a_naive_model() {
    use std::collections::BTreeSet;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut w = ReplayWindow::new();
    let mut seen = BTreeSet::new();
    let mut newest: Option<u64> = None;
    let mut base = 10_000u64;
    for _ in 0..200_000 {
        let r = rng.next();
        // Mostly near the front, sometimes far ahead, sometimes behind.
        let seq = match r % 16 {
            0 => base + (r >> 8) % 5000,
            1 => base.saturating_sub((r >> 8) % 2000),
            _ => base + (r >> 8) % 8,
        };
        base = base.max(seq);
        let model = match newest {
            Some(n) if seq + REPLAY_WINDOW <= n => Err(Replay::TooOld { seq, newest: n }),
            _ if seen.contains(&seq) => Err(Replay::Duplicate { seq }),
            _ => Ok(()),
        };
        assert_eq!(w.check_and_mark(seq), model, "seq {seq}");
        if model.is_ok() {
            seen.insert(seq);
            newest = Some(newest.map_or(seq, |n| n.max(seq)));
        }
    }
}

#[test]
fn replay_window_reset() {
    let mut w = ReplayWindow::new();
    w.check_and_mark(1_000_000).unwrap();
    assert!(w.check_and_mark(3).is_err());
    w.reset();
    assert_eq!(w.newest(), None);
    w.check_and_mark(3).unwrap();
    assert!(w.check_and_mark(3).is_err());
}

#[test]
fn admit_binds_frames_to_the_receivers_epoch() {
    let k = key();
    // Node 2 (epoch e2) talks to node 7, first at epoch e7a, then after 7
    // restarted at epoch e7b.
    let (e2, e7a, e7b) = (1_000_000_000u64, 5_000_000_000u64, 9_000_000_000u64);
    let seqs = SeqCounter::starting_at(e2);
    let send = |f: &Frame<'_>, dst_epoch: u64| {
        let hdr = HeaderFields {
            src_node: 2,
            dst_node: 7,
            seq: seqs.next(),
            dst_epoch,
        };
        let mut out = Vec::new();
        encode(f, &hdr, Some(&k), &mut out).unwrap();
        out
    };
    let hb = Frame::Heartbeat {
        epoch: e2,
        sent_ns: 1,
    };
    let task = samples()[1];
    let first_hb = send(&hb, 0); // 2 has not heard from 7 yet
    let recorded = [send(&task, e7a), send(&task, e7a)];

    let mut w = ReplayWindow::new(); // at node 7, epoch e7a
    for buf in [&first_hb, &recorded[0], &recorded[1]] {
        let (h, _) = decode(buf, Some(&k)).unwrap();
        w.admit(&h, e7a).unwrap();
    }
    let (h, _) = decode(&recorded[1], Some(&k)).unwrap();
    assert_eq!(w.admit(&h, e7a), Err(Replay::Duplicate { seq: h.seq }));

    // Node 7 restarts: fresh window, new epoch. The recorded frames are
    // refused although the window has never seen them.
    let mut w = ReplayWindow::new();
    for buf in &recorded {
        let (h, _) = decode(buf, Some(&k)).unwrap();
        assert_eq!(
            w.admit(&h, e7b),
            Err(Replay::StaleEpoch {
                dst_epoch: e7a,
                local_epoch: e7b
            })
        );
    }
    // Heartbeats pass whatever their dst_epoch; then 2 learns e7b.
    let (h, _) = decode(&send(&hb, e7a), Some(&k)).unwrap();
    w.admit(&h, e7b).unwrap();
    let (h, _) = decode(&send(&task, e7b), Some(&k)).unwrap();
    w.admit(&h, e7b).unwrap();
    // A HeartbeatAck is bound like any other frame.
    let ack = Frame::HeartbeatAck {
        epoch: e2,
        echo_sent_ns: 1,
    };
    let (h, _) = decode(&send(&ack, e7a), Some(&k)).unwrap();
    assert!(matches!(w.admit(&h, e7b), Err(Replay::StaleEpoch { .. })));

    // Node 2 restarts (later epoch, new counter): accepted with no reset.
    let seqs2 = SeqCounter::starting_at(e2 + 60_000_000_000);
    let hdr = HeaderFields {
        src_node: 2,
        dst_node: 7,
        seq: seqs2.next(),
        dst_epoch: e7b,
    };
    let mut out = Vec::new();
    encode(&task, &hdr, Some(&k), &mut out).unwrap();
    let (h, _) = decode(&out, Some(&k)).unwrap();
    w.admit(&h, e7b).unwrap();
}

#[test]
fn seq_counter_starts_at_epoch() {
    let c = SeqCounter::starting_at(1_700_000_000_000_000_000);
    assert_eq!(c.next(), 1_700_000_000_000_000_000);
    assert_eq!(c.next(), 1_700_000_000_000_000_001);
}

fn key_file(contents: &[u8], mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents).unwrap();
    f.flush().unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

#[test]
fn key_file_hex_and_raw() {
    let raw = [0x5a; 32];
    let hex = "5a".repeat(32) + "\n";
    let from_hex = ClusterKey::from_file(key_file(hex.as_bytes(), 0o600).path()).unwrap();
    let from_raw = ClusterKey::from_file(key_file(&raw, 0o400).path()).unwrap();
    assert_eq!(from_hex.fingerprint(), key().fingerprint());
    assert_eq!(from_raw.fingerprint(), key().fingerprint());
    assert_eq!(from_hex.fingerprint().len(), 16);
    // Frames tagged with one verify with the other.
    let buf = enc(&samples()[0], Some(&from_hex));
    assert!(decode(&buf, Some(&from_raw)).is_ok());
    // Debug never shows the secret.
    let dbg = format!("{from_hex:?}");
    assert!(
        dbg.contains(&from_hex.fingerprint()) && !dbg.contains("5a5a"),
        "{dbg}"
    );
}

#[test]
fn key_file_readable_by_others_is_refused() {
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
        let f = key_file("ab".repeat(32).as_bytes(), mode);
        let err = ClusterKey::from_file(f.path()).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { .. }),
            "{mode:o}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{mode:04o}")) && msg.contains("chmod 600"),
            "{msg}"
        );
    }
}

#[test]
fn short_and_odd_keys_are_refused() {
    let f = key_file(&[7; 31], 0o600);
    let err = ClusterKey::from_file(f.path()).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::TooShort {
                len: 31,
                path: Some(_)
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at least 32"), "{err}");
    // 40 hex digits are 20 bytes, not a 41-byte raw key.
    let f = key_file(("ab".repeat(20) + "\n").as_bytes(), 0o600);
    assert!(matches!(
        ClusterKey::from_file(f.path()),
        Err(KeyError::TooShort { len: 20, .. })
    ));
    let f = key_file("abc".repeat(31).as_bytes(), 0o600);
    assert!(matches!(
        ClusterKey::from_file(f.path()),
        Err(KeyError::OddHex { .. })
    ));
    let f = key_file(&[1; ClusterKey::MAX_FILE_LEN + 1], 0o600);
    assert!(matches!(
        ClusterKey::from_file(f.path()),
        Err(KeyError::TooLong { .. })
    ));
    let f = key_file(b"", 0o600);
    assert!(matches!(
        ClusterKey::from_file(f.path()),
        Err(KeyError::TooShort { len: 0, .. })
    ));
    assert!(matches!(
        ClusterKey::from_bytes(&[0; 16]),
        Err(KeyError::TooShort {
            len: 16,
            path: None
        })
    ));
    assert!(matches!(
        ClusterKey::from_file("/nonexistent/chimaera.key"),
        Err(KeyError::Read { .. })
    ));
    assert!(matches!(
        ClusterKey::from_file(std::env::temp_dir()),
        Err(KeyError::NotAFile { .. }) | Err(KeyError::Permissions { .. })
    ));
}

/// Small deterministic PRNG so the randomized tests need no dependency.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// If `buf` decodes, it is the one canonical encoding of what it decoded to.
fn decode_is_canonical(buf: &[u8], key: Option<&ClusterKey>) -> bool {
    match decode(buf, key) {
        Ok((h, f)) => {
            let mut out = Vec::new();
            encode(&f, &h.fields(), key, &mut out).unwrap();
            assert_eq!(out, buf, "non-canonical accept");
            true
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn randomized_garbage_never_panics() {
    let k = key();
    let seeds = samples();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut accepted = 0;
    let mut buf = Vec::new();
    for i in 0..200_000u32 {
        buf.clear();
        let key = if i.is_multiple_of(2) { Some(&k) } else { None };
        if i.is_multiple_of(8) {
            // Pure noise, sometimes behind a valid magic and version.
            let n = rng.below(96);
            if rng.next().is_multiple_of(2) {
                buf.extend_from_slice(&MAGIC);
                buf.push(WIRE_VERSION);
            }
            buf.extend((0..n).map(|_| rng.next() as u8));
        } else {
            // A valid frame, signed or not, then a few mutations.
            let f = seeds[rng.below(seeds.len())];
            let hdr = HeaderFields {
                src_node: rng.next() as u32,
                dst_node: rng.next() as u32,
                seq: rng.next(),
                dst_epoch: rng.next(),
            };
            let sign = !rng.next().is_multiple_of(4);
            encode(&f, &hdr, if sign { Some(&k) } else { None }, &mut buf).unwrap();
            for _ in 0..rng.below(4) {
                match rng.below(6) {
                    0 if !buf.is_empty() => {
                        let at = rng.below(buf.len());
                        buf[at] ^= 1 << rng.below(8);
                    }
                    1 if !buf.is_empty() => {
                        let at = rng.below(buf.len());
                        buf[at] = rng.next() as u8;
                    }
                    2 => {
                        let n = rng.below(buf.len() + 1);
                        buf.truncate(n);
                    }
                    3 => buf.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
                    4 if buf.len() >= HEADER_LEN => {
                        // Rewrite body_len, the field most worth attacking.
                        let v = match rng.below(3) {
                            0 => rng.next() as u32,
                            1 => (buf.len() - HEADER_LEN) as u32,
                            _ => rng.below(64) as u32,
                        };
                        buf[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {}
                }
            }
        }
        if decode_is_canonical(&buf, key) {
            accepted += 1;
        }
        // Cutting the same bytes as a batch never panics, and its pieces
        // tile a prefix of the message.
        let mut at = 0;
        for piece in split(&buf) {
            match piece {
                Ok(p) => {
                    assert_eq!(p, &buf[at..at + p.len()]);
                    at += p.len();
                }
                Err(_) => break,
            }
        }
        assert!(at <= buf.len());
    }
    // Unmutated frames with the matching key setting do get through.
    assert!(accepted > 1000, "only {accepted} accepted");
}

#[test]
fn a_batch_splits_into_its_frames_in_order() {
    let k = key();
    for key in [None, Some(&k)] {
        let mut msg = Vec::new();
        let mut ends = Vec::new();
        for (i, f) in samples().iter().enumerate() {
            let hdr = HeaderFields {
                seq: i as u64 + 1,
                ..HDR
            };
            encode(f, &hdr, key, &mut msg).unwrap();
            ends.push(msg.len());
        }
        let pieces: Vec<&[u8]> = split(&msg).map(|p| p.unwrap()).collect();
        assert_eq!(pieces.len(), samples().len());
        for (i, (piece, f)) in pieces.iter().zip(samples()).enumerate() {
            assert_eq!(frame_len(piece), Ok(piece.len()));
            let (h, back) = decode(piece, key).unwrap();
            assert_eq!(h.seq, i as u64 + 1);
            assert_eq!(back, f);
        }
        // A piece cut short ends the batch with an error; what came before
        // it stands.
        let cut = &msg[..ends[1] + 10];
        let got: Vec<_> = split(cut).collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[1].is_ok());
        assert!(matches!(got[2], Err(DecodeError::Truncated { .. })));
        // Garbage after good frames: one error, then nothing.
        let mut tail = msg[..ends[0]].to_vec();
        tail.extend_from_slice(b"GARBAGE!");
        tail.extend_from_slice(&msg[..ends[0]]);
        let got: Vec<_> = split(&tail).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[1], Err(DecodeError::BadMagic { .. })));
    }
    // An empty message is malformed, not a batch of nothing.
    let got: Vec<_> = split(&[]).collect();
    assert_eq!(
        got,
        vec![Err(DecodeError::Truncated {
            need: HEADER_LEN,
            have: 0
        })]
    );
    // A body length past the limit is refused before anything is sliced.
    let mut big = Vec::new();
    encode(&samples()[0], &HDR, None, &mut big).unwrap();
    big[BODY_LEN_AT..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame_len(&big), Err(DecodeError::TooLarge { .. })));
}

/// `cargo test --release --lib wire::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_encode_decode_64b_task() {
    let k = key();
    let payload = [0x11u8; 64];
    let f = Frame::Task {
        task_id: 1,
        pool: 2,
        method: 3,
        route: Route::Direct(1),
        timeout_ms: 1000,
        payload: &payload,
    };
    let mut out = Vec::with_capacity(256);
    for key in [None, Some(&k)] {
        let n = 1_000_000u64;
        let t = std::time::Instant::now();
        for seq in 0..n {
            out.clear();
            let hdr = HeaderFields { seq, ..HDR };
            encode(&f, &hdr, key, &mut out).unwrap();
            let (h, _) = decode(std::hint::black_box(&out), key).unwrap();
            assert_eq!(h.seq, seq);
        }
        let ns = t.elapsed().as_nanos() as u64 / n;
        println!(
            "wire encode+decode 64 B task, key={}: {ns} ns/frame",
            key.is_some()
        );
    }
}
