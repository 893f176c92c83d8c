//! Damaged files: a torn last record is cut off; damage elsewhere is a typed
//! corruption error, never wrong data.

mod common;

use std::path::Path;

use common::{crash_image, files_with_suffix, wal_frames_end};
use kv_engine::{Db, Error, Options, WAL_DIR_NAME};

fn options() -> Options {
    // Background compaction off: these tests damage files by hand and copy
    // directories, which must not race with segments being retired.
    Options::default()
        .segment_size(4096)
        .background_compaction(false)
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

fn cut(path: &Path, bytes: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len - bytes)
        .unwrap();
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// Writes 300 keys without closing, and returns a crash image of the
/// directory taken before the close.
fn crashed_fill(image: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..300 {
        db.put(&key(i), format!("value-{i}").repeat(3).as_bytes())
            .unwrap();
    }
    crash_image(dir.path(), image);
}

#[test]
fn torn_last_wal_record_is_cut_and_the_rest_reads_back() {
    let image = tempfile::tempdir().unwrap();
    crashed_fill(image.path());
    let wal = files_with_suffix(&image.path().join(WAL_DIR_NAME), ".wal")
        .pop()
        .unwrap();
    // The file ends in the zeros allocated ahead of its frames: cut into
    // the last frame, not into them.
    let frames_end = wal_frames_end(&wal);
    cut(
        &wal,
        std::fs::metadata(&wal).unwrap().len() - frames_end + 10,
    );
    // The segments hold all 300 records past the checkpoint; they are
    // discarded, and the WAL is the truth.
    let db = Db::open_with(image.path(), options()).unwrap();
    assert_eq!(db.len(), 299);
    assert_eq!(db.get(&key(299)).unwrap(), None);
    for i in 0..299 {
        assert!(db.get(&key(i)).unwrap().is_some(), "key {i}");
    }
    // Writing goes on after the cut, and survives a reopen.
    db.put(&key(299), b"again").unwrap();
    db.close().unwrap();
    let db = Db::open_with(image.path(), options()).unwrap();
    assert_eq!(db.len(), 300);
    assert_eq!(db.get(&key(299)).unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn torn_segment_tail_after_the_checkpoint_is_replayed_from_the_wal() {
    let image = tempfile::tempdir().unwrap();
    crashed_fill(image.path());
    let last = files_with_suffix(image.path(), ".seg").pop().unwrap();
    cut(&last, 10);
    let db = Db::open_with(image.path(), options()).unwrap();
    assert_eq!(db.len(), 300);
    for i in 0..300 {
        assert_eq!(
            db.get(&key(i)).unwrap().unwrap(),
            format!("value-{i}").repeat(3).into_bytes()
        );
    }
}

#[test]
fn truncated_segment_before_the_checkpoint_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    // close() took a checkpoint: the whole segment was synced, so a short
    // file is damage, not a torn write.
    let last = files_with_suffix(dir.path(), ".seg").pop().unwrap();
    cut(&last, 10);
    match Db::open_with(dir.path(), options()) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, last),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn flipped_byte_in_an_older_segment_fails_open_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let segs = files_with_suffix(dir.path(), ".seg");
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    // Without the index the close saved, open rebuilds the index and scans
    // the segments that have no hint file (these have none).
    std::fs::remove_file(dir.path().join("INDEX")).unwrap();
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
fn a_flipped_byte_under_a_saved_index_is_a_read_error_for_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let segs = files_with_suffix(dir.path(), ".seg");
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();
    // The saved index is loaded: open reads no segment, and the damage is
    // found by the read of the record it is in.
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert!(db.stats().index_loaded);
    let mut damaged = 0;
    for i in 0..300 {
        match db.get(&key(i)) {
            Ok(v) => assert_eq!(v.unwrap(), format!("value-{i}").repeat(3).into_bytes()),
            Err(Error::Corruption { path, .. }) => {
                assert_eq!(&path, victim);
                damaged += 1;
            }
            Err(e) => panic!("key {i}: {e}"),
        }
    }
    assert_eq!(damaged, 1, "one record holds the flipped byte");
}

#[test]
fn damage_after_open_is_a_read_error_not_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 300);
    let db = Db::open_with(dir.path(), options()).unwrap();
    let first = files_with_suffix(dir.path(), ".seg").remove(0);
    // Flip the last byte of the first record's value through the file: the
    // mapped segment sees it, and the read must catch it.
    let mut bytes = std::fs::read(&first).unwrap();
    let value = "value-0".repeat(3);
    let record = kv_format::Record::put(1, b"key-00000", value.as_bytes());
    let record_end = 32 + record.encoded_len();
    bytes[record_end - 1] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let err = db.get(b"key-00000").unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("0000000001.seg"), "{err}");
    assert!(db.get_pinned(b"key-00000").unwrap_err().is_corruption());
    // Other keys still read.
    assert!(db.get(b"key-00001").unwrap().is_some());
}
