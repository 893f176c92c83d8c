//! A crash image written by the last build of WAL format version 1 (frozen
//! in `tests/fixtures/v1-db`, see its README), whose WAL holds records after
//! the checkpoint marker, opens with this build: the version 1 frames are
//! replayed, and the database goes on writing version 2.

use std::fs;
use std::path::Path;

use kv_engine::{Db, Options};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What the fixture holds once its WAL is replayed.
fn expected() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in [1, 2, 4] {
        all.push((format!("key-{i}").into(), format!("old-{i}").into()));
    }
    for i in (5..15).filter(|&i| i != 7) {
        all.push((format!("key-{i}").into(), format!("new-{i}").into()));
    }
    all.push((b"batch-a".to_vec(), [0u8, 0, 1, 0].repeat(16)));
    all.push((b"batch-b".to_vec(), b"b".to_vec()));
    all.sort();
    all
}

fn contents(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = db
        .iter()
        .map(|item| {
            let (key, value) = item.unwrap();
            (key.to_vec(), value.to_vec())
        })
        .collect();
    all.sort();
    all
}

#[test]
fn a_database_with_a_version_1_wal_opens_and_replays_it() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-db");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("db");
    copy_dir(&source, &dir);
    let report = kv_engine::verify(&dir).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");

    let options = Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options.clone()).unwrap();
    assert_eq!(contents(&db), expected());
    assert_eq!(db.get(b"key-0").unwrap(), None);
    assert_eq!(db.get(b"key-3").unwrap(), None);
    assert_eq!(db.get(b"key-7").unwrap(), None);
    db.put(b"after", b"version 2").unwrap();
    db.close().unwrap();

    let db = Db::open_with(&dir, options).unwrap();
    let mut all = expected();
    all.push((b"after".to_vec(), b"version 2".to_vec()));
    all.sort();
    assert_eq!(contents(&db), all);
    db.close().unwrap();
    assert!(kv_engine::verify(&dir).unwrap().problems.is_empty());
}
