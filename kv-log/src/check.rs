//! Read-only checking of segment and hint files, for a verifier that must
//! change nothing: no torn tail is cut, no file is created or removed.

use std::fs::File;
use std::path::{Path, PathBuf};

use kv_format::{Limits, Record};

use crate::format::{HINT_HEADER_LEN, parse_segment_file_name};
use crate::hint;
use crate::recover::read_segment_header;
use crate::resync::{Next, next_valid_record};
use crate::{Location, LogError, RecordMeta, Result, Segment};

/// A stretch of a segment that is not a valid record, found by
/// [`Segment::check_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRegion {
    /// Byte offset in the segment file where the bad bytes start.
    pub offset: u64,
    /// How many bytes up to the next valid record, or to the end of the
    /// segment.
    pub len: u64,
    /// Why the bytes at `offset` are not a valid record.
    pub reason: String,
    /// Whether a valid record follows. A bad region with nothing valid after
    /// it, at the end of the newest segment, is what a torn write leaves; one
    /// with a valid record after it is damage. Also `false` when the search
    /// for the next record hit its bound (the reason says so): the region
    /// then runs to the end of the segment, and [`Log::open`](crate::Log::open)
    /// would refuse it as corruption rather than cut it.
    pub followed_by_valid: bool,
}

/// A hint file read and checked by [`Segment::read_hint_file`]: its
/// checksum matches, it names its segment at its current length, every
/// entry parses and lies within the segment, and the count matches.
#[derive(Debug, Clone)]
pub struct HintFile {
    path: PathBuf,
    segment: u32,
    /// Where the segment's records start (a version 2 hint's first entry).
    data_start: u64,
    version: u16,
    bytes: Vec<u8>,
}

/// One entry of a [`HintFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry<'a> {
    /// Byte offset of the entry in the hint file.
    pub hint_offset: u64,
    /// Where the entry says the record is.
    pub location: Location,
    /// What the entry says the record holds.
    pub meta: RecordMeta<'a>,
}

/// Why a hint file was rejected by [`Segment::read_hint_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintDamage {
    /// The hint file.
    pub path: PathBuf,
    /// Byte offset in the hint file of what is wrong (0 for the header or
    /// the file as a whole).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl HintFile {
    /// The path of the hint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries, in the order they were written (the order of the
    /// segment's records).
    pub fn entries(&self) -> impl Iterator<Item = HintEntry<'_>> {
        let body = &self.bytes[HINT_HEADER_LEN..self.bytes.len() - 8];
        hint::Entries::new(body, self.version, self.data_start)
            .map_while(|e| e.ok())
            .map(|(at, entry)| HintEntry {
                hint_offset: (HINT_HEADER_LEN + at) as u64,
                location: Location {
                    segment: self.segment,
                    offset: entry.offset,
                    len: entry.len,
                },
                meta: entry.meta,
            })
    }
}

impl Segment {
    /// Opens segment file `path` read-only, for checking it: its header is
    /// read and checked (and must name the id in the file name), and the
    /// file is mapped. Nothing is written, truncated or removed, and no
    /// torn tail is cut off.
    ///
    /// # File ownership
    ///
    /// The caller makes sure that no other process truncates or rewrites
    /// the file while the segment is held (the engine's `verify` holds the
    /// directory's lock when there is one), as for every mapped segment:
    /// see the crate docs, "Platform and file ownership".
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] (offset 0) for a damaged header;
    /// [`LogError::BadSegmentHeader`] for a file that is not a segment this
    /// build reads, or whose name is not a segment file name;
    /// [`LogError::Io`].
    pub fn open_read_only(path: &Path) -> Result<Segment> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(id) = parse_segment_file_name(name) else {
            return Err(LogError::BadSegmentHeader {
                path: path.to_path_buf(),
                reason: "the file name is not a segment file name (ten digits and .seg)".into(),
            });
        };
        let file = File::open(path).map_err(|e| LogError::io(path, e))?;
        let (len, header) = read_segment_header(&file, path, id)?;
        Segment::map(
            path.to_path_buf(),
            header,
            &file,
            len,
            len,
            true,
            kv_fs::Faults::default(),
        )
    }

    /// Checks every record of the segment and hands each valid one to
    /// `visit`, in order. Unlike [`Segment::for_each_record`] it does not
    /// stop at the first bad record: it reports the bad stretch, looks for
    /// the next valid record after it, and goes on from there, so that
    /// every damaged place is found.
    pub fn check_records(&self, mut visit: impl FnMut(Location, &Record<'_>)) -> Vec<BadRegion> {
        let bytes = self.bytes();
        // The format's own limits, as at open: a lower configured maximum
        // never makes old data unreadable.
        let limits = Limits::default();
        let mut bad = Vec::new();
        let mut at = self.data_start() as usize;
        while at < bytes.len() {
            match self
                .record_format()
                .decode_with_limits(&bytes[at..], &limits)
            {
                Ok(decoded) => {
                    let loc = Location {
                        segment: self.id(),
                        offset: at as u32,
                        len: decoded.len as u32,
                    };
                    visit(loc, &decoded.record);
                    at += decoded.len;
                }
                Err(err) => {
                    let search = next_valid_record(bytes, at, self.record_format(), &limits);
                    let (end, reason) = match search.next {
                        Next::Record(next) => (next, err.to_string()),
                        Next::Nothing => (bytes.len(), err.to_string()),
                        Next::GaveUp => (
                            bytes.len(),
                            format!(
                                "{err}; could not resynchronise: the bytes after it hold so \
                                 many plausible record headers that checking them hashed {} \
                                 bytes, the bound, without finding a valid record, so the \
                                 rest of the segment is not checked",
                                search.hashed
                            ),
                        ),
                    };
                    bad.push(BadRegion {
                        offset: at as u64,
                        len: (end - at) as u64,
                        reason,
                        followed_by_valid: matches!(search.next, Next::Record(_)),
                    });
                    at = end;
                }
            }
        }
        bad
    }

    /// Reads and checks the segment's hint file, as opening does before it
    /// trusts one; `Ok(None)` if there is none. Read-only.
    ///
    /// # Errors
    ///
    /// A [`HintDamage`] naming the offset in the hint file of the first
    /// thing wrong with it (an unreadable file is reported the same way).
    pub fn read_hint_file(&self) -> std::result::Result<Option<HintFile>, HintDamage> {
        let path = self.hint_path();
        match self.read_hint() {
            Ok(None) => Ok(None),
            Ok(Some((version, bytes))) => Ok(Some(HintFile {
                path,
                segment: self.id(),
                data_start: self.data_start(),
                version,
                bytes,
            })),
            Err((offset, reason)) => Err(HintDamage {
                path,
                offset,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kv_format::RecordKind;

    use super::*;
    use crate::{Log, LogOptions, SEGMENT_HEADER_LEN};

    /// A log with one sealed segment of `n` records (and a hint file) and
    /// an active one; returns the sealed segment's path and record
    /// locations.
    fn sealed_segment(dir: &Path, n: u64) -> (PathBuf, Vec<Location>) {
        let mut log = Log::open(dir, LogOptions::default(), |_, _| {}).unwrap();
        let locs: Vec<_> = (0..n)
            .map(|i| {
                let key = format!("key{i}");
                log.append(&Record::put(i + 1, key.as_bytes(), b"value"))
                    .unwrap()
            })
            .collect();
        log.seal_active().unwrap();
        let reader = log.reader();
        let segments = reader.segments();
        let segment = segments.get(1).unwrap();
        segment.write_hint().unwrap();
        (segment.path().to_path_buf(), locs)
    }

    #[test]
    fn a_clean_segment_checks_clean_and_its_hint_matches() {
        let dir = tempfile::tempdir().unwrap();
        let (path, locs) = sealed_segment(dir.path(), 10);
        let segment = Segment::open_read_only(&path).unwrap();
        let mut seen = Vec::new();
        let bad = segment.check_records(|loc, record| seen.push((loc, record.seq)));
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(seen.len(), 10);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), locs);
        let hint = segment.read_hint_file().unwrap().unwrap();
        let entries: Vec<_> = hint.entries().collect();
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[3].location, locs[3]);
        assert_eq!(entries[3].meta.key, b"key3");
        assert_eq!(entries[3].meta.kind, RecordKind::Put);
    }

    #[test]
    fn every_damaged_record_is_found_and_the_scan_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (path, locs) = sealed_segment(dir.path(), 10);
        let before = fs::read(&path).unwrap();
        let mut bytes = before.clone();
        for i in [2, 7] {
            // The last byte of the record's value.
            bytes[(locs[i].offset + locs[i].len) as usize - 1] ^= 0xff;
        }
        fs::write(&path, &bytes).unwrap();
        let segment = Segment::open_read_only(&path).unwrap();
        let mut seen = 0;
        let bad = segment.check_records(|_, _| seen += 1);
        assert_eq!(seen, 8);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!(bad[0].offset, u64::from(locs[2].offset));
        assert_eq!(bad[0].len, u64::from(locs[2].len));
        assert!(bad[0].followed_by_valid);
        assert_eq!(bad[1].offset, u64::from(locs[7].offset));
        drop(segment);
        // Nothing was changed.
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_bad_tail_is_not_followed_by_valid_and_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (path, locs) = sealed_segment(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0xab; 20]);
        fs::write(&path, &bytes).unwrap();
        let segment = Segment::open_read_only(&path).unwrap();
        let bad = segment.check_records(|_, _| {});
        let end = u64::from(locs[2].offset + locs[2].len);
        assert_eq!(
            bad,
            [BadRegion {
                offset: end,
                len: 20,
                reason: bad[0].reason.clone(),
                followed_by_valid: false,
            }]
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), end + 20);
    }

    #[test]
    fn a_damaged_header_or_foreign_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sealed_segment(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER_LEN - 1] ^= 1;
        fs::write(&path, &bytes).unwrap();
        // A header that fails its checksum is damage (at offset 0).
        assert!(matches!(
            Segment::open_read_only(&path),
            Err(LogError::Corruption { offset: 0, .. })
        ));
        bytes[0] ^= 1; // the magic: a foreign file
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Segment::open_read_only(&path),
            Err(LogError::BadSegmentHeader { .. })
        ));
        let other = dir.path().join("segment.bin");
        fs::write(&other, b"x").unwrap();
        assert!(Segment::open_read_only(&other).is_err());
    }

    #[test]
    fn a_damaged_hint_file_is_reported_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sealed_segment(dir.path(), 5);
        let hint_path = path.with_file_name(crate::hint_file_name(1));
        let mut bytes = fs::read(&hint_path).unwrap();
        bytes[HINT_HEADER_LEN + 3] ^= 0x01;
        fs::write(&hint_path, &bytes).unwrap();
        let segment = Segment::open_read_only(&path).unwrap();
        let damage = segment.read_hint_file().unwrap_err();
        assert_eq!(damage.path, hint_path);
        assert_eq!(damage.offset, (bytes.len() - 8) as u64);
        assert!(damage.reason.contains("checksum"), "{}", damage.reason);
        fs::remove_file(&hint_path).unwrap();
        assert!(segment.read_hint_file().unwrap().is_none());
    }
}
