//! `verify`: a clean database verifies clean; a flipped byte in a segment, a
//! hint file, a WAL file or the checkpoint marker is reported with its file
//! and offset; torn tails are warnings; nothing is ever changed.

mod common;

use std::path::{Path, PathBuf};

use common::{
    all_files, crash_image, files_with_suffix, read_marker, segment_records_end, wal_frames_end,
};
use kv_engine::{Db, Error, Options, WAL_DIR_NAME, verify};

fn options() -> Options {
    // No background compaction: the tests damage and copy files by hand.
    Options::default()
        .segment_size(4096)
        .background_compaction(false)
}

/// A closed database with several sealed segments (some written by
/// compaction), hint files, overwrites and deletes.
fn build(dir: &Path) {
    let db = Db::open_with(dir, options()).unwrap();
    for i in 0..300u32 {
        db.put(format!("key-{i:04}").as_bytes(), &[i as u8; 40])
            .unwrap();
    }
    for i in (0..300u32).step_by(3) {
        db.put(format!("key-{i:04}").as_bytes(), b"again").unwrap();
    }
    for i in (0..300u32).step_by(7) {
        db.delete(format!("key-{i:04}").as_bytes()).unwrap();
    }
    db.compact().unwrap();
    for i in 0..20u32 {
        db.put(format!("late-{i}").as_bytes(), b"v").unwrap();
    }
    db.close().unwrap();
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

/// A crash image whose newest WAL file holds 50 records; returns its path
/// and the frames' positions.
fn image_with_wal(root: &Path) -> (PathBuf, PathBuf, Vec<u64>) {
    let live = root.join("live");
    let image = root.join("image");
    let db = Db::open_with(&live, options()).unwrap();
    for i in 0..50u32 {
        db.put(format!("w-{i:03}").as_bytes(), b"some value")
            .unwrap();
    }
    crash_image(&live, &image);
    db.close().unwrap();
    let wal = files_with_suffix(&image.join(WAL_DIR_NAME), ".wal")
        .pop()
        .unwrap();
    let positions: Vec<u64> = kv_wal::Wal::replay(
        image.join(WAL_DIR_NAME),
        kv_wal::Position::START,
        Default::default(),
    )
    .unwrap()
    .map(|r| r.unwrap().0)
    .filter(|p| image.join(WAL_DIR_NAME).join(kv_wal::file_name(p.file)) == wal)
    .map(|p| p.offset)
    .collect();
    assert_eq!(positions.len(), 50);
    (image, wal, positions)
}

#[test]
fn a_clean_database_verifies_clean_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let before = all_files(dir.path());
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.marker);
    assert!(report.segments >= 2, "{report:?}");
    assert!(report.hint_files >= 1, "{report:?}");
    assert!(report.wal_files >= 1, "{report:?}");
    assert!(report.records >= 300, "{report:?}");
    assert_eq!(
        report.files_checked(),
        report.segments + report.hint_files + report.wal_files + 1
    );
    assert_eq!(all_files(dir.path()), before);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.get(b"key-0001").unwrap().unwrap(), [1u8; 40]);
}

#[test]
fn a_flipped_byte_in_a_segment_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = files_with_suffix(dir.path(), ".seg")[0].clone();
    let mut records = Vec::new();
    let segment = kv_log::Segment::open_read_only(&seg).unwrap();
    assert!(segment.check_records(|loc, _| records.push(loc)).is_empty());
    drop(segment);
    let victim = records[records.len() / 2];
    flip(&seg, u64::from(victim.offset + victim.len - 1));
    let before = all_files(dir.path());

    let report = verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert_eq!(p.path, seg);
    assert_eq!(p.offset, u64::from(victim.offset));
    assert!(p.reason.contains("checksum"), "{p}");
    // The records after the damaged one were still checked.
    assert!(report.records >= records.len() as u64 - 1);
    assert_eq!(all_files(dir.path()), before);
}

#[test]
fn a_flipped_byte_in_a_hint_file_is_a_warning_that_compaction_clears() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let hint = files_with_suffix(dir.path(), ".hint")[0].clone();
    flip(&hint, 40);
    let report = verify(dir.path()).unwrap();
    // The data is whole: the open scans the segment instead.
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    let w = &report.warnings[0];
    assert_eq!(w.path, hint);
    assert!(w.reason.contains("checksum"), "{w}");
    assert!(w.reason.contains("kv compact"), "{w}");
    // As it says: compaction writes the hint file again.
    let db = Db::open(dir.path()).unwrap();
    db.compact().unwrap();
    db.close().unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(
        report.is_clean() && report.warnings.is_empty(),
        "{report:?}"
    );
}

#[test]
fn a_hint_file_that_disagrees_with_its_segment_is_reported() {
    // A hint file with a valid checksum whose entry names another key: only
    // comparing it with the segment's records finds this.
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let hint = files_with_suffix(dir.path(), ".hint")[0].clone();
    let mut bytes = std::fs::read(&hint).unwrap();
    // The first entry (hint format 2) follows the 32-byte header: flags,
    // then three varints (key length, record length, sequence delta), then
    // (this key has no expiry) the key.
    assert_eq!(bytes[32] & 2, 0, "no expiry");
    let mut at = 33;
    for _ in 0..3 {
        while bytes[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
    }
    bytes[at] ^= 0x01;
    let body = bytes.len() - 8;
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&hint, bytes).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].path, hint);
    assert_eq!(report.problems[0].offset, 32);
    assert!(report.problems[0].reason.contains("does not match"));
}

#[test]
fn a_flipped_byte_in_a_wal_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (image, wal, positions) = image_with_wal(dir.path());
    // The crash image itself is clean: segment data past the checkpoint is
    // valid, and the WAL has no torn tail.
    let report = verify(&image).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.wal_records >= 50);

    flip(&wal, positions[20] + 20);
    let report = verify(&image).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].path, wal);
    assert_eq!(report.problems[0].offset, positions[20]);
    // The frames after it were still checked.
    assert!(report.wal_records >= 49);
}

#[test]
fn a_damaged_wal_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (image, wal, _) = image_with_wal(dir.path());
    flip(&wal, 20);
    let report = verify(&image).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(
        (&report.problems[0].path, report.problems[0].offset),
        (&wal, 0)
    );
}

#[test]
fn torn_tails_are_warnings_not_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (image, wal, _) = image_with_wal(dir.path());
    // A torn write after the last frame, into the zeros allocated ahead of
    // the frames (the file keeps its length).
    let frames_end = wal_frames_end(&wal);
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(bytes.len() as u64 >= frames_end + 9, "an allocated tail");
    bytes[frames_end as usize..frames_end as usize + 9].fill(0x5a);
    std::fs::write(&wal, bytes).unwrap();
    // The newest segment ends in zeros allocated ahead too, and verify
    // says nothing of them; a torn write over them is a warning.
    let seg = files_with_suffix(&image, ".seg").pop().unwrap();
    let records_end = segment_records_end(&seg);
    assert!(
        std::fs::metadata(&seg).unwrap().len() > records_end,
        "an allocated tail"
    );
    let untouched = verify(&image).unwrap();
    assert!(
        !untouched.warnings.iter().any(|w| w.path == seg),
        "{:?}",
        untouched.warnings
    );
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[records_end as usize..records_end as usize + 50].fill(0x5a);
    std::fs::write(&seg, bytes).unwrap();
    let before = all_files(&image);

    let report = verify(&image).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    let warned: Vec<_> = report
        .warnings
        .iter()
        .map(|w| (&w.path, w.offset))
        .collect();
    assert!(warned.contains(&(&wal, frames_end)), "{warned:?}");
    assert!(warned.iter().any(|(p, _)| **p == seg), "{warned:?}");
    assert_eq!(all_files(&image), before, "verify cut a torn tail");
}

#[test]
fn a_flipped_byte_in_the_checkpoint_marker_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let marker = dir.path().join("CHECKPOINT");
    flip(&marker, 30);
    let report = verify(dir.path()).unwrap();
    assert!(!report.marker);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path == marker && p.offset == 0),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_missing_wal_file_and_a_missing_checkpointed_segment_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    for wal in files_with_suffix(&dir.path().join(WAL_DIR_NAME), ".wal") {
        std::fs::remove_file(wal).unwrap();
    }
    // The segment the marker names.
    let id = read_marker(dir.path()).segment;
    let newest = dir.path().join(kv_log::segment_file_name(id));
    std::fs::remove_file(&newest).unwrap();
    let report = verify(dir.path()).unwrap();
    let paths: Vec<_> = report.problems.iter().map(|p| p.path.clone()).collect();
    assert!(paths.contains(&newest), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p.parent() == Some(&dir.path().join(WAL_DIR_NAME))),
        "{paths:?}"
    );
}

#[test]
fn an_open_database_is_checked_beside_its_writer_and_a_missing_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.put(b"k", b"v").unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert!(report.beside_writer);
    assert_eq!(report.records_held(), 1, "{report:#?}");
    drop(db);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean() && !report.beside_writer, "{report:#?}");

    let missing = dir.path().join("nope");
    assert!(matches!(verify(&missing), Err(Error::Io { .. })));
    assert!(!missing.exists());
    let file = dir.path().join("LOCK");
    assert!(matches!(verify(&file), Err(Error::Io { .. })));
}

#[test]
fn verify_does_not_create_a_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    std::fs::remove_file(dir.path().join("LOCK")).unwrap();
    assert!(verify(dir.path()).unwrap().is_clean());
    assert!(!dir.path().join("LOCK").exists());
}

#[test]
fn a_checkpoint_copy_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    build(&dir.path().join("db"));
    let db = Db::open_with(dir.path().join("db"), options()).unwrap();
    db.put(b"after", b"reopen").unwrap();
    let copy = dir.path().join("copy");
    db.checkpoint(&copy).unwrap();
    let report = verify(&copy).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.records > 0);
    drop(db);
    assert_eq!(
        Db::open(&copy).unwrap().get(b"after").unwrap().as_deref(),
        Some(&b"reopen"[..])
    );
}

/// Every record is counted once in `records_held`, whether the segments
/// hold it, the WAL does, or both (records past the marker that a crash
/// left in the segment and in the WAL).
#[test]
fn records_in_both_the_segments_and_the_wal_are_counted_once() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let image = root.path().join("image");
    let db = Db::open_with(&live, options()).unwrap();
    for i in 0..100u32 {
        db.put(format!("a-{i:03}").as_bytes(), b"v").unwrap();
    }
    db.close().unwrap();
    let db = Db::open_with(&live, options()).unwrap();
    for i in 0..50u32 {
        db.put(format!("b-{i:03}").as_bytes(), b"v").unwrap();
    }
    crash_image(&live, &image);
    db.close().unwrap();

    let report = verify(&image).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.wal_records_pending, 50, "{report:?}");
    // The segment has them too, past the marker.
    assert_eq!(report.records_past_marker, 50, "{report:?}");
    assert_eq!(report.records_held(), 150, "{report:?}");
    assert!(report.records_checked() >= 150, "{report:?}");
    // What an open finds agrees.
    assert_eq!(Db::open(&image).unwrap().len(), 150);
    // After a clean close the WAL holds nothing the segments lack.
    let report = verify(&live).unwrap();
    assert_eq!(
        (report.records_held(), report.wal_records_pending),
        (150, 0),
        "{report:?}"
    );
}

#[test]
fn a_check_beside_a_writer_that_compacts_trims_and_checkpoints_finds_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let busy = options()
        .max_wal_size(16 << 10)
        .background_compaction(true)
        .compaction_interval(std::time::Duration::from_millis(5))
        .compaction_threshold(0.1);
    let db = std::sync::Arc::new(Db::open_with(dir.path(), busy).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        let copies = copies.path().to_path_buf();
        std::thread::spawn(move || {
            let mut i = 0u32;
            // Bounded: it stops when the checks are done, or after 200k writes.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
                let mut batch = kv_engine::WriteBatch::new();
                batch
                    .put(format!("k{}", i % 97).as_bytes(), &[i as u8; 150])
                    .delete(format!("k{}", (i + 40) % 97).as_bytes());
                db.write(batch).unwrap();
                if i.is_multiple_of(400) {
                    db.compact().unwrap();
                }
                if i.is_multiple_of(1500) {
                    db.checkpoint(copies.join(i.to_string())).unwrap();
                }
                i += 1;
            }
        })
    };
    let (mut beside, mut held) = (0, 0);
    for n in 0..30 {
        let report = verify(dir.path()).unwrap_or_else(|e| panic!("check {n}: {e}"));
        assert!(report.is_clean(), "check {n}: {report:#?}");
        beside += u32::from(report.beside_writer);
        held += report.records_held();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(beside, 30, "every check ran beside the writer");
    assert!(held > 0, "the checks saw records");
    // Without background compaction from here on, so that the damaged
    // segment stays.
    drop(std::sync::Arc::into_inner(db).expect("the writer thread is done"));
    let db = Db::open_with(dir.path(), options()).unwrap();
    // Damage in a sealed segment, made while the writer has it open (in
    // place: the writer maps it), is found beside the writer.
    let sealed = files_with_suffix(dir.path(), ".hint")
        .first()
        .expect("a hinted segment")
        .with_extension("seg");
    let len = std::fs::metadata(&sealed).unwrap().len();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&sealed)
            .unwrap();
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(len - 2)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(len - 2)).unwrap();
        file.write_all(&[byte[0] ^ 0xFF]).unwrap();
    }
    let report = verify(dir.path()).unwrap();
    assert!(report.beside_writer);
    assert!(
        report.problems.iter().any(|p| p.path == sealed),
        "{report:#?}"
    );
    drop(db);
}
