//! A failed write or sync poisons the WAL; what was acknowledged before
//! survives. Uses the `fail-points` seam.

mod common;

use std::sync::Arc;

use common::payloads;
use kv_wal::{Error, FaultInjector, SharedWal, SyncPolicy, Wal, WalOptions};

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
fn a_failed_write_poisons_the_wal_and_leaves_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = with_faults(SyncPolicy::Never);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    wal.append(b"acknowledged").unwrap();
    wal.commit().unwrap();

    // The failing write gets half of its bytes to the file first.
    faults.fail_next_write();
    wal.append(&[7; 100]).unwrap();
    wal.append(&[8; 150]).unwrap();
    let error = wal.commit().unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert_poisoned(wal.append(b"later"));
    assert_poisoned(wal.commit());
    drop(wal);

    // Half of the group is on disk: the first frame whole, the second torn.
    // Open truncates the torn one; the acknowledged record is there.
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(wal.truncated_tail().is_some());
    assert_eq!(
        payloads(dir.path()),
        [b"acknowledged".to_vec(), vec![7; 100]]
    );
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
