//! Everything at once: writer threads (puts, deletes, batches), reader
//! threads (`get`, `get_pinned`), an iterating thread (`Db::iter`),
//! background compaction plus explicit `Db::compact`, and checkpoints
//! (`Db::checkpoint`, each opened and checked), with invariants checked
//! throughout.
//!
//! Every key has one writer thread, which numbers the key's operations:
//! puts get even versions, deletes odd ones (version 1 is "never
//! written"). A value spells its key, its version and its batch, so a
//! value is checked whole. Per key, three counters are published:
//! `acked` (the last operation acknowledged), `issued` (the last one
//! started) and `deleted` (the last delete started). A read that loads
//! `acked` before and the others after it must see:
//!
//! - a value: the right bytes for its key, a put's version, at least
//!   `acked` and at most `issued` (never an older value once a newer one
//!   was acknowledged: a deleted key never comes back);
//! - nothing: only if `acked` is a delete or a delete was started since.
//!
//! Iteration returns no key twice, and every key untouched during the
//! iteration exactly when it is present. A checkpoint holds, for every
//! key, something that read could have returned during the call, and a
//! batch whole or not at all.
//!
//! Bounded: a fixed number of operations (under 20 s in a debug build).
//! `KV_STRESS_SCALE=N` multiplies them for a longer run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::Rng;
use kv_engine::{Db, Options, SyncPolicy, WriteBatch};
use parking_lot::Mutex;

const KEYS: usize = 256;
const WRITERS: usize = 2;
const READERS: usize = 2;

/// The size of the run, scaled by `KV_STRESS_SCALE`.
struct Plan {
    writes_per_writer: u64,
    reads_per_reader: u64,
    iterations: u64,
    checkpoints: u64,
    compactions: u64,
}

impl Plan {
    fn from_env() -> Plan {
        let scale: u64 = std::env::var("KV_STRESS_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
            .max(1);
        Plan {
            writes_per_writer: 10_000 * scale,
            reads_per_reader: 20_000 * scale,
            iterations: 20 * scale,
            checkpoints: 6 * scale,
            compactions: 6 * scale,
        }
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("stress-key-{i:04}").into_bytes()
}

/// The value of put `version` of key `i`, in batch `batch` (0: none): the
/// key, the version and the batch spelled out, padded to 20..420 bytes.
fn value(i: usize, version: u64, batch: u64) -> Vec<u8> {
    let mut v = format!("{i}|{version}|{batch}|").into_bytes();
    let len = 20 + (i * 31 + version as usize * 17) % 400;
    let fill = b'a' + (version % 26) as u8;
    v.resize(len.max(v.len()), fill);
    v
}

/// Parses and checks a value read for key `i`: returns its version and
/// batch, or panics if it is not exactly what `value` makes.
fn parse(i: usize, bytes: &[u8], context: &str) -> (u64, u64) {
    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.splitn(4, '|');
    let (Some(k), Some(v), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{context}: key {i} holds a value that is not one of ours: {text:?}");
    };
    assert_eq!(k, i.to_string(), "{context}: key {i} holds key {k}'s value");
    let version: u64 = v.parse().unwrap();
    let batch: u64 = b.parse().unwrap();
    assert_eq!(
        bytes,
        value(i, version, batch),
        "{context}: key {i} holds a damaged value"
    );
    assert_eq!(
        version % 2,
        0,
        "{context}: key {i} holds a value of a delete"
    );
    (version, batch)
}

/// The published state of every key.
struct Keys {
    acked: Vec<AtomicU64>,
    issued: Vec<AtomicU64>,
    deleted: Vec<AtomicU64>,
    /// Batch id -> its puts (key, version).
    batches: Mutex<HashMap<u64, Vec<(usize, u64)>>>,
    /// Operations acknowledged, all writers together.
    progress: AtomicU64,
}

impl Keys {
    fn new() -> Keys {
        let ones = || (0..KEYS).map(|_| AtomicU64::new(1)).collect();
        Keys {
            acked: ones(),
            issued: ones(),
            deleted: ones(),
            batches: Mutex::new(HashMap::new()),
            progress: AtomicU64::new(0),
        }
    }

    fn acked(&self) -> Vec<u64> {
        self.acked
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    fn issued(&self) -> Vec<u64> {
        self.issued
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    fn deleted(&self) -> Vec<u64> {
        self.deleted
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect()
    }

    /// Checks what a read of key `i` returned, given `acked` loaded before
    /// it and `issued`, `deleted` loaded after it. Returns the version and
    /// batch of a value.
    fn check(
        i: usize,
        got: Option<&[u8]>,
        (acked, issued, deleted): (u64, u64, u64),
        context: &str,
    ) -> Option<(u64, u64)> {
        match got {
            Some(bytes) => {
                let (version, batch) = parse(i, bytes, context);
                assert!(
                    version >= acked,
                    "{context}: key {i} holds version {version}, older than the acknowledged {acked} \
                     (a deleted or overwritten value came back)"
                );
                assert!(
                    version <= issued,
                    "{context}: key {i} holds version {version}, never written (last {issued})"
                );
                Some((version, batch))
            }
            None => {
                assert!(
                    acked % 2 == 1 || deleted > acked,
                    "{context}: key {i} is missing, but version {acked} was acknowledged and no \
                     delete started since"
                );
                None
            }
        }
    }
}

/// Next version of the given kind after `current`: puts even, deletes odd.
fn next_version(current: u64, put: bool) -> u64 {
    let next = current + 1;
    if next.is_multiple_of(2) == put {
        next
    } else {
        next + 1
    }
}

fn writer(db: &Db, keys: &Keys, w: usize, plan: &Plan) {
    // One generator per thread.
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
    let mine: Vec<usize> = (0..KEYS).filter(|i| i % WRITERS == w).collect();
    let mut version: Vec<u64> = vec![1; KEYS];
    let mut next_batch = (w as u64 + 1) << 48;
    for _ in 0..plan.writes_per_writer {
        let roll = rng.below(100);
        if roll < 15 {
            // A batch of three puts and a delete of distinct keys.
            next_batch += 1;
            let mut picked = HashSet::new();
            while picked.len() < 4 {
                picked.insert(mine[rng.below(mine.len() as u64) as usize]);
            }
            let picked: Vec<usize> = picked.into_iter().collect();
            let mut batch = WriteBatch::new();
            let mut puts = Vec::new();
            for (n, &i) in picked.iter().enumerate() {
                let put = n < 3;
                let v = next_version(version[i], put);
                version[i] = v;
                if put {
                    batch.put(&key(i), &value(i, v, next_batch));
                    puts.push((i, v));
                } else {
                    keys.deleted[i].store(v, Ordering::Release);
                    batch.delete(&key(i));
                }
                keys.issued[i].store(v, Ordering::Release);
            }
            keys.batches.lock().insert(next_batch, puts);
            db.write(batch).unwrap();
            for &i in &picked {
                keys.acked[i].store(version[i], Ordering::Release);
            }
        } else {
            let i = mine[rng.below(mine.len() as u64) as usize];
            let put = roll >= 30;
            let v = next_version(version[i], put);
            version[i] = v;
            if !put {
                keys.deleted[i].store(v, Ordering::Release);
            }
            keys.issued[i].store(v, Ordering::Release);
            if put {
                db.put(&key(i), &value(i, v, 0)).unwrap();
            } else {
                db.delete(&key(i)).unwrap();
            }
            keys.acked[i].store(v, Ordering::Release);
        }
        keys.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads at least `reads_per_reader` times, and on while the writers run.
fn reader(db: &Db, keys: &Keys, r: usize, plan: &Plan, done: &AtomicBool) -> u64 {
    let mut rng = Rng::new(0xD1B5_4A32_D192_ED03 ^ (r as u64 + 1));
    let mut n = 0;
    while n < plan.reads_per_reader || !done.load(Ordering::Acquire) {
        n += 1;
        let i = rng.below(KEYS as u64) as usize;
        let acked = keys.acked[i].load(Ordering::Acquire);
        let context = format!("reader {r}, read {n}");
        if n % 4 == 0 {
            let got = db.get_pinned(&key(i)).unwrap();
            let bounds = (
                acked,
                keys.issued[i].load(Ordering::Acquire),
                keys.deleted[i].load(Ordering::Acquire),
            );
            Keys::check(i, got.as_deref(), bounds, &context);
        } else {
            let got = db.get(&key(i)).unwrap();
            let bounds = (
                acked,
                keys.issued[i].load(Ordering::Acquire),
                keys.deleted[i].load(Ordering::Acquire),
            );
            Keys::check(i, got.as_deref(), bounds, &context);
        }
    }
    n
}

fn index_of(k: &[u8]) -> usize {
    std::str::from_utf8(k)
        .ok()
        .and_then(|s| s.strip_prefix("stress-key-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a key nobody wrote: {k:?}"))
}

/// Iterates at least `iterations` times, and on while the writers run.
fn iterator(db: &Db, keys: &Keys, plan: &Plan, done: &AtomicBool) -> u64 {
    let mut n = 0;
    while n < plan.iterations || !done.load(Ordering::Acquire) {
        n += 1;
        let before = keys.acked();
        let issued_before = keys.issued();
        let mut seen = vec![false; KEYS];
        let mut items = Vec::new();
        for item in db.iter() {
            let (k, v) = item.unwrap();
            items.push((index_of(&k), v));
        }
        let (issued, deleted) = (keys.issued(), keys.deleted());
        let context = format!("iteration {n}");
        for (i, v) in items {
            assert!(!seen[i], "{context}: key {i} returned twice");
            seen[i] = true;
            Keys::check(i, Some(&v), (before[i], issued[i], deleted[i]), &context);
        }
        for i in 0..KEYS {
            // Untouched during the iteration: nothing was started on it
            // since before it began, and nothing was left in flight.
            let untouched = issued[i] == before[i] && issued_before[i] == before[i];
            if untouched {
                assert_eq!(
                    seen[i],
                    before[i].is_multiple_of(2),
                    "{context}: key {i}, untouched at version {}, {}",
                    before[i],
                    if seen[i] {
                        "was returned"
                    } else {
                        "was missed"
                    }
                );
            }
        }
    }
    n
}

/// Waits until the writers have done `share` of their work (or finished).
fn wait_for(keys: &Keys, share: f64, total: u64, done: &AtomicBool) {
    while (keys.progress.load(Ordering::Relaxed) as f64) < share * total as f64
        && !done.load(Ordering::Acquire)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn checkpointer(db: &Db, keys: &Keys, plan: &Plan, dir: &std::path::Path, done: &AtomicBool) {
    let total = plan.writes_per_writer * WRITERS as u64;
    for n in 0..plan.checkpoints {
        wait_for(
            keys,
            (n + 1) as f64 / (plan.checkpoints + 1) as f64,
            total,
            done,
        );
        let target = dir.join(format!("checkpoint-{n}"));
        let before = keys.acked();
        db.checkpoint(&target).unwrap();
        let (issued, deleted) = (keys.issued(), keys.deleted());
        let context = format!("checkpoint {n}");
        let copy = Db::open_with(&target, Options::default().background_compaction(false))
            .unwrap_or_else(|e| panic!("{context} does not open: {e}"));
        let mut held = HashMap::new();
        for i in 0..KEYS {
            let got = copy.get(&key(i)).unwrap();
            if let Some(found) = Keys::check(
                i,
                got.as_deref(),
                (before[i], issued[i], deleted[i]),
                &context,
            ) {
                held.insert(i, found);
            }
        }
        assert_eq!(copy.len(), held.len(), "{context}: len disagrees with get");
        // A batch whole or not at all: a key holding batch b's value means
        // every put of b is there, or was overwritten by something newer.
        let batches = keys.batches.lock();
        for (i, &(_, batch)) in &held {
            if batch == 0 {
                continue;
            }
            for &(j, version) in &batches[&batch] {
                let later_version = copy_version(&copy, j, &context);
                assert!(
                    later_version.is_some_and(|v| v >= version) || deleted[j] > version,
                    "{context}: key {i} holds batch {batch}, but its key {j} holds {later_version:?}, \
                     not the batch's version {version} or newer"
                );
            }
        }
        drop(batches);
        copy.close().unwrap();
        std::fs::remove_dir_all(&target).unwrap();
    }
}

fn copy_version(copy: &Db, j: usize, context: &str) -> Option<u64> {
    copy.get(&key(j)).unwrap().map(|v| parse(j, &v, context).0)
}

fn compactor(db: &Db, keys: &Keys, plan: &Plan, done: &AtomicBool) {
    let total = plan.writes_per_writer * WRITERS as u64;
    for n in 0..plan.compactions {
        wait_for(
            keys,
            (n as f64 + 0.5) / plan.compactions as f64,
            total,
            done,
        );
        db.compact().unwrap();
    }
}

#[test]
fn readers_writers_compaction_checkpoints_and_iteration_at_once() {
    let plan = Plan::from_env();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let options = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(32 << 10)
        .max_wal_size(64 << 10)
        .compaction_threshold(0.3)
        .compaction_interval(Duration::from_millis(20));
    let db = Db::open_with(&path, options.clone()).unwrap();
    let keys = Keys::new();
    let done = AtomicBool::new(false);
    let (mut reads, mut iterated) = (0, 0);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                s.spawn({
                    let (db, keys, plan) = (&db, &keys, &plan);
                    move || writer(db, keys, w, plan)
                })
            })
            .collect();
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                s.spawn({
                    let (db, keys, plan, done) = (&db, &keys, &plan, &done);
                    move || reader(db, keys, r, plan, done)
                })
            })
            .collect();
        let iterations = s.spawn(|| iterator(&db, &keys, &plan, &done));
        s.spawn(|| checkpointer(&db, &keys, &plan, dir.path(), &done));
        s.spawn(|| compactor(&db, &keys, &plan, &done));
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
        reads = readers.into_iter().map(|r| r.join().unwrap()).sum();
        iterated = iterations.join().unwrap();
    });

    // Quiet now: every key reads exactly as acknowledged, before and after
    // a reopen.
    let acked = keys.acked();
    let exact = |db: &Db, context: &str| {
        let mut present = 0;
        for (i, &version) in acked.iter().enumerate() {
            let got = db.get(&key(i)).unwrap();
            match got {
                Some(v) => {
                    assert_eq!(parse(i, &v, context).0, version, "{context}: key {i}");
                    present += 1;
                }
                None => assert_eq!(version % 2, 1, "{context}: key {i} is missing"),
            }
        }
        assert_eq!(db.len(), present, "{context}: len");
        assert_eq!(db.iter().count(), present, "{context}: iter");
    };
    exact(&db, "at the end");
    let stats = db.stats();
    drop(db);
    let db = Db::open_with(&path, options).unwrap();
    exact(&db, "after reopen");
    println!(
        "stress: {} writes, {} reads, {} iterations, {} checkpoints, {} explicit compactions; \
         background and explicit compactions reclaimed {} bytes in {} runs",
        plan.writes_per_writer * WRITERS as u64,
        reads,
        iterated,
        plan.checkpoints,
        plan.compactions,
        stats.bytes_reclaimed,
        stats.compactions,
    );
}
