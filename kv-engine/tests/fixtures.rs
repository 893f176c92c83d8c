//! Frozen crash images of earlier formats (in `tests/fixtures/`, see its
//! README) open with this build:
//!
//! - `v1-db`, written by the last build of WAL format version 1, whose WAL
//!   holds records after the checkpoint marker: the version 1 frames are
//!   replayed, and the database goes on writing version 2;
//! - `v2-db`, written by the build that introduced checkpoint marker
//!   version 2: a compaction output with its hint file, a marker listing
//!   the segments, and WAL records after the marker. Every later build must
//!   keep opening it. Its hint file is of hint format version 1.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{contents, copy_dir};
use kv_engine::{Db, Options};

/// A copy of fixture `name` in a new temporary directory, which verifies
/// clean.
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("db");
    copy_dir(&source, &dir);
    let report = kv_engine::verify(&dir).unwrap();
    assert!(report.problems.is_empty(), "{name}: {report:?}");
    (temp, dir)
}

/// What `v1-db` holds once its WAL is replayed.
fn expected_v1() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = BTreeMap::new();
    for i in [1, 2, 4] {
        all.insert(
            format!("key-{i}").into_bytes(),
            format!("old-{i}").into_bytes(),
        );
    }
    for i in (5..15).filter(|&i| i != 7) {
        all.insert(
            format!("key-{i}").into_bytes(),
            format!("new-{i}").into_bytes(),
        );
    }
    all.insert(b"batch-a".to_vec(), [0u8, 0, 1, 0].repeat(16));
    all.insert(b"batch-b".to_vec(), b"b".to_vec());
    all
}

#[test]
fn a_database_with_a_version_1_wal_opens_and_replays_it() {
    let (_temp, dir) = fixture("v1-db");
    let options = Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options.clone()).unwrap();
    assert_eq!(contents(&db, "v1-db opened"), expected_v1());
    assert_eq!(db.get(b"key-0").unwrap(), None);
    assert_eq!(db.get(b"key-3").unwrap(), None);
    assert_eq!(db.get(b"key-7").unwrap(), None);
    db.put(b"after", b"version 2").unwrap();
    db.close().unwrap();

    let db = Db::open_with(&dir, options).unwrap();
    let mut all = expected_v1();
    all.insert(b"after".to_vec(), b"version 2".to_vec());
    assert_eq!(contents(&db, "v1-db reopened"), all);
    db.close().unwrap();
    assert!(kv_engine::verify(&dir).unwrap().problems.is_empty());
}

/// What `v2-db` holds: what the program in the fixtures' README leaves.
fn expected_v2() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = BTreeMap::new();
    for i in 0..100u32 {
        let value = if i % 2 == 0 { "second" } else { "first" };
        all.insert(
            format!("key-{i:03}").into_bytes(),
            format!("{value}-{i}").into_bytes(),
        );
    }
    for i in (0..100u32).step_by(5) {
        all.remove(format!("key-{i:03}").as_bytes());
    }
    for i in 100..120u32 {
        all.insert(
            format!("key-{i:03}").into_bytes(),
            format!("after-{i}").into_bytes(),
        );
    }
    all.remove(&b"key-001"[..]);
    all.insert(b"batch-a".to_vec(), [0u8, 0, 1, 0].repeat(16));
    all.remove(&b"key-003"[..]);
    all
}

#[test]
fn the_version_2_fixture_verifies_and_opens_with_every_record() {
    let (_temp, dir) = fixture("v2-db");
    // Its hint file is of hint format version 1, which this build still
    // reads: it verifies without a warning.
    let report = kv_engine::verify(&dir).unwrap();
    assert_eq!(report.hint_files, 1);
    assert!(report.warnings.is_empty(), "{report:?}");

    let options = || Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options()).unwrap();
    assert_eq!(contents(&db, "v2-db opened"), expected_v2());
    db.put(b"later", b"x").unwrap();
    db.compact().unwrap();
    db.close().unwrap();
    let db = Db::open_with(&dir, options()).unwrap();
    let mut with_later = expected_v2();
    with_later.insert(b"later".to_vec(), b"x".to_vec());
    assert_eq!(contents(&db, "v2-db reopened"), with_later);
    db.close().unwrap();
}
