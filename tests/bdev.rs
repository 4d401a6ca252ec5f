//! The bdev module through the real daemon and the real client library.

mod common;

use std::path::Path;
use std::time::Duration;

use chimaera::client::{Client, ClientError, Task};
use chimaera::modules::bdev::{self, BdevClient, Extent, IoBuf};
use common::{Node, Rng};

/// Two workers (tasks of one pool run on both at once) and data segments
/// large enough for a window of 128 KiB extents.
const CONFIG: &str = "workers:\n  sched_threads: 2\n\
                      memory:\n  client_data_segment_size: 8M\n  runtime_data_segment_size: 8M\n  shm_size: 32M\n";

fn started(name: &str) -> Node {
    let mut node = Node::new(name);
    node.write_config("info", CONFIG);
    let d = node.spawn(&[]);
    node.wait_running(d);
    node
}

fn module_error(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Module { message, .. }) => message,
        other => panic!("expected a module error, got {other:?}"),
    }
}

/// An extent within `size`: small (inline in the task record), medium or
/// large, at any offset.
fn random_extent(rng: &mut Rng, size: u64) -> (u64, u64) {
    let len = match rng.below(4) {
        0 => 1 + rng.below(56),
        1 => 57 + rng.below(4096),
        2 => 4096 * (1 + rng.below(8)),
        _ => 1 + rng.below(128 << 10),
    };
    (rng.below(size - len + 1), len)
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

#[test]
fn random_extents_read_back_byte_for_byte() {
    let node = started("bdev_prop");
    let c = node.client();
    let size: u64 = 4 << 20;
    let dev = BdevClient::create(
        &c,
        "prop",
        &format!(r#"{{"kind":"ram","size":{size},"block_size":4096}}"#),
    )
    .unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(0x5EED_B10C_0DE5_0001);
    let (mut writes, mut bytes_written, mut reads, mut bytes_read) = (0u64, 0u64, 0u64, 0u64);
    // Fresh RAM reads as zeros.
    assert!(dev.read(size - 100_000, 100_000).unwrap() == model[model.len() - 100_000..]);
    reads += 1;
    bytes_read += 100_000;
    for round in 0..60 {
        // A window of writes to disjoint extents in flight at once (two
        // workers run them in parallel), then reads of random extents.
        let mut batch: Vec<(u64, u64)> = Vec::new();
        while batch.len() < 5 {
            let e = random_extent(&mut rng, size);
            if !batch.iter().any(|&b| overlaps(b, e)) {
                batch.push(e);
            }
        }
        let mut bufs: Vec<IoBuf> = batch
            .iter()
            .map(|&(_, len)| IoBuf::from_slice(&rng.bytes(len as usize)))
            .collect();
        let handles: Vec<_> = batch
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&(off, _), buf)| dev.submit_write(off, buf).unwrap())
            .collect();
        for h in handles {
            h.wait().unwrap();
        }
        for (&(off, len), buf) in batch.iter().zip(&bufs) {
            model[off as usize..(off + len) as usize].copy_from_slice(buf.data());
            writes += 1;
            bytes_written += len;
        }
        if round % 3 == 0 {
            // The convenience write too (it builds the input itself).
            let (off, len) = random_extent(&mut rng, size);
            let data = rng.bytes(len as usize);
            dev.write(off, &data).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
            writes += 1;
            bytes_written += len;
        }
        let extents: Vec<(u64, u64)> = (0..4).map(|_| random_extent(&mut rng, size)).collect();
        let handles: Vec<_> = extents
            .iter()
            .map(|&(off, len)| dev.submit_read(off, len).unwrap())
            .collect();
        for (h, &(off, len)) in handles.into_iter().zip(&extents) {
            let same = h
                .wait_with(|out| out == &model[off as usize..(off + len) as usize])
                .unwrap();
            assert!(same, "round {round}: {len} bytes at {off} differ");
            reads += 1;
            bytes_read += len;
        }
    }
    // Every byte of the device, in 1 MiB reads into a buffer of ours.
    let mut whole = vec![0u8; size as usize];
    for (i, chunk) in whole.chunks_mut(1 << 20).enumerate() {
        dev.read_into(i as u64 * (1 << 20), chunk).unwrap();
        reads += 1;
        bytes_read += 1 << 20;
    }
    let first_bad = whole.iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "device and model differ");
    assert!(writes >= 300, "{writes} writes");
    let st = dev.stats().unwrap();
    assert_eq!(st.writes, writes);
    assert_eq!(st.bytes_written, bytes_written);
    assert_eq!(st.reads, reads);
    assert_eq!(st.bytes_read, bytes_read);
    assert_eq!(
        (st.size, st.block_size, st.blocks_total),
        (size, 4096, 1024)
    );
    assert_eq!(st.blocks_used, 0, "I/O does not allocate");
}

#[test]
fn allocation_errors_and_bad_input_are_clear() {
    let node = started("bdev_err");
    let c = node.client();
    for (params, field) in [
        ("", "expected a JSON object"),
        (
            r#"{"kind":"ram","size":"1M","sise":2}"#,
            "sise: unknown field",
        ),
        (
            r#"{"kind":"ram","size":"12X"}"#,
            "size: unknown size suffix",
        ),
        (
            r#"{"kind":"ram","size":"1M","block_size":1000}"#,
            "block_size: expected a power of two",
        ),
        (r#"{"kind":"file","size":"1M"}"#, "path: missing"),
        (
            r#"{"kind":"file","size":"1M","path":"dev.img"}"#,
            "path: expected an absolute",
        ),
        (
            r#"{"kind":"file","size":"1M","path":"/proc/nonexistent/dev"}"#,
            "path: cannot open",
        ),
    ] {
        let e = module_error(c.create_pool("bad", "bdev", params));
        assert!(e.contains(field), "{params}: {e}");
        assert!(e.contains("bdev pool \"bad\""), "{e}");
    }
    let size = 64 * 4096u64;
    let dev = BdevClient::create(
        &c,
        "small",
        r#"{"kind":"ram","size":"256K","block_size":4096}"#,
    )
    .unwrap();
    // Allocation: contiguous when it can be, split when it must, never more than there is.
    let a = dev.allocate(10).unwrap();
    assert_eq!(
        a,
        vec![Extent {
            offset: 0,
            len: 10 * 4096
        }]
    );
    let b = dev.allocate(50).unwrap();
    assert_eq!(
        b,
        vec![Extent {
            offset: 10 * 4096,
            len: 50 * 4096
        }]
    );
    dev.free(&a).unwrap();
    let e = module_error(dev.allocate(15));
    assert!(
        e.contains("no space for 15 blocks: 14 of 64 are free"),
        "{e}"
    );
    let split = dev.allocate(14).unwrap();
    assert_eq!(
        split,
        vec![
            Extent {
                offset: 0,
                len: 10 * 4096
            },
            Extent {
                offset: 60 * 4096,
                len: 4 * 4096
            }
        ]
    );
    let e = module_error(dev.free(&[
        Extent {
            offset: 0,
            len: 4096,
        },
        Extent {
            offset: 0,
            len: 4096,
        },
    ]));
    assert!(
        e.contains("overlap") && e.contains("nothing was freed"),
        "{e}"
    );
    let e = module_error(dev.free(&[Extent {
        offset: 100,
        len: 4096,
    }]));
    assert!(e.contains("not a whole number of 4096-byte blocks"), "{e}");
    dev.free(&split).unwrap();
    let e = module_error(dev.free(&split));
    assert!(e.contains("is not allocated"), "double free: {e}");
    // Out of range I/O fails the task; nothing crashes.
    let e = module_error(dev.write(size - 10, &[7; 20]));
    assert!(e.contains("outside the device (262144 bytes)"), "{e}");
    let e = module_error(dev.write(u64::MAX - 3, &[7; 8]));
    assert!(e.contains("outside the device"), "{e}");
    let e = module_error(dev.read(size, 1));
    assert!(e.contains("outside the device"), "{e}");
    for (method, input, what) in [
        (
            bdev::method::WRITE,
            vec![1u8; 5],
            "WRITE: expected the data and then a u64 offset",
        ),
        (bdev::method::READ, vec![0u8; 15], "READ: expected 16 bytes"),
        (
            bdev::method::ALLOCATE,
            vec![1u8; 4],
            "ALLOCATE: expected 8 bytes",
        ),
        (
            bdev::method::FREE,
            vec![0u8; 17],
            "extents are 16 bytes each",
        ),
        (99, vec![], "no method 99"),
    ] {
        let e = module_error(c.call(&Task::new(dev.pool(), method, &input)));
        assert!(e.contains(what), "{what}: {e}");
    }
    // A READ as long as the device is fine; an empty one is too.
    assert_eq!(dev.read(0, size).unwrap().len(), size as usize);
    assert!(dev.read(size, 0).unwrap().is_empty());
    dev.write(size - 10, &[9; 10]).unwrap();
    assert_eq!(dev.read(size - 10, 10).unwrap(), vec![9; 10]);
    dev.flush().unwrap();
    let st = dev.stats().unwrap();
    assert_eq!((st.allocates, st.frees, st.flushes), (3, 2, 1));
    assert_eq!(st.blocks_used, 50);
    assert!(c.ping().is_ok(), "the daemon still answers");
}

fn params_for(path: &Path, direct: bool) -> String {
    format!(
        r#"{{"kind":"file","path":"{}","size":"8M","block_size":4096,"direct":{direct}}}"#,
        path.display()
    )
}

fn connect_again(node: &mut Node) -> Client {
    let d = node.spawn(&[]);
    node.wait_running(d);
    node.client()
}

#[test]
fn file_pool_keeps_its_data_across_restarts() {
    let mut node = Node::new("bdev_file");
    node.write_config("info", CONFIG);
    let d0 = node.spawn(&[]);
    node.wait_running(d0);
    let path = node.dir.path().join("dev.img");
    let params = params_for(&path, false);
    let mut rng = Rng(42);
    let (extents, data) = {
        let c = node.client();
        let dev = BdevClient::create(&c, "disk", &params).unwrap();
        let extents = [dev.allocate(3).unwrap(), dev.allocate(40).unwrap()].concat();
        assert_eq!(extents.len(), 2);
        let data: Vec<Vec<u8>> = extents.iter().map(|e| rng.bytes(e.len as usize)).collect();
        for (e, d) in extents.iter().zip(&data) {
            dev.write(e.offset, d).unwrap();
        }
        // An unaligned write across the two extents' boundary.
        let seam = extents[1].offset - 5;
        dev.write(seam, b"0123456789").unwrap();
        dev.flush().unwrap();
        let st = dev.stats().unwrap();
        assert_eq!(st.blocks_used, 43);
        assert_eq!((st.writes, st.flushes), (3, 1));
        assert_eq!(st.path.as_deref(), Some(path.as_path()));
        // A second pool over the same file is refused while this one lives.
        let e = module_error(c.create_pool("disk2", "bdev", &params));
        assert!(e.contains("in use by another bdev pool"), "{e}");
        (extents, data)
    };
    let mut expect = data.concat();
    let seam = (extents[1].offset - 5) as usize;
    expect[seam..seam + 10].copy_from_slice(b"0123456789");

    // A clean stop.
    node.signal(d0, libc::SIGTERM);
    assert!(node.wait_exit(d0, Duration::from_secs(10)).success());
    let c = connect_again(&mut node);
    let dev = BdevClient::create(&c, "disk", &params).unwrap();
    let st = dev.stats().unwrap();
    assert_eq!(st.blocks_used, 43, "the allocation map survived");
    assert_eq!((st.writes, st.bytes_read), (0, 0), "counters are per run");
    let back = dev.read(0, 43 * 4096).unwrap();
    assert!(back == expect, "data after a clean restart");
    // New allocations avoid the old ones; freeing works on the old ones.
    assert_eq!(
        dev.allocate(1).unwrap(),
        vec![Extent {
            offset: 43 * 4096,
            len: 4096
        }]
    );
    dev.free(&extents[..1]).unwrap();
    // Written but never flushed, then the daemon is killed: pwrite put the
    // bytes in the kernel's page cache, which outlives the process.
    dev.write(100, b"after the crash").unwrap();
    expect[100..115].copy_from_slice(b"after the crash");
    drop(c);
    let d1 = node.children.len() - 1;
    node.signal(d1, libc::SIGKILL);
    node.wait_exit(d1, Duration::from_secs(10));
    let c = connect_again(&mut node);
    let dev = BdevClient::create(&c, "disk", &params).unwrap();
    assert_eq!(dev.stats().unwrap().blocks_used, 41, "43 + 1 - 3");
    assert!(
        dev.read(0, 43 * 4096).unwrap() == expect,
        "data after a crash"
    );
    // Destroying the pool leaves the file; a pool over it may be created again.
    c.destroy_pool("disk").unwrap();
    assert!(path.exists());
    let dev = BdevClient::create(&c, "disk-again", &params).unwrap();
    assert!(dev.read(100, 15).unwrap() == b"after the crash");
    // Other params over the same file are refused rather than misread.
    c.destroy_pool("disk-again").unwrap();
    let e = module_error(c.create_pool(
        "other",
        "bdev",
        &params.replace("\"block_size\":4096", "\"block_size\":8192"),
    ));
    assert!(e.contains("size/block_size"), "{e}");
}

/// Whether this process can open a file under `dir` with O_DIRECT.
fn direct_supported(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct.probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn direct_io_pool_aligned_and_unaligned() {
    let node = started("bdev_direct");
    let c = node.client();
    // Under target/, a disk file system on any machine that builds here
    // (/tmp may be tmpfs).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("direct.img");
    let params = params_for(&path, true);
    if !direct_supported(dir.path()) {
        let e = module_error(c.create_pool("direct", "bdev", &params));
        assert!(e.contains("does not support O_DIRECT"), "{e}");
        return;
    }
    let dev = BdevClient::create(&c, "direct", &params).unwrap();
    let mut rng = Rng(7);
    let mut model = vec![0u8; 1 << 20];
    for (off, len) in [
        (0u64, 4096usize),
        (8192, 1 << 16),
        (100, 10),
        (4090, 20),
        (70_000, 100_000),
        ((1 << 20) - 3, 3),
    ] {
        let data = rng.bytes(len);
        dev.write(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    for (off, len) in [
        (0u64, 1u64 << 20),
        (4095, 2),
        (8192, 4096),
        (69_999, 100_002),
    ] {
        let back = dev.read(off, len).unwrap();
        assert!(
            back == model[off as usize..(off + len) as usize],
            "{len} at {off}"
        );
    }
    dev.flush().unwrap();
    let st = dev.stats().unwrap();
    assert!(st.direct);
    assert_eq!((st.writes, st.reads, st.flushes), (6, 4, 1));
}

#[test]
fn direct_io_on_shared_memory_works_or_says_why() {
    // tmpfs takes O_DIRECT since Linux 6.6 and refuses it before.
    let node = started("bdev_tmpfs");
    let c = node.client();
    let path = Path::new("/dev/shm").join(format!("{}_direct.img", node.tag));
    let _cleanup = Remove(vec![path.clone(), bdev::map_path(&path)]);
    let params = params_for(&path, true);
    let supported = direct_supported(Path::new("/dev/shm"));
    let result = c.create_pool("shm", "bdev", &params);
    let outcome = if supported {
        let dev = BdevClient::new(&c, result.unwrap().id);
        dev.write(3, b"abc").unwrap();
        dev.read(3, 3).unwrap()
    } else {
        let e = module_error(result);
        assert!(e.contains("does not support O_DIRECT"), "{e}");
        b"abc".to_vec()
    };
    assert_eq!(outcome, b"abc");
}

/// Removes files when the test ends, passed or not.
struct Remove(Vec<std::path::PathBuf>);

impl Drop for Remove {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
