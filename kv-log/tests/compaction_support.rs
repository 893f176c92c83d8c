//! What compaction needs from the log: outputs that appear atomically and
//! supersede their inputs, retirement that never pulls a segment from under
//! a reader, and hint files that fall back to a scan when damaged.

use std::path::Path;

use kv_format::{Record, decode};
use kv_log::{
    LoadSource, Location, Log, LogOptions, RecordMeta, SegmentKind, hint_file_name,
    segment_file_name,
};

fn small() -> LogOptions {
    LogOptions {
        segment_size: 4096,
        ..LogOptions::default()
    }
}

fn fill(log: &mut Log, from: u64, n: u64) -> Vec<Location> {
    let locs = (from..from + n)
        .map(|i| {
            let key = format!("key-{i:05}");
            let value = format!("value-{i}").repeat(4);
            log.append(&Record::put(i + 1, key.as_bytes(), value.as_bytes()))
                .unwrap()
        })
        .collect();
    log.flush().unwrap();
    locs
}

fn exists(dir: &Path, id: u32) -> bool {
    dir.join(segment_file_name(id)).exists()
}

#[test]
fn output_supersedes_its_inputs_and_is_readable_after_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 0, 100);
    let reader = log.reader();
    let inputs: Vec<u32> = vec![1, 2];
    let mut out = reader.create_output(&inputs).unwrap();
    let set = reader.segments();
    let mut copied = Vec::new();
    for loc in locs
        .iter()
        .filter(|l| inputs.contains(&l.segment))
        .step_by(2)
    {
        let bytes = set.read(*loc).unwrap();
        copied.push((out.append_encoded(bytes).unwrap(), bytes.to_vec()));
    }
    drop(set);
    let id = out.id();
    // Not visible before finish.
    assert!(reader.segments().get(id).is_none());
    let segment = out.finish().unwrap();
    assert_eq!(segment.kind(), SegmentKind::Compacted);
    assert_eq!(segment.supersedes(), &[1, 2]);
    for (loc, bytes) in &copied {
        assert_eq!(reader.segments().read(*loc).unwrap(), &bytes[..]);
    }

    // The inputs are still there (not retired) until reopen, which deletes
    // them because the output supersedes them.
    assert!(exists(dir.path(), 1) && exists(dir.path(), 2));
    drop(segment);
    drop(reader);
    drop(log);
    let mut seen = 0;
    let mut log = Log::open(dir.path(), small(), |_, _| seen += 1).unwrap();
    assert!(!exists(dir.path(), 1) && !exists(dir.path(), 2));
    assert!(exists(dir.path(), id));
    let total = locs.iter().filter(|l| !inputs.contains(&l.segment)).count() + copied.len();
    assert_eq!(seen, total);
    // A new segment gets an id above every id ever used, the output's too.
    log.seal_active().unwrap();
    assert!(
        log.active_id() > id,
        "new segment {} after output {id}",
        log.active_id()
    );
}

#[test]
fn an_unfinished_output_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 0, 100);
    let reader = log.reader();
    let mut out = reader.create_output(&[1]).unwrap();
    let bytes = reader.segments().read(locs[0]).unwrap().to_vec();
    out.append_encoded(&bytes).unwrap();
    let id = out.id();
    drop(out);
    assert!(!dir.path().join(format!("{id:010}.seg.tmp")).exists());
    assert!(!exists(dir.path(), id));
    // A crash mid-output leaves a temporary file: removed at open, and the
    // input it would have superseded is kept.
    std::fs::write(dir.path().join(format!("{id:010}.seg.tmp")), b"partial").unwrap();
    drop(reader);
    drop(log);
    let mut seen = 0;
    Log::open(dir.path(), small(), |_, _| seen += 1).unwrap();
    assert_eq!(seen, 100);
    assert!(exists(dir.path(), 1));
}

#[test]
fn a_retired_segment_stays_readable_while_held_and_its_files_go_at_retirement() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 0, 100);
    let reader = log.reader();
    let held = reader.segments();
    let pinned = std::sync::Arc::clone(held.get(1).unwrap());
    pinned.write_hint().unwrap();
    reader.retire(&[1]);
    assert!(reader.segments().get(1).is_none());
    // Unlinked at once: no holder can keep the name alive (a reopen must
    // not see the segment), and none deletes anything later.
    assert!(
        !exists(dir.path(), 1),
        "a retired segment's file is still there"
    );
    assert!(!dir.path().join("0000000001.hint").exists());
    // The guard loaded before retirement still reads segment 1.
    let first = held.read(locs[0]).unwrap();
    assert_eq!(decode(first).unwrap().record.key, b"key-00000");
    drop(held);
    assert_eq!(
        decode(pinned.read(locs[0].offset, locs[0].len).unwrap())
            .unwrap()
            .record
            .key,
        b"key-00000"
    );
    // No hint file is written for a retired segment.
    pinned.write_hint().unwrap();
    assert!(!dir.path().join("0000000001.hint").exists());
    drop(pinned);
}

fn load_all(log: &Log) -> Vec<(Location, Vec<u8>, u64, LoadSource)> {
    let mut out = Vec::new();
    for segment in log.reader().segments().iter() {
        let mut here = Vec::new();
        let source = segment
            .load(|loc, meta: RecordMeta<'_>| here.push((loc, meta.key.to_vec(), meta.seq)))
            .unwrap();
        out.extend(here.into_iter().map(|(l, k, s)| (l, k, s, source)));
    }
    out
}

#[test]
fn hint_files_give_the_same_records_as_a_scan_and_damage_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    fill(&mut log, 0, 200);
    log.append(&Record::tombstone(1_000, b"key-00003")).unwrap();
    log.flush().unwrap();
    let scanned = load_all(&log);
    let reader = log.reader();
    for segment in reader.segments().iter().filter(|s| s.is_sealed()) {
        segment.write_hint().unwrap();
        assert!(segment.has_hint());
    }
    drop(reader);
    drop(log);
    let log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let hinted = load_all(&log);
    assert_eq!(
        scanned
            .iter()
            .map(|(l, k, s, _)| (*l, k.clone(), *s))
            .collect::<Vec<_>>(),
        hinted
            .iter()
            .map(|(l, k, s, _)| (*l, k.clone(), *s))
            .collect::<Vec<_>>()
    );
    assert!(hinted.iter().any(|r| r.3 == LoadSource::Hint));
    drop(log);

    // Damage a hint file at every byte (and cut it): each time the segment
    // is scanned instead, with the same result.
    let hint = dir.path().join(hint_file_name(1));
    let good = std::fs::read(&hint).unwrap();
    let expected: Vec<_> = scanned
        .iter()
        .filter(|r| r.0.segment == 1)
        .map(|r| (r.0, r.1.clone(), r.2))
        .collect();
    for i in (0..good.len()).chain([usize::MAX]) {
        let mut bad = good.clone();
        if i == usize::MAX {
            bad.truncate(good.len() / 2);
        } else {
            bad[i] ^= 0x04;
        }
        std::fs::write(&hint, &bad).unwrap();
        let log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
        let segment = std::sync::Arc::clone(log.reader().segments().get(1).unwrap());
        let mut got = Vec::new();
        let source = segment
            .load(|loc, meta| got.push((loc, meta.key.to_vec(), meta.seq)))
            .unwrap();
        assert_eq!(source, LoadSource::Scan, "damage at {i} was not noticed");
        assert_eq!(got, expected, "damage at {i}");
    }
}

/// Found by the `hint_load` fuzz target: a damaged record count in a hint
/// file's header (which no checksum covers until the whole file is read)
/// sized the engine's index at open, allocating gigabytes. The count is
/// now bounded by what the segment can hold.
#[test]
fn a_damaged_hint_count_is_never_trusted_for_sizing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    fill(&mut log, 0, 200);
    let reader = log.reader();
    let segment = std::sync::Arc::clone(reader.segments().get(1).unwrap());
    assert!(segment.is_sealed());
    segment.write_hint().unwrap();
    let real = segment.hinted_records().unwrap();
    assert!(real > 0);
    let most = segment.data_len() / kv_format::MIN_RECORD_LEN as u64;
    let hint = dir.path().join(hint_file_name(1));
    let good = std::fs::read(&hint).unwrap();
    // The count is the u64 at bytes 24..32 (docs/format.md); the fuzzer's
    // input flipped its high bytes.
    for (byte, mask) in [(31, 0x65), (29, 0xFF), (27, 0x01), (24, 0xFF)] {
        let mut bad = good.clone();
        bad[byte] ^= mask;
        std::fs::write(&hint, &bad).unwrap();
        let count = segment.hinted_records();
        assert!(
            count.is_none_or(|c| c <= most),
            "byte {byte} ^ {mask:#x}: a count of {count:?} passed for a segment of at most {most} records"
        );
        let mut n = 0;
        assert_eq!(segment.load(|_, _| n += 1).unwrap(), LoadSource::Scan);
        assert_eq!(n, real);
    }
}

#[test]
fn checkpoint_discard_keeps_compaction_outputs_and_drops_stale_hints() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 0, 300);
    let end = kv_log::LogPosition {
        segment: 3,
        offset: u64::from(locs.iter().find(|l| l.segment == 3).unwrap().offset),
    };
    let reader = log.reader();
    let mut out = reader.create_output(&[1]).unwrap();
    out.append_encoded(reader.segments().read(locs[0]).unwrap())
        .unwrap();
    let out_id = out.finish().unwrap().id();
    reader.segments().get(3).unwrap().write_hint().unwrap();
    drop(reader);
    drop(log);
    let log = Log::recover(dir.path(), small(), Some(&kv_log::Durable::at(end))).unwrap();
    assert!(
        exists(dir.path(), out_id),
        "a compaction output was discarded"
    );
    assert!(
        !dir.path().join(hint_file_name(3)).exists(),
        "a stale hint survived the cut"
    );
    assert_eq!(log.position(), end);
}
