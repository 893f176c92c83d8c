//! The read-only open (`Db::open_read_only`): a view as of one moment that
//! changes no byte, refuses writes, reads around a crash's torn tail, and
//! stays consistent beside a writer that writes, deletes, compacts, trims
//! its WAL and checkpoints meanwhile.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{all_files, crash_image, scratch_dir};
use kv_engine::{Db, Error, Options, SyncPolicy, WriteBatch};

fn small() -> Options {
    Options::default()
        .segment_size(4 << 10)
        .max_wal_size(16 << 10)
        .sync(SyncPolicy::Never)
}

#[test]
fn a_view_is_the_database_as_of_its_open_and_takes_no_writes() {
    let dir = scratch_dir();
    let db = Db::open_with(dir.path(), small()).unwrap();
    for i in 0..500u32 {
        db.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    db.delete(b"k7").unwrap();
    let view = Db::open_read_only(dir.path()).unwrap();
    assert!(view.is_read_only());
    db.put(b"k1", b"changed").unwrap();
    db.delete(b"k2").unwrap();
    db.put(b"new", b"x").unwrap();
    db.compact().unwrap();

    assert_eq!(view.get(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(view.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(view.get(b"k7").unwrap(), None);
    assert_eq!(view.get(b"new").unwrap(), None);
    assert_eq!(view.len(), 499);
    assert_eq!(common::contents(&view, "view").len(), 499);

    for refused in [
        view.put(b"a", b"b"),
        view.put_with_ttl(b"a", b"b", Duration::from_secs(1)),
        view.delete(b"a"),
        view.write({
            let mut batch = WriteBatch::new();
            batch.put(b"a", b"b");
            batch
        }),
        view.sync(),
        view.checkpoint(dir.path().with_extension("copy")),
        view.compact().map(drop),
    ] {
        assert!(matches!(refused, Err(Error::ReadOnly)), "{refused:?}");
    }
    // A second view, and the writer's own reads, are unaffected.
    let newer = Db::open_read_only(dir.path()).unwrap();
    assert_eq!(newer.get(b"k1").unwrap().as_deref(), Some(&b"changed"[..]));
    assert_eq!(newer.get(b"k2").unwrap(), None);
    assert_eq!(db.get(b"new").unwrap().as_deref(), Some(&b"x"[..]));
    view.close().unwrap();
    newer.close().unwrap();
    db.close().unwrap();
}

#[test]
fn opening_read_only_changes_no_byte_and_takes_no_lock() {
    let dir = scratch_dir();
    let db = Db::open_with(dir.path(), small()).unwrap();
    for i in 0..300u32 {
        db.put(format!("k{i}").as_bytes(), &[i as u8; 40]).unwrap();
    }
    db.close().unwrap();
    // Writes after the last clean close, left in the WAL by a crash.
    let db = Db::open_with(dir.path(), small().background_compaction(false)).unwrap();
    for i in 0..50u32 {
        db.put(format!("late{i}").as_bytes(), b"x").unwrap();
    }
    let image = scratch_dir();
    crash_image(dir.path(), image.path());
    db.close().unwrap();

    // No lock is taken: a writer opens beside a view.
    let view = Db::open_read_only(dir.path()).unwrap();
    let writer = Db::open_with(dir.path(), small()).unwrap();
    assert_eq!(writer.len(), view.len());
    writer.close().unwrap();
    drop(view);

    // Without any writer: the directory is byte for byte what it was.
    let before = all_files(image.path());
    let entries = |p: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let names = entries(image.path());
    let view = Db::open_read_only(image.path()).unwrap();
    assert_eq!(view.len(), 350);
    assert_eq!(view.get(b"late49").unwrap().as_deref(), Some(&b"x"[..]));
    let again = Db::open_read_only(image.path()).unwrap();
    assert_eq!(common::contents(&again, "second view").len(), 350);
    drop(view);
    drop(again);
    assert_eq!(
        entries(image.path()),
        names,
        "a read-only open added or removed a file"
    );
    assert!(
        all_files(image.path()) == before,
        "a read-only open changed a byte"
    );
}

#[test]
fn a_view_reads_around_a_torn_wal_tail_without_cutting_it() {
    let dir = scratch_dir();
    let db = Db::open_with(dir.path(), small().background_compaction(false)).unwrap();
    for i in 0..20u32 {
        db.put(format!("k{i}").as_bytes(), b"value").unwrap();
    }
    let image = scratch_dir();
    crash_image(dir.path(), image.path());
    db.close().unwrap();
    // Tear the last frame: cut the newest WAL file a few bytes into it.
    let wal = common::files_with_suffix(&image.path().join("wal"), ".wal");
    let last = wal.last().unwrap();
    let end = common::wal_frames_end(last);
    let file = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(end - 3).unwrap();
    drop(file);
    let before = all_files(image.path());

    let view = Db::open_read_only(image.path()).unwrap();
    assert_eq!(
        view.len(),
        19,
        "the torn write is left out, the rest is there"
    );
    assert_eq!(view.get(b"k19").unwrap(), None);
    drop(view);
    assert!(
        all_files(image.path()) == before,
        "the view cut the torn tail"
    );
    // The writable open cuts it, and agrees.
    let db = Db::open(image.path()).unwrap();
    assert_eq!(db.len(), 19);
}

#[test]
fn a_directory_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = scratch_dir();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = Db::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    let missing = dir.path().join("absent");
    assert!(matches!(
        Db::open_read_only(&missing),
        Err(Error::NotADatabase { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn a_view_of_damaged_data_without_a_writer_reports_it() {
    let dir = scratch_dir();
    let db = Db::open_with(dir.path(), small()).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i}").as_bytes(), &[7u8; 50]).unwrap();
    }
    db.close().unwrap();
    std::fs::remove_file(dir.path().join("INDEX")).ok();
    let segments = common::files_with_suffix(dir.path(), ".seg");
    // Remove a segment the marker lists: the view says so.
    std::fs::remove_file(&segments[0]).unwrap();
    let err = Db::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

/// The history a writer makes, batch by batch: batch `i` sets every `k*`
/// key to `i`, deletes `d{i-1}` and puts `d{i}`. A view is consistent if
/// every `k*` key has one value `v` (a whole batch), exactly one `d` key
/// is present and it is `d{v}` (no delete undone), and `v` lies between
/// the batches acknowledged before the open and those begun after it.
const KEYS: usize = 8;

fn batch(i: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    let value = i.to_le_bytes();
    for k in 0..KEYS {
        batch.put(format!("k{k}").as_bytes(), &value);
    }
    if i > 0 {
        batch.delete(format!("d{}", i - 1).as_bytes());
    }
    batch.put(format!("d{i}").as_bytes(), &value);
    // Filler, so that segments fill and compaction has work.
    batch.put(format!("f{}", i % 64).as_bytes(), &[i as u8; 200]);
    batch
}

fn check_view(view: &Db, acked_before: u64, begun_after: u64, context: &str) {
    let mut seen: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for item in view.iter() {
        let (k, v) = item.unwrap_or_else(|e| panic!("{context}: {e}"));
        seen.insert(k, v.to_vec());
    }
    let values: Vec<u64> = (0..KEYS)
        .map(|k| {
            let v = seen
                .get(format!("k{k}").as_bytes())
                .unwrap_or_else(|| panic!("{context}: k{k} is missing"));
            u64::from_le_bytes(v.as_slice().try_into().unwrap())
        })
        .collect();
    let v = values[0];
    assert!(
        values.iter().all(|&x| x == v),
        "{context}: a half-applied batch: {values:?}"
    );
    assert!(
        acked_before <= v && v <= begun_after,
        "{context}: batch {v} seen, but {acked_before} was acknowledged before the open and \
         {begun_after} begun after it"
    );
    let d: Vec<_> = seen.keys().filter(|k| k.starts_with(b"d")).collect();
    assert_eq!(
        d,
        [&format!("d{v}").into_bytes()],
        "{context}: the d keys of batch {v}"
    );
    for (k, value) in &seen {
        assert_eq!(view.get(k).unwrap().as_ref(), Some(value), "{context}");
    }
}

#[test]
fn views_beside_a_writer_that_compacts_trims_and_checkpoints_are_whole_prefixes() {
    let dir = scratch_dir();
    let options = small()
        .compaction_interval(Duration::from_millis(5))
        .compaction_threshold(0.1);
    let db = Arc::new(Db::open_with(dir.path(), options).unwrap());
    db.write(batch(0)).unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let begun = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let copies = scratch_dir();
    let writer = {
        let (db, acked, begun, stop) = (db.clone(), acked.clone(), begun.clone(), stop.clone());
        let copies = copies.path().to_path_buf();
        std::thread::spawn(move || {
            let mut i = 1;
            // Bounded: it stops when the views are done, or after 200k batches.
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                begun.store(i, Ordering::SeqCst);
                db.write(batch(i)).unwrap();
                acked.store(i, Ordering::SeqCst);
                if i % 300 == 0 {
                    db.compact().unwrap();
                }
                if i % 700 == 0 {
                    db.checkpoint(copies.join(i.to_string())).unwrap();
                }
                i += 1;
            }
        })
    };
    for n in 0..40 {
        let acked_before = acked.load(Ordering::SeqCst);
        let view =
            Db::open_read_only(dir.path()).unwrap_or_else(|e| panic!("view {n}: open failed: {e}"));
        let begun_after = begun.load(Ordering::SeqCst);
        check_view(&view, acked_before, begun_after, &format!("view {n}"));
        // Let the writer move on before the next view.
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let last = acked.load(Ordering::SeqCst);
    let view = Db::open_read_only(dir.path()).unwrap();
    check_view(&view, last, last, "the last view");
}
