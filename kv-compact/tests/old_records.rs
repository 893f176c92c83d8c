//! Compaction of a segment of record format version 1 (written by an
//! older build): its live records are encoded again in the current layout,
//! the output's counts are of the bytes written, and every value reads
//! back from the output.

use std::path::Path;
use std::sync::Arc;

use kv_compact::{Policy, compact};
use kv_format::{Record, RecordFormat, RecordKind};
use kv_index::{Entry, Index};
use kv_log::{Log, LogOptions, Segment, segment_file_name};

struct KeepAll;

impl Policy for KeepAll {
    fn keep_tombstone(&self, _: &[u8], _: u64) -> bool {
        true
    }
}

/// Writes log segment `id` of segment format version 1 (docs/format.md,
/// "Segment file"): its 32-byte header, then `records` in version 1.
fn write_v1_segment(dir: &Path, id: u32, records: &[Record<'_>]) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"KVSEGMNT");
    bytes.extend_from_slice(&1u16.to_le_bytes()); // version 1
    bytes.extend_from_slice(&0u16.to_le_bytes()); // flags: a log segment
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // supersedes nothing
    bytes.extend_from_slice(&0u32.to_le_bytes()); // reserved
    let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    for record in records {
        RecordFormat::V1.encode(record, &mut bytes).unwrap();
    }
    std::fs::write(dir.join(segment_file_name(id)), bytes).unwrap();
}

#[test]
fn a_version_1_segment_is_compacted_into_current_records() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i:04}")).collect();
    let mut records: Vec<Record<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Record {
            // Half of them expire, far in the future.
            expires_at: if i % 2 == 0 { u64::MAX - 1 } else { 0 },
            ..Record::put(i as u64 + 1, k.as_bytes(), b"value")
        })
        .collect();
    // An overwrite (the first put of key-0000 dies) and a delete.
    records.push(Record::put(101, b"key-0000", b"newer"));
    records.push(Record::tombstone(102, b"key-0001"));
    write_v1_segment(dir.path(), 1, &records);

    let index = Index::new();
    let log = Log::open(dir.path(), LogOptions::default(), |loc, r| match r.kind {
        RecordKind::Put => {
            index.insert(
                r.key,
                Entry {
                    segment: loc.segment,
                    offset: loc.offset,
                    len: loc.len,
                    expires_at: r.expires_at,
                    tombstone: false,
                },
            );
        }
        RecordKind::Tombstone => {
            index.remove(r.key);
        }
    })
    .unwrap();
    let reader = log.reader();
    let input: Arc<Segment> = Arc::clone(reader.segments().get(1).unwrap());
    assert_eq!(input.record_format(), RecordFormat::V1);
    // A version 1 newest segment is sealed at open, not appended to.
    assert!(input.is_sealed());
    assert_ne!(log.active_id(), 1);

    let outcome = compact(&reader, &index, &[input], &mut KeepAll).unwrap();
    let c = outcome.counts;
    assert_eq!(c.records_copied, 99);
    assert_eq!(outcome.output.record_format(), RecordFormat::CURRENT);
    // What was written, in the current layout: 99 puts and the tombstone.
    let expected_out: usize = records[2..100]
        .iter()
        .chain(&records[100..])
        .map(|r| r.encoded_len())
        .sum();
    assert_eq!(c.bytes_out, expected_out as u64);
    assert!(c.bytes_out < c.bytes_in);
    // The expiring bytes are the output's copies of the 49 that expire.
    let expiring: usize = records[2..100]
        .iter()
        .filter(|r| r.expires_at != 0)
        .map(|r| r.encoded_len())
        .sum();
    assert_eq!(c.expiring_bytes_out, expiring as u64);

    // Every live key reads back from the output, in the current layout.
    let segments = reader.segments();
    let value_of = |key: &[u8]| {
        let e = index.get(key).unwrap();
        assert_eq!(e.segment, outcome.output.id());
        let loc = kv_log::Location {
            segment: e.segment,
            offset: e.offset,
            len: e.len,
        };
        let record = kv_format::decode(segments.read(loc).unwrap())
            .unwrap()
            .record;
        assert_eq!(record.key, key);
        record.value.to_vec()
    };
    assert!(index.get(b"key-0001").is_none());
    for key in keys.iter().skip(2) {
        assert_eq!(value_of(key.as_bytes()), b"value");
    }
    assert_eq!(value_of(b"key-0000"), b"newer");
}
