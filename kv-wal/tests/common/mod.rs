//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};

use kv_wal::{Position, RecoveryMode, Wal};

/// A deterministic pseudo-random payload of `len` bytes (never empty).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len.max(1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Every record of the log in `dir` from `from`, or the first error.
pub fn replay_all(
    dir: &Path,
    from: Position,
    mode: RecoveryMode,
) -> kv_wal::Result<Vec<(Position, Vec<u8>)>> {
    Wal::replay(dir, from, mode)?.collect()
}

/// The payloads of the log in `dir`, panicking on any error.
pub fn payloads(dir: &Path) -> Vec<Vec<u8>> {
    replay_all(dir, Position::START, RecoveryMode::TolerateCorruptedTail)
        .expect("replay")
        .into_iter()
        .map(|(_, payload)| payload)
        .collect()
}

/// The WAL files in `dir`, by number.
pub fn wal_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter_map(|entry| {
            let number = kv_wal::parse_file_name(entry.file_name().to_str()?)?;
            Some((number, entry.path()))
        })
        .collect();
    files.sort();
    files
}

/// The path of the highest-numbered WAL file in `dir`.
pub fn last_file(dir: &Path) -> PathBuf {
    wal_files(dir).pop().expect("a WAL file").1
}

/// Appends `bytes` to the end of `path`, as a torn write might leave them.
pub fn append_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

/// Flips one bit of the byte at `offset` in `path`.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}
