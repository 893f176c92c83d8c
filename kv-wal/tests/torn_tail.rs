//! A write interrupted by a crash leaves a torn tail: open truncates it,
//! replay stops before it, and appends continue after it.

mod common;

use std::fs;

use common::{append_raw, last_file, payload, payloads, replay_all};
use kv_wal::{Error, Position, RecoveryMode, SyncPolicy, Wal, WalOptions};

const TOLERATE: RecoveryMode = RecoveryMode::TolerateCorruptedTail;
const ABSOLUTE: RecoveryMode = RecoveryMode::AbsoluteConsistency;

/// A log of three records, committed; returns the payloads and the offset
/// where the last frame starts.
fn three_records(dir: &std::path::Path) -> (Vec<Vec<u8>>, Position) {
    let mut wal = Wal::open(dir, WalOptions::default().with_sync(SyncPolicy::Never)).unwrap();
    let records = vec![payload(1, 40), payload(2, 7), payload(3, 60)];
    let mut last = Position::START;
    for record in &records {
        last = wal.append(record).unwrap();
    }
    wal.close().unwrap();
    (records, last)
}

#[test]
fn the_last_frame_torn_at_every_byte_is_truncated() {
    let template = tempfile::tempdir().unwrap();
    let (records, last) = three_records(template.path());
    let file = last_file(template.path());
    let name = file.file_name().unwrap().to_owned();
    let full = fs::read(&file).unwrap();
    let frame_start = last.offset as usize;

    for cut in frame_start..full.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&name);
        fs::write(&path, &full[..cut]).unwrap();

        // A read-only replay stops before the torn frame and changes nothing.
        let replayed = replay_all(dir.path(), Position::START, TOLERATE).unwrap();
        assert_eq!(replayed.len(), 2, "cut at {cut}");
        assert_eq!(fs::metadata(&path).unwrap().len(), cut as u64);

        // Absolute consistency refuses any torn frame but a clean cut.
        let absolute = Wal::replay(dir.path(), Position::START, ABSOLUTE)
            .unwrap()
            .collect::<Result<Vec<_>, _>>();
        if cut == frame_start {
            assert_eq!(absolute.unwrap().len(), 2);
        } else {
            let error = absolute.unwrap_err();
            assert!(
                matches!(error, Error::Corruption { offset, .. } if offset == last.offset),
                "cut at {cut}: {error}"
            );
            assert!(Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).is_err());
        }

        // Open truncates at the torn frame and says so.
        let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), last.offset);
        assert_eq!(wal.end_position(), last);
        if cut == frame_start {
            assert_eq!(wal.truncated_tail(), None);
        } else {
            let tail = wal.truncated_tail().unwrap();
            assert_eq!(tail.position, last);
            assert_eq!(tail.dropped_bytes, (cut - frame_start) as u64);
        }
        assert_eq!(payloads(dir.path()), records[..2]);

        // The next append goes where the torn frame was, and survives reopen.
        assert_eq!(wal.append(b"next").unwrap(), last);
        wal.commit().unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).unwrap();
        assert_eq!(wal.truncated_tail(), None);
        let after = payloads(dir.path());
        assert_eq!(after[..2], records[..2]);
        assert_eq!(after[2], b"next");
        assert_eq!(after.len(), 3);
    }
}

#[test]
fn a_zero_filled_tail_is_the_clean_end_not_a_torn_tail() {
    // Zeros after the last frame are what the space allocated ahead of the
    // frames looks like: the end of the log, in both modes, and not
    // reported as a torn tail (see allocated_tail.rs).
    let dir = tempfile::tempdir().unwrap();
    let (records, _) = three_records(dir.path());
    let file = last_file(dir.path());
    let len = fs::metadata(&file).unwrap().len();
    append_raw(&file, &[0; 4096]);

    assert_eq!(payloads(dir.path()), records);
    assert_eq!(
        replay_all(dir.path(), Position::START, ABSOLUTE)
            .unwrap()
            .len(),
        records.len()
    );

    let mut wal = Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).unwrap();
    assert_eq!(wal.truncated_tail(), None);
    assert_eq!(wal.end_position().offset, len);
    assert_eq!(fs::metadata(&file).unwrap().len(), len, "the zeros are cut");
    wal.append(b"more").unwrap();
    wal.commit().unwrap();
    assert_eq!(payloads(dir.path()).len(), records.len() + 1);
}

#[test]
fn garbage_after_the_last_frame_is_truncated() {
    for garbage_len in [1, 5, 11, 12, 13, 100, 5000] {
        let dir = tempfile::tempdir().unwrap();
        let (records, _) = three_records(dir.path());
        let file = last_file(dir.path());
        let len = fs::metadata(&file).unwrap().len();
        append_raw(&file, &payload(garbage_len as u64 + 1000, garbage_len));

        assert_eq!(payloads(dir.path()), records, "{garbage_len} bytes");
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(wal.end_position().offset, len);
        assert_eq!(fs::metadata(&file).unwrap().len(), len);
        assert!(
            Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).is_ok(),
            "the truncation is on disk"
        );
    }
}

#[test]
fn a_torn_tail_under_absolute_consistency_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, last) = three_records(dir.path());
    let file = last_file(dir.path());
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let error = Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).unwrap_err();
    match &error {
        Error::Corruption { path, offset, .. } => {
            assert_eq!(path, &file);
            assert_eq!(*offset, last.offset);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(error.to_string().contains("AbsoluteConsistency"), "{error}");
    // The file is left as it was.
    assert_eq!(fs::metadata(&file).unwrap().len(), len - 3);
}

#[test]
fn a_temporary_file_left_by_a_crash_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (records, _) = three_records(dir.path());
    let temp = dir.path().join("00000000000000000002.wal.tmp");
    fs::write(&temp, b"KVWAL").unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(!temp.exists());
    assert_eq!(wal.rotate().unwrap().file, 2);
    wal.append(b"in file two").unwrap();
    wal.commit().unwrap();
    assert_eq!(payloads(dir.path()).len(), records.len() + 1);
}
