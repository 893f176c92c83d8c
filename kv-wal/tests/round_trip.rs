//! Records survive rotation and reopening, and replay starts where asked.

mod common;

use common::{payload, payloads, replay_all, wal_files};
use kv_wal::{
    Error, FILE_HEADER_LEN, FRAME_HEADER_LEN, Position, RecoveryMode, SyncPolicy, Wal, WalOptions,
};

const TOLERATE: RecoveryMode = RecoveryMode::TolerateCorruptedTail;

fn small_files() -> WalOptions {
    WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(4096)
}

#[test]
fn many_records_round_trip_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_files()).unwrap();
    let mut written = Vec::new();
    for i in 0..500u64 {
        let record = payload(i, (i as usize * 37) % 700 + 1);
        let position = wal.append(&record).unwrap();
        written.push((position, record));
        if i % 7 == 0 {
            wal.commit().unwrap();
        }
    }
    wal.commit().unwrap();
    assert!(
        wal.file_count() > 10,
        "rotated into {} files",
        wal.file_count()
    );
    assert_eq!(wal.stats().appends, 500);
    assert!(wal.stats().rotations > 0);
    assert_eq!(wal.file_count(), wal_files(dir.path()).len());

    // Positions are strictly increasing, and files stay under the limit
    // unless they hold a single frame. Every older file is exactly its
    // frames (rotation cut the space allocated ahead off); the active file
    // holds its frames, then zeros up to the allocated mebibyte.
    assert!(written.windows(2).all(|w| w[0].0 < w[1].0));
    let mut files = wal_files(dir.path());
    let (_, active) = files.pop().unwrap();
    let older: u64 = files
        .iter()
        .map(|(_, path)| std::fs::metadata(path).unwrap().len())
        .sum();
    let flushed = wal.flushed_position().offset;
    assert_eq!(wal.size_on_disk(), older + flushed);
    for (_, path) in &files {
        assert!(std::fs::metadata(path).unwrap().len() <= 4096);
    }
    assert!(flushed <= 4096);
    assert_eq!(
        std::fs::metadata(&active).unwrap().len(),
        kv_fs::ALLOCATION_CHUNK
    );

    // The open Wal reads back what it wrote.
    let read: Vec<_> = wal.read_from(Position::START).map(Result::unwrap).collect();
    assert_eq!(read, written);
    drop(wal);

    // So does a replay of the directory, from the start ...
    assert_eq!(
        replay_all(dir.path(), Position::START, TOLERATE).unwrap(),
        written
    );
    // ... and from every position in the middle.
    for start in [1, 77, 250, 499] {
        let from = written[start].0;
        let replayed = replay_all(dir.path(), from, TOLERATE).unwrap();
        assert_eq!(replayed, written[start..], "from {from}");
    }
    // From the end, nothing.
    let mut wal = Wal::open(dir.path(), small_files()).unwrap();
    let end = wal.end_position();
    assert_eq!(replay_all(dir.path(), end, TOLERATE).unwrap(), []);

    // Reopening continues after the last record.
    let next = wal.append(b"after reopen").unwrap();
    assert_eq!(next, end);
    wal.commit().unwrap();
    drop(wal);
    let all = payloads(dir.path());
    assert_eq!(all.len(), 501);
    assert_eq!(all[500], b"after reopen");
}

#[test]
fn next_into_reuses_one_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_files()).unwrap();
    for i in 0..50u64 {
        wal.append(&payload(i, 100)).unwrap();
    }
    wal.commit().unwrap();
    let mut replay = Wal::replay(dir.path(), Position::START, TOLERATE).unwrap();
    let mut buf = Vec::new();
    let mut count = 0u64;
    while let Some(position) = replay.next_into(&mut buf) {
        position.unwrap();
        assert_eq!(buf, payload(count, 100));
        count += 1;
    }
    assert_eq!(count, 50);
}

#[test]
fn a_new_log_starts_with_one_file_and_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let wal_dir = dir.path().join("nested").join("wal");
    let wal = Wal::open(&wal_dir, WalOptions::default()).unwrap();
    let first = Position::new(kv_wal::FIRST_FILE_NUMBER, FILE_HEADER_LEN as u64);
    assert_eq!(wal.end_position(), first);
    assert_eq!(wal.size_on_disk(), FILE_HEADER_LEN as u64);
    assert_eq!(wal_files(&wal_dir).len(), 1);
    assert_eq!(wal.truncated_tail(), None);
}

#[test]
fn frame_sizes_are_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let a = wal.append(&[1; 10]).unwrap();
    let b = wal.append(&[2; 3]).unwrap();
    assert_eq!(b.offset - a.offset, (FRAME_HEADER_LEN + 10) as u64);
    wal.commit().unwrap();
    assert_eq!(
        wal.size_on_disk(),
        (FILE_HEADER_LEN + 2 * FRAME_HEADER_LEN + 13) as u64
    );
}

#[test]
fn a_record_larger_than_a_file_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_files()).unwrap();
    wal.append(b"small").unwrap();
    let big = payload(9, 10_000);
    let position = wal.append(&big).unwrap();
    assert_eq!(position, Position::new(2, FILE_HEADER_LEN as u64));
    let after = wal.append(b"after").unwrap();
    assert_eq!(after.file, 3);
    wal.commit().unwrap();
    assert_eq!(
        payloads(dir.path()),
        [b"small".to_vec(), big, b"after".to_vec()]
    );
}

#[test]
fn empty_and_oversized_records_are_refused_without_poisoning() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions::default().with_max_record_len(100);
    let mut wal = Wal::open(dir.path(), options).unwrap();
    assert!(matches!(wal.append(b""), Err(Error::EmptyRecord)));
    assert!(matches!(
        wal.append(&[0; 101]),
        Err(Error::RecordTooLarge { len: 101, max: 100 })
    ));
    wal.append(&[0; 100]).unwrap();
    wal.commit().unwrap();
    assert_eq!(wal.poison_cause(), None);
    assert_eq!(payloads(dir.path()), [vec![0; 100]]);
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for options in [
        WalOptions::default().with_max_record_len(0),
        WalOptions::default().with_max_record_len(kv_wal::MAX_RECORD_LEN + 1),
        WalOptions::default().with_max_file_size(FILE_HEADER_LEN as u64),
    ] {
        assert!(matches!(
            Wal::open(dir.path(), options),
            Err(Error::InvalidOptions(_))
        ));
    }
}

#[test]
fn explicit_rotation_returns_the_new_files_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();
    let start = wal.rotate().unwrap();
    assert_eq!(start, Position::new(2, FILE_HEADER_LEN as u64));
    assert_eq!(wal.end_position(), start);
    assert_eq!(wal.append(b"two").unwrap(), start);
    // An empty file may be rotated away too.
    wal.commit().unwrap();
    wal.rotate().unwrap();
    let start = wal.rotate().unwrap();
    assert_eq!(start.file, 4);
    wal.append(b"three").unwrap();
    wal.close().unwrap();
    assert_eq!(
        payloads(dir.path()),
        [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    let replayed = replay_all(dir.path(), Position::new(2, 0), TOLERATE).unwrap();
    assert_eq!(replayed.len(), 2);
}

#[test]
fn sync_policies_sync_when_they_promise() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut always = Wal::open(
        dir.path().join("always"),
        WalOptions::default().with_sync(SyncPolicy::Always),
    )
    .unwrap();
    always.append(b"a").unwrap();
    always.commit().unwrap();
    assert_eq!(always.stats().syncs, 1);
    assert_eq!(always.sync_deadline(), None);
    always.commit().unwrap(); // nothing new: no sync
    assert_eq!(always.stats().syncs, 1);

    let mut never = Wal::open(
        dir.path().join("never"),
        WalOptions::default().with_sync(SyncPolicy::Never),
    )
    .unwrap();
    never.append(b"a").unwrap();
    never.commit().unwrap();
    assert_eq!(never.stats().syncs, 0);
    assert_eq!(never.stats().writes, 1);
    assert_eq!(never.sync_deadline(), None);
    assert!(!never.sync_if_due().unwrap());
    never.sync().unwrap();
    assert_eq!(never.stats().syncs, 1);

    // An interval no test will outlive: commits write but do not sync, and
    // the deadline says when the owner must sync.
    let mut hourly = Wal::open(
        dir.path().join("hourly"),
        WalOptions::default().with_sync(SyncPolicy::Interval(Duration::from_secs(3600))),
    )
    .unwrap();
    assert_eq!(hourly.sync_deadline(), None);
    hourly.append(b"a").unwrap();
    hourly.commit().unwrap();
    let deadline = hourly.sync_deadline().expect("a deadline");
    hourly.append(b"b").unwrap();
    hourly.commit().unwrap();
    assert_eq!(
        hourly.sync_deadline(),
        Some(deadline),
        "the oldest write sets it"
    );
    assert!(!hourly.sync_if_due().unwrap());
    assert_eq!(hourly.stats().syncs, 0);
    hourly.sync().unwrap();
    assert_eq!(hourly.sync_deadline(), None);

    // A zero interval is due at once.
    let mut eager = Wal::open(
        dir.path().join("eager"),
        WalOptions::default().with_sync(SyncPolicy::Interval(Duration::ZERO)),
    )
    .unwrap();
    eager.append(b"a").unwrap();
    eager.commit().unwrap();
    assert_eq!(eager.stats().syncs, 1);
    eager.append(b"b").unwrap();
    eager.flush().unwrap();
    assert!(eager.sync_if_due().unwrap());
    assert_eq!(eager.stats().syncs, 2);
}

#[test]
fn unflushed_records_are_dropped_with_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(b"kept").unwrap();
    wal.commit().unwrap();
    wal.append(b"never acknowledged").unwrap();
    drop(wal);
    assert_eq!(payloads(dir.path()), [b"kept".to_vec()]);
}
