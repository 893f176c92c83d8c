//! Helpers shared by the kv-engine integration tests, each written once so
//! that every test means the same thing by "a crash image" or "what the
//! database holds". Each test file keeps its own `options()`: those differ
//! on purpose (segment sizes, sync policy, background compaction).
//!
//! Every test binary compiles this module and uses only part of it.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_engine::Db;

pub mod corpus;

/// A small deterministic generator (xorshift64), so that a failing seed can
/// be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`. The low bit is set, since xorshift
    /// never leaves the state 0.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next number below `n` (which must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A fresh directory, in memory (tmpfs, `/dev/shm`) where the machine has
/// one, else in the system's temporary directory. For tests that open many
/// databases: every open syncs, and syncs on tmpfs cost nothing. What they
/// test is what the code does, not the disk.
pub fn scratch_dir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("kv-test-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().unwrap()
}

/// The directory changed while it was listed or copied.
struct Changed;

/// `result`, or `Changed` if the file was not found: it vanished after it
/// was listed. Any other error fails the test.
fn or_changed<T>(result: std::io::Result<T>, path: &Path) -> Result<T, Changed> {
    match result {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Changed),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Every directory (length `None`) and file (with its length) under `dir`,
/// relative to it, sorted, so that a directory comes before what it holds.
fn listing(dir: &Path) -> Result<Vec<(PathBuf, Option<u64>)>, Changed> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in or_changed(fs::read_dir(&here), &here)? {
            let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", here.display()));
            let path = rel.join(entry.file_name());
            let file_type = or_changed(entry.file_type(), &entry.path())?;
            if file_type.is_dir() {
                found.push((path.clone(), None));
                stack.push(path);
            } else {
                let len = or_changed(entry.metadata(), &entry.path())?.len();
                found.push((path, Some(len)));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Copies what `listing` found under `from` to `to`.
fn copy_listed(from: &Path, to: &Path, listed: &[(PathBuf, Option<u64>)]) -> Result<(), Changed> {
    fs::create_dir_all(to).unwrap();
    for (rel, len) in listed {
        let target = to.join(rel);
        match len {
            None => fs::create_dir_all(&target).unwrap(),
            Some(_) => {
                let source = from.join(rel);
                or_changed(fs::copy(&source, &target), &source)?;
            }
        }
    }
    Ok(())
}

/// Copies a directory that nothing changes while it is copied (a closed
/// database, a fixture, a crash image already taken) to `to`, every file
/// and every directory (an empty `wal/` too). A file that vanishes during
/// the copy fails the test: here nothing may delete one.
pub fn copy_dir(from: &Path, to: &Path) {
    let copied = listing(from).and_then(|listed| copy_listed(from, to, &listed));
    assert!(
        copied.is_ok(),
        "{} changed while it was copied, and nothing should change it",
        from.display()
    );
}

/// How many times [`crash_image`] copies before it gives up.
const CRASH_IMAGE_ATTEMPTS: u32 = 200;

/// Copies the directory of a database that is open (its `Db` alive, its
/// writer and maybe its compactor running) to `to` (absent or empty), as a
/// process killed at one instant would leave it: every file as it is now,
/// `LOCK` included (a lock is held on the open file, not by the file's
/// existence, so a copied `LOCK` is unlocked, as after a crash).
///
/// NOTE: one semantics for a file that vanishes between the listing and its
/// copy (`NotFound`: a compaction retired it, a WAL trim deleted an old
/// WAL file, a `.tmp` file was renamed): the directory changed under the
/// copy, and the copy is taken again. It is neither skipped nor an error.
/// Skipping it would be what a crash at the moment of that file's copy
/// shows, but the copy is not made at one moment: the files copied before
/// it are older, and together they can be a directory no crash leaves. A
/// marker copied before a WAL trim replaced it, with a WAL file it needs
/// deleted before its turn came; or, as `tests/model.rs` found within 300
/// cases when this skipped: a compaction output created after the listing
/// (so not copied) and one of its inputs deleted before its turn (so
/// skipped), an image that fails to open with "the segment is missing: the
/// last marker lists it and no compaction output supersedes it". The
/// engine makes each new state durable before it deletes what the old one
/// needs, so no crash leaves that. It happens whenever something runs in
/// the background while the test thread copies: background compaction
/// (which also writes hint files), and the writer's own WAL trim once
/// the WAL passes `max_wal_size`, which runs after the write that
/// crossed it was acknowledged.
///
/// So an attempt counts only if nothing vanished and the listing of names
/// and lengths is the same before and after it. The engine changes a
/// directory only by appending to files (a length changes), creating a file
/// (as `.tmp`, then renamed), and deleting one (a name changes); the one
/// change the listing cannot see is `CHECKPOINT` replaced by a marker of
/// the same length, and a trim always rotates the WAL to a new file
/// before it writes the marker and deletes the old files after: with the
/// names unchanged around the copy, the rotation came before it and the
/// deletion after, and either marker fits the files copied. The caller
/// makes no write call while it copies (a write in flight could be cut
/// back to the same length).
///
/// # Panics
///
/// If no attempt succeeds in [`CRASH_IMAGE_ATTEMPTS`] (the directory kept
/// changing while the test waited), or on any I/O error but `NotFound`.
pub fn crash_image(live: &Path, to: &Path) {
    assert!(
        fs::read_dir(to).map_or(true, |mut d| d.next().is_none()),
        "{} is not empty",
        to.display()
    );
    for attempt in 0..CRASH_IMAGE_ATTEMPTS {
        if attempt > 0 {
            match fs::remove_dir_all(to) {
                Err(e) if e.kind() != ErrorKind::NotFound => panic!("{}: {e}", to.display()),
                _ => {}
            }
            // Let whatever runs in the background get on.
            std::thread::sleep(Duration::from_millis(1));
        }
        let Ok(before) = listing(live) else {
            continue;
        };
        if copy_listed(live, to, &before).is_ok()
            && listing(live).is_ok_and(|after| after == before)
        {
            return;
        }
    }
    panic!(
        "{} changed during each of {CRASH_IMAGE_ATTEMPTS} copies: no crash image",
        live.display()
    );
}

/// Everything `db` holds, read through `iter`, with `get` of every key
/// checked to agree with it (and no key listed twice). `context` names the
/// moment in a failure.
pub fn contents(db: &Db, context: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = BTreeMap::new();
    for item in db.iter() {
        let (k, v) = item.unwrap_or_else(|e| panic!("{context}: iteration failed: {e}"));
        assert!(
            all.insert(k.clone(), v.to_vec()).is_none(),
            "{context}: iteration returned {k:?} twice"
        );
    }
    for (k, v) in &all {
        let got = db
            .get(k)
            .unwrap_or_else(|e| panic!("{context}: get failed: {e}"));
        assert_eq!(got.as_ref(), Some(v), "{context}: get disagrees with iter");
    }
    all
}

/// Where the frames of the (version 2) WAL file `wal` end: after its last
/// valid frame, or after its header if it has none.
///
/// A WAL file being appended to is its frames, then zeros up to the end of
/// the space allocated ahead (up to 1 MiB; `kv_fs::ALLOCATION_CHUNK`), and a
/// crash image keeps them: a test that cuts or damages "the end of the WAL"
/// means the end of its frames, not of the file.
pub fn wal_frames_end(wal: &Path) -> u64 {
    let mut end = kv_wal::FILE_HEADER_LEN as u64;
    kv_wal::check(wal.parent().unwrap(), |path, position, _, payload| {
        if path == wal {
            end = end.max(position.offset + (kv_wal::FRAME_HEADER_LEN + payload.len()) as u64);
        }
    })
    .unwrap();
    end
}

/// Where the valid records of the segment file at `path` end: its length,
/// or less when it ends with the zeros allocated ahead (the active log
/// segment of a crash image).
pub fn segment_records_end(path: &Path) -> u64 {
    let segment = kv_log::Segment::open_read_only(path).unwrap();
    let mut end = segment.data_start();
    let _ =
        segment.check_records(|loc, _| end = end.max(u64::from(loc.offset) + u64::from(loc.len)));
    end
}

/// The files directly in `dir` whose names end with `suffix` (".seg",
/// ".hint", ".wal"), sorted: in id order, since the names are zero-padded.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

/// Every file under `dir` (its full path) and its bytes: to check that
/// something changed no byte.
pub fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Whether the segment file whose first bytes are `header` was written by
/// compaction: its header flags (u16 at 10, docs/format.md) have bit 0 set.
pub fn is_compaction_output(header: &[u8]) -> bool {
    u16::from_le_bytes([header[10], header[11]]) & 1 == 1
}

/// A version 2 CHECKPOINT marker, decoded by hand as docs/format.md draws
/// it, independently of the engine's decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// With `segment_offset`: the end of the durable segment data.
    pub segment: u32,
    pub segment_offset: u64,
    /// Every record with a sequence number up to this is in the segments.
    pub seq: u64,
    /// With `wal_offset`: where WAL replay starts.
    pub wal_file: u64,
    pub wal_offset: u64,
    /// The id the next new segment was to get.
    pub next_segment_id: u32,
    /// The segments that must exist.
    pub segments: Vec<u32>,
}

/// Reads the marker in the database directory `dir`, checking its magic,
/// version, length and checksum.
pub fn read_marker(dir: &Path) -> Marker {
    let path = dir.join("CHECKPOINT");
    let b = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert!(b.len() >= 64, "a marker of {} bytes", b.len());
    assert_eq!(&b[..8], b"KVCHKPNT", "the magic");
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 2, "the version");
    let count = u32_at(52) as usize;
    assert_eq!(b.len(), 56 + 4 * count + 8, "the length for {count} ids");
    let body = b.len() - 8;
    assert_eq!(
        u64_at(body),
        xxhash_rust::xxh3::xxh3_64(&b[..body]),
        "the checksum"
    );
    Marker {
        segment: u32_at(12),
        segment_offset: u64_at(16),
        seq: u64_at(24),
        wal_file: u64_at(32),
        wal_offset: u64_at(40),
        next_segment_id: u32_at(48),
        segments: (0..count).map(|i| u32_at(56 + 4 * i)).collect(),
    }
}
