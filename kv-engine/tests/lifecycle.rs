//! The segment lifecycle: whatever a caller holds (a pinned value, an
//! iterator) across compactions, no deleted, expired or overwritten key
//! reads an older value: live, in a crash image copied while it is held,
//! after a reopen in the same process while it is held, and after it is
//! dropped. Files that go missing from a closed database are reported at
//! open, never taken for "no data".

mod common;

use std::path::{Path, PathBuf};

use common::{crash_image, files_with_suffix};
use kv_engine::{Db, Error, Options, SyncPolicy, WAL_DIR_NAME};

fn options() -> Options {
    Options::default()
        .sync(SyncPolicy::Never)
        .background_compaction(false)
}

/// The review's S1 sequence: a value pinned before two compactions keeps
/// the first input's file alive; once the output that superseded it is
/// itself compacted, nothing named that file any more, and the dropped
/// tombstone let its old value of `k` come back.
#[test]
fn a_deleted_key_stays_deleted_while_a_value_pinned_two_compactions_ago_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    db.put(b"j", b"j1").unwrap();
    db.put(b"k", b"v1").unwrap();
    db.put(b"x", b"1").unwrap();
    db.put(b"x", b"2").unwrap();
    let pinned = db.get_pinned(b"j").unwrap().unwrap();
    db.compact().unwrap();
    db.delete(b"k").unwrap();
    db.put(b"j", b"j2").unwrap();
    db.compact().unwrap();
    assert_eq!(db.get(b"k").unwrap(), None);

    // A crash image taken while the value is held.
    crash_image(dir.path(), images.path());
    let image = Db::open_with(images.path(), options()).unwrap();
    assert_eq!(image.get(b"k").unwrap(), None, "crash image");
    assert_eq!(image.get(b"j").unwrap().as_deref(), Some(&b"j2"[..]));
    image.close().unwrap();

    // A clean close and reopen in the same process, the value still held.
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None, "reopened while held");
    assert_eq!(&*pinned, b"j1", "the pinned value still reads");
    let files_before = files_with_suffix(dir.path(), ".seg");

    // Dropping the old value deletes nothing the new instance uses.
    drop(pinned);
    assert_eq!(files_with_suffix(dir.path(), ".seg"), files_before);
    assert_eq!(db.get(b"k").unwrap(), None);
    assert_eq!(db.get(b"j").unwrap().as_deref(), Some(&b"j2"[..]));
    assert_eq!(db.get(b"x").unwrap().as_deref(), Some(&b"2"[..]));
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None, "after the holder is gone");
    assert_eq!(db.get(b"j").unwrap().as_deref(), Some(&b"j2"[..]));
    db.close().unwrap();
}

/// The same with a partly consumed iterator as the holder, and an
/// overwritten key: it must not go back in time.
#[test]
fn an_iterator_held_across_compactions_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..50u32 {
        db.put(format!("key-{i}").as_bytes(), b"old").unwrap();
    }
    // Something dead, so that the first compaction takes the segment.
    db.put(b"dead", b"1").unwrap();
    db.put(b"dead", b"2").unwrap();
    let mut iter = db.iter();
    let first = iter.next().unwrap().unwrap();
    db.compact().unwrap();
    for i in 0..50u32 {
        if i % 2 == 0 {
            db.delete(format!("key-{i}").as_bytes()).unwrap();
        } else {
            db.put(format!("key-{i}").as_bytes(), b"new").unwrap();
        }
    }
    db.compact().unwrap();
    db.put(b"other", b"x").unwrap();
    db.compact().unwrap();
    // The iterator goes on reading what it holds.
    assert!(iter.next().is_some());
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..50u32 {
        let expected = (i % 2 == 1).then_some(&b"new"[..]);
        assert_eq!(
            db.get(format!("key-{i}").as_bytes()).unwrap().as_deref(),
            expected,
            "key-{i} while the iterator is held"
        );
    }
    drop(iter);
    drop(first);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.get(b"key-0").unwrap(), None);
    assert_eq!(db.get(b"key-1").unwrap().as_deref(), Some(&b"new"[..]));
    db.close().unwrap();
}

/// A database with several sealed segments, closed.
fn closed_database(dir: &Path) {
    let db = Db::open_with(dir, options().segment_size(4096)).unwrap();
    for i in 0..400u32 {
        db.put(format!("key-{i:04}").as_bytes(), &[b'v'; 40])
            .unwrap();
    }
    db.close().unwrap();
    assert!(files_with_suffix(dir, ".seg").len() > 3);
}

fn corruption_naming(result: Result<Db, Error>, name: &str) -> String {
    match result {
        Err(Error::Corruption { path, reason, .. }) => {
            assert!(
                path.to_str().unwrap().ends_with(name),
                "names {}, not {name}: {reason}",
                path.display()
            );
            reason
        }
        Err(other) => panic!("expected Corruption naming {name}, got {other}"),
        Ok(_) => panic!("expected Corruption naming {name}, but it opened"),
    }
}

#[test]
fn a_missing_segment_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    closed_database(dir.path());
    let victim = files_with_suffix(dir.path(), ".seg")[1].clone();
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::remove_file(&victim).unwrap();
    let reason = corruption_naming(Db::open_with(dir.path(), options()), &name);
    assert!(reason.contains("missing"), "{reason}");
    // Nothing was changed by the failed open.
    assert!(!victim.exists());
    assert!(!kv_engine::verify(dir.path()).unwrap().is_clean());
}

#[test]
fn a_missing_checkpoint_marker_is_refused_not_taken_for_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    closed_database(dir.path());
    let segments = files_with_suffix(dir.path(), ".seg");
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let reason = corruption_naming(Db::open_with(dir.path(), options()), "CHECKPOINT");
    assert!(reason.contains("missing"), "{reason}");
    // Nothing was cut or deleted.
    assert_eq!(files_with_suffix(dir.path(), ".seg"), segments);
    assert!(!kv_engine::verify(dir.path()).unwrap().is_clean());
}

#[test]
fn a_missing_wal_file_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    closed_database(dir.path());
    let wal = files_with_suffix(&dir.path().join(WAL_DIR_NAME), ".wal");
    assert_eq!(wal.len(), 1, "a closed database keeps one WAL file");
    std::fs::remove_file(&wal[0]).unwrap();
    let name = wal[0].file_name().unwrap().to_str().unwrap().to_string();
    corruption_naming(Db::open_with(dir.path(), options()), &name);
}

#[test]
fn an_emptied_wal_directory_is_reported_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options().max_wal_size(u64::MAX)).unwrap();
    db.put(b"a", b"1").unwrap();
    // Crash image with records only in the WAL, then the WAL is lost.
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    db.close().unwrap();
    for file in files_with_suffix(&image.path().join(WAL_DIR_NAME), ".wal") {
        std::fs::remove_file(file).unwrap();
    }
    assert!(
        Db::open_with(image.path(), options())
            .unwrap_err()
            .is_corruption()
    );
}

/// Review finding 4: a checkpoint at (S, L) with S active; S is then sealed
/// at exactly L and its hint written; a crash; at reopen S is active
/// again (here because the segment size was raised) and grows. Its old
/// hint must not survive to describe a shorter segment.
#[test]
fn a_reactivated_segment_keeps_no_stale_hint() {
    let dir = tempfile::tempdir().unwrap();
    let small = || {
        options()
            .segment_size(1024)
            .max_wal_size(u64::MAX)
            .background_compaction(true)
            .compaction_interval(std::time::Duration::from_millis(5))
    };
    let db = Db::open_with(dir.path(), small()).unwrap();
    db.put(b"a", &[1; 500]).unwrap();
    db.put(b"b", &[2; 400]).unwrap();
    db.sync().unwrap();
    // Checkpoint with segment 1 active (the close's), then reopen: the
    // marker is at (1, L).
    db.close().unwrap();
    let db = Db::open_with(dir.path(), small()).unwrap();
    // Does not fit: segment 1 is sealed at exactly L; the record goes to 2.
    db.put(b"c", &[3; 500]).unwrap();
    // The background thread writes segment 1's hint (bounded wait).
    let hint = dir.path().join("0000000001.hint");
    for _ in 0..2_000 {
        if hint.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(hint.exists(), "the background thread wrote no hint");
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    db.close().unwrap();

    let db = Db::open_with(image.path(), options().segment_size(1 << 20)).unwrap();
    db.put(b"d", b"after").unwrap();
    assert_eq!(db.get(b"c").unwrap().as_deref(), Some(&[3; 500][..]));
    db.close().unwrap();
    let report = kv_engine::verify(image.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// One damaged segment must not stall compaction of the others: it is
/// skipped (and counted), the rest compacted, and later passes go on.
#[test]
fn a_damaged_segment_is_skipped_and_the_others_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options().segment_size(4096)).unwrap();
    let fill = |rounds: std::ops::Range<u32>| {
        for round in rounds {
            for i in 0..100u32 {
                db.put(
                    format!("key-{i:04}").as_bytes(),
                    format!("{round:040}").as_bytes(),
                )
                .unwrap();
            }
        }
    };
    fill(0..3);
    // Compacted, and hinted: the next open reads these from their hints,
    // without checking each record.
    db.compact().unwrap();
    let hinted: Vec<PathBuf> = files_with_suffix(dir.path(), ".hint")
        .iter()
        .map(|h| h.with_extension("seg"))
        .collect();
    // Everything in them dies.
    fill(3..5);
    db.close().unwrap();
    // Flip the last byte of a hinted segment: its last record's value.
    let victim = &hinted[0];
    let mut bytes = std::fs::read(victim).unwrap();
    *bytes.last_mut().unwrap() ^= 0xFF;
    std::fs::write(victim, bytes).unwrap();

    let db = Db::open_with(dir.path(), options().segment_size(4096)).unwrap();
    let report = db.compact().unwrap();
    assert_eq!(report.segments_skipped, 1, "{report:?}");
    assert!(report.segments_compacted > 0, "{report:?}");
    assert_eq!(db.stats().damaged_segments, 1);
    // And again: no pass fails for good.
    db.compact().unwrap();
    assert!(victim.exists(), "the damaged segment is left alone");
    for i in 0..100u32 {
        let value = db.get(format!("key-{i:04}").as_bytes()).unwrap();
        assert_eq!(value.as_deref(), Some(format!("{:040}", 4).as_bytes()));
    }
    db.close().unwrap();
}
