//! Segment log behaviour: rollover, reads, reopen, torn tails, corruption.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use kv_format::{Record, decode};
use kv_log::{Location, Log, LogError, LogOptions, SEGMENT_HEADER_LEN, segment_file_name};

fn small() -> LogOptions {
    LogOptions {
        segment_size: 4096,
        ..LogOptions::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-")
        .repeat((i % 7 + 1) as usize)
        .into_bytes()
}

/// Writes `n` records and returns their locations.
fn fill(log: &mut Log, n: u64) -> Vec<Location> {
    let locs = (0..n)
        .map(|i| log.append(&Record::put(i + 1, &key(i), &value(i))).unwrap())
        .collect();
    log.flush().unwrap();
    locs
}

/// A record as seen at open: location, sequence number, key, value.
type Seen = (Location, u64, Vec<u8>, Vec<u8>);

fn reopen(dir: &Path) -> (Log, Vec<Seen>) {
    let mut seen = Vec::new();
    let log = Log::open(dir, small(), |loc, r| {
        seen.push((loc, r.seq, r.key.to_vec(), r.value.to_vec()))
    })
    .unwrap();
    (log, seen)
}

#[test]
fn rolls_over_at_the_size_limit_and_reads_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 500);
    let reader = log.reader();
    let set = reader.segments();
    assert!(
        set.len() > 5,
        "expected several segments, got {}",
        set.len()
    );
    for seg in set.iter() {
        assert!(
            seg.len() <= 4096,
            "segment {} is {} bytes",
            seg.id(),
            seg.len()
        );
        let sealed = seg.id() != log.active_id();
        assert_eq!(seg.is_sealed(), sealed);
    }
    for (i, loc) in locs.iter().enumerate() {
        let rec = decode(set.read(*loc).unwrap()).unwrap().record;
        assert_eq!(rec.key, key(i as u64));
        assert_eq!(rec.value, value(i as u64));
    }
}

#[test]
fn reopen_visits_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 300);
    drop(log);
    let (mut log, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 300);
    for (i, (loc, seq, k, v)) in seen.iter().enumerate() {
        assert_eq!(*loc, locs[i]);
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(k, &key(i as u64));
        assert_eq!(v, &value(i as u64));
    }
    // Appends go on after the last record.
    let loc = log.append(&Record::put(301, b"after", b"reopen")).unwrap();
    log.flush().unwrap();
    drop(log);
    let (_, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 301);
    assert_eq!(seen[300].0, loc);
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    fill(&mut log, 3);
    let big = vec![7u8; 10_000];
    let loc = log.append(&Record::put(10, b"big", &big)).unwrap();
    let after = log.append(&Record::put(11, b"small", b"x")).unwrap();
    log.flush().unwrap();
    assert_ne!(loc.segment, after.segment);
    let set = log.reader().segments();
    assert_eq!(
        decode(set.read(loc).unwrap()).unwrap().record.value,
        &big[..]
    );
    drop(set);
    drop(log);
    let (_, seen) = reopen(dir.path());
    assert_eq!(seen.len(), 5);
}

#[test]
fn unflushed_appends_are_not_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    let loc = log.append(&Record::put(1, b"k", b"v")).unwrap();
    assert!(matches!(
        log.reader().segments().read(loc),
        Err(LogError::OutOfBounds { .. })
    ));
    log.flush().unwrap();
    assert!(log.reader().segments().read(loc).is_ok());
    assert!(matches!(
        log.reader()
            .segments()
            .read(Location { segment: 99, ..loc }),
        Err(LogError::NoSuchSegment { segment: 99 })
    ));
}

/// A reader thread reads every record as soon as it is published while the
/// writer appends and rolls over.
#[test]
fn readers_see_the_active_segment_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let reader = log.reader();
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Location)>();
    let checker = std::thread::spawn(move || {
        let mut checked = 0;
        for (i, loc) in rx {
            let set = reader.segments();
            let rec = decode(set.read(loc).unwrap()).unwrap().record;
            assert_eq!(rec.key, key(i));
            assert_eq!(rec.value, value(i));
            checked += 1;
        }
        checked
    });
    for i in 0..2_000 {
        let loc = log.append(&Record::put(i + 1, &key(i), &value(i))).unwrap();
        log.flush().unwrap();
        tx.send((i, loc)).unwrap();
    }
    drop(tx);
    assert_eq!(checker.join().unwrap(), 2_000);
}

fn segment_path(dir: &Path, id: u32) -> std::path::PathBuf {
    dir.join(segment_file_name(id))
}

#[test]
fn torn_tail_of_the_newest_segment_is_cut_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    fill(&mut log, 3);
    let last = log
        .append(&Record::put(4, b"last-key", b"last-value"))
        .unwrap();
    log.flush().unwrap();
    drop(log);
    let path = segment_path(dir.path(), 1);
    let full = std::fs::read(&path).unwrap();
    for cut in last.offset as usize..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (mut log, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 3, "cut at {cut}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last.offset as u64);
        // The next append lands where the torn record was.
        let loc = log.append(&Record::put(5, b"again", b"ok")).unwrap();
        assert_eq!(loc.offset, last.offset);
    }
}

#[test]
fn a_crash_leaves_allocated_space_that_reopening_cuts_silently() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    fill(&mut log, 10);
    let end = log.position();
    // A copy taken while the log is open is what a crash leaves: the
    // records, then the space allocated ahead (zeros).
    let path = segment_path(dir.path(), 1);
    let copied = segment_path(copy.path(), 1);
    std::fs::copy(&path, &copied).unwrap();
    let len = std::fs::metadata(&copied).unwrap().len();
    assert_eq!(len, kv_fs::ALLOCATION_CHUNK);
    assert!(len > end.offset);
    let (mut reopened, seen) = reopen(copy.path());
    assert_eq!(seen.len(), 10);
    assert_eq!(std::fs::metadata(&copied).unwrap().len(), end.offset);
    let loc = reopened.append(&Record::put(11, b"next", b"v")).unwrap();
    assert_eq!(u64::from(loc.offset), end.offset);
    drop(log);
}

#[test]
fn zeroed_or_garbage_tail_is_cut() {
    for tail in [
        vec![0u8; 4096],
        b"\x01\x02garbage that is not a record".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
        fill(&mut log, 10);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let (_, seen) = reopen(dir.path());
        assert_eq!(seen.len(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    }
}

#[test]
fn bad_record_followed_by_good_ones_in_the_newest_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 10);
    drop(log);
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte of the record's value.
    let at = (locs[4].offset + locs[4].len) as usize - 3;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(dir.path(), LogOptions::default(), |_, _| {}) {
        Err(LogError::Corruption {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, u64::from(locs[4].offset));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Nothing was changed by the failed open.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn flipped_byte_in_an_older_segment_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 300);
    drop(log);
    // The last record of segment 1: its tail is still "inside" an older
    // segment, so even a damaged final record there is corruption.
    let victim = locs.iter().rfind(|l| l.segment == 1).unwrap();
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim.offset as usize + victim.len as usize - 1] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = Log::open(dir.path(), small(), |_, _| {}).unwrap_err();
    match &err {
        LogError::Corruption {
            path: p, offset, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*offset, u64::from(victim.offset));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("0000000001.seg") && msg.contains(&victim.offset.to_string()),
        "{msg}"
    );
}

#[test]
fn damaged_segment_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    fill(&mut log, 300);
    drop(log);
    let path = segment_path(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small(), |_, _| {}),
        Err(LogError::BadSegmentHeader { .. })
    ));
    // A segment file renamed to the wrong id is caught too.
    bytes[3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::rename(&path, segment_path(dir.path(), 9)).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small(), |_, _| {}),
        Err(LogError::BadSegmentHeader { .. })
    ));
}

#[test]
fn leftover_temporary_segment_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("0000000002.seg.tmp"), b"half").unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    assert!(!dir.path().join("0000000002.seg.tmp").exists());
    fill(&mut log, 10);
    let (_, seen) = {
        drop(log);
        reopen(dir.path())
    };
    assert_eq!(seen.len(), 10);
    let mut by_key = HashMap::new();
    for (_, seq, k, _) in seen {
        by_key.insert(k, seq);
    }
    assert_eq!(by_key.len(), 10);
    assert!(
        std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len()
            > SEGMENT_HEADER_LEN as u64
    );
}

#[test]
fn open_at_discards_everything_after_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let locs = fill(&mut log, 100);
    let cut = locs[40];
    let end = kv_log::LogPosition {
        segment: cut.segment,
        offset: u64::from(cut.offset),
    };
    let last_segment = log.active_id();
    assert!(last_segment > cut.segment);
    drop(log);
    let mut seen = 0;
    let log = Log::open_at(dir.path(), small(), Some(end), |_, _| seen += 1).unwrap();
    assert_eq!(seen, 40);
    assert_eq!(log.position(), end);
    assert!(!segment_path(dir.path(), last_segment).exists());
    assert_eq!(
        std::fs::metadata(segment_path(dir.path(), cut.segment))
            .unwrap()
            .len(),
        end.offset
    );
}

#[test]
fn open_at_a_position_past_the_data_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    fill(&mut log, 3);
    let end = log.position();
    drop(log);
    let past = kv_log::LogPosition {
        offset: end.offset + 1,
        ..end
    };
    assert!(matches!(
        Log::open_at(dir.path(), small(), Some(past), |_, _| {}),
        Err(LogError::Corruption { .. })
    ));
    let missing = kv_log::LogPosition {
        segment: end.segment + 1,
        offset: SEGMENT_HEADER_LEN as u64,
    };
    assert!(matches!(
        Log::open_at(dir.path(), small(), Some(missing), |_, _| {}),
        Err(LogError::Corruption { .. })
    ));
    // Before the checkpoint no torn tail is tolerated: a damaged record there
    // is corruption even in the newest segment.
    let path = segment_path(dir.path(), end.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Log::open_at(dir.path(), small(), Some(end), |_, _| {}),
        Err(LogError::Corruption { .. })
    ));
}

#[test]
fn append_encoded_stores_the_given_bytes_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let mut buf = Vec::new();
    kv_format::encode(&Record::put(1, b"k", b"v"), &mut buf).unwrap();
    let loc = log.append_encoded(&buf).unwrap();
    log.flush().unwrap();
    assert_eq!(log.reader().segments().read(loc).unwrap(), &buf[..]);
    assert!(log.append_encoded(&buf[..buf.len() - 1]).is_err());
    let mut two = buf.clone();
    two.extend_from_slice(&buf);
    assert!(log.append_encoded(&two).is_err());
    assert!(
        log.append_encoded(b"not a record at all, clearly not")
            .is_err()
    );
}

#[test]
fn append_encoded_many_places_records_as_one_at_a_time_would() {
    // Segments of 64 KiB and 300 KiB of records, one of them larger than
    // a segment: runs are written whole (long ones with pwrite), split at
    // every rotation, and the large record gets a segment of its own.
    let options = LogOptions {
        segment_size: 64 * 1024,
        ..LogOptions::default()
    };
    let mut encoded = Vec::new();
    let mut records = Vec::new();
    for i in 0..600u64 {
        let start = encoded.len();
        let value = if i == 300 {
            vec![9u8; 100_000]
        } else {
            value(i).repeat(8)
        };
        kv_format::encode(&Record::put(i + 1, &key(i), &value), &mut encoded).unwrap();
        records.push(start..encoded.len());
    }
    let (one_dir, many_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut one = Log::open(one_dir.path(), options.clone(), |_, _| {}).unwrap();
    let expected: Vec<Location> = records
        .iter()
        .map(|r| one.append_encoded(&encoded[r.clone()]).unwrap())
        .collect();
    one.flush().unwrap();

    let mut many = Log::open(many_dir.path(), options.clone(), |_, _| {}).unwrap();
    let mut got = Vec::new();
    many.append_encoded_many(&encoded, |range, loc| got.push((range, loc)))
        .unwrap();
    many.flush().unwrap();
    let ranges: Vec<_> = got.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(ranges, records);
    let locs: Vec<Location> = got.iter().map(|(_, l)| *l).collect();
    assert_eq!(locs, expected);
    assert!(
        locs.iter()
            .map(|l| l.segment)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 4
    );
    let reader = many.reader();
    for (range, loc) in &got {
        assert_eq!(
            reader.segments().read(*loc).unwrap(),
            &encoded[range.clone()]
        );
    }
    drop(many);
    let mut seen = Vec::new();
    Log::open(many_dir.path(), options, |loc, r| seen.push((loc, r.seq))).unwrap();
    let seqs: Vec<(Location, u64)> = locs.iter().zip(1..).map(|(l, s)| (*l, s)).collect();
    assert_eq!(seen, seqs);
}

#[test]
fn append_encoded_many_with_a_bad_header_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small(), |_, _| {}).unwrap();
    let mut encoded = Vec::new();
    kv_format::encode(&Record::put(1, b"a", b"1"), &mut encoded).unwrap();
    let good = encoded.len();
    kv_format::encode(&Record::put(2, b"b", b"2"), &mut encoded).unwrap();
    let before = log.position();
    let mut located = 0;
    // Cut short: the second record is not whole.
    assert!(matches!(
        log.append_encoded_many(&encoded[..encoded.len() - 1], |_, _| located += 1),
        Err(LogError::Format(_))
    ));
    // Garbage after a good record.
    let mut garbage = encoded[..good].to_vec();
    garbage.extend_from_slice(b"not a record at all, clearly not");
    assert!(
        log.append_encoded_many(&garbage, |_, _| located += 1)
            .is_err()
    );
    assert_eq!(located, 0);
    assert_eq!(log.position(), before);
}

/// A value whose every 32 bytes in its first `reach` bytes hold a
/// plausible record header claiming most of what follows up to `reach` (a
/// value made of stored records can look like this): no header check can
/// reject them cheaply.
fn plausible_headers(len: usize, reach: usize) -> Vec<u8> {
    let mut value = vec![0u8; len];
    for at in (0..reach - 64).step_by(32) {
        // { checksum u32 | flags 0 | key_len 1 | value_len varint | seq }
        value[at + 5] = 1;
        let mut claimed = (reach - at - 64) as u32;
        let mut i = at + 6;
        while claimed >= 0x80 {
            value[i] = (claimed as u8) | 0x80;
            claimed >>= 7;
            i += 1;
        }
        value[i] = claimed as u8;
    }
    value
}

#[test]
fn a_torn_tail_the_bounded_search_cannot_decide_is_refused_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    fill(&mut log, 10);
    let torn = log
        .append(&Record::put(
            11,
            b"big",
            &plausible_headers(2 << 20, 1 << 20),
        ))
        .unwrap();
    log.flush().unwrap();
    drop(log);
    let path = segment_path(dir.path(), 1);
    let full = std::fs::read(&path).unwrap();
    let cut = torn.offset as usize + torn.len as usize / 2;
    std::fs::write(&path, &full[..cut]).unwrap();
    match Log::open(dir.path(), LogOptions::default(), |_, _| {}) {
        Err(LogError::Corruption { offset, .. }) => assert_eq!(offset, u64::from(torn.offset)),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), cut as u64);

    // Checking reports the rest of the segment as one region.
    let segment = kv_log::Segment::open_read_only(&path).unwrap();
    let mut valid = 0;
    let bad = segment.check_records(|_, _| valid += 1);
    assert_eq!(valid, 10);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].offset, u64::from(torn.offset));
    assert_eq!(bad[0].len, (cut - torn.offset as usize) as u64);
    assert!(!bad[0].followed_by_valid);
    assert!(
        bad[0].reason.contains("could not resynchronise"),
        "{}",
        bad[0].reason
    );
}
