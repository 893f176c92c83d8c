//! `Db::iter` and `Db::keys` while writes and compaction run: no key twice,
//! every untouched key once, and only values written for their key.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kv_engine::{Db, Options, SyncPolicy};

const UNTOUCHED: u32 = 3000;
const CHURN: u32 = 300;

fn untouched(i: u32) -> (Vec<u8>, Vec<u8>) {
    (
        format!("u{i:05}").into_bytes(),
        format!("u{i:05}=").repeat(6).into_bytes(),
    )
}

fn churn_key(i: u32) -> Vec<u8> {
    format!("c{i:05}").into_bytes()
}

fn churn_value(i: u32, version: u32) -> Vec<u8> {
    format!("c{i:05}@{version}").repeat(5).into_bytes()
}

/// Whether `value` is one that was written for churn key `key`.
fn is_churn_value(key: &[u8], value: &[u8]) -> bool {
    let key = std::str::from_utf8(key).unwrap();
    let value = std::str::from_utf8(value).unwrap();
    let unit_len = value.len() / 5;
    value.len().is_multiple_of(5)
        && value[..unit_len].starts_with(&format!("{key}@"))
        && value == value[..unit_len].repeat(5)
}

#[test]
fn iteration_during_writes_and_compaction_sees_each_untouched_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(16 << 10)
        .compaction_threshold(0.2)
        .compaction_interval(std::time::Duration::from_millis(1))
        // Markers often, so that segments become eligible for compaction
        // while the rounds run.
        .max_wal_size(64 << 10);
    let db = Arc::new(Db::open_with(dir.path(), options).unwrap());
    for i in 0..UNTOUCHED {
        let (k, v) = untouched(i);
        db.put(&k, &v).unwrap();
    }
    for i in 0..CHURN {
        db.put(&churn_key(i), &churn_value(i, 0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (Arc::clone(&db), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..CHURN {
                    if (i + version) % 7 == 0 {
                        db.delete(&churn_key(i)).unwrap();
                    } else {
                        db.put(&churn_key(i), &churn_value(i, version)).unwrap();
                    }
                }
                version += 1;
            }
        })
    };
    let runs = Arc::new(AtomicU64::new(0));
    let compactor = {
        let (db, stop, runs) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&runs));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ran = db.compact().unwrap().runs;
                runs.fetch_add(ran, Ordering::Relaxed);
            }
        })
    };

    // At least 8 rounds, and on until compaction has run during them (the
    // writer and the compactor race the iterations; bounded all the same).
    let mut round = 0;
    while round < 8 || (runs.load(Ordering::Relaxed) == 0 && round < 10_000) {
        round += 1;
        let mut seen = HashSet::new();
        let mut untouched_seen = 0;
        for item in db.iter() {
            let (k, v) = item.unwrap();
            if k.starts_with(b"u") {
                let i: u32 = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
                assert_eq!(&*v, &untouched(i).1[..], "round {round}");
                untouched_seen += 1;
            } else {
                assert!(is_churn_value(&k, &v), "round {round}: {k:?} = {v:?}");
            }
            assert!(seen.insert(k.clone()), "round {round}: {k:?} seen twice");
        }
        assert_eq!(untouched_seen, UNTOUCHED, "round {round}");

        let keys: Vec<Vec<u8>> = db.keys().collect();
        let unique: HashSet<&Vec<u8>> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "round {round}: a key listed twice"
        );
        assert_eq!(
            keys.iter().filter(|k| k.starts_with(b"u")).count() as u32,
            UNTOUCHED
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    compactor.join().unwrap();
    assert!(
        runs.load(Ordering::Relaxed) > 0,
        "compaction never ran during {round} iterations"
    );
}

#[test]
fn an_empty_database_iterates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.iter().count(), 0);
    assert_eq!(db.keys().count(), 0);
    db.put(b"k", b"v").unwrap();
    db.delete(b"k").unwrap();
    assert_eq!(db.iter().count(), 0);
}

#[test]
fn an_iterator_keeps_its_segments_readable_after_compaction_retires_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(8 << 10)
        .background_compaction(false);
    let db = Db::open_with(dir.path(), options).unwrap();
    for i in 0..UNTOUCHED {
        let (k, v) = untouched(i);
        db.put(&k, &v).unwrap();
    }
    for i in 0..UNTOUCHED / 2 {
        db.delete(&untouched(i * 2).0).unwrap();
    }
    let mut iter = db.iter();
    let first = iter.next().unwrap().unwrap();
    // Every segment the iterator loaded is compacted away and retired.
    assert!(db.compact().unwrap().segments_compacted > 0);
    let mut count = 1;
    for item in iter {
        let (k, v) = item.unwrap();
        let i: u32 = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
        assert_eq!(&*v, &untouched(i).1[..]);
        count += 1;
    }
    assert_eq!(count, UNTOUCHED / 2);
    assert!(first.0.starts_with(b"u"));
}
