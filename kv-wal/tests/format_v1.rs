//! A log written by the last build of format version 1 (frozen in
//! `tests/fixtures/v1-log`, see its README) is read by this build: replay,
//! `check`, and `Wal::open`, which goes on in a new version 2 file.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{flip_byte, wal_files};
use kv_wal::{Error, Position, RecoveryMode, Wal, WalOptions};

const TOLERATE: RecoveryMode = RecoveryMode::TolerateCorruptedTail;

/// The payloads the fixture was written with.
fn fixture_payload(i: usize) -> Vec<u8> {
    const LENS: [usize; 6] = [1, 12, 300, 7, 64, 1000];
    if i == 6 {
        return [0u8, 0, 1, 0].repeat(64);
    }
    (0..LENS[i]).map(|j| (i * 31 + j) as u8).collect()
}

/// Where the fixture's records are: 12-byte frame headers in version 1.
fn fixture_positions() -> Vec<Position> {
    [
        (1, 32),
        (1, 45),
        (1, 69),
        (2, 32),
        (2, 51),
        (3, 32),
        (3, 1044),
    ]
    .into_iter()
    .map(|(file, offset)| Position::new(file, offset))
    .collect()
}

fn expected() -> Vec<(Position, Vec<u8>)> {
    fixture_positions()
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, fixture_payload(i)))
        .collect()
}

/// A copy of the fixture in a fresh directory.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-log");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("wal");
    fs::create_dir(&dir).unwrap();
    for entry in fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (temp, dir)
}

fn replay(dir: &Path, from: Position) -> kv_wal::Result<Vec<(Position, Vec<u8>)>> {
    Wal::replay(dir, from, TOLERATE)?.collect()
}

#[test]
fn a_version_1_log_replays_as_written() {
    let (_temp, dir) = fixture_copy();
    assert_eq!(replay(&dir, Position::START).unwrap(), expected());
    assert_eq!(
        replay(&dir, Position::new(2, 51)).unwrap(),
        expected()[4..].to_vec()
    );
    let report = kv_wal::check(&dir, |_, _, _, _| {}).unwrap();
    assert_eq!((report.files, report.frames), (3, 7));
    assert!(report.damage.is_empty() && report.torn_tail.is_none());
}

#[test]
fn opening_a_version_1_log_goes_on_in_a_version_2_file() {
    let (_temp, dir) = fixture_copy();
    let before: Vec<_> = wal_files(&dir)
        .into_iter()
        .map(|(_, p)| fs::read(p).unwrap())
        .collect();
    let mut wal = Wal::open(&dir, WalOptions::default()).unwrap();
    let next = wal.append(b"written by version 2").unwrap();
    assert_eq!(next, Position::new(4, kv_wal::FILE_HEADER_LEN as u64));
    wal.close().unwrap();
    // The old files are unchanged, and the new one is version 2.
    let files = wal_files(&dir);
    for ((_, path), old) in files.iter().zip(&before) {
        assert_eq!(&fs::read(path).unwrap(), old);
    }
    assert_eq!(fs::read(&files[3].1).unwrap()[8], kv_wal::FORMAT_VERSION);
    let mut all = expected();
    all.push((next, b"written by version 2".to_vec()));
    assert_eq!(replay(&dir, Position::START).unwrap(), all);
    // Opening again stays in file 4.
    let wal = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!(wal.file_count(), 4);
    assert_eq!(wal.read_from(Position::START).count(), 8);
}

#[test]
fn a_torn_tail_of_a_version_1_file_is_cut() {
    let (_temp, dir) = fixture_copy();
    let last = dir.join(kv_wal::file_name(3));
    let end = fs::metadata(&last).unwrap().len();
    // Half of a version 1 frame of 4 KiB of the pattern `00 00 01 00`.
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xAB; 8]);
    bytes.extend_from_slice(&4096u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8, 0, 1, 0].repeat(512));
    fs::write(&last, &bytes).unwrap();
    assert_eq!(replay(&dir, Position::START).unwrap(), expected());
    let report = kv_wal::check(&dir, |_, _, _, _| {}).unwrap();
    assert!(report.damage.is_empty(), "{report:?}");
    assert_eq!(report.torn_tail.unwrap().offset, end);
    let wal = Wal::open(&dir, WalOptions::default()).unwrap();
    assert_eq!(
        wal.truncated_tail().unwrap().position,
        Position::new(3, end)
    );
    drop(wal);
    assert_eq!(fs::metadata(&last).unwrap().len(), end);
    assert_eq!(replay(&dir, Position::START).unwrap(), expected());
}

#[test]
fn damage_before_a_valid_version_1_frame_is_corruption() {
    let (_temp, dir) = fixture_copy();
    let last = dir.join(kv_wal::file_name(3));
    // In the payload of record 5; record 6 follows.
    flip_byte(&last, 32 + 12 + 500);
    let error = Wal::open(&dir, WalOptions::default()).unwrap_err();
    match error {
        Error::Corruption { path, offset, .. } => {
            assert_eq!((path, offset), (last.clone(), 32));
        }
        other => panic!("expected corruption, got {other}"),
    }
    let report = kv_wal::check(&dir, |_, _, _, _| {}).unwrap();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].offset, 32);
}
