//! `Db::update`, atomic read-modify-write on the writer thread: a model
//! test against a map, increments from many threads that lose none, one
//! winner among racing set-if-absent claims, TTLs as the update sees them,
//! a panicking update function, and updates that survive a reopen.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Rng;
use kv_engine::{Clock, Current, Db, Error, ManualClock, Options, SyncPolicy, WriteBatch};

fn options() -> Options {
    Options::default()
        .segment_size(16 << 10)
        .sync(SyncPolicy::Never)
        .background_compaction(false)
}

/// Adds one to the decimal number at `key` (absent is 0); returns the new
/// number.
fn incr(db: &Db, key: &'static [u8]) -> u64 {
    db.update(&[key], move |current, batch| {
        let n = current[0].as_ref().map_or(0, |c| {
            std::str::from_utf8(&c.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }) + 1;
        batch.put(key, n.to_string().as_bytes());
        n
    })
    .unwrap()
}

#[test]
fn updates_follow_a_model_map_through_puts_deletes_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open_with(dir.path(), options()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(7);
    for step in 0..3_000u32 {
        let a = format!("k{}", rng.below(20)).into_bytes();
        let b = format!("k{}", rng.below(20)).into_bytes();
        match rng.below(6) {
            0 => {
                let v = format!("v{step}").into_bytes();
                db.put(&a, &v).unwrap();
                model.insert(a, v);
            }
            1 => {
                db.delete(&a).unwrap();
                model.remove(&a);
            }
            // Append to a, seeing what the model holds.
            2 => {
                let key = a.clone();
                let seen = db
                    .update(&[&a], move |current, batch| {
                        let mut value = current[0].as_ref().map_or(Vec::new(), |c| c.value.clone());
                        value.extend_from_slice(b"+");
                        batch.put(&key, &value);
                        current[0].clone().map(|c| c.value)
                    })
                    .unwrap();
                assert_eq!(seen.as_ref(), model.get(&a), "step {step}");
                model.entry(a).or_default().extend_from_slice(b"+");
            }
            // Set a if absent.
            3 => {
                let (key, v) = (a.clone(), format!("nx{step}").into_bytes());
                let value = v.clone();
                let set = db
                    .update(&[&a], move |current, batch| {
                        if current[0].is_none() {
                            batch.put(&key, &value);
                        }
                        current[0].is_none()
                    })
                    .unwrap();
                assert_eq!(set, !model.contains_key(&a), "step {step}");
                model.entry(a).or_insert(v);
            }
            // Move a to b (two keys, one step).
            4 => {
                let (from, to) = (a.clone(), b.clone());
                let moved = db
                    .update(&[&a, &b], move |current, batch| {
                        let Some(c) = &current[0] else { return false };
                        if from != to {
                            batch.delete(&from).put(&to, &c.value);
                        }
                        true
                    })
                    .unwrap();
                assert_eq!(moved, model.contains_key(&a), "step {step}");
                if moved && a != b {
                    let v = model.remove(&a).unwrap();
                    model.insert(b, v);
                }
            }
            // Read only: writes nothing.
            _ => {
                let seen = db
                    .update(&[&a], |current, _| current[0].clone().map(|c| c.value))
                    .unwrap();
                assert_eq!(seen.as_ref(), model.get(&a), "step {step}");
            }
        }
        if step == 1_500 {
            db.close().unwrap();
            db = Db::open_with(dir.path(), options()).unwrap();
        }
    }
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for item in db.iter() {
        let (k, v) = item.unwrap();
        stored.insert(k, v.to_vec());
    }
    assert_eq!(stored, model);
}

#[test]
fn increments_from_many_threads_lose_none_and_each_number_is_given_once() {
    for policy in [SyncPolicy::Never, SyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open_with(dir.path(), options().sync(policy)).unwrap());
        const THREADS: u64 = 4;
        let per_thread: u64 = if policy == SyncPolicy::Always {
            100
        } else {
            1_000
        };
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for i in 0..per_thread {
                        got.push(incr(&db, b"counter"));
                        // Plain writes in between, in the same groups.
                        db.put(format!("t{t}").as_bytes(), &i.to_le_bytes())
                            .unwrap();
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (1..=THREADS * per_thread).collect();
        assert_eq!(all, expected, "{policy:?}: each number given exactly once");
        let total = (THREADS * per_thread).to_string();
        assert_eq!(
            db.get(b"counter").unwrap().as_deref(),
            Some(total.as_bytes())
        );
        drop(db);
        let db = Db::open_with(dir.path(), options()).unwrap();
        assert_eq!(
            db.get(b"counter").unwrap().as_deref(),
            Some(total.as_bytes())
        );
    }
}

#[test]
fn one_of_many_racing_claims_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), options()).unwrap());
    for round in 0..50u32 {
        let key = format!("lock{round}").into_bytes();
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let (db, key) = (Arc::clone(&db), key.clone());
                std::thread::spawn(move || {
                    let k = key.clone();
                    db.update(&[&key], move |current, batch| {
                        if current[0].is_some() {
                            return false;
                        }
                        batch.put(&k, &[t]);
                        true
                    })
                    .unwrap()
                })
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&won| won)
            .count();
        assert_eq!(winners, 1, "round {round}");
    }
}

#[test]
fn an_update_sees_time_to_live_and_not_expired_keys() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(
        dir.path(),
        options().clock(Arc::clone(&clock) as Arc<dyn Clock>),
    )
    .unwrap();
    db.put_with_ttl(b"k", b"v", Duration::from_secs(10))
        .unwrap();
    let see = |db: &Db| -> Option<Current> {
        db.update(&[b"k"], |current, _| current[0].clone()).unwrap()
    };
    assert_eq!(see(&db).unwrap().ttl, Some(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(4));
    let current = see(&db).unwrap();
    assert_eq!(
        (current.value.as_slice(), current.ttl),
        (&b"v"[..], Some(Duration::from_secs(6)))
    );
    // Keep the value, drop the expiry (PERSIST), from inside an update.
    db.update(&[b"k"], |current, batch: &mut WriteBatch| {
        let value = current[0].as_ref().unwrap().value.clone();
        batch.put(b"k", &value);
    })
    .unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(see(&db).unwrap().ttl, None);
    db.put_with_ttl(b"k", b"w", Duration::from_secs(1)).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(see(&db), None, "an expired key is absent");
}

#[test]
fn a_panicking_update_writes_nothing_and_the_database_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    db.put(b"k", b"1").unwrap();
    let result = db.update(&[b"k"], |_, batch| {
        batch.put(b"k", b"2");
        panic!("no");
    });
    assert!(
        matches!(&result, Err(Error::UpdatePanicked { reason }) if reason == "no"),
        "{result:?}"
    );
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(incr(&db, b"k"), 2);
    // Bad keys and values are refused before or after the function runs.
    assert!(matches!(db.update(&[b""], |_, _| ()), Err(Error::EmptyKey)));
    let big = vec![0u8; 65 << 20];
    let result = db.update(&[b"k"], move |_, batch| {
        batch.put(b"k", &big);
    });
    assert!(
        matches!(result, Err(Error::ValueTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"2"[..]));
    // A read-only view takes no update.
    drop(db);
    let view = Db::open_read_only(dir.path()).unwrap();
    assert!(matches!(
        view.update(&[b"k"], |_, _| ()),
        Err(Error::ReadOnly)
    ));
}
