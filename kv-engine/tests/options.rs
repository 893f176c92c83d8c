//! Options cannot break the engine: every out-of-range knob, set through
//! its builder or directly on the public field, is refused by
//! `Db::open_with` with `Error::InvalidOptions` naming the field, before
//! any file is touched; never a panic, an abort or a huge allocation. The
//! documented clamps of the builders hold, and the sizes the other tests
//! use are accepted.

use std::time::Duration;

use kv_engine::{Db, Error, Options};

/// Opens a database in a fresh directory with `options` and expects the
/// open to be refused for `option`; the directory must not be created.
fn refused(options: Options, option: &str) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("db");
    match Db::open_with(&dir, options) {
        Err(Error::InvalidOptions { option: o, reason }) => {
            assert_eq!(o, option, "refused for the wrong option: {reason}");
            let message = Error::InvalidOptions { option: o, reason }.to_string();
            assert!(message.contains(option), "{message}");
        }
        Err(other) => panic!("{option}: expected InvalidOptions, got {other}"),
        Ok(db) => {
            db.close().unwrap();
            panic!("{option}: the open succeeded");
        }
    }
    assert!(!dir.exists(), "a refused open created the directory");
}

fn quiet() -> Options {
    Options::default().background_compaction(false)
}

#[test]
fn max_group_size_is_bounded() {
    refused(quiet().max_group_size(usize::MAX), "max_group_size");
    refused(quiet().max_group_size(65_537), "max_group_size");
    let mut zero = quiet();
    zero.max_group_size = 0;
    refused(zero, "max_group_size");
    // The builder's documented clamp: 0 becomes 1.
    assert_eq!(quiet().max_group_size(0).max_group_size, 1);
    assert!(quiet().max_group_size(65_536).validate().is_ok());
}

#[test]
fn segment_size_is_bounded() {
    refused(quiet().segment_size(u64::MAX), "segment_size");
    refused(quiet().segment_size(5 << 30), "segment_size");
    refused(quiet().segment_size(4 << 30), "segment_size");
    refused(quiet().segment_size(0), "segment_size");
    refused(
        quiet().segment_size(Options::MIN_SEGMENT_SIZE - 1),
        "segment_size",
    );
    assert!(
        quiet()
            .segment_size(Options::MAX_SEGMENT_SIZE)
            .validate()
            .is_ok()
    );
    assert!(
        quiet()
            .segment_size(Options::MIN_SEGMENT_SIZE)
            .validate()
            .is_ok()
    );
}

#[test]
fn the_smallest_segment_size_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), quiet().segment_size(Options::MIN_SEGMENT_SIZE)).unwrap();
    for i in 0..50u32 {
        db.put(format!("key-{i}").as_bytes(), &[7; 100]).unwrap();
    }
    // A value larger than a segment gets a segment of its own.
    db.put(b"big", &[1; 1000]).unwrap();
    for i in 0..50u32 {
        db.delete(format!("key-{i}").as_bytes()).unwrap();
    }
    db.compact().unwrap();
    assert_eq!(db.get(b"big").unwrap().unwrap(), vec![1; 1000]);
    assert_eq!(db.len(), 1);
    db.close().unwrap();
}

#[test]
fn compaction_threshold_must_be_a_share() {
    for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let mut options = quiet();
        options.compaction_threshold = bad;
        refused(options, "compaction_threshold");
    }
    // The builder's documented clamp; NaN is refused there too, as the
    // field keeps it.
    assert_eq!(quiet().compaction_threshold(7.0).compaction_threshold, 1.0);
    assert_eq!(quiet().compaction_threshold(-7.0).compaction_threshold, 0.0);
    refused(
        quiet().compaction_threshold(f64::NAN),
        "compaction_threshold",
    );
}

#[test]
fn compaction_interval_has_a_minimum() {
    refused(
        Options::default().compaction_interval(Duration::ZERO),
        "compaction_interval",
    );
    refused(
        Options::default().compaction_interval(Duration::from_micros(999)),
        "compaction_interval",
    );
    // Refused even with background compaction off: the value is wrong
    // either way, and turning it on later must not start a spinning thread.
    refused(
        quiet().compaction_interval(Duration::ZERO),
        "compaction_interval",
    );
    // The longest interval is fine: the thread still wakes at checkpoints
    // and at close.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(
        dir.path(),
        Options::default().compaction_interval(Duration::MAX),
    )
    .unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
}

#[test]
fn max_value_len_field_is_bounded() {
    let mut options = quiet();
    options.max_value_len = usize::MAX;
    refused(options, "max_value_len");
    // The builder's documented clamp.
    assert_eq!(quiet().max_value_len(usize::MAX).max_value_len, 64 << 20);
    assert!(quiet().max_value_len(usize::MAX).validate().is_ok());
}

#[test]
fn defaults_and_edge_values_are_accepted() {
    assert!(Options::default().validate().is_ok());
    // 0: a checkpoint after every group (slow, but correct).
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), quiet().max_wal_size(0)).unwrap();
    for i in 0..10u32 {
        db.put(&i.to_le_bytes(), b"v").unwrap();
    }
    db.close().unwrap();
    let db = Db::open_with(dir.path(), quiet()).unwrap();
    assert_eq!(db.len(), 10);
    db.close().unwrap();
    // Some(0) means no limit.
    assert!(quiet().compaction_rate(Some(0)).validate().is_ok());
}

/// Every file under `dir`, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn without_create_if_missing_only_a_database_opens() {
    let parent = tempfile::tempdir().unwrap();
    let reader = || quiet().create_if_missing(false);
    let refused = |dir: &std::path::Path| match Db::open_with(dir, reader()) {
        Err(e @ Error::NotADatabase { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&dir.display().to_string()), "{message}");
        }
        Err(other) => panic!("expected NotADatabase, got {other}"),
        Ok(db) => {
            db.close().unwrap();
            panic!("{} opened without a database", dir.display());
        }
    };

    // A missing directory is not created.
    let missing = parent.path().join("missing");
    refused(&missing);
    assert!(!missing.exists());
    assert!(!kv_engine::holds_database(&missing).unwrap());

    // A directory of other files, or with only a LOCK or an INDEX, is left
    // exactly as it was.
    let other = parent.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    std::fs::write(other.join(kv_engine::LOCK_FILE_NAME), b"").unwrap();
    std::fs::write(other.join("INDEX"), b"junk").unwrap();
    let before = files(&other);
    refused(&other);
    assert_eq!(files(&other), before);
    assert!(!kv_engine::holds_database(&other).unwrap());

    // Neither does verify take it for a database.
    assert!(matches!(
        kv_engine::verify(&other),
        Err(Error::NotADatabase { .. })
    ));

    // A database, even one never written to, opens. One whose marker is
    // gone is still taken for a database: the open reports the loss
    // rather than calling the directory empty.
    let db_dir = parent.path().join("db");
    Db::open_with(&db_dir, quiet()).unwrap().close().unwrap();
    assert!(kv_engine::holds_database(&db_dir).unwrap());
    let db = Db::open_with(&db_dir, reader()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    std::fs::remove_file(db_dir.join("CHECKPOINT")).unwrap();
    assert!(kv_engine::holds_database(&db_dir).unwrap());
    assert!(matches!(
        Db::open_with(&db_dir, reader()),
        Err(Error::Corruption { .. })
    ));
}
