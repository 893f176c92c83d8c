//! [`salvage`]: copies what a damaged database still holds intact into a
//! new one, and says exactly what may be lost.
//!
//! It reads the damaged directory as `verify` does (never changing it):
//! every segment's records, resuming after each damaged region at the next
//! valid record, and every WAL frame. For each key the intact record with
//! the highest sequence number wins, as at open; a winner that is a
//! tombstone or has expired is not copied. Segments a compaction output
//! supersedes are not read: the output holds their live records, and one
//! of their old records could bring back a key whose tombstone compaction
//! has since dropped.
//!
//! What it cannot read is a [`Loss`]: the file, offset and length, and the
//! sequence numbers of the intact records on either side, which bound the
//! writes the damage may have held. A loss whose every sequence number in
//! between was read elsewhere (the WAL holds what a damaged segment tail
//! held, and the other way round) lost nothing. For the others, a key is
//! *at risk* if its newest intact record may be older than what the damage
//! held: exactly the keys the segment's hint file names in the damaged
//! bytes when the hint file is intact, else every key whose newest intact
//! record comes before the damage's upper bound. At-risk keys are copied
//! with the newest value that could be read, and named in the report:
//! never silently served as current.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_format::{NO_EXPIRY, RecordKind};
use kv_log::{Location, LogError, Segment, parse_segment_file_name};

use crate::fs::WAL_DIR_NAME;
use crate::marker::Marker;
use crate::options;
use crate::shared::read_entry;
use crate::verify::lock_if_present;
use crate::writer::entry_for;
use crate::{Db, Error, Options, Result, SyncPolicy, WriteBatch};

/// What [`salvage`] copied and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// Intact records read, in the segments and the WAL.
    pub records_read: u64,
    /// Keys copied into the new database, each with its newest intact
    /// value (and what was left of its time to live). In the report of
    /// [`Salvage::read`], the keys live when it read them: what
    /// [`Salvage::records`] yields.
    pub keys_copied: u64,
    /// Keys whose newest intact record is a tombstone: not copied.
    pub keys_deleted: u64,
    /// Keys whose newest intact record has expired: not copied.
    pub keys_expired: u64,
    /// Every damaged place, and what it may have held.
    pub losses: Vec<Loss>,
    /// The keys whose latest version may be lost, sorted: their newest
    /// intact record may be older than a write the damage held (those with
    /// an intact older record were copied with it). Keys whose every record
    /// was in the damage are named here only when a hint file names them.
    pub keys_at_risk: Vec<Vec<u8>>,
    /// Things that are not damage but that the reader should know (a
    /// superseded segment not read, an unreadable hint file).
    pub warnings: Vec<String>,
}

impl SalvageReport {
    /// Whether everything the database held was copied: no loss that
    /// other copies do not cover.
    pub fn is_complete(&self) -> bool {
        self.losses.iter().all(|l| l.covered)
    }
}

/// One damaged place [`salvage`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loss {
    /// The file.
    pub path: PathBuf,
    /// Byte offset of the damage in it.
    pub offset: u64,
    /// Bytes unreadable from there, when known (in a segment: up to the
    /// next valid record or the end; the whole file for a bad header).
    pub len: Option<u64>,
    /// What is wrong.
    pub reason: String,
    /// The highest sequence number of the intact records before it in its
    /// file (0 if none): what it held was written after that.
    pub after_seq: u64,
    /// The lowest sequence number of the intact records after it in its
    /// file, or `None` if none follows: what it held was written before.
    pub before_seq: Option<u64>,
    /// Whether every write it may have held was read elsewhere, intact:
    /// then nothing was lost here.
    pub covered: bool,
    /// How many records the segment's intact hint file lists in the
    /// damaged bytes, when it has one.
    pub hinted_records: Option<u64>,
}

/// Where a key's newest intact record is.
#[derive(Clone, Copy)]
enum Source {
    /// In `segments[index]`, at `location`.
    Segment(usize, Location),
    /// In the WAL's values, at `start..end` of the arena.
    Wal(usize, usize),
}

#[derive(Clone, Copy)]
struct Newest {
    seq: u64,
    kind: RecordKind,
    expires_at: u64,
    source: Source,
}

/// Everything read so far.
#[derive(Default)]
struct Found {
    newest: HashMap<Vec<u8>, Newest>,
    /// The sequence number of every intact record.
    seqs: Vec<u64>,
    /// Values of WAL records that won so far (and of some that lost since).
    wal_values: Vec<u8>,
    records: u64,
}

impl Found {
    fn offer(&mut self, key: &[u8], newest: Newest) {
        self.records += 1;
        self.seqs.push(newest.seq);
        match self.newest.get_mut(key) {
            Some(old) if old.seq >= newest.seq => {}
            Some(old) => *old = newest,
            None => {
                self.newest.insert(key.to_vec(), newest);
            }
        }
    }
}

/// A damaged place and, if a hint file names them, the records it held.
struct Damage {
    loss: Loss,
    hinted: Option<Vec<(Vec<u8>, u64)>>,
}

/// Copies every record of the database in `damaged` that can be read
/// intact into a new database in `target`, and reports what could not be
/// read and which keys may have lost their latest version.
///
/// `damaged` is not changed (as by [`verify`](crate::verify), its lock is
/// taken if it has a lock file, so a database open elsewhere is
/// [`Error::Locked`]). `target` must be missing or an empty directory; the
/// new database is synced before this returns. Nothing in the damaged
/// database needs to be consistent for this to work: a segment with a
/// damaged record, a missing or damaged marker, a damaged WAL; each
/// damaged place is a [`Loss`] in the report. This is [`Salvage::read`]
/// then [`Salvage::write_to`].
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = kv_engine::Db::open(dir.path())?;
/// db.put(b"apple", b"red")?;
/// db.close()?;
/// let new = dir.path().with_extension("salvaged");
/// let report = kv_engine::salvage(dir.path(), &new)?;
/// assert!(report.is_complete());
/// assert_eq!(report.keys_copied, 1);
/// assert_eq!(kv_engine::Db::open(&new)?.get(b"apple")?.as_deref(), Some(&b"red"[..]));
/// # std::fs::remove_dir_all(&new)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::NotADatabase`] if `damaged` holds no database;
/// [`Error::Locked`]; [`Error::SalvageTarget`] if `target` exists and is
/// not an empty directory, or lies inside `damaged`; [`Error::Io`]; any
/// error of writing the new database. Damage is not an error.
pub fn salvage(damaged: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<SalvageReport> {
    let target = target.as_ref();
    check_target(damaged.as_ref(), target)?;
    Salvage::read(damaged)?.write_to(target)
}

/// The intact records of a damaged database, read by [`Salvage::read`]:
/// what [`salvage`] copies, for a caller that wants them some other way
/// (`kv export --skip-damaged` writes them to a file).
///
/// It holds the damaged database's lock (if it has a lock file) and its
/// segments mapped until it is dropped.
pub struct Salvage {
    report: SalvageReport,
    segments: Vec<Segment>,
    found: Found,
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Salvage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Salvage")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// A live key and its newest intact value, from [`Salvage::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvagedRecord {
    /// The key.
    pub key: Vec<u8>,
    /// Its newest intact value.
    pub value: Vec<u8>,
    /// The time it has left to live, if it expires.
    pub ttl: Option<Duration>,
}

impl Salvage {
    /// Reads every file of the database in `damaged`, as [`salvage`] does,
    /// without changing it, and works out what may be lost.
    ///
    /// # Errors
    ///
    /// [`Error::NotADatabase`] if `damaged` holds no database;
    /// [`Error::Locked`] if a `Db` has it open; [`Error::Io`]. Damage is
    /// not an error: it is in [`report`](Salvage::report).
    pub fn read(damaged: impl AsRef<Path>) -> Result<Salvage> {
        let dir = damaged.as_ref();
        crate::fs::check_exists(dir, false)?;
        let lock = lock_if_present(dir)?;
        let mut report = SalvageReport::default();
        let mut found = Found::default();
        let mut damage = Vec::new();

        if let Err(e) = Marker::read(dir) {
            // Salvage needs no marker: every file is read whatever it says.
            report.warnings.push(format!(
                "the CHECKPOINT marker is unreadable ({e}); read every file anyway"
            ));
        }
        let segments = read_segments(dir, &mut found, &mut damage, &mut report)?;
        read_wal(&dir.join(WAL_DIR_NAME), &mut found, &mut damage)?;

        found.seqs.sort_unstable();
        found.seqs.dedup();
        let mut at_risk: HashSet<Vec<u8>> = HashSet::new();
        for Damage { mut loss, hinted } in damage {
            loss.covered = covered(&found.seqs, loss.after_seq, loss.before_seq);
            if !loss.covered {
                match &hinted {
                    Some(records) => {
                        for (key, seq) in records {
                            if found.newest.get(key).is_none_or(|n| n.seq < *seq) {
                                at_risk.insert(key.clone());
                            }
                        }
                    }
                    None => {
                        for (key, newest) in &found.newest {
                            if loss.before_seq.is_none_or(|before| newest.seq < before) {
                                at_risk.insert(key.clone());
                            }
                        }
                    }
                }
            }
            report.losses.push(loss);
        }
        report.keys_at_risk = at_risk.into_iter().collect();
        report.keys_at_risk.sort_unstable();
        report.records_read = found.records;
        let now = now_ms();
        for newest in found.newest.values() {
            match live(newest, now) {
                Liveness::Deleted => report.keys_deleted += 1,
                Liveness::Expired => report.keys_expired += 1,
                Liveness::Live(_) => report.keys_copied += 1,
            }
        }
        Ok(Salvage {
            report,
            segments,
            found,
            _lock: lock,
        })
    }

    /// What was read and what may be lost. Its
    /// [`keys_copied`](SalvageReport::keys_copied) counts the keys that
    /// were live when it was read.
    pub fn report(&self) -> &SalvageReport {
        &self.report
    }

    /// Every live key with its newest intact value, in no particular
    /// order; a key that has expired since the read is left out.
    ///
    /// Each value is read again through the read path's checks (checksum,
    /// key and kind); an error is a segment changed since the read.
    pub fn records(&self) -> impl Iterator<Item = Result<SalvagedRecord>> + '_ {
        self.found.newest.iter().filter_map(|(key, newest)| {
            let ttl = match live(newest, now_ms()) {
                Liveness::Deleted | Liveness::Expired => return None,
                Liveness::Live(ttl) => ttl,
            };
            Some(self.value(key, newest).map(|value| SalvagedRecord {
                key: key.clone(),
                value,
                ttl,
            }))
        })
    }

    /// Writes every live key, with its newest intact value and what is
    /// left of its time to live, into a new database in `target`, syncs
    /// it, and returns the report.
    ///
    /// # Errors
    ///
    /// [`Error::SalvageTarget`] if `target` exists and is not an empty
    /// directory; any error of writing the new database.
    pub fn write_to(mut self, target: impl AsRef<Path>) -> Result<SalvageReport> {
        let target = target.as_ref();
        check_target_empty(target)?;
        let options = Options::default()
            .sync(SyncPolicy::Never)
            .background_compaction(false);
        let db = Db::open_with(target, options)?;
        let mut batch = WriteBatch::new();
        let mut pending = 0usize;
        let mut copied = 0;
        for record in self.records() {
            let SalvagedRecord { key, value, ttl } = record?;
            match ttl {
                None => batch.put(&key, &value),
                Some(left) => batch.put_with_ttl(&key, &value, left),
            };
            copied += 1;
            pending += key.len() + value.len();
            if pending >= 4 << 20 {
                db.write(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        db.write(batch)?;
        db.sync()?;
        db.close()?;
        // Keys that expired between the read and the copy were not copied.
        self.report.keys_expired += self.report.keys_copied - copied;
        self.report.keys_copied = copied;
        Ok(self.report)
    }

    fn value(&self, key: &[u8], newest: &Newest) -> Result<Vec<u8>> {
        match newest.source {
            Source::Wal(start, end) => Ok(self.found.wal_values[start..end].to_vec()),
            // The read path's own check: checksum, key and kind.
            Source::Segment(index, loc) => {
                let entry = entry_for(loc, newest.expires_at, newest.kind);
                Ok(read_entry(&self.segments[index], key, entry)?.to_vec())
            }
        }
    }
}

enum Liveness {
    Deleted,
    Expired,
    /// With the time it has left, if it expires.
    Live(Option<Duration>),
}

fn live(newest: &Newest, now: u64) -> Liveness {
    if newest.kind == RecordKind::Tombstone {
        Liveness::Deleted
    } else if newest.expires_at == NO_EXPIRY {
        Liveness::Live(None)
    } else if newest.expires_at <= now {
        Liveness::Expired
    } else {
        Liveness::Live(Some(Duration::from_millis(newest.expires_at - now)))
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// A target must be missing or an empty directory, and not inside the
/// damaged database.
fn check_target(dir: &Path, target: &Path) -> Result<()> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(target).starts_with(absolute(dir)) {
        return Err(Error::SalvageTarget {
            path: target.to_path_buf(),
            reason: "it is inside the damaged database's directory".into(),
        });
    }
    check_target_empty(target)
}

/// A target must be missing or an empty directory.
fn check_target_empty(target: &Path) -> Result<()> {
    let refuse = |reason: &str| Error::SalvageTarget {
        path: target.to_path_buf(),
        reason: reason.into(),
    };
    if target.exists() && !target.is_dir() {
        return Err(refuse("it is a file"));
    }
    match std::fs::read_dir(target) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(refuse("it exists and is not empty")),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Reads every segment that no output supersedes, offering each intact
/// record and recording each damaged region. Returns the segments opened,
/// in the order `Source::Segment` indexes them.
fn read_segments(
    dir: &Path,
    found: &mut Found,
    damage: &mut Vec<Damage>,
    report: &mut SalvageReport,
) -> Result<Vec<Segment>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            paths.insert(id, entry.path());
        }
    }
    let mut opened = Vec::new();
    for path in paths.values() {
        match Segment::open_read_only(path) {
            Ok(segment) => opened.push(segment),
            Err(LogError::Io { path, source }) => return Err(Error::Io { path, source }),
            Err(e) => {
                let len = std::fs::metadata(path).map(|m| m.len()).ok();
                damage.push(Damage {
                    loss: Loss {
                        path: path.clone(),
                        offset: 0,
                        len,
                        reason: format!("the segment cannot be read: {e}"),
                        after_seq: 0,
                        before_seq: None,
                        covered: false,
                        hinted_records: None,
                    },
                    hinted: None,
                });
            }
        }
    }
    let superseded: HashMap<u32, u32> = opened
        .iter()
        .flat_map(|s| {
            s.supersedes()
                .iter()
                .filter(move |&&id| id != s.id())
                .map(move |&id| (id, s.id()))
        })
        .collect();
    let mut segments = Vec::new();
    for segment in opened {
        if let Some(by) = superseded.get(&segment.id()) {
            report.warnings.push(format!(
                "{} is not read: compaction output {by} supersedes it and holds its live records",
                segment.path().display()
            ));
            continue;
        }
        let index = segments.len();
        let mut offsets = Vec::new();
        let regions: Vec<_> = segment.check_records(|loc, record| {
            offsets.push((u64::from(loc.offset), record.seq));
            found.offer(
                record.key,
                Newest {
                    seq: record.seq,
                    kind: record.kind,
                    expires_at: record.expires_at,
                    source: Source::Segment(index, loc),
                },
            );
        });
        if !regions.is_empty() {
            let hint = match segment.read_hint_file() {
                Ok(hint) => hint,
                Err(e) => {
                    report.warnings.push(format!(
                        "the hint file of {} is unreadable ({}, at offset {}): the keys in its \
                         damage are unknown",
                        segment.path().display(),
                        e.reason,
                        e.offset
                    ));
                    None
                }
            };
            for region in regions {
                if !region.followed_by_valid && segment.is_zero_from(region.offset) {
                    // The space allocated ahead at the end of the newest
                    // log segment: no record was ever there.
                    continue;
                }
                let (after_seq, before_seq) = bounds(&offsets, region.offset);
                // Records out of sequence order around it (a compaction
                // output's can be) bound nothing after it.
                let before_seq = before_seq.filter(|&b| b > after_seq);
                let hinted = hint.as_ref().map(|hint| {
                    hint.entries()
                        .filter(|e| {
                            let at = u64::from(e.location.offset);
                            at >= region.offset && at < region.offset + region.len
                        })
                        .map(|e| (e.meta.key.to_vec(), e.meta.seq))
                        .collect::<Vec<_>>()
                });
                damage.push(Damage {
                    loss: Loss {
                        path: segment.path().to_path_buf(),
                        offset: region.offset,
                        len: Some(region.len),
                        reason: region.reason,
                        after_seq,
                        before_seq,
                        covered: false,
                        hinted_records: hinted.as_ref().map(|h| h.len() as u64),
                    },
                    hinted,
                });
            }
        }
        segments.push(segment);
    }
    Ok(segments)
}

/// The sequence numbers on either side of `offset` among a file's intact
/// records (`offsets`, in file order).
fn bounds(offsets: &[(u64, u64)], offset: u64) -> (u64, Option<u64>) {
    let after = offsets
        .iter()
        .filter(|(at, _)| *at < offset)
        .map(|&(_, seq)| seq)
        .max()
        .unwrap_or(0);
    let before = offsets
        .iter()
        .filter(|(at, _)| *at > offset)
        .map(|&(_, seq)| seq)
        .min();
    (after, before)
}

/// Reads every WAL frame, offering each record, and records each damaged
/// place (and a torn tail: what it held may have been acknowledged under
/// a policy that does not sync every write).
fn read_wal(wal_dir: &Path, found: &mut Found, damage: &mut Vec<Damage>) -> Result<()> {
    // (file, offset, first seq, last seq) of every valid frame, in order.
    let mut frames: Vec<(PathBuf, u64, u64, u64)> = Vec::new();
    let mut bad_payloads = Vec::new();
    let check = kv_wal::check(wal_dir, |path, position, version, payload| {
        let Some(format) = options::wal_records(version) else {
            bad_payloads.push((
                path.to_path_buf(),
                position.offset,
                format!("its payload version {version} is not one this build reads"),
            ));
            return;
        };
        let (mut first, mut last) = (u64::MAX, 0);
        let mut at = 0;
        while at < payload.len() {
            let Ok(decoded) = format.decode(&payload[at..]) else {
                bad_payloads.push((
                    path.to_path_buf(),
                    position.offset,
                    format!("byte {at} of the frame's payload is not a valid record"),
                ));
                break;
            };
            let r = decoded.record;
            let start = found.wal_values.len();
            if r.kind == RecordKind::Put {
                found.wal_values.extend_from_slice(r.value);
            }
            let end = found.wal_values.len();
            found.offer(
                r.key,
                Newest {
                    seq: r.seq,
                    kind: r.kind,
                    expires_at: r.expires_at,
                    source: Source::Wal(start, end),
                },
            );
            first = first.min(r.seq);
            last = last.max(r.seq);
            at += decoded.len;
        }
        if first <= last {
            frames.push((path.to_path_buf(), position.offset, first, last));
        }
    })?;
    let torn = check.torn_tail.map(|d| (d, true));
    let places = check
        .damage
        .into_iter()
        .map(|d| (d, false))
        .chain(torn)
        .map(|(d, torn)| (d.path, d.offset, d.reason, torn))
        .chain(
            bad_payloads
                .into_iter()
                .map(|(path, offset, reason)| (path, offset, reason, false)),
        );
    for (path, offset, reason, torn) in places {
        let key = |p: &Path, o: u64| (wal_number(p), o);
        let here = key(&path, offset);
        let after_seq = frames
            .iter()
            .filter(|(p, o, ..)| key(p, *o) < here)
            .map(|f| f.3)
            .max()
            .unwrap_or(0);
        let before_seq = frames
            .iter()
            .filter(|(p, o, ..)| key(p, *o) > here)
            .map(|f| f.2)
            .min();
        let reason = if torn {
            format!("{reason} (the torn tail of an interrupted write)")
        } else {
            reason
        };
        damage.push(Damage {
            loss: Loss {
                path,
                offset,
                len: None,
                reason,
                after_seq,
                before_seq,
                covered: false,
                hinted_records: None,
            },
            hinted: None,
        });
    }
    Ok(())
}

/// The number of the WAL file at `path` (0 if its name is not one).
fn wal_number(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(kv_wal::parse_file_name)
        .unwrap_or(0)
}

/// Whether every sequence number strictly between `after` and `before` is
/// in `seqs` (sorted, distinct). With no `before`, whether any write can
/// follow `after` unseen: only if `after` is the newest sequence number
/// read is nothing known to be missing, and writes after it cannot be
/// known; so a loss at the end of the history is never covered unless
/// something newer was read.
fn covered(seqs: &[u64], after: u64, before: Option<u64>) -> bool {
    let Some(before) = before else {
        return false;
    };
    if before <= after + 1 {
        return true;
    }
    let lo = seqs.partition_point(|&s| s <= after);
    let hi = seqs.partition_point(|&s| s < before);
    (hi - lo) as u64 == before - after - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_covered_only_when_every_sequence_number_in_it_was_read() {
        let seqs = [1, 2, 3, 5, 6, 7];
        assert!(covered(&seqs, 1, Some(4)));
        assert!(!covered(&seqs, 3, Some(6)), "4 is missing");
        assert!(covered(&seqs, 5, Some(6)), "nothing lies between");
        assert!(!covered(&seqs, 7, None), "the end of the history");
        assert_eq!(bounds(&[(10, 4), (30, 6)], 20), (4, Some(6)));
        assert_eq!(bounds(&[(10, 4)], 20), (4, None));
        assert_eq!(bounds(&[], 20), (0, None));
    }
}
