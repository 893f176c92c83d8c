//! I/O errors at every point of a workload, as SQLite's I/O-error tests
//! do: for each kind of file operation (write, sync, rename, create), each
//! error (EIO, ENOSPC) and each mode (the Nth operation fails once, or the
//! Nth and every later one until the fault clears), a fixed workload runs
//! with the fault at N = 1, 2, 3, ... until it finishes without hitting it.
//!
//! The workload (puts, deletes, batches, `Db::compact`, `Db::checkpoint`,
//! a close and reopen, on small segments so that segments roll and
//! checkpoints happen on their own) checks, at every step:
//!
//! - every call returns `Ok` or an error, and nothing panics;
//! - a write that returned an error is not visible, and every key reads
//!   what the acknowledged writes say;
//! - a `Db::checkpoint` that succeeded opens and holds exactly what was
//!   acknowledged before it;
//! - after a failed WAL write, once the fault clears, the next write
//!   succeeds without a reopen;
//!
//! and at every reopen (after the fault clears): every acknowledged write
//! is there; a write that failed may be there or not, but a batch is all or
//! nothing.
//!
//! By default it runs the full N range for every operation kind and both
//! errors in one mode each, alternating (about a minute in a debug build);
//! `KV_FAULTS=all` runs every combination.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{contents, crash_image, scratch_dir};
use kv_engine::{Db, Error, Options, SyncPolicy, WriteBatch};
use kv_wal::{FaultError, FaultInjector, FaultMode, FileOp};

type Key = Vec<u8>;
type Val = Option<Vec<u8>>;
type Puts = Vec<(Key, Vec<u8>)>;

/// One step of the workload.
#[derive(Debug, Clone)]
enum Step {
    Put(usize),
    Delete(usize),
    /// Puts of the first keys, deletes of the second.
    Batch(Vec<usize>, Vec<usize>),
    /// A batch of puts with values 8 times as long ([`large_value`]): most
    /// of its records are longer than a segment (each gets a segment of
    /// its own) and its WAL frame is longer than a WAL file's limit (it
    /// gets a file of its own) and than `kv_fs::WRITE_THROUGH_MIN`.
    LargeBatch(Vec<usize>),
    Compact,
    Checkpoint,
    /// A put of the probe key, to learn whether the database still takes
    /// writes before it is closed.
    Probe,
    Reopen,
}

/// The key `Step::Probe` writes.
const PROBE: usize = 23;

fn key(i: usize) -> Key {
    format!("key-{i:02}").into_bytes()
}

/// A value unique to step `step`, 40 to 600 bytes long.
fn value(i: usize, step: usize) -> Vec<u8> {
    let mut v = format!("value of {i} at step {step};").into_bytes();
    v.resize(40 + (i * 97 + step * 31) % 560, b'.');
    v
}

/// How a step's put makes its value: [`value`] or [`large_value`].
type ValueOf = fn(usize, usize) -> Vec<u8>;

/// [`value`] 8 times over: 320 to 4,800 bytes.
fn large_value(i: usize, step: usize) -> Vec<u8> {
    value(i, step).repeat(8)
}

fn workload() -> Vec<Step> {
    use Step::*;
    let mut steps: Vec<Step> = (0..14).map(Put).collect();
    // Batches of six puts of up to 600 bytes are about a segment (4 KiB)
    // long: some roll the active segment over in their middle.
    steps.extend([
        Delete(3),
        Delete(5),
        Batch(vec![1, 2, 20, 13, 14, 15], vec![4, 6]),
        LargeBatch(vec![2, 6, 9, 13, 17, 20]),
    ]);
    steps.extend((0..8).map(Put));
    steps.extend([
        Compact,
        Batch(vec![7, 8, 9, 16, 17, 18], vec![0]),
        Checkpoint,
    ]);
    steps.extend([Probe, Reopen]);
    steps.extend((8..18).map(Put));
    steps.extend([
        Delete(10),
        Batch(vec![3, 5, 11, 19, 20, 21], vec![12]),
        Compact,
    ]);
    steps.extend([Put(21), Put(22), Delete(1)]);
    steps
}

fn options(faults: &Arc<FaultInjector>) -> Options {
    let mut options = Options::default()
        .sync(SyncPolicy::Always)
        .segment_size(4 << 10)
        .max_wal_size(6 << 10)
        // The background thread would make the operation count depend on
        // timing; `Db::compact` covers compaction deterministically.
        .background_compaction(false);
    options.faults = Some(Arc::clone(faults));
    options
}

/// What each key may hold.
#[derive(Default)]
struct Model {
    /// What every acknowledged write says: what a reader must see.
    visible: BTreeMap<Key, Vec<u8>>,
    /// Per key, values of failed writes since the last acknowledged write
    /// of the key (or the last reopen), with their step: any may be
    /// durable.
    maybe: HashMap<Key, Vec<(usize, Val)>>,
    /// Failed batches since the last reopen: step and puts.
    failed_batches: Vec<(usize, Puts)>,
}

impl Model {
    fn acknowledged(&mut self, k: Key, v: Val) {
        self.maybe.remove(&k);
        match v {
            Some(v) => self.visible.insert(k, v),
            None => self.visible.remove(&k),
        };
    }

    fn failed(&mut self, step: usize, k: Key, v: Val) {
        self.maybe.entry(k).or_default().push((step, v));
    }

    /// Checks what a reopened database holds, then takes it as the truth.
    /// `strict` when the instance before it took writes to the end (it was
    /// not poisoned): then every failed write was taken back, and none may
    /// be there.
    fn reopened(&mut self, db: &Db, context: &str, strict: bool) {
        let actual = contents(db, context);
        let mut keys: Vec<&Key> = self.visible.keys().chain(self.maybe.keys()).collect();
        keys.extend(actual.keys());
        for k in keys {
            let got = actual.get(k).cloned();
            let acked = self.visible.get(k).cloned();
            let ok = got == acked
                || !strict
                    && self
                        .maybe
                        .get(k)
                        .is_some_and(|m| m.iter().any(|(_, v)| *v == got));
            assert!(
                ok,
                "{context}: key {} holds {:?}, acknowledged {:?}, failed writes {:?} \
                 (strict: {strict})",
                String::from_utf8_lossy(k),
                got.as_ref().map(|v| String::from_utf8_lossy(&v[..20])),
                acked.as_ref().map(|v| String::from_utf8_lossy(&v[..20])),
                self.maybe
                    .get(k)
                    .map(|m| m.iter().map(|(s, _)| *s).collect::<Vec<_>>()),
            );
        }
        // A failed batch is all or nothing, on the keys it wrote last.
        for (step, puts) in &self.failed_batches {
            let last: Vec<_> = puts
                .iter()
                .filter(|(k, _)| {
                    self.maybe.get(k).and_then(|m| m.last()).map(|l| l.0) == Some(*step)
                })
                .collect();
            let applied = last
                .iter()
                .filter(|(k, v)| actual.get(k) == Some(v))
                .count();
            assert!(
                applied == 0 || applied == last.len(),
                "{context}: {applied} of {} puts of the failed batch of step {step} are there",
                last.len()
            );
        }
        self.visible = actual;
        self.maybe.clear();
        self.failed_batches.clear();
    }
}

impl Model {
    /// Checks a crash image of the database (or anything else that must
    /// agree with the model) without changing the model.
    fn check_image(&self, db: &Db, context: &str, strict: bool) {
        let mut copy = Model {
            visible: self.visible.clone(),
            maybe: self.maybe.clone(),
            failed_batches: self.failed_batches.clone(),
        };
        copy.reopened(db, &format!("{context} (crash image)"), strict);
    }
}

/// Checks that every key the model knows reads as acknowledged.
fn check_visible(db: &Db, model: &Model, context: &str) {
    for i in 0..24 {
        let k = key(i);
        let got = db
            .get(&k)
            .unwrap_or_else(|e| panic!("{context}: get failed: {e}"));
        assert_eq!(
            got.as_ref(),
            model.visible.get(&k),
            "{context}: key {i} does not read as acknowledged (a failed write is visible?)"
        );
    }
}

fn put(db: &Db, model: &mut Model, i: usize, step: usize) -> kv_engine::Result<()> {
    let (k, v) = (key(i), value(i, step));
    let r = db.put(&k, &v);
    match &r {
        Ok(()) => model.acknowledged(k, Some(v)),
        Err(_) => model.failed(step, k, Some(v)),
    }
    r
}

/// How one run ended.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// The fault was hit at all.
    hit: bool,
    /// Steps that returned an error.
    errors: usize,
    /// A write after the fault cleared succeeded without a reopen.
    resumed: bool,
    /// The database refused writes (poisoned) after the fault cleared,
    /// until reopened.
    poisoned: bool,
}

fn is_write_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::Poisoned { .. } | Error::Log(_) | Error::Wal(_)
    )
}

/// Runs the workload once with `op` number `n` failing.
fn run(op: FileOp, error: FaultError, mode: FaultMode, n: u64) -> Outcome {
    // In memory where the machine allows: the thousands of runs sync
    // thousands of times each, and what is tested is what the code does
    // with the errors, not the disk.
    let dir = scratch_dir();
    let path = dir.path().join("db");
    let faults = Arc::new(FaultInjector::new());
    faults.fail_nth(op, n, error, mode);
    let context = |step: usize| format!("{op} {} {mode:?} n={n} step {step}", error.name());
    let mut model = Model::default();
    let mut outcome = Outcome::default();
    // Steps after the first hit before a persistent fault clears.
    let mut clear_in: Option<usize> = None;
    // The first hit was a WAL write: the next write after it clears must
    // succeed without a reopen.
    let mut expect_resume = false;
    // The first hit was a sync of WAL or segment data, on an open
    // database: it must refuse writes until reopened.
    let mut expect_poison = false;
    let mut previous: Option<&Step> = None;
    // The last probe succeeded: the instance was never poisoned.
    let mut took_writes = false;

    let mut db = match Db::open_with(&path, options(&faults)) {
        Ok(db) => Some(db),
        Err(e) => {
            assert!(is_write_error(&e), "{}: open: {e}", context(0));
            outcome.errors += 1;
            None
        }
    };
    for (step, s) in workload().iter().enumerate() {
        let ctx = context(step);
        if faults.hits() > 0 && clear_in.is_none() {
            outcome.hit = true;
            clear_in = Some(if mode == FaultMode::Once { 1 } else { 4 });
            let first = faults.first_hit();
            let extension = |want: &[&str]| {
                first.as_ref().is_some_and(|(_, p)| {
                    p.extension().is_some_and(|e| want.iter().any(|w| e == *w))
                })
            };
            let open_db = step > 0 && !matches!(previous, Some(Step::Reopen));
            expect_resume = matches!(first, Some((FileOp::Write, _))) && extension(&["wal"]);
            expect_poison =
                open_db && matches!(first, Some((FileOp::Sync, _))) && extension(&["wal", "seg"]);
        }
        previous = Some(s);
        if let Some(left) = clear_in.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                faults.clear();
            }
        }
        let cleared = clear_in == Some(0);
        let Some(d) = db.as_ref() else {
            // Opening failed: once the fault clears, open again, and find
            // everything acknowledged.
            if cleared {
                let reopened = Db::open_with(&path, options(&faults))
                    .unwrap_or_else(|e| panic!("{ctx}: open after the fault cleared: {e}"));
                model.reopened(&reopened, &ctx, false);
                db = Some(reopened);
            }
            continue;
        };
        let result = match s {
            Step::Put(i) => put(d, &mut model, *i, step),
            Step::Probe => {
                let r = put(d, &mut model, PROBE, step);
                took_writes = r.is_ok();
                // A process crash now: the files as they are, with no
                // checkpoint at close. What a failed write left in the WAL
                // or the segments would be replayed or loaded here.
                let image = scratch_dir();
                crash_image(&path, image.path());
                let copy = Db::open(image.path())
                    .unwrap_or_else(|e| panic!("{ctx}: the crash image does not open: {e}"));
                model.check_image(&copy, &ctx, took_writes);
                r
            }
            Step::Delete(i) => {
                let r = d.delete(&key(*i));
                match &r {
                    Ok(()) => model.acknowledged(key(*i), None),
                    Err(_) => model.failed(step, key(*i), None),
                }
                r
            }
            Step::Batch(..) | Step::LargeBatch(..) => {
                let (puts, deletes, value): (_, &[usize], ValueOf) = match s {
                    Step::Batch(puts, deletes) => (puts, deletes, value),
                    Step::LargeBatch(puts) => (puts, &[], large_value),
                    _ => unreachable!(),
                };
                let mut batch = WriteBatch::new();
                let puts: Vec<_> = puts.iter().map(|&i| (key(i), value(i, step))).collect();
                for (k, v) in &puts {
                    batch.put(k, v);
                }
                for &i in deletes {
                    batch.delete(&key(i));
                }
                let r = d.write(batch);
                let ok = r.is_ok();
                for (k, v) in &puts {
                    if ok {
                        model.acknowledged(k.clone(), Some(v.clone()));
                    } else {
                        model.failed(step, k.clone(), Some(v.clone()));
                    }
                }
                for &i in deletes {
                    if ok {
                        model.acknowledged(key(i), None);
                    } else {
                        model.failed(step, key(i), None);
                    }
                }
                if !ok {
                    model.failed_batches.push((step, puts));
                }
                r
            }
            Step::Compact => d.compact().map(drop),
            Step::Checkpoint => {
                let target = dir.path().join(format!("checkpoint-{step}"));
                let r = d.checkpoint(&target);
                if r.is_ok() {
                    // Opened without faults: it holds exactly what was
                    // acknowledged before the call.
                    let copy = Db::open(&target)
                        .unwrap_or_else(|e| panic!("{ctx}: the checkpoint does not open: {e}"));
                    assert_eq!(contents(&copy, &ctx), model.visible, "{ctx}: checkpoint");
                }
                r
            }
            Step::Reopen => {
                // What a failure did to the old instance is gone with it.
                expect_poison = false;
                expect_resume = false;
                let closed = db.take().unwrap().close();
                if let Err(e) = &closed {
                    assert!(is_write_error(e), "{ctx}: close: {e}");
                    outcome.errors += 1;
                }
                let strict = std::mem::take(&mut took_writes);
                match Db::open_with(&path, options(&faults)) {
                    Ok(reopened) => {
                        model.reopened(&reopened, &ctx, strict);
                        db = Some(reopened);
                    }
                    Err(e) => {
                        assert!(is_write_error(&e), "{ctx}: reopen: {e}");
                        outcome.errors += 1;
                    }
                }
                continue;
            }
        };
        if let Err(e) = &result {
            assert!(is_write_error(e), "{ctx}: {s:?} failed with {e}");
            outcome.errors += 1;
        }
        check_visible(d, &model, &ctx);
        if cleared
            && matches!(
                s,
                Step::Put(_)
                    | Step::Delete(_)
                    | Step::Batch(..)
                    | Step::LargeBatch(..)
                    | Step::Probe
            )
            && !outcome.resumed
            && !outcome.poisoned
        {
            match &result {
                Ok(()) => outcome.resumed = true,
                Err(Error::Poisoned { .. }) => outcome.poisoned = true,
                Err(e) => panic!("{ctx}: a write after the fault cleared failed: {e}"),
            }
            assert!(
                !(expect_resume && outcome.poisoned),
                "{ctx}: a failed WAL write poisoned the database"
            );
            assert!(
                !(expect_poison && outcome.resumed),
                "{ctx}: writes went on after a failed sync of {:?}",
                faults.first_hit()
            );
        }
    }
    outcome.hit |= faults.hits() > 0;
    // The fault clears; the database closes (maybe with an error) and
    // reopens with everything acknowledged.
    faults.clear();
    let mut strict = false;
    if let Some(d) = db.take() {
        strict = put(&d, &mut model, PROBE, 1_000).is_ok();
        if let Err(e) = d.close() {
            assert!(is_write_error(&e), "{}: close: {e}", context(usize::MAX));
            strict = false;
        }
    }
    let d = Db::open_with(&path, options(&faults))
        .unwrap_or_else(|e| panic!("{}: final open: {e}", context(usize::MAX)));
    model.reopened(&d, &context(usize::MAX), strict);
    // And it takes writes again.
    d.put(b"after", b"all").unwrap();
    outcome
}

#[test]
fn every_io_error_at_every_point_loses_nothing_acknowledged() {
    let all = std::env::var("KV_FAULTS").is_ok_and(|v| v == "all");
    let mut combos = Vec::new();
    for (i, op) in FileOp::ALL.into_iter().enumerate() {
        for (j, error) in FaultError::ALL.into_iter().enumerate() {
            for (k, mode) in [FaultMode::Once, FaultMode::Persistent]
                .into_iter()
                .enumerate()
            {
                // By default one mode per (op, error), alternating, so that
                // every op meets both errors and both modes.
                if all || (i + j + k) % 2 == 0 {
                    combos.push((op, error, mode));
                }
            }
        }
    }
    let mut points = 0u64;
    let mut report = Vec::new();
    for (op, error, mode) in combos {
        let (mut hits, mut errors, mut resumed, mut poisoned) = (0u64, 0, 0, 0);
        for n in 1.. {
            let outcome = run(op, error, mode, n);
            if !outcome.hit {
                break;
            }
            hits += 1;
            errors += outcome.errors;
            resumed += u64::from(outcome.resumed);
            poisoned += u64::from(outcome.poisoned);
            assert!(n < 5_000, "the workload never stops hitting {op}");
        }
        assert!(hits > 0, "the workload does no {op} at all");
        points += hits;
        report.push(format!(
            "{op:>6} {:<6} {:<10} {hits:>4} fault points, {errors:>4} calls failed, \
             writes resumed without reopen in {resumed}, refused until reopen in {poisoned}",
            error.name(),
            format!("{mode:?}"),
        ));
    }
    println!("fault points covered: {points}");
    for line in report {
        println!("  {line}");
    }
}

#[test]
fn a_full_disk_fails_writes_until_space_is_freed_then_they_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let db = Db::open_with(dir.path(), options(&faults)).unwrap();
    db.put(b"before", b"1").unwrap();
    faults.fail_next(FileOp::Write, FaultError::NoSpace, FaultMode::Persistent);
    for i in 0..5 {
        let err = db.put(format!("full-{i}").as_bytes(), b"x").unwrap_err();
        match err {
            Error::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull)
            }
            other => panic!("expected an I/O error, got {other}"),
        }
    }
    faults.clear();
    db.put(b"after", b"2").unwrap();
    assert_eq!(db.get(b"full-0").unwrap(), None);
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    let keys: Vec<_> = db.keys().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
}
