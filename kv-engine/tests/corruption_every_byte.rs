//! Corruption at every byte: a small database is built deterministically
//! (sealed log segments, a compaction output, hint files, a checkpoint
//! marker, and a WAL tail of writes after the last checkpoint), then, for
//! every byte of every file, a copy of it is made with that byte changed,
//! opened, and every key ever written is read. (The WAL file of the crash
//! image ends in the zeros allocated ahead of its frames, up to 1 MiB: of
//! those only four bytes are flipped, see `corpus::flip_offsets`.)
//!
//! The contract is **never wrong data, never a panic, never an unbounded
//! allocation**. For each flip one of these must hold:
//!
//! - **detected at open**: `Db::open_with` fails with `Error::Corruption`
//!   (or `Error::UnsupportedFile` for a damaged magic number, which cannot
//!   be told from a foreign file);
//! - **detected at read**: the open succeeds; every read returns the right
//!   value or `Error::Corruption`, and at least one returns the error;
//! - **harmless**: every read returns the right value, and `Db::keys`
//!   lists exactly the right keys (the byte was in a dead record, a hint
//!   file that is then ignored, or segment bytes after the checkpoint,
//!   which open discards and replays from the WAL);
//! - **torn tail dropped** (WAL only, under the default
//!   `RecoveryMode::TolerateCorruptedTail`): the byte is in the last frame
//!   of the last WAL file, so nothing valid follows the damaged frame. That
//!   is exactly what a write torn by a crash looks like, and the default
//!   recovery mode drops it. The database must then equal the model
//!   *without the last write* (a whole batch, all or nothing): one
//!   acknowledged write is lost, and no wrong value is returned. This is
//!   the one loss the default mode accepts; the same flips under
//!   `RecoveryMode::AbsoluteConsistency` must be detected at open, and the
//!   test checks that too. A flip in any earlier frame must be detected,
//!   since a valid frame follows it.
//!
//! Before each open, `kv_engine::verify` checks the damaged copy: it must
//! not panic, and it must report a problem or a warning for every flip
//! that the open or a read detects or that drops the torn tail (for a
//! harmless flip it may or may not: a damaged hint file or dead record is
//! still damage to report).
//!
//! Anything else fails the test, naming the file, the offset and the
//! pattern: a wrong value, a key listed that should not be, a key missing
//! (outside the one case above), another kind of error, a panic on any
//! thread, or more than `ALLOCATION_LIMIT` bytes allocated during one open
//! and its reads (measured with a counting global allocator, so a length
//! read from damaged bytes and trusted for an allocation is caught even
//! when the operating system would have overcommitted it).
//!
//! Each flipped byte is XORed with 0xFF by default. `KV_CORRUPTION_PATTERNS=all`
//! also tries each of the eight single-bit flips (nine opens per byte).
//! The tally per kind of file is printed (`cargo test -p kv-engine --test
//! corruption_every_byte -- --nocapture` shows it). Scratch copies go to
//! `/dev/shm` where it exists, since every open syncs.

mod common;

use std::alloc::System;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{
    copy_dir, corpus, crash_image, is_compaction_output, scratch_dir, segment_records_end,
    wal_frames_end,
};
use kv_engine::{Db, Error, RecoveryMode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Most bytes one open of the damaged copy and its reads may allocate in
/// all (a bound on the peak). A clean open allocates well under 1 MiB.
const ALLOCATION_LIMIT: usize = 64 << 20;

/// Panics on any thread, counted by a panic hook.
static PANICS: AtomicUsize = AtomicUsize::new(0);

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Checkpoint,
    LogSegment,
    CompactedSegment,
    Hint,
    Wal,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Checkpoint => "CHECKPOINT",
            Kind::LogSegment => "log segment",
            Kind::CompactedSegment => "compacted segment",
            Kind::Hint => "hint file",
            Kind::Wal => "WAL",
        })
    }
}

/// The pristine database and what it must read back.
struct Fixture {
    _root: tempfile::TempDir,
    dir: PathBuf,
    /// The state after every write.
    model: Model,
    /// The state before the last write (the last WAL frame).
    before_last: Model,
    /// Every key ever written, deleted ones included.
    keys: Vec<Vec<u8>>,
    /// Every file with bytes, relative to `dir`, and its kind.
    files: Vec<(PathBuf, Kind)>,
    /// Where the last frame of the WAL file starts.
    last_frame: u64,
    /// Where the frames of the WAL file end; zeros allocated ahead follow,
    /// up to the end of the file.
    wal_frames_end: u64,
}

/// Builds the database: see the module docs. Deterministic: the same
/// writes in the same order, no background thread.
fn build() -> Fixture {
    let root = scratch_dir();
    let live = root.path().join("live");
    let mut model = Model::new();
    let mut before_last = Model::new();
    let db = corpus::write(&live, |writes| {
        before_last = model.clone();
        for (key, value) in writes {
            match value {
                Some(value) => model.insert(key.clone(), value.clone()),
                None => model.remove(key),
            };
        }
    });
    let dir = root.path().join("pristine");
    // Every write was acknowledged, so it has reached the operating system:
    // a copy taken now is what kill -9 would leave.
    crash_image(&live, &dir);
    drop(db);
    std::fs::remove_dir_all(&live).unwrap();

    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(rel);
                continue;
            }
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            let name = rel.to_string_lossy().into_owned();
            let kind = if name == "CHECKPOINT" {
                Kind::Checkpoint
            } else if name.ends_with(".hint") {
                Kind::Hint
            } else if name.ends_with(".wal") {
                Kind::Wal
            } else if name.ends_with(".seg") {
                if is_compaction_output(&bytes) {
                    Kind::CompactedSegment
                } else {
                    Kind::LogSegment
                }
            } else if name == kv_engine::LOCK_FILE_NAME {
                assert!(bytes.is_empty(), "LOCK is empty");
                continue;
            } else {
                panic!("unexpected file {name} in the database");
            };
            files.push((rel, kind));
        }
    }
    files.sort();

    // The WAL: one file (the checkpoint rotated to it), with the tail.
    let wal_dir = dir.join(kv_engine::WAL_DIR_NAME);
    let frames: Vec<kv_wal::Position> = kv_wal::Wal::replay(
        &wal_dir,
        kv_wal::Position::START,
        RecoveryMode::AbsoluteConsistency,
    )
    .unwrap()
    .map(|r| r.unwrap().0)
    .collect();
    assert_eq!(frames.len(), 4, "the WAL tail holds the four last writes");
    let last_frame = frames.last().unwrap().offset;
    let wal_frames_end = wal_frames_end(&wal_dir.join(kv_wal::file_name(frames[0].file)));

    let count = |k: Kind| files.iter().filter(|f| f.1 == k).count();
    assert_eq!(count(Kind::Checkpoint), 1);
    assert_eq!(count(Kind::Wal), 1);
    assert!(count(Kind::CompactedSegment) >= 1, "{files:?}");
    assert!(count(Kind::Hint) >= 2, "{files:?}");
    assert!(count(Kind::LogSegment) >= 2, "{files:?}");
    Fixture {
        _root: root,
        dir,
        model,
        before_last,
        keys: corpus::keys(),
        files,
        last_frame,
        wal_frames_end,
    }
}

/// What one damaged copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    DetectedAtOpen(&'static str),
    DetectedAtRead,
    Harmless,
    TornTailDropped,
}

/// Opens `dir` and reads every key; `Err` describes a broken contract.
fn attempt(
    dir: &Path,
    fixture: &Fixture,
    mode: RecoveryMode,
    drop_allowed: bool,
) -> Result<Outcome, String> {
    let db = match Db::open_with(dir, corpus::options().wal_recovery(mode)) {
        Ok(db) => db,
        Err(Error::Corruption { .. }) => return Ok(Outcome::DetectedAtOpen("Corruption")),
        Err(Error::UnsupportedFile { .. }) => {
            return Ok(Outcome::DetectedAtOpen("UnsupportedFile"));
        }
        Err(other) => return Err(format!("open failed with an untyped error: {other:?}")),
    };
    let mut errors = 0;
    let mut is_model = true;
    let mut is_before_last = true;
    let mut wrong = Vec::new();
    for k in &fixture.keys {
        match db.get(k) {
            Ok(v) => {
                let (a, b) = (fixture.model.get(k), fixture.before_last.get(k));
                is_model &= v.as_ref() == a;
                is_before_last &= v.as_ref() == b;
                if v.as_ref() != a {
                    wrong.push(format!(
                        "{}: read {:?}, expected {:?}",
                        String::from_utf8_lossy(k),
                        v.map(|v| String::from_utf8_lossy(&v).into_owned()),
                        a.map(|v| String::from_utf8_lossy(v).into_owned())
                    ));
                }
            }
            Err(e) if e.is_corruption() => errors += 1,
            Err(e) => return Err(format!("read of {k:?} failed with an untyped error: {e:?}")),
        }
    }
    for k in db.keys() {
        is_model &= fixture.model.contains_key(&k);
        is_before_last &= fixture.before_last.contains_key(&k);
        if !fixture.model.contains_key(&k) {
            wrong.push(format!("listed {}", String::from_utf8_lossy(&k)));
        }
    }
    drop(db);
    if is_model {
        Ok(if errors > 0 {
            Outcome::DetectedAtRead
        } else {
            Outcome::Harmless
        })
    } else if drop_allowed && is_before_last {
        Ok(Outcome::TornTailDropped)
    } else {
        Err(format!("wrong data: {}", wrong.join("; ")))
    }
}

#[derive(Default)]
struct Tally {
    flips: u64,
    /// Flips `verify` reported (a problem or a warning).
    verify_flagged: u64,
    at_open: BTreeMap<&'static str, u64>,
    at_read: u64,
    harmless: u64,
    dropped: u64,
}

#[test]
fn every_flipped_byte_is_detected_or_harmless() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let patterns: Vec<u8> = match std::env::var("KV_CORRUPTION_PATTERNS").as_deref() {
        Ok("all") => vec![0xFF, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80],
        _ => vec![0xFF],
    };
    let fixture = build();
    let work_root = scratch_dir();
    let work = work_root.path().join("db");

    // The pristine copy reads back exactly, and sets the allocation baseline.
    copy_dir(&fixture.dir, &work);
    let region = Region::new(GLOBAL);
    let clean = attempt(&work, &fixture, RecoveryMode::default(), false);
    let baseline = region.change().bytes_allocated;
    assert_eq!(clean, Ok(Outcome::Harmless), "the undamaged database");
    std::fs::remove_dir_all(&work).unwrap();

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut most_allocated = 0usize;
    let mut total_bytes = 0;
    for (rel, kind) in &fixture.files {
        let pristine = std::fs::read(fixture.dir.join(rel)).unwrap();
        total_bytes += pristine.len();
        // The WAL is tried under both recovery modes.
        let modes: &[RecoveryMode] = if *kind == Kind::Wal {
            &[
                RecoveryMode::TolerateCorruptedTail,
                RecoveryMode::AbsoluteConsistency,
            ]
        } else {
            &[RecoveryMode::TolerateCorruptedTail]
        };
        for &mode in modes {
            let label = match (kind, mode) {
                (Kind::Wal, RecoveryMode::AbsoluteConsistency) => {
                    format!("{kind} (AbsoluteConsistency)")
                }
                _ => kind.to_string(),
            };
            let data_end = match kind {
                Kind::Wal => fixture.wal_frames_end,
                Kind::LogSegment => segment_records_end(&fixture.dir.join(rel)),
                _ => pristine.len() as u64,
            };
            for offset in corpus::flip_offsets(pristine.len(), data_end as usize) {
                for &pattern in &patterns {
                    copy_dir(&fixture.dir, &work);
                    let mut bytes = pristine.clone();
                    bytes[offset] ^= pattern;
                    std::fs::write(work.join(rel), &bytes).unwrap();
                    let drop_allowed = *kind == Kind::Wal
                        && mode == RecoveryMode::TolerateCorruptedTail
                        && offset as u64 >= fixture.last_frame;
                    let panics = PANICS.load(Ordering::SeqCst);
                    let region = Region::new(GLOBAL);
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        // verify first: it reads the files as they are,
                        // before recovery changes them.
                        let flagged = match kv_engine::verify(&work) {
                            Ok(report) => {
                                !report.problems.is_empty() || !report.warnings.is_empty()
                            }
                            Err(e) => return (Err(format!("verify failed: {e:?}")), false),
                        };
                        (attempt(&work, &fixture, mode, drop_allowed), flagged)
                    }));
                    let stats = region.change();
                    let allocated = stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize;
                    most_allocated = most_allocated.max(allocated);
                    let at = format!(
                        "{} at offset {offset} (xor {pattern:#04x}, {mode:?})",
                        rel.display()
                    );
                    let (outcome, flagged) = match result {
                        Err(_) => (Err("panicked".to_string()), false),
                        Ok(_) if PANICS.load(Ordering::SeqCst) != panics => {
                            (Err("a thread panicked".to_string()), false)
                        }
                        Ok(_) if allocated > ALLOCATION_LIMIT => (
                            Err(format!(
                                "allocated {allocated} bytes (limit {ALLOCATION_LIMIT})"
                            )),
                            false,
                        ),
                        Ok(r) => r,
                    };
                    let tally = tallies.entry(label.clone()).or_default();
                    tally.flips += 1;
                    tally.verify_flagged += u64::from(flagged);
                    if !flagged
                        && matches!(
                            outcome,
                            Ok(Outcome::DetectedAtOpen(_)
                                | Outcome::DetectedAtRead
                                | Outcome::TornTailDropped)
                        )
                    {
                        failures.push(format!(
                            "{at}: verify reported nothing, but the damage is {:?}",
                            outcome.as_ref().unwrap()
                        ));
                    }
                    match outcome {
                        Ok(Outcome::DetectedAtOpen(how)) => {
                            if how == "UnsupportedFile" && offset >= 8 {
                                failures.push(format!(
                                    "{at}: damage past the magic number reported as \
                                     UnsupportedFile, not Corruption"
                                ));
                            }
                            *tally.at_open.entry(how).or_default() += 1;
                        }
                        Ok(Outcome::DetectedAtRead) => tally.at_read += 1,
                        Ok(Outcome::Harmless) => tally.harmless += 1,
                        Ok(Outcome::TornTailDropped) => tally.dropped += 1,
                        Err(why) => failures.push(format!("{at}: {why}")),
                    }
                    std::fs::remove_dir_all(&work).unwrap();
                }
            }
        }
    }

    println!(
        "corruption at every byte: {} files, {total_bytes} bytes, patterns {patterns:#04x?}",
        fixture.files.len()
    );
    println!(
        "{:<36} {:>6} {:>16} {:>9} {:>9} {:>12} {:>9}",
        "file kind", "flips", "open (C/U)", "read", "harmless", "tail dropped", "verify"
    );
    for (label, t) in &tallies {
        let c = t.at_open.get("Corruption").copied().unwrap_or(0);
        let u = t.at_open.get("UnsupportedFile").copied().unwrap_or(0);
        println!(
            "{label:<36} {:>6} {:>16} {:>9} {:>9} {:>12} {:>9}",
            t.flips,
            format!("{} ({c}/{u})", c + u),
            t.at_read,
            t.harmless,
            t.dropped,
            t.verify_flagged
        );
    }
    println!(
        "allocation: a clean open and its reads {baseline} bytes; the most any damaged copy took {most_allocated} bytes"
    );
    assert!(
        failures.is_empty(),
        "{} flips broke the contract; the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Damage to the last WAL frame is dropped under the default mode, and
    // always detected under AbsoluteConsistency.
    let strict = &tallies["WAL (AbsoluteConsistency)"];
    assert_eq!(strict.dropped, 0);
    assert!(tallies["WAL"].dropped > 0);
    assert_eq!(
        tallies["CHECKPOINT"].flips,
        tallies["CHECKPOINT"].at_open.values().sum::<u64>(),
        "every flip of the checkpoint marker is detected at open"
    );
}
