//! `Db::checkpoint`: a copy of the database as of one moment, opened as a
//! database of its own, taken while writers and compaction run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::contents;
use kv_engine::{Db, Error, Options, SyncPolicy};

fn options() -> Options {
    Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(16 << 10)
        .compaction_interval(Duration::from_millis(2))
        .compaction_threshold(0.3)
}

#[test]
fn a_checkpoint_opens_as_the_database_at_that_moment_and_both_go_on_alone() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let target = copies.path().join("copy");
    let db = Db::open_with(dir.path(), options()).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i}").as_bytes(), &i.to_le_bytes().repeat(20))
            .unwrap();
    }
    for i in (0..2000u32).step_by(3) {
        db.delete(format!("k{i}").as_bytes()).unwrap();
    }
    db.compact().unwrap();
    // Some data only in the active segment and the WAL.
    db.put(b"late", b"in the active segment").unwrap();
    let expected = contents(&db, "the source before the checkpoint");

    db.checkpoint(&target).unwrap();
    db.put(b"after", b"not in the copy").unwrap();
    db.delete(b"late").unwrap();

    let copy = Db::open_with(&target, options()).unwrap();
    assert_eq!(contents(&copy, "the checkpoint"), expected);
    assert_eq!(copy.get(b"after").unwrap(), None);

    // The copy shares sealed segment files with the source by hard link:
    // writing and compacting either must leave the other as it was.
    for i in 0..2000u32 {
        copy.put(format!("k{i}").as_bytes(), b"copy").unwrap();
        db.put(format!("k{i}").as_bytes(), b"source").unwrap();
    }
    copy.compact().unwrap();
    db.compact().unwrap();
    copy.close().unwrap();
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    let copy = Db::open_with(&target, options()).unwrap();
    for i in 0..2000u32 {
        let k = format!("k{i}");
        assert_eq!(
            db.get(k.as_bytes()).unwrap().as_deref(),
            Some(&b"source"[..])
        );
        assert_eq!(
            copy.get(k.as_bytes()).unwrap().as_deref(),
            Some(&b"copy"[..])
        );
    }
    assert_eq!(db.get(b"late").unwrap(), None);
    assert!(copy.get(b"late").unwrap().is_some());
    assert!(db.get(b"after").unwrap().is_some());
    assert_eq!(copy.get(b"after").unwrap(), None);
}

#[test]
fn the_target_must_be_new_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    db.put(b"k", b"v").unwrap();

    let full = copies.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    assert!(matches!(
        db.checkpoint(&full),
        Err(Error::CheckpointTarget { .. })
    ));
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    let file = copies.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        db.checkpoint(&file),
        Err(Error::CheckpointTarget { .. })
    ));

    let empty = copies.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    db.checkpoint(&empty).unwrap();
    let copy = Db::open(&empty).unwrap();
    assert_eq!(copy.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    drop(copy);

    // A checkpoint to the same place again is refused: it is not empty.
    assert!(matches!(
        db.checkpoint(&empty),
        Err(Error::CheckpointTarget { .. })
    ));
    // A nested target whose parents do not exist yet is made.
    db.checkpoint(copies.path().join("a/b/c")).unwrap();
    assert!(copies.path().join("a/b/c").join("CHECKPOINT").exists());
}

#[test]
fn the_target_must_not_be_inside_the_database() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("db");
    let db = Db::open_with(&dir, options()).unwrap();
    db.put(b"k", b"v").unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // Below it, below its wal/, and reached through `..` or a symbolic
    // link: each refused, and nothing is created.
    std::os::unix::fs::symlink(&dir, parent.path().join("link")).unwrap();
    for target in [
        dir.join("copy"),
        dir.join("wal/copy"),
        dir.join("new/deeper"),
        parent.path().join("elsewhere/../db/copy"),
        parent.path().join("link/copy"),
    ] {
        match db.checkpoint(&target) {
            Err(e @ Error::CheckpointTarget { .. }) => {
                assert!(e.to_string().contains("inside the database"), "{e}");
            }
            other => panic!("{}: {other:?}", target.display()),
        }
        assert!(!target.exists(), "{}", target.display());
    }
    let after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after, before);
    // A sibling whose name starts like the database's is fine.
    db.checkpoint(parent.path().join("db-copy")).unwrap();
}

#[test]
fn a_checkpoint_cut_short_leaves_no_target_and_is_cleaned_up_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let target = copies.path().join("snap");
    // What a crash in the middle leaves: the temporary directory, partly
    // filled. The target itself does not exist.
    let leftover = copies.path().join(".snap.kv-checkpoint-tmp");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("0000000001.seg"), b"half a segment").unwrap();
    assert!(!target.exists());

    let db = Db::open_with(dir.path(), options()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.checkpoint(&target).unwrap();
    assert!(!leftover.exists());
    let copy = Db::open(&target).unwrap();
    assert_eq!(copy.len(), 1);
}

/// Writer threads each put keys `t/0`, `t/1`, ... in order while
/// compaction runs; checkpoints taken meanwhile must each hold, for every
/// thread, exactly a prefix of its keys that includes every put
/// acknowledged before the call.
#[test]
fn checkpoints_under_concurrent_writes_are_prefixes_holding_everything_acknowledged() {
    const THREADS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), options()).unwrap());
    let acked: Arc<[AtomicU64; THREADS]> = Arc::new(Default::default());
    let stop = Arc::new(AtomicBool::new(false));
    let key = |t: usize, i: u64| format!("{t}/{i:08}").into_bytes();
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, acked, stop) = (Arc::clone(&db), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    db.put(&key(t, i), &i.to_le_bytes().repeat(16)).unwrap();
                    // Overwrites give compaction something to do.
                    if i > 0 && i.is_multiple_of(2) {
                        db.put(&key(t, i / 2), &(i / 2).to_le_bytes().repeat(16))
                            .unwrap();
                    }
                    i += 1;
                    acked[t].store(i, Ordering::Release);
                }
            })
        })
        .collect();

    for round in 0..6 {
        // Let the writers get ahead, then take a checkpoint.
        let floor = (round + 1) * 300;
        while acked.iter().any(|a| a.load(Ordering::Acquire) < floor) {
            std::thread::yield_now();
        }
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        let target = copies.path().join(format!("copy-{round}"));
        db.checkpoint(&target).unwrap();

        let copy = Db::open_with(&target, options().background_compaction(false)).unwrap();
        let mut count = [0u64; THREADS];
        for item in copy.iter() {
            let (k, v) = item.unwrap();
            let k = String::from_utf8(k).unwrap();
            let (t, i) = k.split_once('/').unwrap();
            let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(&*v, &i.to_le_bytes().repeat(16)[..], "{k}");
            count[t] += 1;
        }
        for t in 0..THREADS {
            // A prefix: keys 0..n all there, and nothing after.
            let n = count[t];
            assert!(copy.get(&key(t, n - 1)).unwrap().is_some());
            assert!(copy.get(&key(t, n)).unwrap().is_none());
            assert!(
                n >= before[t],
                "round {round}: thread {t} had {} acknowledged, the copy holds {n}",
                before[t]
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // The source kept working throughout and lost nothing.
    for t in 0..THREADS {
        let n = acked[t].load(Ordering::Acquire);
        assert!(db.get(&key(t, n - 1)).unwrap().is_some());
        assert_eq!(
            db.keys()
                .filter(|k| k.starts_with(format!("{t}/").as_bytes()))
                .count() as u64,
            n
        );
    }
}

/// Four threads checkpoint to one target at once, round after round, while
/// a writer sets every key to the same version in one batch at a time
/// (finding 5.1 of the correctness review). In every round exactly one call
/// succeeds and the others get `CheckpointTarget`; the copy opens with
/// every key at one version (one moment, not a mix of two copies); no
/// temporary directory is left.
#[test]
fn concurrent_checkpoints_to_one_target_never_mix() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 6;
    const KEYS: u32 = 150;
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), options()).unwrap();
    let set_all = |version: u64| {
        let mut batch = kv_engine::WriteBatch::new();
        let value = format!("{version:020}").repeat(3);
        for k in 0..KEYS {
            batch.put(format!("key-{k:04}").as_bytes(), value.as_bytes());
        }
        db.write(batch).unwrap();
    };
    set_all(0);
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    std::thread::scope(|scope| {
        // Stops the writer however this scope ends, a failed assertion
        // included, so that a failure cannot hang the test.
        let _stop = StopOnDrop(&stop);
        scope.spawn(|| {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                set_all(version);
                written.store(version, Ordering::Relaxed);
                version += 1;
            }
        });
        for round in 0..ROUNDS {
            let name = format!("snap-{round}");
            let target = copies.path().join(&name);
            let barrier = std::sync::Barrier::new(THREADS);
            let results: Vec<_> = std::thread::scope(|s| {
                let calls: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            db.checkpoint(&target)
                        })
                    })
                    .collect();
                calls.into_iter().map(|c| c.join().unwrap()).collect()
            });
            let won = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "round {round}: {results:?}");
            for result in &results {
                match result {
                    Ok(()) | Err(Error::CheckpointTarget { .. }) => {}
                    Err(other) => panic!("round {round}: a losing call failed with {other}"),
                }
            }

            let copy = Db::open_with(&target, options().background_compaction(false)).unwrap();
            let contents = contents(&copy, &format!("round {round}"));
            assert_eq!(contents.len(), KEYS as usize, "round {round}");
            let versions: std::collections::BTreeSet<&Vec<u8>> = contents.values().collect();
            assert_eq!(
                versions.len(),
                1,
                "round {round}: the copy mixes versions {:?}",
                versions
                    .iter()
                    .map(|v| String::from_utf8_lossy(&v[..20]).into_owned())
                    .collect::<Vec<_>>()
            );
            copy.close().unwrap();

            let left: Vec<_> = std::fs::read_dir(copies.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!(".{name}")))
                .collect();
            assert!(left.is_empty(), "round {round}: left behind {left:?}");
        }
    });
    assert!(written.load(Ordering::Relaxed) > 0);
    db.close().unwrap();
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The temporary directories a checkpoint to `snap` removes: a crashed
/// call's (its `LOCK` can be locked) and the old fixed name's; never one
/// without a `LOCK` (a call between its mkdir and its lock), one whose lock
/// is held (a call in progress), or another target's.
#[test]
fn only_unlocked_leftovers_of_the_same_target_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let make = |name: &str, lock: bool| {
        let path = copies.path().join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("0000000001.seg"), b"half a segment").unwrap();
        if lock {
            std::fs::write(path.join("LOCK"), b"").unwrap();
        }
        path
    };
    let crashed = make(".snap.kv-checkpoint-tmp.4000000.7", true);
    let starting = make(".snap.kv-checkpoint-tmp.4000000.8", false);
    let running = make(".snap.kv-checkpoint-tmp.4000000.9", true);
    let held = std::fs::File::open(running.join("LOCK")).unwrap();
    held.try_lock().unwrap();
    let other_target = make(".snap2.kv-checkpoint-tmp.4000000.7", true);
    let not_ours = make(".snap.kv-checkpoint-tmp.backup", true);

    let db = Db::open_with(dir.path(), options()).unwrap();
    db.put(b"k", b"v").unwrap();
    let target = copies.path().join("snap");
    db.checkpoint(&target).unwrap();
    assert!(!crashed.exists());
    for kept in [&starting, &running, &other_target, &not_ours] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    assert!(!target.join("LOCK.tmp").exists());
    drop(held);
    let copy = Db::open(&target).unwrap();
    assert_eq!(copy.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
