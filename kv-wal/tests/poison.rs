//! A failed sync poisons the WAL, a failed write is rolled back; what was
//! acknowledged before survives. Uses the `fail-points` seam.

mod common;

use std::sync::Arc;

use common::payloads;
use kv_wal::{
    Error, FaultError, FaultInjector, FaultMode, FileOp, SharedWal, SyncPolicy, Wal, WalOptions,
};

fn with_faults(policy: SyncPolicy) -> (WalOptions, Arc<FaultInjector>) {
    let faults = Arc::new(FaultInjector::new());
    let options = WalOptions::default()
        .with_sync(policy)
        .with_faults(faults.clone());
    (options, faults)
}

fn assert_poisoned<T: std::fmt::Debug>(result: kv_wal::Result<T>) {
    match result {
        Err(Error::Poisoned { cause }) => assert!(cause.contains("injected"), "{cause}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

#[test]
fn a_failed_sync_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Always);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    wal.append(b"acknowledged 1").unwrap();
    wal.append(b"acknowledged 2").unwrap();
    wal.commit().unwrap();

    faults.fail_next_sync();
    wal.append(b"not acknowledged").unwrap();
    let error = wal.commit().unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(wal.poison_cause().unwrap().contains("sync"));

    // Never retried: every later write or sync refuses.
    let syncs = faults.syncs();
    assert_poisoned(wal.append(b"later"));
    assert_poisoned(wal.commit());
    assert_poisoned(wal.flush());
    assert_poisoned(wal.sync());
    assert_poisoned(wal.sync_if_due());
    assert_poisoned(wal.rotate());
    assert_poisoned(wal.close());
    assert_eq!(faults.syncs(), syncs, "no sync was attempted again");

    // Reopening recovers what was acknowledged. The unacknowledged record
    // reached the file before the sync failed, so it may be there too.
    let replayed = payloads(dir.path());
    assert_eq!(
        replayed[..2],
        [b"acknowledged 1".to_vec(), b"acknowledged 2".to_vec()]
    );
    assert!(replayed.len() <= 3);
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(b"after reopen").unwrap();
    wal.commit().unwrap();
    assert_eq!(payloads(dir.path()).last().unwrap(), b"after reopen");
}

#[test]
fn a_failed_write_is_discarded_and_later_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Never);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    wal.append(b"acknowledged").unwrap();
    wal.commit().unwrap();
    let end = wal.flushed_position();

    // The failing write gets half of its bytes to the file first (a frame
    // whole and one torn); the rollback cuts them off again and syncs.
    faults.fail_next(FileOp::Write, FaultError::NoSpace, FaultMode::Persistent);
    wal.append(&[7; 100]).unwrap();
    wal.append(&[8; 150]).unwrap();
    let error = wal.commit().unwrap_err();
    match &error {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{error}")
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(wal.poison_cause().is_none());
    assert_eq!(wal.flushed_position(), end);
    assert_eq!(wal.end_position(), end, "the failed records were dropped");
    // Nothing of the failed write is on disk, even before a reopen.
    assert_eq!(payloads(dir.path()), [b"acknowledged".to_vec()]);

    // The disk stays full: every write fails, and nothing is poisoned.
    wal.append(b"still full").unwrap();
    assert!(matches!(wal.commit(), Err(Error::Io { .. })));
    assert_eq!(wal.end_position(), end);

    // Space is freed: writes go on without a reopen.
    faults.clear();
    let after = wal.append(b"after the fault").unwrap();
    assert_eq!(after, end, "the dropped records' place is reused");
    wal.commit().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(wal.truncated_tail().is_none(), "no torn tail was left");
    assert_eq!(
        payloads(dir.path()),
        [b"acknowledged".to_vec(), b"after the fault".to_vec()]
    );
}

#[test]
fn a_failed_sync_while_discarding_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Never);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    wal.append(b"acknowledged").unwrap();
    wal.commit().unwrap();
    faults.fail_next_write();
    // The sync of the rollback is the next sync.
    faults.fail_next_sync();
    wal.append(&[7; 100]).unwrap();
    wal.append(&[8; 150]).unwrap();
    assert!(matches!(wal.commit(), Err(Error::Io { .. })));
    assert_poisoned(wal.append(b"later"));
    drop(wal);
    // Reopening recovers the acknowledged record; the cut may or may not
    // have reached the disk, and a torn frame is cut at open.
    let replayed = payloads(dir.path());
    assert_eq!(replayed[0], b"acknowledged");
    assert!(replayed.len() <= 2);
}

#[test]
fn discard_from_takes_back_committed_records() {
    let dir = tempfile::tempdir().unwrap();
    let (options, _faults) = with_faults(SyncPolicy::Always);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    wal.append(b"kept").unwrap();
    wal.commit().unwrap();
    let start = wal.end_position();
    wal.append(b"taken back 1").unwrap();
    wal.append(b"taken back 2").unwrap();
    wal.commit().unwrap();
    wal.append(b"buffered").unwrap();
    wal.discard_from(start).unwrap();
    assert_eq!(wal.end_position(), start);
    wal.append(b"next").unwrap();
    wal.commit().unwrap();
    assert_eq!(payloads(dir.path()), [b"kept".to_vec(), b"next".to_vec()]);

    // Not across a rotation: that poisons.
    let start = wal.end_position();
    wal.append(b"x").unwrap();
    wal.rotate().unwrap();
    assert!(wal.discard_from(start).is_err());
    assert!(matches!(wal.append(b"y"), Err(Error::Poisoned { .. })));
}

#[test]
fn a_failed_file_creation_leaves_the_old_file_active() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Never);
    let mut wal = Wal::open(dir.path(), options.with_max_file_size(256)).unwrap();
    wal.append(&[1; 100]).unwrap();
    wal.commit().unwrap();
    for op in [FileOp::Create, FileOp::Write, FileOp::Rename] {
        faults.fail_next(op, FaultError::NoSpace, FaultMode::Once);
        // Does not fit: the rotation's file creation fails.
        let error = wal.append(&[2; 200]).unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{op}: {error}");
        assert!(wal.poison_cause().is_none(), "{op}");
        assert_eq!(wal.file_count(), 1, "{op}");
        let temps = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(kv_wal::TEMP_SUFFIX)
            })
            .count();
        assert_eq!(temps, 0, "{op}: the temporary file was removed");
    }
    assert_eq!(faults.hits(), 3);
    wal.append(&[2; 200]).unwrap();
    wal.commit().unwrap();
    assert_eq!(wal.file_count(), 2);
    drop(wal);
    assert_eq!(payloads(dir.path()), [vec![1; 100], vec![2; 200]]);
}

#[test]
fn a_failed_sync_during_rotation_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Never);
    let mut wal = Wal::open(dir.path(), options.with_max_file_size(256)).unwrap();
    wal.append(&[1; 100]).unwrap();
    wal.commit().unwrap();
    faults.fail_next_sync();
    // This record does not fit: the rotation syncs the old file and fails.
    let error = wal.append(&[2; 200]).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert_poisoned(wal.append(&[3; 10]));
    assert_eq!(wal.file_count(), 1);
}

#[test]
fn a_shared_wal_fails_the_whole_group_and_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Always);
    let wal = SharedWal::open(dir.path(), options).unwrap();
    let acknowledged: Vec<_> = (0..10u8).map(|i| wal.append(&[i; 10]).unwrap()).collect();

    faults.fail_next_sync();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let wal = &wal;
                scope.spawn(move || wal.append(&[100 + t; 10]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every one failed: the group whose sync failed, and any group after it.
    for result in &results {
        assert!(
            matches!(result, Err(Error::Io { .. } | Error::Poisoned { .. })),
            "{result:?}"
        );
    }
    assert!(wal.poison_cause().is_some());
    assert_poisoned(wal.append(b"later"));
    assert_poisoned(wal.sync());
    drop(wal);

    let replayed = payloads(dir.path());
    let expected: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
    assert_eq!(replayed[..10], expected);
    assert_eq!(acknowledged.len(), 10);
}
