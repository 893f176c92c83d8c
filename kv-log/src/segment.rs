//! One mapped segment file, and its hint file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kv_format::{Limits, Record, RecordFormat, RecordKind};
use kv_fs::Faults;
use memmap2::{Mmap, MmapOptions};

use crate::format::{
    HINT_HEADER_LEN, SegmentHeader, SegmentKind, decode_hint_header, encode_hint_header,
    hint_file_name, read_u64,
};
use crate::hint;
use crate::sync::{AtomicBool, AtomicU64, Mutex};
use crate::{Location, LogError, Result};

/// What loading a segment learns of one record: enough to rebuild an
/// index entry, from the record itself or from the hint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    /// The record's key.
    pub key: &'a [u8],
    /// Its sequence number.
    pub seq: u64,
    /// Its expiry (milliseconds since the Unix epoch, 0 = never).
    pub expires_at: u64,
    /// Put or tombstone.
    pub kind: RecordKind,
}

impl<'a> From<&Record<'a>> for RecordMeta<'a> {
    fn from(record: &Record<'a>) -> RecordMeta<'a> {
        RecordMeta {
            key: record.key,
            seq: record.seq,
            expires_at: record.expires_at,
            kind: record.kind,
        }
    }
}

/// Where [`Segment::load`] read a segment's records from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// The hint file.
    Hint,
    /// A scan of the segment (no hint file, or a damaged one).
    Scan,
}

/// One segment file, mapped read-only.
///
/// The map may be longer than the file (the active segment is mapped at its
/// full capacity); only the first [`Segment::len`] bytes are ever read.
#[derive(Debug)]
pub struct Segment {
    id: u32,
    path: PathBuf,
    kind: SegmentKind,
    supersedes: Vec<u32>,
    data_start: u64,
    /// The layout of its records, from the header's version.
    records: RecordFormat,
    map: Mmap,
    /// Bytes at the front of the file that are completely written and may
    /// be read. Only grows; published with release ordering after the bytes
    /// are in the file.
    readable: AtomicU64,
    sealed: AtomicBool,
    /// A valid hint file exists for exactly the readable bytes of this
    /// sealed segment. Never set for a segment that can still grow.
    hinted: AtomicBool,
    /// Retired by compaction: its files are unlinked (the map stays
    /// readable) and no hint file is written for it any more.
    retired: AtomicBool,
    /// Whether [`Segment::load`] and [`Segment::hinted_records`] may read
    /// the hint file. Off for a segment a read-only view holds cut short
    /// or in memory (`view.rs`): a hint file of that name describes other
    /// bytes.
    use_hint: bool,
    /// Held while the segment's files change on disk: writing its hint file
    /// and unlinking its files at retirement. So one hint file is written
    /// at a time, never after the segment is retired, and never rewritten
    /// once published.
    files: Mutex<()>,
    /// The test seam of the `fail-points` feature, for the hint file.
    faults: Faults,
}

impl Segment {
    /// Maps `file`, whose first `readable` bytes are valid, with room for
    /// the file to grow to `capacity` bytes underneath the map.
    pub(crate) fn map(
        path: PathBuf,
        header: SegmentHeader,
        file: &File,
        readable: u64,
        capacity: u64,
        sealed: bool,
        faults: Faults,
    ) -> Result<Segment> {
        let capacity = capacity.max(readable);
        let len = usize::try_from(capacity).map_err(|_| {
            LogError::io(
                &path,
                std::io::Error::other("segment is larger than the address space"),
            )
        })?;
        // SAFETY: memmap2 maps are unsafe because the file may change or
        // shrink underneath the map. The caller keeps other processes out
        // of the directory (the contract in the crate docs, "Platform and
        // file ownership"; kv-engine holds `LOCK`), or, for a `LogView`
        // beside another process's writer, maps only bytes that writer
        // never truncates or rewrites (`view.rs`); segment bytes below
        // `readable` are never rewritten, and no file is truncated below a published
        // `readable` length while mapped (the only truncation, of a torn
        // tail at open, happens before anything past it is published). Bytes
        // past the end of the file are never read: every read is bounded by
        // `readable`, which never exceeds the file's length. A retired
        // segment's file is unlinked at retirement while holders may still
        // map it: on Unix an unlinked file keeps its pages while mapped, and
        // nothing writes or truncates it. A file changed or truncated by
        // another program breaks these assumptions and can raise SIGBUS;
        // that is outside the contract (docs/format.md, "Files are only
        // ours").
        #[expect(unsafe_code, reason = "mapping a file; see the SAFETY comment above")]
        let map =
            unsafe { MmapOptions::new().len(len).map(file) }.map_err(|e| LogError::io(&path, e))?;
        Ok(Segment::from_map(
            path, header, map, readable, sealed, faults,
        ))
    }

    /// A segment of the bytes of `map`, the first `readable` of them valid.
    pub(crate) fn from_map(
        path: PathBuf,
        header: SegmentHeader,
        map: Mmap,
        readable: u64,
        sealed: bool,
        faults: Faults,
    ) -> Segment {
        let readable = readable.min(map.len() as u64);
        Segment {
            id: header.id,
            path,
            kind: header.kind,
            supersedes: header.supersedes,
            data_start: header.data_start,
            records: header.records,
            map,
            readable: AtomicU64::new(readable),
            sealed: AtomicBool::new(sealed),
            hinted: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            use_hint: true,
            files: Mutex::new(()),
            faults,
        }
    }

    /// Makes [`Segment::load`] scan the records, never reading a hint file.
    pub(crate) fn without_hint(mut self) -> Segment {
        self.use_hint = false;
        self
    }

    /// The layout of the segment's records: [`RecordFormat::CURRENT`] for
    /// every segment this build creates, an older one for a segment of an
    /// older build. Decode what [`Segment::read`] returns with it.
    pub fn record_format(&self) -> RecordFormat {
        self.records
    }

    /// The segment's id, which is also its file name.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The path of the segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who wrote the segment.
    pub fn kind(&self) -> SegmentKind {
        self.kind
    }

    /// The segments this compaction output supersedes.
    pub fn supersedes(&self) -> &[u32] {
        &self.supersedes
    }

    /// The offset of the first record.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The number of bytes readable, header included.
    pub fn len(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// Bytes of records: [`Segment::len`] less the header.
    pub fn data_len(&self) -> u64 {
        self.len().saturating_sub(self.data_start)
    }

    /// Whether the segment holds no record.
    pub fn is_empty(&self) -> bool {
        self.data_len() == 0
    }

    /// Whether the segment is sealed: it will never be written again.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Whether a valid hint file describes the segment.
    pub fn has_hint(&self) -> bool {
        self.hinted.load(Ordering::Acquire)
    }

    /// The readable bytes of the segment, header included.
    pub fn bytes(&self) -> &[u8] {
        let len = self.len();
        // `readable` never exceeds the map's length (checked when it is
        // published), so this cannot fail; fall back to empty all the same.
        self.map.get(..len as usize).unwrap_or(&[])
    }

    /// The `len` bytes at `offset`, borrowed from the map.
    ///
    /// # Errors
    ///
    /// [`LogError::OutOfBounds`] when the range is not within the readable
    /// part of the segment.
    pub fn read(&self, offset: u32, len: u32) -> Result<&[u8]> {
        let end = self.len();
        let start = u64::from(offset);
        let stop = start + u64::from(len);
        if stop > end || start < self.data_start {
            return Err(LogError::OutOfBounds {
                segment: self.id,
                offset,
                len,
                end,
            });
        }
        Ok(&self.map[start as usize..stop as usize])
    }

    /// Whether every readable byte from `offset` on is zero: the space a
    /// writer allocated ahead of its appends, which a crash can leave at
    /// the end of the newest log segment. Zeros never decode as a record:
    /// a record's key length is never zero (nor a version 1 record's
    /// version byte).
    pub fn is_zero_from(&self, offset: u64) -> bool {
        let bytes = self.bytes();
        bytes
            .get(offset as usize..)
            .is_some_and(|tail| tail.iter().all(|&b| b == 0))
    }

    /// The fault-injection seam of the log this segment belongs to.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The capacity of the map: how far the file may grow.
    pub(crate) fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Makes the first `len` bytes readable. They must be in the file.
    pub(crate) fn publish(&self, len: u64) {
        debug_assert!(len <= self.capacity());
        self.readable
            .store(len.min(self.capacity()), Ordering::Release);
    }

    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Retires the segment: unlinks its hint file and its segment file now.
    /// Whoever holds the segment keeps reading its bytes from the map (on
    /// Unix a mapped file stays readable after it is unlinked), but the
    /// name is gone, so nothing on disk can bring its records back, and no
    /// holder ever deletes a file later (which could belong to another
    /// instance of the directory by then). A file that cannot be unlinked
    /// is logged, and stays named by every later compaction output for as
    /// long as it exists
    /// ([`LogReader::create_output`](crate::LogReader::create_output)); the
    /// next open deletes it.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        for path in [self.hint_path(), self.path.clone()] {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("could not delete retired {}: {e}", path.display());
            }
        }
    }

    /// Whether compaction retired the segment.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Hands every record to `visit`, in order.
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] naming the file and offset of the first
    /// record that does not decode.
    pub fn for_each_record(&self, mut visit: impl FnMut(Location, &Record<'_>)) -> Result<()> {
        self.scan(false, &mut visit).map(drop)
    }

    /// Scans the records, handing each to `visit`. Returns where the valid
    /// records end: the readable length, or, when a torn tail is tolerated,
    /// the start of the torn tail.
    pub(crate) fn scan(
        &self,
        tolerate_torn_tail: bool,
        visit: &mut impl FnMut(Location, &Record<'_>),
    ) -> Result<u64> {
        let bytes = self.bytes();
        // Read with the format's own limits, not a configured lower maximum,
        // so that lowering the maximum never makes old data unreadable.
        let limits = Limits::default();
        let mut at = self.data_start as usize;
        while at < bytes.len() {
            match self.records.decode_with_limits(&bytes[at..], &limits) {
                Ok(decoded) => {
                    let loc = Location {
                        segment: self.id,
                        offset: at as u32,
                        len: decoded.len as u32,
                    };
                    visit(loc, &decoded.record);
                    at += decoded.len;
                }
                Err(err) => {
                    if tolerate_torn_tail
                        && !any_valid_record_after(bytes, at, self.records, &limits)
                    {
                        return Ok(at as u64);
                    }
                    return Err(LogError::Corruption {
                        path: self.path.clone(),
                        offset: at as u64,
                        reason: err.to_string(),
                    });
                }
            }
        }
        Ok(bytes.len() as u64)
    }

    pub(crate) fn hint_path(&self) -> PathBuf {
        self.path.with_file_name(hint_file_name(self.id))
    }

    /// The number of records the segment's hint file lists, read from its
    /// header only (for sizing an index before loading). `None` without a
    /// hint file that names this segment at its current length, or with a
    /// count more records than the segment's bytes can hold; the count is
    /// not checked against the entries here: [`Segment::load`] does that.
    ///
    /// The header is not covered by a checksum until the whole file is
    /// read, so the count is bounded by the segment's size: a damaged count
    /// must never size an allocation.
    pub fn hinted_records(&self) -> Option<u64> {
        use std::io::Read;
        if !self.use_hint {
            return None;
        }
        let mut head = [0u8; HINT_HEADER_LEN];
        File::open(self.hint_path())
            .ok()?
            .read_exact(&mut head)
            .ok()?;
        let header = decode_hint_header(&head).ok()?;
        // Every record takes a header and at least one byte of key.
        let most = self.data_len() / kv_format::MIN_RECORD_LEN as u64;
        (header.segment == self.id && header.segment_len == self.len() && header.count <= most)
            .then_some(header.count)
    }

    /// Hands every record's metadata to `visit`, from the hint file when a
    /// valid one exists, else by scanning the segment. A damaged hint file
    /// is logged and ignored, never an error.
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] from the scan.
    pub fn load(&self, mut visit: impl FnMut(Location, RecordMeta<'_>)) -> Result<LoadSource> {
        match self.read_hint() {
            Ok(Some((version, hint))) => {
                visit_hint(&hint, version, self.id, self.data_start, &mut visit);
                if self.is_sealed() {
                    self.hinted.store(true, Ordering::Release);
                }
                return Ok(LoadSource::Hint);
            }
            Ok(None) => {}
            Err((offset, reason)) => log::warn!(
                "ignoring the hint file of {} ({reason}, at offset {offset}); scanning the segment instead",
                self.path.display()
            ),
        }
        self.for_each_record(|loc, record| visit(loc, RecordMeta::from(record)))?;
        Ok(LoadSource::Scan)
    }

    /// Reads and fully checks the hint file: its version and bytes, or
    /// `Ok(None)` if there is none. An error is the byte offset in the hint
    /// file of what is wrong, and why.
    pub(crate) fn read_hint(&self) -> std::result::Result<Option<ReadHint>, (u64, String)> {
        if !self.use_hint {
            return Ok(None);
        }
        let path = self.hint_path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err((0, e.to_string())),
        };
        // An entry is at most as long as the record it describes (its fixed
        // part is shorter than a record header, and it holds the same key),
        // so a valid hint file is never longer than this: a larger file is
        // not read into memory at all.
        let most = (HINT_HEADER_LEN + 8) as u64 + self.data_len();
        let len = file.metadata().map_err(|e| (0, e.to_string()))?.len();
        if len > most {
            return Err((
                0,
                format!("it is {len} bytes, more than a hint of this segment can be ({most})"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        use std::io::Read;
        file.read_to_end(&mut bytes)
            .map_err(|e| (0, e.to_string()))?;
        let header = decode_hint_header(&bytes).map_err(|e| (0, e))?;
        let (id, segment_len, count) = (header.segment, header.segment_len, header.count);
        if id != self.id {
            return Err((0, format!("it names segment {id}")));
        }
        if segment_len != self.len() {
            return Err((
                0,
                format!(
                    "it describes {segment_len} bytes of segment, but the segment has {}",
                    self.len()
                ),
            ));
        }
        let Some(body_end) = bytes.len().checked_sub(8) else {
            return Err((0, "it is cut short".into()));
        };
        if body_end < HINT_HEADER_LEN {
            return Err((0, "it is cut short".into()));
        }
        if read_u64(&bytes, body_end) != xxhash_rust::xxh3::xxh3_64(&bytes[..body_end]) {
            return Err((body_end as u64, "its checksum does not match".into()));
        }
        // Every entry must parse and lie within the segment's records.
        let body = &bytes[HINT_HEADER_LEN..body_end];
        let mut n = 0u64;
        let mut end = self.data_start;
        for item in hint::Entries::new(body, header.version, self.data_start) {
            let (at, entry) = item.map_err(|at| {
                (
                    (HINT_HEADER_LEN + at) as u64,
                    "an entry is malformed".to_string(),
                )
            })?;
            end = u64::from(entry.offset) + u64::from(entry.len);
            if u64::from(entry.offset) < self.data_start || end > self.len() {
                return Err((
                    (HINT_HEADER_LEN + at) as u64,
                    format!("an entry points outside the segment, at {}", entry.offset),
                ));
            }
            n += 1;
        }
        if n != count {
            return Err((0, format!("it has {n} entries but says {count}")));
        }
        // A version 2 hint describes every record, back to back: its
        // entries end where the segment does.
        if header.version >= 2 && end != self.len() {
            return Err((
                0,
                format!(
                    "its entries end at {end}, but the segment at {}",
                    self.len()
                ),
            ));
        }
        Ok(Some((header.version, bytes)))
    }

    /// Writes the hint file of this sealed segment atomically (temporary
    /// file, sync, rename, directory sync), unless it has one already or
    /// was retired: then this does nothing. Calls on one segment are
    /// serialised, so a published hint file is never truncated or
    /// rewritten, and none is written for a retired segment.
    ///
    /// # Errors
    ///
    /// [`LogError::NotSealed`] for a segment that can still grow (its hint
    /// would go stale); [`LogError::Io`], or [`LogError::Corruption`] if a
    /// record fails to decode while the segment is read.
    pub fn write_hint(&self) -> Result<()> {
        if !self.is_sealed() {
            return Err(LogError::NotSealed { segment: self.id });
        }
        let _files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_retired() || self.has_hint() || !self.use_hint {
            return Ok(());
        }
        // One on disk already (the segment was not loaded from it: the
        // index came from the saved index) is checked, not written again.
        if let Ok(Some(_)) = self.read_hint() {
            self.hinted.store(true, Ordering::Release);
            return Ok(());
        }
        let mut body = Vec::with_capacity(HINT_HEADER_LEN + (self.data_len() / 8) as usize);
        body.extend_from_slice(&[0u8; HINT_HEADER_LEN]);
        let mut count = 0u64;
        let mut entries = hint::Writer::default();
        self.for_each_record(|loc, record| {
            entries.push(&mut body, loc.len, &RecordMeta::from(record));
            count += 1;
        })?;
        body[..HINT_HEADER_LEN].copy_from_slice(&encode_hint_header(self.id, self.len(), count));
        let sum = xxhash_rust::xxh3::xxh3_64(&body);
        body.extend_from_slice(&sum.to_le_bytes());

        let path = self.hint_path();
        let tmp = path.with_extension("hint.tmp");
        let faults = &self.faults;
        // A temporary hint file left behind is removed at open.
        // NOTE: a hint file is a cache, so a failed directory sync after
        // its rename (`CreateError::Unsynced`) fails this call but does not
        // poison the log: a crash leaves the whole hint or none, and either
        // is fine. The hint is not marked written, so a later call writes
        // it again, by rename as always.
        kv_fs::create_atomically(&tmp, &path, faults, |file| {
            kv_fs::write_or_tear(faults, &tmp, &body, |b| file.write_all(b))
        })
        .map_err(|e| LogError::io(&path, e.into_inner()))?;
        self.hinted.store(true, Ordering::Release);
        Ok(())
    }
}

/// A hint file that `Segment::read_hint` checked: its format version and
/// its bytes.
pub(crate) type ReadHint = (u16, Vec<u8>);

/// Visits the entries of a hint file that `read_hint` checked.
fn visit_hint(
    bytes: &[u8],
    version: u16,
    segment: u32,
    data_start: u64,
    visit: &mut impl FnMut(Location, RecordMeta<'_>),
) {
    let body = &bytes[HINT_HEADER_LEN..bytes.len() - 8];
    for (_, entry) in hint::Entries::new(body, version, data_start).map_while(|e| e.ok()) {
        visit(
            Location {
                segment,
                offset: entry.offset,
                len: entry.len,
            },
            entry.meta,
        );
    }
}

/// Whether a valid record may start anywhere after `bad`. A bad record with
/// a valid one after it is damage, not a torn write at the tail; so is one
/// after which the search gave up (see `resync.rs`): a tail is cut only when
/// nothing valid can follow.
fn any_valid_record_after(bytes: &[u8], bad: usize, format: RecordFormat, limits: &Limits) -> bool {
    let search = crate::resync::next_valid_record(bytes, bad, format, limits);
    if search.next == crate::resync::Next::GaveUp {
        log::warn!(
            "cannot tell whether a valid record follows the bad one at offset {bad}: \
             checking the candidates hashed {} bytes, the bound, without deciding; \
             treating it as damage, not as a torn tail",
            search.hashed
        );
    }
    search.next != crate::resync::Next::Nothing
}
