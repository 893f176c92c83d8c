//! [`verify`]: a read-only check of every file of a database directory.
//!
//! It reads the marker, every segment, every hint file and every
//! WAL file, checks every checksum, and reports each damaged place with its
//! file and offset. It never takes the write path and never runs recovery:
//! nothing is truncated, created or removed (no torn tail is cut, no
//! leftover file deleted, no lock file created).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use kv_log::{
    BadRegion, LogError, LogPosition, LogView, SEGMENT_HEADER_LEN, Segment, SegmentKind,
    parse_hint_file_name, parse_segment_file_name, segment_file_name,
};

use crate::fs::{LOCK_FILE_NAME, WAL_DIR_NAME};
use crate::marker::{MARKER_FILE_NAME, Marker};
use crate::options;
use crate::{Error, Result};

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Whether a marker was found (and read).
    pub marker: bool,
    /// Segment files read.
    pub segments: u64,
    /// Hint files read.
    pub hint_files: u64,
    /// WAL files read.
    pub wal_files: u64,
    /// Records read and checked in the segments.
    pub records: u64,
    /// Of those, the records past the marker's position (written after the
    /// last marker, by a process that did not close): an open cuts them
    /// off and replays them from the WAL, where they are among
    /// [`wal_records_pending`](VerifyReport::wal_records_pending).
    pub records_past_marker: u64,
    /// Records read and checked in the WAL (inside its checked frames).
    pub wal_records: u64,
    /// Of those, the records after the marker's WAL position: the ones an
    /// open replays because the segments do not hold them yet. The others
    /// are also among [`records`](VerifyReport::records), until the next
    /// trim deletes their WAL file.
    pub wal_records_pending: u64,
    /// Bytes of the files read.
    pub bytes: u64,
    /// Damage: a checksum that does not match, bytes that are not a valid
    /// record or frame where one must be, a file that contradicts another.
    /// Opening the database would fail, or would lose or mistrust data.
    pub problems: Vec<Problem>,
    /// Things that are not damage but that opening the database changes: a
    /// torn write at the end of the WAL or of segment data past the last
    /// marker (cut off at open; under the default sync policy nothing
    /// acknowledged is in it), temporary files left by an interrupted write,
    /// hint files whose segment is gone, and a hint file that fails its own
    /// checks (the open scans the segment instead; compaction writes a new
    /// one). A hint file whose checksum holds but that disagrees with its
    /// segment is a problem.
    pub warnings: Vec<Problem>,
    /// Whether a writer had the database open, so that only what it no
    /// longer changes was checked: the segments as of its last marker (the
    /// marker's log segment up to the marker; log segments after it are
    /// not read, the WAL holds their records), hint files, and every WAL
    /// file, the last one up to its last whole frame.
    pub beside_writer: bool,
}

impl VerifyReport {
    /// The number of files read: segments, hint files, WAL files and the
    /// marker.
    pub fn files_checked(&self) -> u64 {
        self.segments + self.hint_files + self.wal_files + u64::from(self.marker)
    }

    /// The number of records checked, in the segments and in the WAL: a
    /// record in both is checked twice and counted twice here.
    pub fn records_checked(&self) -> u64 {
        self.records + self.wal_records
    }

    /// The number of records the database holds, each counted once: those
    /// the segments hold up to the marker's position, and those the WAL
    /// holds after it.
    pub fn records_held(&self) -> u64 {
        self.records - self.records_past_marker + self.wal_records_pending
    }

    /// Whether no damage was found (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One damaged place (or one warning) found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file (0 for the file as a whole or its header).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

fn problem(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        offset,
        reason: reason.into(),
    }
}

/// Checks every file of the database in `path` without changing anything,
/// and reports every damaged place it finds.
///
/// The directory lock is taken (if the lock file exists; it is not created)
/// so that no writer changes files under the check. If a writer has the
/// database open, what it no longer changes is checked beside it
/// ([`VerifyReport::beside_writer`]): the files as of its last marker,
/// read again from a newer marker when the writer moves files under the
/// check, and a problem is reported only when two checks in a row find it
/// (a writer's half-written frame is not damage). Damage is not an error:
/// it is listed in [`VerifyReport::problems`].
///
/// What is checked: the marker's checksum; every segment's
/// header, and every record's checksum and framing (after a bad record the
/// check resumes at the next valid one, so each damaged place is reported);
/// that the segment the marker names exists and is long enough; every hint
/// file's checksum and entries, and that each entry matches the record it
/// points at; every WAL file's header and every frame's checksum, and every
/// record inside each frame.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = kv_engine::Db::open(dir.path())?;
/// db.put(b"apple", b"red")?;
/// db.close()?;
/// let report = kv_engine::verify(dir.path())?;
/// assert!(report.is_clean());
/// assert_eq!(report.records, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Unsettled`] if a writer beside the check kept moving files
/// under it for every attempt; [`Error::NotADatabase`] if the directory holds none
/// ([`holds_database`](crate::holds_database)); [`Error::Io`] if the path
/// does not exist, is not a directory, or a file cannot be read.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = path.as_ref();
    let meta = std::fs::metadata(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory, so not a database",
            ),
        });
    }
    crate::fs::check_exists(dir, false)?;
    match lock_if_present(dir) {
        Ok(_lock) => check_closed(dir),
        Err(Error::Locked { .. }) => check_beside_writer(dir),
        Err(e) => Err(e),
    }
}

/// How many times a check beside a writer is made before
/// [`Error::Unsettled`].
const ATTEMPTS: u32 = 20;

/// Checks the database in `dir` with its lock held: every file.
fn check_closed(dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let marker = check_marker(dir, &mut report)?;
    // Without a marker, opening treats the database as marked at the
    // start of segment 1.
    let segments_end = crate::recovery::durable_of(marker.as_ref()).end;

    // The directory's files.
    let mut segments = BTreeMap::new();
    let mut hints = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = parse_segment_file_name(name) {
            segments.insert(id, entry.path());
        } else if let Some(id) = parse_hint_file_name(name) {
            hints.insert(id, entry.path());
        } else if name.ends_with(".tmp") {
            report.warnings.push(problem(
                entry.path(),
                0,
                "a temporary file left by an interrupted write; opening the database ignores or removes it",
            ));
        }
    }

    // The segment the marker names must hold what it says is durable.
    let mut log_segments = 0;
    let mut opened = Vec::new();
    for path in segments.values() {
        report.segments += 1;
        report.bytes += file_len(path)?;
        match Segment::open_read_only(path) {
            Ok(segment) => {
                if segment.kind() == SegmentKind::Log {
                    log_segments += 1;
                }
                opened.push(segment);
            }
            Err(e) => report.problems.push(log_problem(e, path)?),
        }
    }
    // Every segment the marker lists must exist, or be superseded by an
    // output that does (as opening checks).
    if let Some(listed) = marker.as_ref().and_then(|m| m.segments.as_ref()) {
        let superseded: std::collections::HashSet<u32> = opened
            .iter()
            .flat_map(|s| s.supersedes().iter().copied())
            .collect();
        for id in listed {
            // The marker's own segment is checked below, with what it holds.
            if *id != segments_end.segment && !segments.contains_key(id) && !superseded.contains(id)
            {
                report.problems.push(problem(
                    dir.join(segment_file_name(*id)),
                    0,
                    "the segment is missing: the CHECKPOINT marker lists it and no compaction output supersedes it",
                ));
            }
        }
    }
    if marker.is_some() && !segments.contains_key(&segments_end.segment) {
        let nothing_missing = log_segments == 0 && segments_end.offset == SEGMENT_HEADER_LEN as u64;
        if !nothing_missing {
            report.problems.push(problem(
                dir.join(segment_file_name(segments_end.segment)),
                0,
                format!(
                    "the segment is missing, but the CHECKPOINT marker says {} bytes of it are durable",
                    segments_end.offset
                ),
            ));
        }
    }

    // Each segment's records, and its hint file.
    for segment in &opened {
        let hint = hints.remove(&segment.id());
        if let Some(hint_path) = &hint {
            report.hint_files += 1;
            report.bytes += file_len(hint_path)?;
        }
        check_segment(segment, segments_end, hint.is_some(), &mut report);
    }
    for (id, hint_path) in hints {
        if segments.contains_key(&id) {
            // Its segment's header is damaged (reported above): the hint
            // cannot be checked against it, but it can be read.
            report.hint_files += 1;
            report.bytes += file_len(&hint_path)?;
        } else {
            report.warnings.push(problem(
                hint_path,
                0,
                "a hint file whose segment is gone; opening the database removes it",
            ));
        }
    }

    check_wal(dir, marker.as_ref(), false, &mut report)?;
    Ok(report)
}

/// Checks the database in `dir` beside the writer that has it open: each
/// attempt checks what the writer no longer changes as of its marker then
/// (`check_live`), and one is made again when the writer moved files
/// under it. Problems are reported only when two attempts in a row find
/// the same: a frame the writer is halfway through writing, or a file it
/// removed after the marker was read, is not damage, and is gone from the
/// next attempt. Once the writer has closed the database, the check is
/// [`check_closed`].
fn check_beside_writer(dir: &Path) -> Result<VerifyReport> {
    let mut previous: Option<Vec<Problem>> = None;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        match lock_if_present(dir) {
            Ok(_lock) => return check_closed(dir),
            Err(Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        match check_live(dir) {
            Ok(report) if report.problems.is_empty() => return Ok(report),
            Ok(report) if previous.as_ref() == Some(&report.problems) => return Ok(report),
            Ok(report) => {
                last = report
                    .problems
                    .first()
                    .map_or_else(String::new, ToString::to_string);
                previous = Some(report.problems);
            }
            Err(Error::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                // The writer removed a file after the marker was read.
                last = format!("{}: {source}", path.display());
                previous = None;
            }
            Err(e) => return Err(e),
        }
        log::debug!("checking {} beside its writer again: {last}", dir.display());
        std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
    }
    Err(Error::Unsettled {
        path: dir.to_path_buf(),
        attempts: ATTEMPTS,
        last,
    })
}

/// One check beside a writer: the segments as of its marker, mapped as a
/// read-only view maps them (`LogView`: no bytes the writer may still cut
/// or rewrite), their hint files, and every WAL file.
fn check_live(dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        beside_writer: true,
        ..VerifyReport::default()
    };
    let marker = check_marker(dir, &mut report)?;
    let durable = crate::recovery::durable_of(marker.as_ref());
    let end = durable.end;
    match LogView::open(dir, &durable) {
        Ok(view) => {
            let set = view.reader().segments().to_arc();
            for segment in set.iter() {
                report.segments += 1;
                report.bytes += segment.len();
                // The marker's log segment is mapped up to the marker,
                // and its hint file (if it was sealed since) describes
                // the whole file: the check goes by the records.
                let cut_short = segment.kind() == SegmentKind::Log && segment.id() == end.segment;
                let hint = dir.join(kv_log::hint_file_name(segment.id()));
                let hinted = !cut_short && hint.exists();
                if hinted {
                    report.hint_files += 1;
                    report.bytes += file_len(&hint)?;
                }
                check_segment(segment, end, hinted, &mut report);
            }
        }
        Err(e) => report.problems.push(log_problem(e, dir)?),
    }
    check_wal(dir, marker.as_ref(), true, &mut report)?;
    Ok(report)
}

/// Reads the marker (a damaged one is a problem), and checks that a
/// directory without one holds no data.
fn check_marker(dir: &Path, report: &mut VerifyReport) -> Result<Option<Marker>> {
    let marker = match Marker::read(dir) {
        Ok(marker) => marker,
        Err(Error::Corruption {
            path,
            offset,
            reason,
        }) => {
            report.problems.push(problem(path, offset, reason));
            None
        }
        Err(other) => return Err(other),
    };
    if marker.is_some() {
        report.marker = true;
        report.bytes += file_len(&dir.join(MARKER_FILE_NAME))?;
    } else if !report.problems.is_empty() {
        // The marker is damaged (reported above).
    } else if let Some(reason) = crate::recovery::data_without_marker(dir)? {
        report
            .problems
            .push(problem(dir.join(MARKER_FILE_NAME), 0, reason));
    }
    Ok(marker)
}

/// Checks every WAL file and the records inside its frames. Beside a
/// writer (`live`), the last file's tail is what the writer is appending,
/// and temporary files are its own: neither is reported.
fn check_wal(
    dir: &Path,
    marker: Option<&Marker>,
    live: bool,
    report: &mut VerifyReport,
) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR_NAME);
    let mut wal_problems = Vec::new();
    let mut wal_records = 0;
    let mut wal_records_pending = 0;
    // Frames before it hold records the segments hold too.
    let replay_from = marker.map_or(kv_wal::Position::START, |m| m.wal_from);
    let wal = kv_wal::check(&wal_dir, |path, position, payload_version, payload| {
        let Some(format) = options::wal_records(payload_version) else {
            wal_problems.push(problem(
                path,
                position.offset,
                format!(
                    "the frame's payload is of payload version {payload_version}, which this \
                     build does not read"
                ),
            ));
            return;
        };
        let mut at = 0;
        while at < payload.len() {
            match format.decode(&payload[at..]) {
                Ok(decoded) => {
                    wal_records += 1;
                    wal_records_pending += u64::from(position >= replay_from);
                    at += decoded.len;
                }
                Err(e) => {
                    wal_problems.push(problem(
                        path,
                        position.offset,
                        format!(
                            "the frame's checksum matches, but byte {at} of its payload is not a valid record: {e}"
                        ),
                    ));
                    break;
                }
            }
        }
    })?;
    report.wal_files = wal.files;
    report.wal_records = wal_records;
    report.wal_records_pending = wal_records_pending;
    report.bytes += wal.bytes;
    report.problems.extend(
        wal.damage
            .into_iter()
            .map(|d| problem(d.path, d.offset, d.reason)),
    );
    report.problems.extend(wal_problems);
    if let Some(torn) = wal.torn_tail.filter(|_| !live) {
        report.warnings.push(problem(
            torn.path,
            torn.offset,
            format!(
                "{}: the torn tail of an interrupted write, which opening the database cuts off",
                torn.reason
            ),
        ));
    }
    for leftover in wal.leftovers.into_iter().filter(|_| !live) {
        report.warnings.push(problem(
            leftover,
            0,
            "a temporary file left by an interrupted write; opening the database removes it",
        ));
    }
    // A marker whose replay starts at the very beginning (file 0, as in a
    // copy made by `Db::checkpoint`) needs no particular file.
    if let Some(marker) = marker.filter(|m| m.wal_from.file >= kv_wal::FIRST_FILE_NUMBER) {
        let from = wal_dir.join(kv_wal::file_name(marker.wal_from.file));
        if !from.exists() {
            report.problems.push(problem(
                from,
                0,
                "the WAL file the CHECKPOINT marker says replay starts from is missing",
            ));
        }
    }
    Ok(())
}

/// Checks a segment's records, and its hint file if it has one. Bad bytes
/// in log segment data past the last marker with nothing valid after
/// them are a torn write that opening cuts off (a warning); anything else is
/// damage. A hint file must pass its own checks (checksum, header, entries
/// within the segment), and its entries must be exactly the segment's
/// records, in order; both are checked in one pass over the segment.
fn check_segment(
    segment: &Segment,
    segments_end: LogPosition,
    hinted: bool,
    report: &mut VerifyReport,
) {
    // Where data that opening discards (and rebuilds from the WAL) starts.
    let discarded_from = match segment.kind() {
        SegmentKind::Compacted => None,
        SegmentKind::Log if segment.id() < segments_end.segment => None,
        SegmentKind::Log if segment.id() == segments_end.segment => Some(segments_end.offset),
        SegmentKind::Log => Some(segment.data_start()),
    };
    if segment.id() == segments_end.segment
        && segment.kind() == SegmentKind::Log
        && segment.len() < segments_end.offset
    {
        report.problems.push(problem(
            segment.path(),
            segment.len(),
            format!(
                "the file ends at {}, but the CHECKPOINT marker says {} bytes are durable",
                segment.len(),
                segments_end.offset
            ),
        ));
    }
    let hint = if hinted {
        match segment.read_hint_file() {
            Ok(hint) => hint,
            // Not damage to the data: the hint file is a cache of the
            // segment, which an open then scans.
            Err(damage) => {
                report.warnings.push(problem(
                    damage.path,
                    damage.offset,
                    format!(
                        "{}: opening the database ignores this hint file and scans the \
                         segment, and compaction (`kv compact`, `Db::compact`) writes it again",
                        damage.reason
                    ),
                ));
                None
            }
        }
    } else {
        None
    };
    let mut entries = hint.as_ref().map(|h| h.entries());
    let mut mismatch: Option<Problem> = None;
    let mut records = 0;
    let mut past_marker = 0;
    let bad = segment.check_records(|loc, record| {
        records += 1;
        past_marker += u64::from(discarded_from.is_some_and(|from| u64::from(loc.offset) >= from));
        let (Some(hint), Some(entries)) = (&hint, &mut entries) else {
            return;
        };
        if mismatch.is_some() {
            return;
        }
        mismatch = match entries.next() {
            Some(entry) => {
                let same = entry.location == loc
                    && entry.meta.key == record.key
                    && entry.meta.seq == record.seq
                    && entry.meta.expires_at == record.expires_at
                    && entry.meta.kind == record.kind;
                (!same).then(|| {
                    problem(
                        hint.path(),
                        entry.hint_offset,
                        format!(
                            "the entry does not match the record at offset {} of {}",
                            loc.offset,
                            segment.path().display()
                        ),
                    )
                })
            }
            None => Some(problem(
                hint.path(),
                0,
                format!(
                    "it lists fewer entries than the segment has records (none for offset {})",
                    loc.offset
                ),
            )),
        };
    });
    report.records += records;
    report.records_past_marker += past_marker;
    // With the segment damaged, comparing the hint with it would only
    // repeat that damage.
    if bad.is_empty()
        && let (Some(hint), Some(entries)) = (&hint, &mut entries)
    {
        if mismatch.is_none()
            && let Some(extra) = entries.next()
        {
            mismatch = Some(problem(
                hint.path(),
                extra.hint_offset,
                "it lists more entries than the segment has records",
            ));
        }
        report.problems.extend(mismatch);
    }
    for BadRegion {
        offset,
        len,
        reason,
        followed_by_valid,
    } in bad
    {
        let torn = !followed_by_valid && discarded_from.is_some_and(|from| offset >= from);
        if torn && segment.is_zero_from(offset) {
            // Space the writer allocated ahead of its appends, left by a
            // crash: not data, and opening cuts it off.
            continue;
        }
        if torn {
            report.warnings.push(problem(
                segment.path(),
                offset,
                format!(
                    "{reason}: {len} bytes at the end, past the last marker (a torn write); \
                     opening the database cuts them off and replays the WAL"
                ),
            ));
        } else {
            let extent = if followed_by_valid {
                format!("{len} bytes up to the next valid record")
            } else {
                format!("the last {len} bytes of the file")
            };
            report.problems.push(problem(
                segment.path(),
                offset,
                format!("{reason} ({extent} are not valid records)"),
            ));
        }
    }
}

/// The problem a segment error reports (`path` for an error that names no
/// file); an I/O error is no problem but an error of the check.
fn log_problem(error: LogError, path: &Path) -> Result<Problem> {
    Ok(match error {
        LogError::BadSegmentHeader { path, reason } => problem(path, 0, reason),
        LogError::Corruption {
            path,
            offset,
            reason,
        } => problem(path, offset, reason),
        LogError::Io { path, source } => return Err(Error::Io { path, source }),
        other => problem(path, 0, other.to_string()),
    })
}

/// Takes the directory lock if the lock file exists; never creates it.
pub(crate) fn lock_if_present(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_display_file_offset_and_reason() {
        let p = problem("/db/0000000001.seg", 96, "the checksum does not match");
        assert_eq!(
            p.to_string(),
            "/db/0000000001.seg at offset 96: the checksum does not match"
        );
    }
}
