//! Power loss, atomic batches and failed syncs.
//!
//! Power loss is simulated on a copy of the directory taken while the `Db`
//! is open (what a killed process leaves): then everything that was not yet
//! durable is cut or zeroed at random (the WAL's frames after its last sync,
//! the segments after the last checkpoint), and recovery must give a prefix of
//! the acknowledged history, with no holes, that includes everything
//! acknowledged before the last sync.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    Rng, contents, copy_dir, crash_image, files_with_suffix, is_compaction_output, read_marker,
    wal_frames_end,
};
use kv_engine::{Db, Error, Options, SyncPolicy, WAL_DIR_NAME, WriteBatch};
use kv_format::Record;

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Vec<u8>)>),
}

fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(k, v) => {
            model.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            model.remove(k);
        }
        Op::Batch(puts) => {
            for (k, v) in puts {
                model.insert(k.clone(), v.clone());
            }
        }
    }
}

/// One power-loss round: returns how many acknowledged operations survived.
fn power_loss_round(seed: u64, policy: SyncPolicy) -> (usize, usize, usize) {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    // Background compaction off: the image is copied file by file, which
    // must not race with segments being retired. Crashes in the middle of
    // compaction are tested in compaction.rs.
    let options = Options::default()
        .sync(policy)
        .segment_size(8 << 10)
        .max_wal_size(16 << 10)
        .background_compaction(false);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    let mut history = Vec::new();
    // The WAL's durable frames at the last sync: (file, end of its frames;
    // the file goes on with the zeros allocated ahead).
    let mut synced: (usize, Vec<(PathBuf, u64)>) = (0, Vec::new());
    let n = 300 + rng.below(300);
    for i in 0..n {
        let k = format!("key-{}", rng.below(60)).into_bytes();
        let op = match rng.below(10) {
            0..=5 => Op::Put(
                k,
                format!("v{i}-").repeat(1 + (i % 9) as usize).into_bytes(),
            ),
            6 | 7 => Op::Delete(k),
            _ => Op::Batch(
                (0..3)
                    .map(|j| {
                        (
                            format!("batch-{}", (i + j) % 20).into_bytes(),
                            format!("b{i}.{j}").into_bytes(),
                        )
                    })
                    .collect(),
            ),
        };
        match &op {
            Op::Put(k, v) => db.put(k, v).unwrap(),
            Op::Delete(k) => db.delete(k).unwrap(),
            Op::Batch(puts) => {
                let mut b = WriteBatch::new();
                for (k, v) in puts {
                    b.put(k, v);
                }
                db.write(b).unwrap();
            }
        }
        history.push(op);
        if rng.next_u64().is_multiple_of(97) {
            db.sync().unwrap();
            let wal = files_with_suffix(&dir.path().join(WAL_DIR_NAME), ".wal");
            synced = (
                history.len(),
                wal.iter().map(|p| (p.clone(), wal_frames_end(p))).collect(),
            );
        }
    }
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    drop(db);

    // Power loss on the image. The WAL: only its last file can hold
    // anything unsynced (rotation syncs the file it leaves); at a random
    // point after what was synced, cut its frames, or zero them up to the
    // end of the frames (frames copied into the space allocated ahead that
    // never reached the disk read as zeros, and the zeros after them stay).
    let wal_dir = image.path().join(WAL_DIR_NAME);
    if policy != SyncPolicy::Always
        && let Some(last) = files_with_suffix(&wal_dir, ".wal").pop()
    {
        let name = last.file_name().unwrap().to_owned();
        let durable = synced
            .1
            .iter()
            .find(|(p, _)| p.file_name().unwrap() == name)
            .map_or(kv_wal::FILE_HEADER_LEN as u64, |&(_, len)| len);
        let len = wal_frames_end(&last);
        if len > durable {
            let keep = durable + rng.below(len - durable + 1);
            if rng.next_u64().is_multiple_of(2) {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&last)
                    .unwrap()
                    .set_len(keep)
                    .unwrap();
            } else {
                let mut bytes = std::fs::read(&last).unwrap();
                bytes[keep as usize..len as usize].fill(0);
                std::fs::write(&last, bytes).unwrap();
            }
        }
    }
    // The segments: whatever the writer appended after the last checkpoint
    // may be lost or garbled: cut it or zero it. Compaction outputs are
    // synced before they get their name, so a power loss leaves them whole.
    let marker = read_marker(image.path());
    let (cp_segment, cp_offset) = (marker.segment, marker.segment_offset);
    for seg in files_with_suffix(image.path(), ".seg") {
        let id: u32 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        if is_compaction_output(&std::fs::read(&seg).unwrap()) {
            continue;
        }
        let from = match id.cmp(&cp_segment) {
            std::cmp::Ordering::Less => continue,
            std::cmp::Ordering::Equal => cp_offset,
            std::cmp::Ordering::Greater => 32,
        };
        let len = file_len(&seg);
        if len <= from {
            continue;
        }
        let at = from + rng.below(len - from);
        let mut bytes = std::fs::read(&seg).unwrap();
        if rng.next_u64().is_multiple_of(2) {
            bytes.truncate(at as usize);
        } else {
            bytes[at as usize..].fill(0);
        }
        std::fs::write(&seg, bytes).unwrap();
    }

    let db = Db::open_with(image.path(), options).unwrap();
    let recovered = contents(
        &db,
        &format!("seed {seed}, {policy:?}: the recovered database"),
    );
    // Find the prefix of the history the recovered state is.
    let mut model = BTreeMap::new();
    let mut prefixes = Vec::new();
    if recovered == model {
        prefixes.push(0);
    }
    for (i, op) in history.iter().enumerate() {
        apply(&mut model, op);
        if recovered == model {
            prefixes.push(i + 1);
        }
    }
    assert!(
        !prefixes.is_empty(),
        "seed {seed}, {policy:?}: the recovered state is no prefix of the history"
    );
    let survived = *prefixes.last().unwrap();
    assert!(
        survived >= synced.0,
        "seed {seed}, {policy:?}: {} operations were synced but only {survived} survived",
        synced.0
    );
    if policy == SyncPolicy::Always {
        assert_eq!(
            survived,
            history.len(),
            "seed {seed}: an acknowledged write was lost"
        );
    }
    // The database works on after recovery.
    db.put(b"after", b"recovery").unwrap();
    (survived, synced.0, history.len())
}

#[test]
fn power_loss_recovers_a_prefix_of_the_history() {
    let rounds: u64 = std::env::var("KV_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut lost_some = 0;
    for r in 0..rounds {
        let (survived, _, total) = power_loss_round(0xA11CE + r * 104_729, SyncPolicy::Never);
        if survived < total {
            lost_some += 1;
        }
    }
    // The simulation really cut unsynced data in most rounds.
    assert!(
        lost_some > 0,
        "no round lost anything: the simulation cut nothing"
    );
}

#[test]
fn power_loss_under_always_loses_nothing_acknowledged() {
    for r in 0..10 {
        power_loss_round(0xB0B + r * 7_919, SyncPolicy::Always);
    }
}

#[test]
fn a_batch_is_all_or_nothing_whatever_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().sync(SyncPolicy::Never);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    db.put(b"before", b"1").unwrap();
    let mut batch = WriteBatch::new();
    for i in 0..50 {
        batch.put(format!("batch-{i}").as_bytes(), &[i as u8; 40]);
    }
    batch.delete(b"before");
    db.write(batch).unwrap();
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    drop(db);
    let wal = files_with_suffix(&image.path().join(WAL_DIR_NAME), ".wal")
        .pop()
        .unwrap();
    // The file is the frames, then the zeros allocated ahead of them.
    let mut full = std::fs::read(&wal).unwrap();
    let allocated_len = full.len();
    full.truncate(wal_frames_end(&wal) as usize);
    // The batch is the last frame: about 50 * 63 bytes. Cut inside it at
    // many points, each in a fresh copy: the file cut there, or (every
    // other point) the rest of the file zeros up to its allocated length.
    let batch_len = (0..50)
        .map(|i| Record::put(0, format!("batch-{i}").as_bytes(), &[0; 40]).encoded_len())
        .sum::<usize>()
        + Record::tombstone(0, b"before").encoded_len();
    for (i, back) in (1..batch_len).step_by(97).enumerate() {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(image.path(), trial.path());
        let trial_wal = trial
            .path()
            .join(WAL_DIR_NAME)
            .join(wal.file_name().unwrap());
        let mut bytes = full[..full.len() - back].to_vec();
        if i % 2 == 1 {
            bytes.resize(allocated_len, 0);
        }
        std::fs::write(&trial_wal, &bytes).unwrap();
        let db = Db::open_with(trial.path(), options.clone()).unwrap();
        let present = (0..50)
            .filter(|i| db.contains_key(format!("batch-{i}").as_bytes()).unwrap())
            .count();
        assert_eq!(
            present, 0,
            "cut {back} bytes from the end: {present} of 50 batch keys"
        );
        assert!(
            db.contains_key(b"before").unwrap(),
            "the batch's delete applied alone"
        );
    }
    // Uncut, all of it.
    let db = Db::open_with(image.path(), options).unwrap();
    assert_eq!(db.len(), 50);
    assert!(!db.contains_key(b"before").unwrap());
}

#[test]
fn a_failed_sync_refuses_later_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(kv_wal::FaultInjector::new());
    let mut options = Options::default().sync(SyncPolicy::Always);
    options.faults = Some(Arc::clone(&faults));
    let db = Db::open_with(dir.path(), options).unwrap();
    db.put(b"acknowledged", b"yes").unwrap();
    faults.fail_next_sync();
    let err = db.put(b"failed", b"?").unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::Poisoned { .. }),
        "{err}"
    );
    // Never retried and then acknowledged: every later write is refused.
    assert!(matches!(
        db.put(b"later", b"no"),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        db.delete(b"acknowledged"),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(db.sync(), Err(Error::Poisoned { .. })));
    // Reads go on.
    assert_eq!(
        db.get(b"acknowledged").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(db.get(b"failed").unwrap(), None);
    assert!(db.close().is_err());

    let db = Db::open(dir.path()).unwrap();
    assert_eq!(
        db.get(b"acknowledged").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(db.get(b"later").unwrap(), None);
    db.put(b"after-reopen", b"works").unwrap();
}

#[test]
fn a_failed_wal_write_fails_its_group_and_later_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(kv_wal::FaultInjector::new());
    let mut options = Options::default().sync(SyncPolicy::Never);
    options.faults = Some(Arc::clone(&faults));
    let db = Db::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        db.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    faults.fail_next_write();
    assert!(matches!(db.put(b"failed", b"?"), Err(Error::Io { .. })));
    // Not visible, and not poisoned: the next write goes through.
    assert_eq!(db.get(b"failed").unwrap(), None);
    db.put(b"later", b"yes").unwrap();
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    for i in 0..10 {
        assert!(db.contains_key(format!("k{i}").as_bytes()).unwrap());
    }
    assert!(
        !db.contains_key(b"failed").unwrap(),
        "the failed write came back"
    );
    assert_eq!(db.get(b"later").unwrap().as_deref(), Some(&b"yes"[..]));
}

#[test]
fn interval_policy_syncs_without_further_writes() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(kv_wal::FaultInjector::new());
    let mut options =
        Options::default().sync(SyncPolicy::Interval(std::time::Duration::from_millis(5)));
    options.faults = Some(Arc::clone(&faults));
    let db = Db::open_with(dir.path(), options).unwrap();
    let before = faults.syncs();
    db.put(b"k", b"v").unwrap();
    // The writer thread wakes at the deadline by itself; wait for the sync
    // it must make (bounded: this asserts that it happens, not how fast).
    let mut waited = 0;
    while faults.syncs() == before {
        std::thread::sleep(std::time::Duration::from_millis(5));
        waited += 1;
        assert!(waited < 2_000, "no sync 10 s after an Interval(5 ms) write");
    }
}

#[test]
fn checkpoints_drop_the_wal_and_reopen_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(16 << 10)
        .max_wal_size(8 << 10);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    let mut model = HashMap::new();
    for i in 0..3_000u32 {
        let k = format!("key-{}", i % 400).into_bytes();
        let v = format!("value-{i}").into_bytes();
        db.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    db.sync().unwrap();
    // Checkpoints kept the WAL small: it holds at most about one
    // checkpoint's worth of writes, not all 3,000.
    let wal_bytes: u64 = files_with_suffix(&dir.path().join(WAL_DIR_NAME), ".wal")
        .iter()
        .map(|p| wal_frames_end(p))
        .sum();
    assert!(wal_bytes < 64 << 10, "the WAL holds {wal_bytes} bytes");
    drop(db);
    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.len(), model.len());
    for (k, v) in &model {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
}

/// A writer with nothing to do trims the WAL (2 s after the last write):
/// the disk the WAL held comes back without a close, and a copy of the
/// directory taken then (what a kill -9 leaves) still has every write.
#[test]
fn an_idle_writer_trims_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Options::default().sync(SyncPolicy::Never)).unwrap();
    for i in 0..2_000u32 {
        db.put(&i.to_le_bytes(), &[7u8; 100]).unwrap();
    }
    let written = db.stats().wal_bytes;
    assert!(written > 200_000, "{written} bytes of WAL");
    // Bounded: the trim is due 2 s after the last write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while db.stats().wal_bytes > written / 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL still holds {} bytes",
            db.stats().wal_bytes
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // What a kill -9 leaves now: every write is in the segments.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    drop(db);
    let reopened = Db::open(copy.path()).unwrap();
    for i in 0..2_000u32 {
        assert_eq!(reopened.get(&i.to_le_bytes()).unwrap().unwrap(), [7u8; 100]);
    }
}
