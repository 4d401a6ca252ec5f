//! Tests of whole devices (RAM, buffered file, O_DIRECT file) through their
//! public methods: the data path in `io` as well as opening, allocation and
//! what survives closing and opening again.

use std::path::Path;

use super::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Writes a few extents (aligned, unaligned, straddling blocks, at the
/// end), checks every byte and the range errors; returns the contents.
fn exercise(dev: &Bdev) -> Vec<u8> {
    let size = dev.params().size;
    let mut model = vec![0u8; size as usize];
    for (i, (off, len)) in [
        (0u64, 4096usize),
        (100, 7),
        (5000, 9000),
        (size - 3, 3),
        (4095, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, i as u8);
        dev.write(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    let mut all = vec![0u8; size as usize];
    dev.read_into(0, &mut all).unwrap();
    assert!(all == model);
    let mut piece = vec![0u8; 20];
    dev.read_into(4090, &mut piece).unwrap();
    assert_eq!(piece, model[4090..4110]);
    assert!(matches!(
        dev.write(size - 1, &[1, 2]),
        Err(TaskError::BadInput(_))
    ));
    assert!(matches!(
        dev.read_into(u64::MAX, &mut [0]),
        Err(TaskError::BadInput(_))
    ));
    let st = dev.stats();
    assert_eq!(st.writes, 5);
    assert_eq!(st.reads, 2);
    assert_eq!(st.bytes_read, size + 20);
    model
}

#[test]
fn ram_device_reads_what_was_written() {
    let dev =
        Bdev::open(BdevParams::parse(br#"{"kind":"ram","size":"64K","block_size":512}"#).unwrap())
            .unwrap();
    exercise(&dev);
}

fn file_params(dir: &Path, direct: bool) -> BdevParams {
    let text = format!(
        r#"{{"kind":"file","path":"{}","size":"64K","block_size":4096,"direct":{direct}}}"#,
        dir.join("dev.img").display()
    );
    BdevParams::parse(text.as_bytes()).unwrap()
}

#[test]
fn file_device_keeps_data_and_allocations_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let p = file_params(dir.path(), false);
    let dev = Bdev::open(p.clone()).unwrap();
    let model = exercise(&dev);
    let ext = dev.allocate(3).unwrap();
    assert_eq!(
        ext,
        vec![Extent {
            offset: 0,
            len: 3 * 4096
        }]
    );
    dev.flush().unwrap();
    let again = Bdev::open(p.clone()).unwrap_err();
    assert!(again.contains("in use"), "{again}");
    drop(dev);
    let dev = Bdev::open(p.clone()).unwrap();
    assert_eq!(dev.stats().blocks_used, 3);
    assert_eq!(
        dev.allocate(1).unwrap(),
        vec![Extent {
            offset: 3 * 4096,
            len: 4096
        }]
    );
    let mut all = vec![0u8; model.len()];
    dev.read_into(0, &mut all).unwrap();
    assert!(all == model, "the data survived closing and opening");
    drop(dev);
    let mut other = p.clone();
    other.block_size = 8192;
    let e = Bdev::open(other).unwrap_err();
    assert!(e.contains("size/block_size"), "{e}");
    let mut small = p;
    small.size = 32 << 10;
    let e = Bdev::open(small).unwrap_err();
    assert!(e.contains("refusing to cut it short"), "{e}");
}

#[test]
fn direct_file_device_handles_unaligned_extents() {
    let dir = tempfile::tempdir().unwrap();
    match Bdev::open(file_params(dir.path(), true)) {
        Ok(dev) => {
            exercise(&dev);
        }
        Err(e) => assert!(e.contains("O_DIRECT"), "{e}"),
    }
}
