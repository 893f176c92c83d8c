//! WAL replay of damaged logs: never a panic, never a record that was not
//! written, and only a prefix of what was written when the damage is in the
//! last file (where a torn tail may be cut).
//!
//! An input is either the raw bytes of a single WAL file (header included),
//! or a log written through `Wal` (possibly rotated into several files)
//! and then damaged: bytes flipped, zeroed or appended, files truncated.
//! Each log is replayed under both recovery modes, then opened (which cuts
//! a torn tail), read back, and written to again.
//!
//! Allocation is bounded by the file sizes (at most the input's length);
//! `cargo xtask fuzz` runs libFuzzer with `-malloc_limit_mb`, so a length
//! field trusted for an allocation is a crash.

#![no_main]

use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use kv_wal::{Position, RecoveryMode, SyncPolicy, Wal, WalOptions, file_name};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// The whole of WAL file 1, header included.
    Raw(Vec<u8>),
    /// A log written through the API, then damaged.
    Built {
        payloads: Vec<Vec<u8>>,
        small_files: bool,
        damage: Vec<Damage>,
    },
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip { file: u8, at: u16, mask: u8 },
    Zero { file: u8, at: u16, len: u8 },
    Truncate { file: u8, at: u16 },
    Append { file: u8, bytes: Vec<u8> },
}

impl Damage {
    fn file(&self) -> u8 {
        match self {
            Damage::Flip { file, .. }
            | Damage::Zero { file, .. }
            | Damage::Truncate { file, .. }
            | Damage::Append { file, .. } => *file,
        }
    }
}

/// A record as replay yields it: its position and payload.
type Record = (Position, Vec<u8>);

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// Everything a replay yields before it ends or fails.
fn replay(dir: &Path, mode: RecoveryMode) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(replay) = Wal::replay(dir, Position::START, mode) else {
        return out;
    };
    for item in replay {
        match item {
            Ok(record) => out.push(record),
            Err(_) => break,
        }
    }
    out
}

/// Whether `got` is `written` in order with some records left out.
fn is_subsequence(got: &[Record], written: &[Record]) -> bool {
    let mut it = written.iter();
    got.iter().all(|g| it.any(|w| w == g))
}

fuzz_target!(|input: Input| {
    let scratch = kv_fuzz::scratch_dir();
    let dir = scratch.path().join("wal");
    std::fs::create_dir_all(&dir).unwrap();

    // What was written, and whether all damage hit the last file.
    let mut written: Option<(Vec<Record>, bool)> = None;
    match &input {
        Input::Raw(bytes) => std::fs::write(dir.join(file_name(1)), bytes).unwrap(),
        Input::Built {
            payloads,
            small_files,
            damage,
        } => {
            let mut options = WalOptions::default().with_sync(SyncPolicy::Never);
            if *small_files {
                options = options.with_max_file_size(96);
            }
            let mut wal = Wal::open(&dir, options).unwrap();
            let mut records = Vec::new();
            for p in payloads.iter().filter(|p| !p.is_empty()).take(64) {
                records.push((wal.append(p).unwrap(), p.clone()));
            }
            wal.commit().unwrap();
            wal.close().unwrap();
            let files = wal_files(&dir);
            let mut only_last = true;
            for d in damage.iter().take(8) {
                let index = usize::from(d.file()) % files.len();
                only_last &= index == files.len() - 1;
                let path = &files[index];
                let mut bytes = std::fs::read(path).unwrap();
                let at = |at: u16| usize::from(at) % (bytes.len() + 1);
                match d {
                    Damage::Flip { at: a, mask, .. } => {
                        let i = at(*a);
                        if let Some(b) = bytes.get_mut(i) {
                            *b ^= mask;
                        }
                    }
                    Damage::Zero { at: a, len, .. } => {
                        let i = at(*a);
                        let end = (i + usize::from(*len)).min(bytes.len());
                        bytes[i..end].fill(0);
                    }
                    Damage::Truncate { at: a, .. } => {
                        let i = at(*a);
                        bytes.truncate(i);
                    }
                    Damage::Append { bytes: extra, .. } => bytes.extend_from_slice(extra),
                }
                std::fs::write(path, &bytes).unwrap();
            }
            written = Some((records, only_last));
        }
    }

    let tolerant = replay(&dir, RecoveryMode::TolerateCorruptedTail);
    let strict = replay(&dir, RecoveryMode::AbsoluteConsistency);
    // The strict mode never yields more than the tolerant one: the modes
    // differ only in what a torn tail means.
    assert!(strict.len() <= tolerant.len());
    assert_eq!(&tolerant[..strict.len()], &strict[..]);
    for pair in tolerant.windows(2) {
        assert!(pair[0].0 < pair[1].0, "positions out of order");
    }
    if let Some((records, only_last)) = &written {
        // Never a record that was not written. (A file before the last cut
        // exactly at a frame boundary loses its last frames silently: the
        // format has no trailer to tell, so only order is checked then.)
        assert!(
            is_subsequence(&tolerant, records),
            "replay yielded a record that was not written"
        );
        if *only_last {
            assert_eq!(
                &records[..tolerant.len()],
                &tolerant[..],
                "damage in the last file gave more than a prefix"
            );
        }
    }

    // Opening cuts a torn tail; the log then reads back what replay gave,
    // and takes new records after it.
    let Ok(mut wal) = Wal::open(&dir, WalOptions::default().with_sync(SyncPolicy::Never)) else {
        return;
    };
    let mut back: Vec<Record> = Vec::new();
    for item in wal.read_from(Position::START) {
        match item {
            Ok(record) => back.push(record),
            Err(_) => break,
        }
    }
    // What an open log reads back is what replay yielded before the open.
    assert_eq!(
        back, tolerant,
        "the opened log reads back other records than replay"
    );
    let position = wal.append(b"after recovery").unwrap();
    wal.commit().unwrap();
    drop(wal);
    let after = replay(&dir, RecoveryMode::AbsoluteConsistency);
    if after.last().map(|(p, v)| (*p, v.as_slice())) == Some((position, b"after recovery")) {
        // The new record follows everything that was read back.
        assert_eq!(&after[..after.len() - 1], &back[..]);
    } else {
        // Only possible when an older file is damaged, which open does not
        // read through; replay reports it.
        assert!(
            Wal::replay(&dir, Position::START, RecoveryMode::AbsoluteConsistency)
                .map(|r| r.into_iter().any(|i| i.is_err()))
                .unwrap_or(true),
            "the record written after recovery is lost, and replay reports nothing"
        );
    }
});
