//! The active file is appended through a mapping of space allocated ahead
//! (`kv_fs::AppendMap`), so the last file of a log may end in zeros: the
//! clean end of the log, never a torn tail. Rotation and close cut them
//! off, so no older file ever has them.

mod common;

use std::fs;
use std::sync::Arc;

use common::{append_raw, last_file, payload, payloads, replay_all, wal_files};
use kv_fs::ALLOCATION_CHUNK;
use kv_wal::{
    Error, FILE_HEADER_LEN, FRAME_HEADER_LEN, FaultError, FaultInjector, FaultMode, FileOp,
    Position, RecoveryMode, SyncPolicy, Wal, WalOptions,
};

const TOLERATE: RecoveryMode = RecoveryMode::TolerateCorruptedTail;
const ABSOLUTE: RecoveryMode = RecoveryMode::AbsoluteConsistency;

fn file_len(path: &std::path::Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Appends `count` records to `wal` and commits; returns them.
fn fill(wal: &mut Wal, seed: u64, count: u64) -> Vec<(Position, Vec<u8>)> {
    let records: Vec<_> = (0..count)
        .map(|i| {
            let record = payload(seed + i, 50 + (i as usize * 13) % 200);
            (wal.append(&record).unwrap(), record)
        })
        .collect();
    wal.commit().unwrap();
    records
}

#[test]
fn a_wal_dropped_without_close_reopens_with_everything_and_no_torn_tail() {
    for policy in [SyncPolicy::Never, SyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions::default().with_sync(policy);
        let mut wal = Wal::open(dir.path(), options.clone()).unwrap();
        let written = fill(&mut wal, 1, 40);
        let end = wal.flushed_position();
        drop(wal);

        // The file is the frames, then zeros up to the allocated mebibyte.
        let file = last_file(dir.path());
        assert_eq!(file_len(&file), ALLOCATION_CHUNK, "{policy:?}");
        let bytes = fs::read(&file).unwrap();
        assert!(bytes[end.offset as usize..].iter().all(|&b| b == 0));

        // Replay, in both modes, and the check see the clean end.
        assert_eq!(
            replay_all(dir.path(), Position::START, ABSOLUTE).unwrap(),
            written
        );
        assert_eq!(
            replay_all(dir.path(), Position::START, TOLERATE).unwrap(),
            written
        );
        let report = kv_wal::check(dir.path(), |_, _, _, _| {}).unwrap();
        assert!(report.damage.is_empty(), "{report:?}");
        assert_eq!(report.torn_tail, None, "{policy:?}");
        assert_eq!(report.frames, written.len() as u64);

        // Open finds the end after the last frame, reports no torn tail,
        // and cuts the zeros off; appends go on there.
        let mut wal = Wal::open(dir.path(), options.with_recovery(ABSOLUTE)).unwrap();
        assert_eq!(wal.truncated_tail(), None);
        assert_eq!(wal.end_position(), end);
        assert_eq!(file_len(&file), end.offset);
        assert_eq!(wal.append(b"after reopen").unwrap(), end);
        wal.close().unwrap();
        let all = payloads(dir.path());
        assert_eq!(all.len(), written.len() + 1);
        assert_eq!(all.last().unwrap(), b"after reopen");
    }
}

#[test]
fn a_torn_frame_followed_by_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        dir.path(),
        WalOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let written = fill(&mut wal, 100, 3);
    let end = wal.flushed_position();
    drop(wal);
    // The second half of the last frame never reached the disk: zeros
    // from there, as in the rest of the allocated space.
    let file = last_file(dir.path());
    let last = written[2].0;
    let frame_len = end.offset - last.offset;
    let mut bytes = fs::read(&file).unwrap();
    bytes[(last.offset + frame_len / 2) as usize..end.offset as usize].fill(0);
    fs::write(&file, &bytes).unwrap();

    assert_eq!(
        replay_all(dir.path(), Position::START, TOLERATE).unwrap(),
        written[..2]
    );
    let error = replay_all(dir.path(), Position::START, ABSOLUTE).unwrap_err();
    assert!(
        matches!(error, Error::Corruption { offset, .. } if offset == last.offset),
        "{error}"
    );
    let report = kv_wal::check(dir.path(), |_, _, _, _| {}).unwrap();
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(report.torn_tail.unwrap().offset, last.offset);
    assert!(Wal::open(dir.path(), WalOptions::default().with_recovery(ABSOLUTE)).is_err());

    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let tail = wal.truncated_tail().expect("a torn tail");
    assert_eq!(tail.position, last);
    assert_eq!(tail.dropped_bytes, ALLOCATION_CHUNK - last.offset);
    assert_eq!(file_len(&file), last.offset);
}

#[test]
fn a_valid_frame_after_a_zero_hole_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        dir.path(),
        WalOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let written = fill(&mut wal, 200, 3);
    drop(wal);
    // The middle frame reads as zeros; the last is intact after it.
    let file = last_file(dir.path());
    let (hole, next) = (written[1].0.offset, written[2].0.offset);
    let mut bytes = fs::read(&file).unwrap();
    bytes[hole as usize..next as usize].fill(0);
    fs::write(&file, &bytes).unwrap();

    for mode in [TOLERATE, ABSOLUTE] {
        let error = replay_all(dir.path(), Position::START, mode).unwrap_err();
        assert!(
            matches!(&error, Error::Corruption { offset, reason, .. }
                if *offset == hole && reason.contains(&format!("offset {next}"))),
            "{error}"
        );
    }
    assert!(Wal::open(dir.path(), WalOptions::default()).is_err());
    let report = kv_wal::check(dir.path(), |_, _, _, _| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].offset, hole);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.frames, 2);
}

#[test]
fn zeros_at_the_end_of_an_older_file_are_damage_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        dir.path(),
        WalOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let first = fill(&mut wal, 300, 3);
    wal.rotate().unwrap();
    fill(&mut wal, 400, 3);
    wal.close().unwrap();
    // No rotation leaves them; a file system or a person could.
    let files = wal_files(dir.path());
    let older = &files[0].1;
    let end = file_len(older);
    append_raw(older, &vec![0; ALLOCATION_CHUNK as usize]);

    for mode in [TOLERATE, ABSOLUTE] {
        let error = replay_all(dir.path(), Position::START, mode).unwrap_err();
        match &error {
            Error::Corruption {
                path,
                offset,
                reason,
            } => {
                assert_eq!((path, *offset), (older, end));
                assert!(reason.contains("only the last WAL file"), "{reason}");
            }
            other => panic!("expected corruption, got {other}"),
        }
    }
    let report = kv_wal::check(dir.path(), |_, _, _, _| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(
        (&report.damage[0].path, report.damage[0].offset),
        (older, end)
    );
    assert_eq!(report.torn_tail, None);
    // Open reads only the last file through, as before; the open `Wal`
    // reads the damage back as corruption.
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let read: Vec<_> = wal.read_from(Position::START).collect();
    assert_eq!(read.len(), first.len() + 1);
    assert!(matches!(
        read.last().unwrap(),
        Err(Error::Corruption { offset, .. }) if *offset == end
    ));
}

#[test]
fn rotation_leaves_the_older_file_exactly_its_frames() {
    for policy in [SyncPolicy::Never, SyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalOptions::default().with_sync(policy)).unwrap();
        fill(&mut wal, 500, 10);
        // Buffered only: the rotation flushes it into the old file.
        wal.append(b"buffered at the rotation").unwrap();
        let end = wal.end_position();
        let file = last_file(dir.path());
        assert_eq!(file_len(&file), ALLOCATION_CHUNK);
        let syncs = wal.stats().syncs;
        wal.rotate().unwrap();
        assert_eq!(file_len(&file), end.offset, "{policy:?}");
        // The cut is made durable by a sync before the new file exists,
        // under every policy.
        assert_eq!(wal.stats().syncs, syncs + 1, "{policy:?}");

        // A file nothing was appended to has nothing allocated: rotating
        // it away needs no sync.
        let empty = last_file(dir.path());
        assert_eq!(file_len(&empty), FILE_HEADER_LEN as u64);
        wal.rotate().unwrap();
        assert_eq!(file_len(&empty), FILE_HEADER_LEN as u64);
        assert_eq!(wal.stats().syncs, syncs + 1);

        let sizes: u64 = wal_files(dir.path())
            .iter()
            .map(|(_, path)| file_len(path))
            .sum();
        assert_eq!(wal.size_on_disk(), sizes);
        drop(wal);
        let report = kv_wal::check(dir.path(), |_, _, _, _| {}).unwrap();
        assert!(report.damage.is_empty() && report.torn_tail.is_none());
        assert_eq!(report.frames, 11);
    }
}

#[test]
fn close_leaves_the_last_file_exactly_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        dir.path(),
        WalOptions::default().with_sync(SyncPolicy::Always),
    )
    .unwrap();
    let written = fill(&mut wal, 600, 10);
    let file = last_file(dir.path());
    assert_eq!(file_len(&file), ALLOCATION_CHUNK);
    let end = wal.end_position();
    wal.close().unwrap();
    assert_eq!(file_len(&file), end.offset);
    assert_eq!(
        replay_all(dir.path(), Position::START, ABSOLUTE).unwrap(),
        written
    );

    // A close with nothing appended changes nothing.
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.close().unwrap();
    assert_eq!(file_len(&file), end.offset);
}

#[test]
fn appends_allocate_one_chunk_at_a_time_and_discards_cut_the_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(
        dir.path(),
        WalOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    let file = last_file(dir.path());
    // Past the first mebibyte: the file grows by one more chunk.
    let record = vec![7u8; 100 << 10];
    for _ in 0..11 {
        wal.append(&record).unwrap();
    }
    wal.commit().unwrap();
    let end = wal.flushed_position().offset;
    assert_eq!(
        end,
        FILE_HEADER_LEN as u64 + 11 * (FRAME_HEADER_LEN + record.len()) as u64
    );
    assert_eq!(file_len(&file), 2 * ALLOCATION_CHUNK);

    // Taking committed records back cuts the space after them too.
    let keep = Position::new(1, end - (FRAME_HEADER_LEN + record.len()) as u64);
    wal.discard_from(keep).unwrap();
    assert_eq!(file_len(&file), keep.offset);
    assert!(keep.offset < ALLOCATION_CHUNK);
    assert_eq!(wal.append(b"after the discard").unwrap(), keep);
    wal.commit().unwrap();
    // Allocated again, to the end of the chunk the frames now end in.
    assert_eq!(file_len(&file), ALLOCATION_CHUNK);
    drop(wal);
    let all = payloads(dir.path());
    assert_eq!(all.len(), 11);
    assert_eq!(all[10], b"after the discard");
}

#[test]
fn a_failed_allocation_is_a_failed_write_discarded_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(FaultInjector::new());
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_faults(Arc::clone(&faults));
    let mut wal = Wal::open(dir.path(), options).unwrap();
    let file = last_file(dir.path());
    // The first frame allocates the first chunk: one write check for the
    // allocation, one for the copy.
    let writes = faults.writes();
    wal.append(b"acknowledged").unwrap();
    wal.commit().unwrap();
    assert_eq!(faults.writes(), writes + 2);
    let end = wal.flushed_position();

    // A group that needs the next chunk, on a full disk: the allocation
    // fails, nothing is copied, and the file is cut back to its frames.
    faults.fail_next(FileOp::Write, FaultError::NoSpace, FaultMode::Once);
    wal.append(&vec![1u8; ALLOCATION_CHUNK as usize]).unwrap();
    let error = wal.commit().unwrap_err();
    assert!(
        matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
        "{error}"
    );
    assert!(wal.poison_cause().is_none());
    assert_eq!(wal.end_position(), end);
    assert_eq!(file_len(&file), end.offset);

    // The next write allocates again and goes on.
    assert_eq!(wal.append(b"after the fault").unwrap(), end);
    wal.commit().unwrap();
    assert_eq!(file_len(&file), ALLOCATION_CHUNK);
    drop(wal);
    assert_eq!(
        payloads(dir.path()),
        [b"acknowledged".to_vec(), b"after the fault".to_vec()]
    );
}
