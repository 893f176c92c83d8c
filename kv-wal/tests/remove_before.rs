//! Cutting the log at a checkpoint deletes exactly the files wholly before it.

mod common;

use common::{payload, replay_all, wal_files};
use kv_wal::{Position, RecoveryMode, SyncPolicy, Wal, WalOptions};

#[test]
fn remove_before_deletes_only_files_wholly_before_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(1024);
    let mut wal = Wal::open(dir.path(), options.clone()).unwrap();
    let mut positions = Vec::new();
    for i in 0..100u64 {
        positions.push((wal.append(&payload(i, 100)).unwrap(), i));
    }
    wal.commit().unwrap();
    let numbers: Vec<u64> = wal_files(dir.path()).iter().map(|&(n, _)| n).collect();
    assert!(numbers.len() >= 5, "{numbers:?}");

    // A checkpoint in the middle of file 4: files 1 to 3 go, 4 stays.
    let checkpoint = positions
        .iter()
        .map(|&(position, _)| position)
        .find(|position| position.file == 4 && position.offset > kv_wal::FILE_HEADER_LEN as u64)
        .unwrap();
    let before = wal.size_on_disk();
    assert_eq!(wal.remove_before(checkpoint).unwrap(), 3);
    let left: Vec<u64> = wal_files(dir.path()).iter().map(|&(n, _)| n).collect();
    assert_eq!(left, numbers[3..]);
    assert!(wal.size_on_disk() < before);
    assert_eq!(wal.file_count(), left.len());

    // Doing it again deletes nothing.
    assert_eq!(wal.remove_before(checkpoint).unwrap(), 0);

    // Replay from the checkpoint still yields everything after it.
    let expected: Vec<_> = positions
        .iter()
        .filter(|&&(position, _)| position >= checkpoint)
        .map(|&(position, i)| (position, payload(i, 100)))
        .collect();
    let replayed = replay_all(dir.path(), checkpoint, RecoveryMode::TolerateCorruptedTail).unwrap();
    assert_eq!(replayed, expected);
    assert_eq!(
        wal.read_from(checkpoint)
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        expected
    );

    // A position past the end never deletes the active file.
    let end = wal.end_position();
    let removed = wal.remove_before(Position::new(u64::MAX, 0)).unwrap();
    assert_eq!(removed, left.len() - 1);
    assert_eq!(wal_files(dir.path()).len(), 1);
    assert_eq!(wal.end_position(), end);
    wal.append(b"still writable").unwrap();
    wal.commit().unwrap();
    drop(wal);

    // A replay from before the first file starts at the first file there is.
    let wal = Wal::open(dir.path(), options).unwrap();
    let replayed = replay_all(
        dir.path(),
        Position::START,
        RecoveryMode::TolerateCorruptedTail,
    )
    .unwrap();
    assert_eq!(replayed.last().unwrap().1, b"still writable");
    assert_eq!(wal.file_count(), 1);
}
