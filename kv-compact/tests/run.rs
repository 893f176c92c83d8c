//! One compaction run: what is copied, what is dropped, and that a
//! concurrent write always wins.

use std::sync::Arc;

use kv_compact::{CompactError, Policy, compact};
use kv_format::{Record, RecordKind, decode};
use kv_index::{Entry, Index};
use kv_log::{Location, Log, LogOptions, Segment};

fn entry(loc: Location) -> Entry {
    Entry {
        segment: loc.segment,
        offset: loc.offset,
        len: loc.len,
        expires_at: 0,
        tombstone: false,
    }
}

/// Writes records as the engine would (index updated for every put,
/// removed for every delete), then seals the segment.
fn write(log: &mut Log, index: &Index, ops: &[(u64, &str, Option<&str>)]) {
    for &(seq, key, value) in ops {
        match value {
            Some(v) => {
                let loc = log
                    .append(&Record::put(seq, key.as_bytes(), v.as_bytes()))
                    .unwrap();
                index.insert(key.as_bytes(), entry(loc));
            }
            None => {
                log.append(&Record::tombstone(seq, key.as_bytes())).unwrap();
                index.remove(key.as_bytes());
            }
        }
    }
    log.seal_active().unwrap();
}

struct Rule {
    keep_tombstones: bool,
}

impl Policy for Rule {
    fn keep_tombstone(&self, _key: &[u8], _seq: u64) -> bool {
        self.keep_tombstones
    }
}

fn setup() -> (tempfile::TempDir, Log, Index) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    (dir, log, Index::new())
}

fn segment(log: &Log, id: u32) -> Arc<Segment> {
    Arc::clone(log.reader().segments().get(id).unwrap())
}

fn value_of(log: &Log, index: &Index, key: &str) -> Option<Vec<u8>> {
    let e = index.get(key.as_bytes())?;
    let set = log.reader().segments();
    let bytes = set
        .read(Location {
            segment: e.segment,
            offset: e.offset,
            len: e.len,
        })
        .unwrap();
    Some(decode(bytes).unwrap().record.value.to_vec())
}

#[test]
fn live_puts_are_copied_and_dead_ones_dropped() {
    let (_dir, mut log, index) = setup();
    write(
        &mut log,
        &index,
        &[
            (1, "a", Some("a1")),
            (2, "b", Some("b1")),
            (3, "a", Some("a2")),
            (4, "c", Some("c1")),
        ],
    );
    let out = compact(
        &log.reader(),
        &index,
        &[segment(&log, 1)],
        &mut Rule {
            keep_tombstones: true,
        },
    )
    .unwrap();
    assert_eq!(out.counts.records_copied, 3);
    assert_eq!(out.counts.records_dropped, 1);
    assert_eq!(out.counts.entries_switched, 3);
    assert_eq!(out.inputs, vec![1]);
    for (k, v) in [("a", "a2"), ("b", "b1"), ("c", "c1")] {
        assert_eq!(index.get(k.as_bytes()).unwrap().segment, out.output.id());
        assert_eq!(value_of(&log, &index, k).unwrap(), v.as_bytes());
    }
    assert!(
        log.reader().segments().get(1).is_none(),
        "the input was not retired"
    );
    assert!(out.output.has_hint());
}

#[test]
fn tombstones_follow_the_policy_and_never_outlive_a_newer_put() {
    let (_dir, mut log, index) = setup();
    write(
        &mut log,
        &index,
        &[(1, "gone", Some("x")), (2, "back", Some("y"))],
    );
    write(
        &mut log,
        &index,
        &[
            (3, "gone", None),
            (4, "back", None),
            (5, "back", Some("again")),
        ],
    );
    // Segment 2 holds two tombstones; "back" was written again after its
    // delete, so its tombstone is never needed.
    let kept = compact(
        &log.reader(),
        &index,
        &[segment(&log, 2)],
        &mut Rule {
            keep_tombstones: true,
        },
    )
    .unwrap();
    assert_eq!(kept.counts.tombstones_kept, 1);
    assert_eq!(kept.counts.tombstones_dropped, 1);
    let mut tombstones = Vec::new();
    kept.output
        .for_each_record(|_, r| {
            if r.kind == RecordKind::Tombstone {
                tombstones.push(r.key.to_vec());
            }
        })
        .unwrap();
    assert_eq!(tombstones, vec![b"gone".to_vec()]);

    // When the policy says no older record can exist, it is dropped too.
    let dropped = compact(
        &log.reader(),
        &index,
        &[kept.output],
        &mut Rule {
            keep_tombstones: false,
        },
    )
    .unwrap();
    assert_eq!(dropped.counts.tombstones_kept, 0);
    assert_eq!(dropped.counts.tombstones_dropped, 1);
}

/// A policy that overwrites a key in the middle of the run, as a
/// concurrent writer would, after the key's record was copied.
struct RacingWriter<'a> {
    log: &'a mut Log,
    index: &'a Index,
    done: bool,
}

impl Policy for RacingWriter<'_> {
    fn keep_tombstone(&self, _key: &[u8], _seq: u64) -> bool {
        true
    }
    fn pace(&mut self, _bytes: u64) -> bool {
        if !self.done {
            let loc = self
                .log
                .append(&Record::put(100, b"a", b"written during compaction"))
                .unwrap();
            self.log.flush().unwrap();
            self.index.insert(b"a", entry(loc));
            self.done = true;
        }
        true
    }
}

#[test]
fn a_concurrent_write_wins_over_the_copy() {
    let (_dir, mut log, index) = setup();
    write(
        &mut log,
        &index,
        &[(1, "a", Some("old")), (2, "b", Some("b"))],
    );
    let reader = log.reader();
    let input = segment(&log, 1);
    let mut racer = RacingWriter {
        log: &mut log,
        index: &index,
        done: false,
    };
    let out = compact(&reader, &index, &[input], &mut racer).unwrap();
    assert_eq!(out.counts.records_copied, 2);
    assert_eq!(
        out.counts.entries_switched, 1,
        "the copy of a overwrote the new write"
    );
    assert!(out.counts.dead_bytes_out > 0);
    assert_eq!(
        value_of(&log, &index, "a").unwrap(),
        b"written during compaction"
    );
    assert_eq!(value_of(&log, &index, "b").unwrap(), b"b");
}

struct Cancel;
impl Policy for Cancel {
    fn keep_tombstone(&self, _key: &[u8], _seq: u64) -> bool {
        true
    }
    fn pace(&mut self, _bytes: u64) -> bool {
        false
    }
}

#[test]
fn a_cancelled_run_changes_nothing() {
    let (dir, mut log, index) = setup();
    write(
        &mut log,
        &index,
        &[(1, "a", Some("a")), (2, "b", Some("b"))],
    );
    let before = index.get(b"a");
    let err = compact(&log.reader(), &index, &[segment(&log, 1)], &mut Cancel).unwrap_err();
    assert!(matches!(err, CompactError::Cancelled));
    assert_eq!(index.get(b"a"), before);
    assert!(log.reader().segments().get(1).is_some());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(matches!(
        compact(&log.reader(), &index, &[], &mut Cancel),
        Err(CompactError::NoInputs)
    ));
}
