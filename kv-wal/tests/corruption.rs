//! Damage that is not a torn tail is reported with its file and offset,
//! never skipped.

mod common;

use std::fs;

use common::{flip_byte, payload, payloads, replay_all, wal_files};
use kv_wal::{Error, FRAME_HEADER_LEN, Position, RecoveryMode, SyncPolicy, Wal, WalOptions};

const TOLERATE: RecoveryMode = RecoveryMode::TolerateCorruptedTail;
const ABSOLUTE: RecoveryMode = RecoveryMode::AbsoluteConsistency;

fn write_records(dir: &std::path::Path, options: WalOptions, count: u64) -> Vec<Position> {
    let mut wal = Wal::open(dir, options).unwrap();
    let positions = (0..count)
        .map(|i| wal.append(&payload(i, 50)).unwrap())
        .collect();
    wal.close().unwrap();
    positions
}

fn assert_corruption_at(error: Error, path: &std::path::Path, at: u64) {
    match error {
        Error::Corruption {
            path: p, offset, ..
        } => {
            assert_eq!(p, path);
            assert_eq!(offset, at);
        }
        other => panic!("expected corruption at {at}, got {other}"),
    }
}

#[test]
fn a_bad_frame_followed_by_good_frames_is_corruption() {
    // Damage in the checksum, the length, and the payload of frame 1.
    for delta in [0, 2, 8, 9, FRAME_HEADER_LEN as u64 + 20] {
        let dir = tempfile::tempdir().unwrap();
        let positions = write_records(dir.path(), WalOptions::default(), 4);
        let (_, file) = wal_files(dir.path()).pop().unwrap();
        let bad = positions[1].offset;
        let len = fs::metadata(&file).unwrap().len();
        flip_byte(&file, bad + delta);

        for mode in [TOLERATE, ABSOLUTE] {
            let mut replay = Wal::replay(dir.path(), Position::START, mode).unwrap();
            let (first, _) = replay.next().unwrap().unwrap();
            assert_eq!(first, positions[0]);
            let error = replay.next().unwrap().unwrap_err();
            assert!(error.is_corruption());
            assert!(error.to_string().contains(&bad.to_string()), "{error}");
            assert_corruption_at(error, &file, bad);
            assert!(replay.next().is_none(), "the iteration ends after an error");

            let error =
                Wal::open(dir.path(), WalOptions::default().with_recovery(mode)).unwrap_err();
            assert_corruption_at(error, &file, bad);
        }
        // Nothing was truncated.
        assert_eq!(fs::metadata(&file).unwrap().len(), len);
    }
}

#[test]
fn a_bad_frame_in_an_older_file_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(512);
    let positions = write_records(dir.path(), options.clone(), 40);
    let files = wal_files(dir.path());
    assert!(files.len() >= 3);

    // Damage the last frame of the first file: at the end of a file, but
    // not the last file, so it cannot be a torn tail.
    let (first_number, first_path) = &files[0];
    let last_in_first = positions
        .iter()
        .filter(|p| p.file == *first_number)
        .max()
        .unwrap();
    flip_byte(first_path, last_in_first.offset + FRAME_HEADER_LEN as u64);

    // Open does not read older files through.
    drop(Wal::open(dir.path(), options.clone()).unwrap());
    for mode in [TOLERATE, ABSOLUTE] {
        let error = replay_all(dir.path(), Position::START, mode).unwrap_err();
        assert_corruption_at(error, first_path, last_in_first.offset);
    }
    // A cut off older file too.
    let (_, second_path) = &files[1];
    let len = fs::metadata(second_path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(second_path)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let from = Position::new(files[1].0, 0);
    let error = replay_all(dir.path(), from, TOLERATE).unwrap_err();
    assert!(error.is_corruption(), "{error}");

    // Replay from after the damage is clean.
    let from = Position::new(files[2].0, 0);
    assert!(replay_all(dir.path(), from, TOLERATE).is_ok());
    // So is reading what an open Wal wrote, from there.
    let wal = Wal::open(dir.path(), options).unwrap();
    assert!(wal.read_from(from).all(|r| r.is_ok()));
    assert!(wal.read_from(Position::START).any(|r| r.is_err()));
}

#[test]
fn a_missing_file_in_the_middle_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(512);
    write_records(dir.path(), options, 40);
    let files = wal_files(dir.path());
    fs::remove_file(&files[1].1).unwrap();
    let error = replay_all(dir.path(), Position::START, TOLERATE).unwrap_err();
    match error {
        Error::MissingFile { path } => assert_eq!(path, files[1].1),
        other => panic!("expected a missing file, got {other}"),
    }
}

#[test]
fn a_replay_whose_first_file_is_missing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions::default()
        .with_sync(SyncPolicy::Never)
        .with_max_file_size(512);
    write_records(dir.path(), options.clone(), 40);
    let files = wal_files(dir.path());
    assert!(files.len() >= 4);
    let expect_missing = |from: Position, missing: u64| {
        let error = replay_all(dir.path(), from, TOLERATE).unwrap_err();
        match error {
            Error::MissingFile { path } => {
                assert_eq!(path, dir.path().join(kv_wal::file_name(missing)));
            }
            other => panic!("expected file {missing} missing, got {other}"),
        }
    };
    // The file a replay (a checkpoint's position, say) starts in is gone,
    // and later files exist: its records must not be skipped silently.
    fs::remove_file(&files[0].1).unwrap();
    fs::remove_file(&files[1].1).unwrap();
    expect_missing(Position::new(files[1].0, 32), files[1].0);
    expect_missing(Position::new(files[0].0, 0), files[0].0);
    // A position after every file.
    expect_missing(
        Position::new(files.last().unwrap().0 + 1, 32),
        files.last().unwrap().0 + 1,
    );
    // Replaying everything, or from an existing file, is fine.
    assert!(replay_all(dir.path(), Position::START, TOLERATE).is_ok());
    assert!(replay_all(dir.path(), Position::new(files[2].0, 0), TOLERATE).is_ok());

    // The directory emptied: opening starts a new log at file 1, below the
    // position, and a replay from the position must not find nothing.
    for (_, path) in wal_files(dir.path()) {
        fs::remove_file(path).unwrap();
    }
    let wal = Wal::open(dir.path(), options).unwrap();
    let from = Position::new(files[2].0, 32);
    match wal.read_from(from).next() {
        Some(Err(Error::MissingFile { path })) => {
            assert_eq!(path, dir.path().join(kv_wal::file_name(files[2].0)));
        }
        other => panic!("expected a missing file, got {other:?}"),
    }
    expect_missing(from, files[2].0);
    assert_eq!(wal.read_from(Position::START).count(), 0);
}

#[test]
fn foreign_and_damaged_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), WalOptions::default(), 3);
    let (_, file) = wal_files(dir.path()).pop().unwrap();
    let good = fs::read(&file).unwrap();

    fs::write(&file, b"#!/bin/sh\necho this is not a WAL file\n").unwrap();
    let error = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(&error, Error::NotAWalFile { path, .. } if *path == file),
        "{error}"
    );

    let mut damaged = good.clone();
    damaged[20] ^= 1; // the file number
    fs::write(&file, &damaged).unwrap();
    let error = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(
        matches!(error, Error::Corruption { offset: 0, .. }),
        "{error}"
    );

    // A well-formed header for another file number: a renamed file.
    fs::write(&file, &good).unwrap();
    fs::rename(&file, dir.path().join(kv_wal::file_name(9))).unwrap();
    let error = Wal::open(dir.path(), WalOptions::default()).unwrap_err();
    assert!(error.to_string().contains("renamed"), "{error}");
}

#[test]
fn other_files_in_the_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), WalOptions::default(), 3);
    fs::write(dir.path().join("README"), b"hello").unwrap();
    fs::write(dir.path().join("1.wal"), b"not ours").unwrap();
    assert_eq!(payloads(dir.path()).len(), 3);
    assert!(Wal::open(dir.path(), WalOptions::default()).is_ok());
}
