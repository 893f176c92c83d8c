//! Many threads appending to a SharedWal: every acknowledged record is in
//! the log exactly once, in each thread's order, with fewer syncs than
//! records.

mod common;

use std::collections::HashMap;

use common::replay_all;
use kv_wal::{Position, RecoveryMode, SharedWal, SyncPolicy, Wal, WalOptions};

const THREADS: usize = 8;
const PER_THREAD: usize = 200;

fn record(thread: usize, i: usize) -> Vec<u8> {
    format!("thread {thread} record {i}").into_bytes()
}

fn run(options: WalOptions) {
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(dir.path(), options).unwrap();
    let acknowledged: Vec<Vec<Position>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let wal = &wal;
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| wal.append(&record(thread, i)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let stats = wal.stats();
    let appends = (THREADS * PER_THREAD) as u64;
    assert_eq!(stats.appends, appends);
    assert!(stats.syncs <= appends, "{stats:?}");
    assert!(stats.writes <= appends, "{stats:?}");

    // Each thread's records have increasing positions.
    for positions in &acknowledged {
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }

    let wal = wal.into_inner();
    let read: Vec<_> = wal.read_from(Position::START).map(Result::unwrap).collect();
    drop(wal);
    let replayed = replay_all(
        dir.path(),
        Position::START,
        RecoveryMode::TolerateCorruptedTail,
    )
    .unwrap();
    assert_eq!(read, replayed);
    assert_eq!(replayed.len(), THREADS * PER_THREAD);

    // Every acknowledged record exactly once, at the position it was given.
    let by_position: HashMap<Position, Vec<u8>> = replayed.into_iter().collect();
    assert_eq!(by_position.len(), THREADS * PER_THREAD);
    for (thread, positions) in acknowledged.iter().enumerate() {
        for (i, position) in positions.iter().enumerate() {
            assert_eq!(by_position[position], record(thread, i));
        }
    }
}

#[test]
fn eight_threads_always() {
    run(WalOptions::default().with_sync(SyncPolicy::Always));
}

#[test]
fn eight_threads_never_with_rotations() {
    run(WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(2048));
}

#[test]
fn shared_wal_refuses_bad_records_alone() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SharedWal::open(dir.path(), WalOptions::default().with_max_record_len(8)).unwrap();
    assert!(wal.append(b"").is_err());
    assert!(wal.append(b"123456789").is_err());
    let position = wal.append(b"12345678").unwrap();
    assert_eq!(
        wal.end_position().offset,
        position.offset + kv_wal::FRAME_HEADER_LEN as u64 + 8
    );
    assert!(wal.poison_cause().is_none());
    let rotated = wal.rotate().unwrap();
    assert_eq!(wal.append(b"x").unwrap(), rotated);
    assert_eq!(wal.remove_before(rotated).unwrap(), 1);
    wal.sync().unwrap();
    assert!(!wal.sync_if_due().unwrap());
    assert_eq!(wal.sync_deadline(), None);
    assert_eq!(wal.read_from(Position::START).count(), 1);
}

#[test]
fn shared_wal_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedWal>();
    fn assert_send<T: Send>() {}
    assert_send::<Wal>();
}
