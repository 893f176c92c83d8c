//! The life of a segment's files: hint files written once by one writer,
//! supersession that stays transitive while an old file lingers, the
//! segments a caller's record lists checked at open, ids never reused, and
//! a failed directory sync after a compaction output poisoning the log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kv_format::Record;
use kv_fs::{FaultInjector, Faults, FileOp};
use kv_log::{Durable, Log, LogError, LogOptions, LogPosition, LogReader};

fn small() -> LogOptions {
    LogOptions {
        segment_size: 4096,
        ..LogOptions::default()
    }
}

/// A log whose segment 1 is sealed and holds `n` records.
fn sealed_first(dir: &Path, n: u64) -> Log {
    let mut log = Log::open(dir, small(), |_, _| {}).unwrap();
    for i in 0..n {
        let key = format!("key-{i:05}");
        log.append(&Record::put(i + 1, key.as_bytes(), b"value-value-value"))
            .unwrap();
    }
    log.seal_active().unwrap();
    log
}

/// Review §0: two threads wrote one segment's hint file through the same
/// temporary name; one renamed the other's truncated file into place or
/// failed with ENOENT, and a reader saw a short published hint file.
#[test]
fn concurrent_hint_writes_of_one_segment_never_fail_or_publish_a_short_file() {
    for _ in 0..100 {
        let dir = tempfile::tempdir().unwrap();
        let log = sealed_first(dir.path(), 100);
        let reader = log.reader();
        let segment = Arc::clone(reader.segments().get(1).unwrap());
        let hint = dir.path().join("0000000001.hint");
        let start = Arc::new(std::sync::Barrier::new(3));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (hint, start, done) = (hint.clone(), Arc::clone(&start), Arc::clone(&done));
            std::thread::spawn(move || {
                start.wait();
                let mut lengths = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(bytes) = std::fs::read(&hint) {
                        lengths.push(bytes.len());
                    }
                }
                lengths
            })
        };
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (segment, start) = (Arc::clone(&segment), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    segment.write_hint()
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let full = std::fs::read(&hint).unwrap().len();
        let lengths = watcher.join().unwrap();
        assert!(
            lengths.iter().all(|&l| l == full),
            "a short hint file was published: {lengths:?} (whole: {full})"
        );
        assert!(segment.read_hint_file().unwrap().is_some());
    }
}

#[test]
fn a_hint_is_never_written_for_a_segment_that_can_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    log.append(&Record::put(1, b"k", b"v")).unwrap();
    log.flush().unwrap();
    let active = Arc::clone(log.reader().segments().get(1).unwrap());
    assert!(matches!(
        active.write_hint(),
        Err(LogError::NotSealed { segment: 1 })
    ));
    assert!(!dir.path().join("0000000001.hint").exists());
}

/// Review finding 4 at the log's level: segment 1 sealed at the checkpoint
/// length and hinted, then the caller's record says (1, L) and segment 1
/// is active again: its hint file goes, and the segment does not claim one.
#[test]
fn a_segment_made_active_again_loses_its_hint_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 10);
    let end = {
        let reader = log.reader();
        let segments = reader.segments();
        let first = segments.get(1).unwrap();
        first.write_hint().unwrap();
        LogPosition {
            segment: 1,
            offset: first.len(),
        }
    };
    drop(log);
    assert!(dir.path().join("0000000001.hint").exists());
    let mut log = Log::recover(dir.path(), small(), Some(&Durable::at(end))).unwrap();
    assert_eq!(log.active_id(), 1);
    assert!(!dir.path().join("0000000001.hint").exists());
    assert!(!log.reader().segments().get(1).unwrap().has_hint());
    log.append(&Record::put(100, b"later", b"v")).unwrap();
    log.seal_active().unwrap();
    let reader = log.reader();
    let segments = reader.segments();
    let first = segments.get(1).unwrap();
    first.write_hint().unwrap();
    assert!(first.read_hint_file().unwrap().is_some());
}

/// A compaction output of `ids` holding every record of them, not finished.
fn output_of(reader: &LogReader, ids: &[u32]) -> kv_log::CompactionOutput {
    let inputs: Vec<_> = ids
        .iter()
        .map(|id| Arc::clone(reader.segments().get(*id).unwrap()))
        .collect();
    let mut output = reader.create_output(ids).unwrap();
    for input in &inputs {
        input
            .for_each_record(|loc, _| {
                output
                    .append_encoded(input.read(loc.offset, loc.len).unwrap())
                    .unwrap();
            })
            .unwrap();
    }
    output
}

/// Compacts `ids` into one output, retires them, and returns its id.
fn compact_all(reader: &LogReader, ids: &[u32]) -> u32 {
    let output = output_of(reader, ids).finish().unwrap();
    reader.retire(ids);
    output.id()
}

/// A retired input whose file could not be unlinked stays named by every
/// later output: compacting the output that superseded it must not leave
/// it on disk with no header naming it (its old records would come back).
#[test]
fn a_lingering_superseded_file_is_named_by_the_next_output_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = sealed_first(dir.path(), 10);
    let first = dir.path().join("0000000001.seg");
    let kept = std::fs::read(&first).unwrap();
    let o1 = compact_all(&log.reader(), &[1]);
    assert!(!first.exists(), "retirement unlinks the input");
    // As if the unlink had failed.
    std::fs::write(&first, &kept).unwrap();
    log.seal_active().unwrap();
    let o2 = compact_all(&log.reader(), &[o1]);
    let reader = log.reader();
    let segments = reader.segments();
    let out = segments.get(o2).unwrap();
    assert!(out.supersedes().contains(&o1));
    assert!(out.supersedes().contains(&1), "{:?}", out.supersedes());
    drop(segments);
    drop(log);
    // At open the lingering file goes.
    Log::open(dir.path(), small(), |_, _| {}).unwrap();
    assert!(!first.exists());
}

#[test]
fn a_segment_the_callers_record_lists_must_exist_or_be_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 10);
    let end = log.position();
    let listed = vec![1, end.segment];
    drop(log);
    let durable = Durable {
        end,
        segments: Some(listed),
        next_id: 0,
    };
    Log::recover(dir.path(), small(), Some(&durable)).unwrap();
    std::fs::remove_file(dir.path().join("0000000001.seg")).unwrap();
    match Log::recover(dir.path(), small(), Some(&durable)) {
        Err(LogError::Corruption { path, reason, .. }) => {
            assert!(path.ends_with("0000000001.seg"), "{}", path.display());
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn segment_ids_are_not_reused_below_the_recorded_floor() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 10);
    let end = log.position();
    drop(log);
    let durable = Durable {
        end,
        segments: None,
        next_id: 40,
    };
    let mut log = Log::recover(dir.path(), small(), Some(&durable)).unwrap();
    assert_eq!(log.next_segment_id(), 40);
    log.append(&Record::put(50, b"k", b"v")).unwrap();
    log.seal_active().unwrap();
    assert_eq!(log.active_id(), 40);
}

/// Review finding 5.11: the directory sync after a compaction output's
/// rename failed, and compaction went on as if nothing happened. A failed
/// sync poisons, there as everywhere.
#[test]
fn a_failed_directory_sync_after_an_output_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let options = LogOptions {
        faults: Faults::from(Arc::clone(&faults)),
        ..small()
    };
    let mut log = Log::open(dir.path(), options, |_, _| {}).unwrap();
    log.append(&Record::put(1, b"k", b"v")).unwrap();
    log.seal_active().unwrap();
    let reader = log.reader();
    let output = output_of(&reader, &[1]);
    // `finish` syncs the output, renames it, then syncs the directory.
    faults.fail_nth_sync(faults.syncs() + 2);
    assert!(output.finish().is_err());
    assert_eq!(
        faults.first_hit(),
        Some((FileOp::Sync, dir.path().to_path_buf()))
    );
    assert!(log.poison_cause().is_some());
    assert!(matches!(
        log.append(&Record::put(2, b"k", b"w")),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        reader.create_output(&[1]),
        Err(LogError::Poisoned { .. })
    ));
}

/// A checkpoint copy holds its segments while it links them: one retired
/// meanwhile has lost its file, and is copied from its map instead.
#[test]
fn a_segment_retired_before_it_is_copied_is_copied_from_its_map() {
    let dir = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 20);
    let reader = log.reader();
    let held = Arc::clone(reader.segments().get(1).unwrap());
    let bytes = held.bytes().to_vec();
    reader.retire(&[1]);
    assert!(!held.path().exists());
    let end = kv_log::copy_segments(&[Arc::clone(&held)], to.path()).unwrap();
    assert_eq!(
        std::fs::read(to.path().join("0000000001.seg")).unwrap(),
        bytes
    );
    let mut seen = 0;
    let copy = Log::open_at(to.path(), small(), Some(end), |_, _| seen += 1).unwrap();
    assert_eq!(seen, 20);
    drop(copy);
}

/// Review finding 5.5: a hint file is never read whole before its size is
/// checked: one longer than any hint of its segment can be is ignored (the
/// segment is scanned), whatever it holds.
#[test]
fn a_hint_file_larger_than_its_segment_allows_is_ignored_unread() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 5);
    let len = log.reader().segments().get(1).unwrap().len();
    drop(log);
    let hint = dir.path().join("0000000001.hint");
    std::fs::File::create(&hint)
        .unwrap()
        .set_len(len + (64 << 20))
        .unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    log.seal_active().unwrap();
    let reader = log.reader();
    let segments = reader.segments();
    let mut n = 0;
    let source = segments.get(1).unwrap().load(|_, _| n += 1).unwrap();
    assert_eq!(source, kv_log::LoadSource::Scan);
    assert_eq!(n, 5);
}

/// Review finding 5.8: between a compaction output's `finish` and the
/// retirement of its inputs, the set holds both; its live ids (what a
/// checkpoint copies and the engine's marker lists) leave the inputs out.
#[test]
fn live_ids_leave_out_inputs_an_output_in_the_set_supersedes() {
    let dir = tempfile::tempdir().unwrap();
    let log = sealed_first(dir.path(), 3);
    let reader = log.reader();
    let output = output_of(&reader, &[1]).finish().unwrap();
    let set = reader.segments();
    assert!(set.get(1).is_some(), "not retired yet");
    let live = set.live_ids();
    assert!(!live.contains(&1), "{live:?}");
    assert!(live.contains(&output.id()));
    assert!(live.contains(&log.active_id()));
}
