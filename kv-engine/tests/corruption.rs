//! Damaged files: a torn last record is cut off; damage elsewhere is a typed
//! corruption error, never wrong data.

use std::path::{Path, PathBuf};

use kv_engine::{Db, Error, Options};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn options() -> Options {
    Options::default().segment_size(4096)
}

fn fill(dir: &Path, n: u32) {
    let db = Db::open_with(dir, options()).unwrap();
    for i in 0..n {
        db.put(
            format!("key-{i:05}").as_bytes(),
            format!("value-{i}").repeat(3).as_bytes(),
        )
        .unwrap();
    }
    db.close().unwrap();
}

#[test]
fn truncated_last_record_is_cut_and_the_rest_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // Cut the last record in half.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.len(), 299);
    assert_eq!(db.get(b"key-00299").unwrap(), None);
    for i in 0..299 {
        assert!(
            db.get(format!("key-{i:05}").as_bytes()).unwrap().is_some(),
            "key {i}"
        );
    }
    // Writing goes on after the cut.
    db.put(b"key-00299", b"again").unwrap();
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(
        db.get(b"key-00299").unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[test]
fn flipped_byte_in_an_older_segment_fails_open_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    match Db::open_with(dir.path(), options()) {
        Err(Error::Corruption { path, offset, .. }) => {
            assert_eq!(&path, victim);
            assert!(
                offset <= mid as u64 && offset > 0,
                "offset {offset}, flip at {mid}"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn damage_after_open_is_a_read_error_not_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let db = Db::open_with(dir.path(), options()).unwrap();
    let first = segments(dir.path()).remove(0);
    // Flip the last byte of the first record's value through the file: the
    // mapped segment sees it, and the read must catch it.
    let mut bytes = std::fs::read(&first).unwrap();
    let record_end = 32 + kv_format::HEADER_LEN + "key-00000".len() + "value-0".len() * 3;
    bytes[record_end - 1] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let err = db.get(b"key-00000").unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("0000000001.seg"), "{err}");
    assert!(db.get_pinned(b"key-00000").unwrap_err().is_corruption());
    // Other keys still read.
    assert!(db.get(b"key-00001").unwrap().is_some());
}
