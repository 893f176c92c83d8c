//! Segment retirement checked with loom: every interleaving (up to a bound
//! on preemptions) of a reader holding segments, the writer changing the
//! segment set, and compaction retiring segments. Built only with
//! `--cfg loom`; run with `cargo xtask loom`.
//!
//! The models use real files (in memory, under /dev/shm where there is
//! one): what must hold is about them. A reader that loaded the segment set
//! reads the bytes it expects for as long as it holds the set, even after
//! the segment is retired and its file unlinked; a retired segment's file
//! is gone as soon as it is retired, whoever holds it; no change to the set
//! is lost.
//!
//! NOTE: as in kv-index's models, the thread that changes things runs on
//! the model's main thread, and the others are spawned: loom's DPOR
//! remembers only the last access to each object, and finds the races
//! from that side.

use std::path::{Path, PathBuf};

use kv_format::{Record, decode};
use loom::thread;

use crate::sync::Arc;
use crate::{Log, LogOptions, LogReader};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// A log whose segment 1 is sealed and holds one record `key1`, and whose
/// segment 2 is active and holds `key2`.
fn two_segments(dir: &Path) -> Log {
    let mut log = Log::open(dir, LogOptions::default(), |_, _| {}).unwrap();
    log.append(&Record::put(1, b"key1", b"value1")).unwrap();
    log.seal_active().unwrap();
    log.append(&Record::put(2, b"key2", b"value2")).unwrap();
    log.flush().unwrap();
    log
}

/// What a reader sees of segment 1: `None` if it loaded the set after the
/// retirement; else whether the file existed when it had read the record.
fn read_segment_1(reader: &LogReader) -> Option<bool> {
    let set = reader.segments();
    let segment = Arc::clone(set.get(1)?);
    drop(set);
    let record = decode(&segment.bytes()[segment.data_start() as usize..])
        .expect("a held segment keeps valid bytes")
        .record;
    assert_eq!((record.key, record.value), (&b"key1"[..], &b"value1"[..]));
    Some(segment.path().exists())
}

fn ids(reader: &LogReader) -> Vec<u32> {
    reader.segments().iter().map(|s| s.id()).collect()
}

fn path_of(dir: &Path, id: u32) -> PathBuf {
    dir.join(crate::segment_file_name(id))
}

/// Compaction retires segment 1 while a reader may hold it: the reader
/// reads its record from the map whether or not the file is still there
/// (retirement unlinks it at once); after the retirement the file is gone
/// whoever still holds the segment, so no holder deletes a file later.
#[test]
fn a_retired_segment_stays_readable_to_its_holders_and_its_file_goes_at_retirement() {
    model(|| {
        let dir = scratch();
        let log = two_segments(dir.path());
        let reader = log.reader();
        let path = path_of(dir.path(), 1);
        let held = {
            let reader = reader.clone();
            thread::spawn(move || read_segment_1(&reader))
        };
        // The retiring side also holds the segment, as a compaction run
        // holds its inputs.
        let input = Arc::clone(reader.segments().get(1).unwrap());
        reader.retire(&[1]);
        assert!(!path.exists(), "a retired segment's file is still there");
        assert!(input.is_retired());
        drop(input);
        held.join().unwrap();
        assert!(!path.exists());
        assert_eq!(ids(&reader), [2]);
        drop(log);
    });
}

/// The writer rotates to a new segment while compaction finishes an
/// output and retires its input, and a reader loads the set: each sees a
/// set in id order that lost no change of the others.
#[test]
fn concurrent_changes_of_the_segment_set_lose_nothing() {
    model(|| {
        let dir = scratch();
        let mut log = two_segments(dir.path());
        let reader = log.reader();
        let compactor = {
            let reader = reader.clone();
            thread::spawn(move || {
                let input = Arc::clone(reader.segments().get(1).unwrap());
                let mut output = reader.create_output(&[1]).unwrap();
                let bytes = &input.bytes()[input.data_start() as usize..];
                output.append_encoded(bytes).unwrap();
                let output = output.finish().unwrap();
                reader.retire(&[1]);
                output.id()
            })
        };
        let observer = {
            let reader = reader.clone();
            thread::spawn(move || {
                let seen = ids(&reader);
                assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
                assert!(seen.contains(&2), "the active segment vanished: {seen:?}");
            })
        };
        // The writer seals segment 2 and begins a new one.
        log.seal_active().unwrap();
        let active = log.active_id();
        let output = compactor.join().unwrap();
        observer.join().unwrap();
        assert_ne!(output, active, "two segments got one id");
        let mut expected = vec![2, active, output];
        expected.sort_unstable();
        assert_eq!(ids(&reader), expected);
        assert!(!path_of(dir.path(), 1).exists());
        drop(log);
    });
}
