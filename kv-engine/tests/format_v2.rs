//! A crash image in the format of the build that introduced checkpoint
//! marker version 2 (frozen in `tests/fixtures/v2-db`, see its README): a
//! compaction output with its hint file, a marker listing the segments, and
//! WAL records after the marker. It verifies clean and opens with every
//! record; every later build must keep opening it.

use std::collections::BTreeMap;
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

/// What the program in the fixture's README leaves.
fn expected() -> BTreeMap<Vec<u8>, Vec<u8>> {
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

fn contents(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .map(|item| {
            let (key, value) = item.unwrap();
            (key, value.to_vec())
        })
        .collect()
}

#[test]
fn the_version_2_fixture_verifies_and_opens_with_every_record() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-db");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("db");
    copy_dir(&source, &dir);
    let report = kv_engine::verify(&dir).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");

    let options = || Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options()).unwrap();
    assert_eq!(contents(&db), expected());
    db.put(b"later", b"x").unwrap();
    db.compact().unwrap();
    db.close().unwrap();
    let db = Db::open_with(&dir, options()).unwrap();
    let mut with_later = expected();
    with_later.insert(b"later".to_vec(), b"x".to_vec());
    assert_eq!(contents(&db), with_later);
    db.close().unwrap();
}
