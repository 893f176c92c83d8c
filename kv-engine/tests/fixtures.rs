//! Frozen crash images of earlier formats (in `tests/fixtures/`, see its
//! README) open with this build:
//!
//! - `v1-db`, written by the last build of WAL format version 1, whose WAL
//!   holds records after the checkpoint marker: the version 1 frames are
//!   replayed, and the database goes on writing version 2;
//! - `v2-db`, written by the build that introduced checkpoint marker
//!   version 2: a compaction output with its hint file, a marker listing
//!   the segments, and WAL records after the marker. Every later build must
//!   keep opening it. Its hint file is of hint format version 1, and its
//!   records of record format version 1;
//! - `v3-db`, the same program with records that expire and a long one,
//!   written by the build that introduced record format version 2.

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

/// The segments of `dir`: id, header version, and whether compaction
/// wrote it (docs/format.md, "Segment file").
fn segments(dir: &Path) -> Vec<(u32, u16, bool)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let id = kv_log::parse_segment_file_name(path.file_name()?.to_str()?)?;
            let bytes = std::fs::read(&path).unwrap();
            let version = u16::from_le_bytes([bytes[8], bytes[9]]);
            Some((id, version, bytes[10] & 1 == 1))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The payload version of each WAL file of `dir`, oldest first (byte 9 of
/// the file header).
fn wal_payload_versions(dir: &Path) -> Vec<u8> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(kv_engine::WAL_DIR_NAME))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()[9]).collect()
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
    assert_eq!(segments(&dir), [(1, 1, false)]);
    let db = Db::open_with(&dir, options.clone()).unwrap();
    assert_eq!(contents(&db, "v1-db opened"), expected_v1());
    // Its segment of version 1 records is sealed as it is; the records
    // replayed from its WAL (payload version 0: version 1 records) went to
    // a new segment, encoded in version 2, and the WAL goes on in a file
    // of payload version 2.
    assert_eq!(segments(&dir), [(1, 1, false), (2, 2, false)]);
    assert_eq!(wal_payload_versions(&dir).last(), Some(&2));
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

    assert_eq!(segments(&dir), [(3, 1, false), (4, 1, true)]);
    let options = || Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options()).unwrap();
    assert_eq!(contents(&db, "v2-db opened"), expected_v2());
    // The active segment of version 1 is sealed, and a new one holds the
    // replayed records in version 2.
    assert_eq!(segments(&dir), [(3, 1, false), (4, 1, true), (5, 2, false)]);
    db.put(b"later", b"x").unwrap();
    db.compact().unwrap();
    // Compaction re-encodes the version 1 records it copies: whatever it
    // wrote is version 2, and it took both old segments.
    let after = segments(&dir);
    assert!(
        after.iter().all(|&(_, version, _)| version == 2),
        "{after:?}"
    );
    db.close().unwrap();
    let report = kv_engine::verify(&dir).unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    let db = Db::open_with(&dir, options()).unwrap();
    let mut with_later = expected_v2();
    with_later.insert(b"later".to_vec(), b"x".to_vec());
    assert_eq!(contents(&db, "v2-db reopened"), with_later);
    db.close().unwrap();
}

/// What `v3-db` holds: `v2-db`'s keys, the two that expire in a hundred
/// years, and the long one.
fn expected_v3() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = expected_v2();
    all.insert(b"ttl-long".to_vec(), b"expires in 100 years".to_vec());
    all.insert(b"batch-ttl".to_vec(), b"t".to_vec());
    all.insert(vec![b'k'; 200], vec![7u8; 1000]);
    all
}

#[test]
fn the_version_3_fixture_of_record_format_2_opens_with_every_record() {
    let (_temp, dir) = fixture("v3-db");
    let report = kv_engine::verify(&dir).unwrap();
    assert_eq!(report.hint_files, 1);
    assert!(report.warnings.is_empty(), "{report:?}");
    assert_eq!(segments(&dir), [(3, 2, false), (4, 2, true)]);
    assert_eq!(wal_payload_versions(&dir), [2]);

    let options = || Options::default().background_compaction(false);
    let db = Db::open_with(&dir, options()).unwrap();
    assert_eq!(contents(&db, "v3-db opened"), expected_v3());
    // (The two keys with an expiry read as live: an expiry decoded as a
    // time passed would have expired them.)
    // The active segment is of the current version: it goes on there.
    db.put(b"later", b"x").unwrap();
    db.compact().unwrap();
    db.close().unwrap();
    let db = Db::open_with(&dir, options()).unwrap();
    let mut with_later = expected_v3();
    with_later.insert(b"later".to_vec(), b"x".to_vec());
    assert_eq!(contents(&db, "v3-db reopened"), with_later);
    db.close().unwrap();
}
