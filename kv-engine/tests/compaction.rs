//! Compaction: space reclaimed, every value still there, readers never
//! miss, deleted keys never come back, hint files fall back when damaged.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::files_with_suffix;
use kv_engine::{Db, Options, SyncPolicy, WAL_DIR_NAME};

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                dir_size(&p)
            } else {
                std::fs::metadata(&p).map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("{i}:{round}:").repeat(8).into_bytes()
}

fn options() -> Options {
    Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(64 << 10)
        .background_compaction(false)
}

#[test]
fn overwriting_five_times_then_compacting_costs_at_most_1_2x_a_single_write() {
    const N: u32 = 5_000;
    // The same keys (and final values) written once.
    let once = tempfile::tempdir().unwrap();
    let db = Db::open_with(once.path(), options()).unwrap();
    for i in 0..N {
        db.put(&key(i), &value(i, 4)).unwrap();
    }
    // In the same steady state as the other: active segment sealed, hint
    // files written (it has nothing dead to compact).
    assert_eq!(db.compact().unwrap().segments_compacted, 0);
    db.close().unwrap();
    let single = dir_size(once.path());

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for round in 0..5 {
        for i in 0..N {
            db.put(&key(i), &value(i, round)).unwrap();
        }
    }
    let before = dir_size(dir.path());
    let report = db.compact().unwrap();
    assert!(report.segments_compacted > 0);
    assert!(report.bytes_reclaimed() > 0);
    for i in 0..N {
        assert_eq!(db.get(&key(i)).unwrap().unwrap(), value(i, 4), "key {i}");
    }
    db.close().unwrap();
    let after = dir_size(dir.path());
    assert!(
        after as f64 <= single as f64 * 1.2,
        "after compaction {after} bytes, written once {single} bytes (before {before})"
    );
    // And it all reads back after a reopen, from the compacted segments.
    let db = Db::open_with(dir.path(), options()).unwrap();
    assert_eq!(db.len(), N as usize);
    for i in 0..N {
        assert_eq!(db.get(&key(i)).unwrap().unwrap(), value(i, 4), "key {i}");
    }
}

#[test]
fn compaction_clears_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..2_000 {
        db.put(&key(i % 300), &value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    // Each WAL file is its 32-byte header only: nothing the segments lack.
    for entry in std::fs::read_dir(dir.path().join(WAL_DIR_NAME)).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 32, "{}", p.display());
    }
}

#[test]
fn readers_never_miss_while_compaction_runs_in_a_loop() {
    const KEYS: u32 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), options().segment_size(16 << 10)).unwrap());
    for i in 0..KEYS {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (db, stop, reads) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&reads));
            std::thread::spawn(move || {
                let mut i = t * 7_919;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7_919) % KEYS;
                    // Every key is always present; its value is one the
                    // writer wrote for it.
                    let v = db.get(&key(i)).expect("no error").expect("no miss");
                    let s = String::from_utf8(v).unwrap();
                    assert!(s.starts_with(&format!("{i}:")), "key {i} read {s}");
                    let pinned = db.get_pinned(&key(i)).expect("no error").expect("no miss");
                    assert!(pinned.starts_with(format!("{i}:").as_bytes()));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // A writer overwrites keys while compaction runs over and over.
    for round in 1..=20 {
        for i in (0..KEYS).step_by(3) {
            db.put(&key(i), &value(i, round)).unwrap();
        }
        db.compact().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    for i in 0..KEYS {
        let round = if i % 3 == 0 { 20 } else { 0 };
        assert_eq!(db.get(&key(i)).unwrap().unwrap(), value(i, round));
    }
}

#[test]
fn deleted_keys_never_come_back_whatever_the_compaction_order() {
    for pattern in 0..4u32 {
        let dir = tempfile::tempdir().unwrap();
        let opts = options().segment_size(4 << 10);
        let db = Db::open_with(dir.path(), opts.clone()).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        // Writes and deletes spread over many segments, with compactions
        // and reopens in between, in a different order per pattern.
        let mut db = Some(db);
        for round in 0..12u32 {
            let d = db.as_ref().unwrap();
            for i in 0..200u32 {
                let k = key((i * 7 + round * 13) % 150);
                if (i + round + pattern) % 4 == 0 {
                    d.delete(&k).unwrap();
                    model.remove(&k);
                } else {
                    let v = value(i, round);
                    d.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
            }
            match (round + pattern) % 3 {
                0 => {
                    d.compact().unwrap();
                }
                1 => {
                    db.take().unwrap().close().unwrap();
                    db = Some(Db::open_with(dir.path(), opts.clone()).unwrap());
                }
                _ => {}
            }
            let d = db.as_ref().unwrap();
            for i in 0..150 {
                assert_eq!(
                    d.get(&key(i)).unwrap(),
                    model.get(&key(i)).cloned(),
                    "pattern {pattern} round {round} key {i}"
                );
            }
        }
        db.take().unwrap().close().unwrap();
        let d = Db::open_with(dir.path(), opts).unwrap();
        d.compact().unwrap();
        drop(d);
        let d = Db::open_with(dir.path(), options()).unwrap();
        assert_eq!(d.len(), model.len());
        for i in 0..150 {
            assert_eq!(
                d.get(&key(i)).unwrap(),
                model.get(&key(i)).cloned(),
                "pattern {pattern} key {i}"
            );
        }
    }
}

#[test]
fn a_damaged_hint_file_falls_back_to_the_segment_scan() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options().segment_size(8 << 10);
    let db = Db::open_with(dir.path(), opts.clone()).unwrap();
    for i in 0..1_000 {
        db.put(&key(i), &value(i, 1)).unwrap();
    }
    db.compact().unwrap();
    db.close().unwrap();
    let hints = files_with_suffix(dir.path(), ".hint");
    assert!(!hints.is_empty(), "compaction wrote no hint file");
    let hint = &hints[0];
    let good = std::fs::read(hint).unwrap();
    for damage in 0..3 {
        let mut bad = good.clone();
        match damage {
            0 => bad[good.len() / 2] ^= 0x20,
            1 => bad.truncate(good.len() - 9),
            _ => bad[40] ^= 0x01,
        }
        std::fs::write(hint, &bad).unwrap();
        let db = Db::open_with(dir.path(), opts.clone()).unwrap();
        assert_eq!(db.len(), 1_000, "damage {damage}");
        for i in 0..1_000 {
            assert_eq!(
                db.get(&key(i)).unwrap().unwrap(),
                value(i, 1),
                "damage {damage} key {i}"
            );
        }
        db.close().unwrap();
    }
}

#[test]
fn background_compaction_reclaims_space_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(16 << 10)
        .max_wal_size(32 << 10)
        .compaction_interval(std::time::Duration::from_millis(10))
        .compaction_rate(Some(50 << 20));
    let db = Db::open_with(dir.path(), opts).unwrap();
    for round in 0..10 {
        for i in 0..500 {
            db.put(&key(i), &value(i, round)).unwrap();
        }
    }
    // Wait (bounded) for the background thread to compact; this asserts
    // that it happens, not how fast.
    let mut waited = 0;
    loop {
        let segments = files_with_suffix(dir.path(), ".seg").len();
        if segments < 15 {
            break;
        }
        waited += 1;
        assert!(
            waited < 1_000,
            "background compaction did not run: {segments} segments"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    db.pause_compaction();
    for i in 0..500 {
        assert_eq!(db.get(&key(i)).unwrap().unwrap(), value(i, 9));
    }
    db.resume_compaction();
}

/// The Bitcask bug (its issue #82): a tombstone dropped by compacting its
/// segment while an older segment still holds a record of the key brings
/// the key back at the next open. Here segment 1 is mostly live (so the
/// threshold leaves it alone) and holds the victim's value; the segment with
/// the victim's tombstone is mostly dead, so background compaction takes it.
#[test]
fn a_tombstone_outlives_the_older_records_of_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(4 << 10)
        .background_compaction(false);
    let db = Db::open_with(dir.path(), quiet.clone()).unwrap();
    db.put(b"victim", b"must stay deleted").unwrap();
    // 41 records of 100 bytes: segment 1 (4 KiB) fills up, and the
    // tombstone goes to the next one.
    for i in 0..41 {
        db.put(format!("live-{i:02}").as_bytes(), &[b'x'; 78])
            .unwrap();
    }
    // The tombstone, then churn: its segment is almost all dead bytes.
    db.delete(b"victim").unwrap();
    for i in 0..200 {
        db.put(b"churn", format!("{i}").repeat(20).as_bytes())
            .unwrap();
    }
    db.close().unwrap();
    // The segments holding the victim: its put's (segment 1) and its
    // tombstone's, which must be another one for the test to mean anything.
    let holding: Vec<_> = files_with_suffix(dir.path(), ".seg")
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap().windows(6).any(|w| w == b"victim"))
        .collect();
    assert_eq!(
        holding.len(),
        2,
        "put and tombstone are not in two segments: {holding:?}"
    );
    assert!(holding[0].ends_with("0000000001.seg"));
    let seg_path = holding[1].clone();

    // Background compaction with the default threshold (0.5): it takes the
    // tombstone's segment, and not segment 1.
    let background = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(4 << 10)
        .compaction_interval(std::time::Duration::from_millis(5));
    let db = Db::open_with(dir.path(), background).unwrap();
    let mut waited = 0;
    while seg_path.exists() {
        waited += 1;
        assert!(
            waited < 2_000,
            "background compaction never took {}",
            seg_path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        dir.path().join("0000000001.seg").exists(),
        "segment 1 was compacted too: the test proves nothing"
    );
    assert_eq!(db.get(b"victim").unwrap(), None);
    db.close().unwrap();
    let db = Db::open_with(dir.path(), quiet).unwrap();
    assert_eq!(
        db.get(b"victim").unwrap(),
        None,
        "a deleted key came back after compaction and reopen"
    );
    // The 41 live keys and "churn".
    assert_eq!(db.len(), 42);
}

#[test]
fn compacting_an_idle_database_again_and_again_leaves_no_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..100 {
        db.put(&key(i), &value(i, 0)).unwrap();
    }
    let count = || files_with_suffix(dir.path(), ".seg").len();
    db.compact().unwrap();
    let after_first = count();
    for _ in 0..20 {
        db.compact().unwrap();
    }
    assert!(
        count() <= after_first,
        "{} segments after 20 idle compactions, {after_first} after one",
        count()
    );
    for i in 0..100 {
        assert_eq!(db.get(&key(i)).unwrap().unwrap(), value(i, 0));
    }
}

/// With background compaction on, the active segment is sealed once it
/// holds a quarter of the live bytes (and a sixteenth of the segment
/// size), not only when it is full, so that compaction can take it; with
/// it off, segments fill to their size.
#[test]
fn the_active_segment_is_sealed_early_for_compaction() {
    // 1 MiB segments, about 200 KiB of distinct keys: nothing dead, so
    // compaction merges nothing and the segment count is the seals'.
    let segments = |background: bool| {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_with(
            dir.path(),
            options()
                .segment_size(1 << 20)
                .background_compaction(background),
        )
        .unwrap();
        for i in 0..2_000 {
            db.put(&key(i), &value(i, 0)).unwrap();
        }
        let stats = db.stats();
        for i in 0..2_000 {
            assert_eq!(db.get(&key(i)).unwrap(), Some(value(i, 0)), "key {i}");
        }
        db.close().unwrap();
        stats.segments
    };
    assert_eq!(segments(false), 1, "one segment of 1 MiB holds it all");
    // Sealed at 64 KiB each time (a quarter of the live bytes is less).
    let sealed = segments(true);
    assert!(sealed >= 3, "sealed early: {sealed} segments");
}
