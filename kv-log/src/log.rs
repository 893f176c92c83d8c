//! The segment log: the writer's [`Log`] and the readers' [`LogReader`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use kv_format::{FORMAT_VERSION, Limits, Record, decode_with_limits};

use crate::format::{
    TEMP_SUFFIX, decode_header, encode_header, parse_segment_file_name, segment_file_name,
};
use crate::{
    DEFAULT_SEGMENT_SIZE, LogError, MAX_SEGMENT_SIZE, Result, SEGMENT_HEADER_LEN, Segment,
};

/// Where a record lives: its segment, its byte offset there, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The segment id.
    pub segment: u32,
    /// Byte offset of the record in the segment file.
    pub offset: u32,
    /// The record's encoded length.
    pub len: u32,
}

/// A point in the log: everything before `offset` in segment `segment`,
/// and everything in lower segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The segment id.
    pub segment: u32,
    /// Byte offset in the segment file (at least the header length).
    pub offset: u64,
}

/// Options of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The size at which the active segment is sealed and a new one begun.
    /// Default [`DEFAULT_SEGMENT_SIZE`] (256 MiB); at most
    /// [`MAX_SEGMENT_SIZE`]. A record larger than this gets a segment of
    /// its own.
    pub segment_size: u64,
    /// Pending appends are written to the file once they reach this many
    /// bytes, even before [`Log::flush`]. Default 1 MiB.
    pub write_buffer_size: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            write_buffer_size: 1 << 20,
        }
    }
}

/// The segments that exist at one moment, in id order.
///
/// A reader loads the current set through [`LogReader::segments`]; the set
/// it holds stays valid (and its segments mapped) for as long as it holds
/// it, even if the writer moves on.
#[derive(Debug, Default)]
pub struct SegmentSet {
    segments: Vec<Arc<Segment>>,
}

impl SegmentSet {
    /// The segment with this id, if it exists.
    pub fn get(&self, id: u32) -> Option<&Arc<Segment>> {
        self.segments
            .binary_search_by_key(&id, |s| s.id())
            .ok()
            .map(|i| &self.segments[i])
    }

    /// The bytes of the record at `loc`, borrowed from the segment's map.
    ///
    /// # Errors
    ///
    /// [`LogError::NoSuchSegment`] or [`LogError::OutOfBounds`] when `loc`
    /// does not name readable bytes.
    pub fn read(&self, loc: Location) -> Result<&[u8]> {
        self.get(loc.segment)
            .ok_or(LogError::NoSuchSegment {
                segment: loc.segment,
            })?
            .read(loc.offset, loc.len)
    }

    /// Every segment, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter()
    }

    /// The number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes in all segments, headers included.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len()).sum()
    }
}

/// A handle readers use to reach the segments, shared with the writer.
///
/// Cloning it is cheap. Loading the segment set writes no shared memory on
/// the fast path (arc-swap keeps its bookkeeping thread-local), so readers
/// do not contend with one another.
#[derive(Debug, Clone)]
pub struct LogReader {
    set: Arc<ArcSwap<SegmentSet>>,
}

/// The segment set as a reader loaded it; derefs to [`SegmentSet`].
#[derive(Debug)]
pub struct SegmentsGuard(arc_swap::Guard<Arc<SegmentSet>>);

impl Deref for SegmentsGuard {
    type Target = SegmentSet;
    fn deref(&self) -> &SegmentSet {
        &self.0
    }
}

impl LogReader {
    /// The current segments. Hold the guard only for the duration of a
    /// read; to keep one segment alive longer, clone its `Arc`.
    pub fn segments(&self) -> SegmentsGuard {
        SegmentsGuard(self.set.load())
    }
}

/// The writer's side of the segment log. One per directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    set: Arc<ArcSwap<SegmentSet>>,
    active: Arc<Segment>,
    file: File,
    /// Encoded records not yet written to `file`; they start at
    /// `active.len()`.
    pending: Vec<u8>,
}

impl Log {
    /// Opens (creating if needed) the segment log in `dir` and hands every
    /// valid record, oldest segment first, to `visit`.
    ///
    /// A torn record at the tail of the newest segment is cut off and the
    /// cut logged as a warning.
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] for a bad record anywhere but the tail of
    /// the newest segment, [`LogError::BadSegmentHeader`] for a file that
    /// is not a segment this build reads, and [`LogError::Io`].
    pub fn open(
        dir: &Path,
        options: LogOptions,
        visit: impl FnMut(Location, &Record<'_>),
    ) -> Result<Log> {
        Log::open_at(dir, options, None, visit)
    }

    /// Opens the log like [`Log::open`], but first discards everything
    /// after `end`: segments with a higher id are removed and segment
    /// `end.segment` is cut to `end.offset` bytes.
    ///
    /// This is for a caller that keeps a write-ahead log: `end` is the
    /// position it last made durable (a checkpoint), and it replays its own
    /// log for everything after it. Because the data before `end` was
    /// durable, the scan is strict: no torn tail is tolerated there.
    ///
    /// # Errors
    ///
    /// As [`Log::open`], and [`LogError::Corruption`] when segment
    /// `end.segment` is missing or shorter than `end.offset`.
    pub fn open_at(
        dir: &Path,
        options: LogOptions,
        end: Option<LogPosition>,
        mut visit: impl FnMut(Location, &Record<'_>),
    ) -> Result<Log> {
        let mut options = options;
        options.segment_size = options
            .segment_size
            .clamp(SEGMENT_HEADER_LEN as u64 + 1, MAX_SEGMENT_SIZE);
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut ids = list_segments(dir)?;
        if let Some(end) = end {
            discard_after(dir, &mut ids, end)?;
        }

        let mut segments = Vec::with_capacity(ids.len() + 1);
        let mut active_file = None;
        for (i, &id) in ids.iter().enumerate() {
            let newest = i + 1 == ids.len();
            let path = dir.join(segment_file_name(id));
            let file = OpenOptions::new()
                .read(true)
                .write(newest)
                .open(&path)
                .map_err(|e| LogError::io(&path, e))?;
            let file_len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
            if file_len > MAX_SEGMENT_SIZE {
                return Err(LogError::BadSegmentHeader {
                    path,
                    reason: format!("the file is {file_len} bytes, more than a segment can be"),
                });
            }
            let capacity = if newest {
                options.segment_size.max(file_len)
            } else {
                file_len
            };
            let segment = Segment::map(id, path, &file, file_len, capacity, !newest)?;
            let tolerate_torn_tail = newest && end.is_none();
            let end = scan_segment(&segment, tolerate_torn_tail, &mut visit)?;
            if end < file_len {
                log::warn!(
                    "cutting a torn write off the end of {}: {} bytes at offset {end}",
                    segment.path().display(),
                    file_len - end
                );
                file.set_len(end)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| LogError::io(segment.path(), e))?;
                segment.publish(end);
            }
            segments.push(Arc::new(segment));
            if newest {
                active_file = Some(file);
            }
        }

        let (active, file) = match (segments.last(), active_file) {
            (Some(active), Some(file)) => (Arc::clone(active), file),
            _ => {
                let (segment, file) = create_segment(dir, 1, options.segment_size)?;
                let segment = Arc::new(segment);
                segments.push(Arc::clone(&segment));
                (segment, file)
            }
        };
        Ok(Log {
            dir: dir.to_path_buf(),
            options,
            set: Arc::new(ArcSwap::from_pointee(SegmentSet { segments })),
            active,
            file,
            pending: Vec::new(),
        })
    }

    /// A handle for readers.
    pub fn reader(&self) -> LogReader {
        LogReader {
            set: Arc::clone(&self.set),
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the active segment.
    pub fn active_id(&self) -> u32 {
        self.active.id()
    }

    /// Encodes `record` at the end of the log and returns where it will be.
    ///
    /// The record is buffered: it becomes readable, and its location valid
    /// to hand to readers, only after the next [`Log::flush`]. If it does
    /// not fit in the active segment, the segment is sealed (flushed and
    /// synced) and a new one begun.
    ///
    /// # Errors
    ///
    /// A record that cannot be encoded, or an I/O error while rolling over.
    pub fn append(&mut self, record: &Record<'_>) -> Result<Location> {
        self.append_with(record.encoded_len(), |buf| {
            kv_format::encode(record, buf).map(drop)
        })
    }

    /// Like [`Log::append`], for a record the caller already encoded with
    /// `kv-format` (for example into its write-ahead log), so it is not
    /// encoded twice.
    ///
    /// # Errors
    ///
    /// [`LogError::Format`] if `encoded` is not exactly one valid record;
    /// an I/O error while rolling over.
    pub fn append_encoded(&mut self, encoded: &[u8]) -> Result<Location> {
        // Checking the header (not the checksum, which the caller computed)
        // keeps a wrong length from ever reaching a segment.
        let header = kv_format::decode_header(encoded, &Limits::default())?;
        if header.record_len() != encoded.len() as u64 {
            return Err(LogError::Format(kv_format::FormatError::Truncated {
                needed: header.record_len(),
                available: encoded.len(),
            }));
        }
        self.append_with(encoded.len(), |buf| {
            buf.extend_from_slice(encoded);
            Ok(())
        })
    }

    fn append_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), kv_format::FormatError>,
    ) -> Result<Location> {
        let len = len as u64;
        let max = MAX_SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;
        if len > max {
            return Err(LogError::RecordTooLarge { len, max });
        }
        let mut end = self.end();
        let has_records = end > SEGMENT_HEADER_LEN as u64;
        if end + len > self.active.capacity()
            || (has_records && end + len > self.options.segment_size)
        {
            self.roll(len)?;
            end = self.end();
        }
        write(&mut self.pending)?;
        let loc = Location {
            segment: self.active.id(),
            // end + len <= capacity <= MAX_SEGMENT_SIZE = u32::MAX.
            offset: end as u32,
            len: len as u32,
        };
        if self.pending.len() >= self.options.write_buffer_size {
            self.flush()?;
        }
        Ok(loc)
    }

    /// Where the next record will go. After [`Log::sync`] everything before
    /// it is durable.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            segment: self.active.id(),
            offset: self.end(),
        }
    }

    /// The offset in the active segment where the next record will go.
    fn end(&self) -> u64 {
        self.active.len() + self.pending.len() as u64
    }

    /// Writes buffered records to the active segment and makes them
    /// readable. This hands them to the operating system; it does not sync.
    ///
    /// # Errors
    ///
    /// An I/O error from the write. The buffered records are then dropped
    /// and were never readable.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.active.len();
        let result = self.file.write_all_at(&self.pending, at);
        let written = self.pending.len() as u64;
        self.pending.clear();
        result.map_err(|e| LogError::io(self.active.path(), e))?;
        self.active.publish(at + written);
        Ok(())
    }

    /// Flushes and makes the active segment durable (fdatasync).
    ///
    /// # Errors
    ///
    /// An I/O error from the write or the sync.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| LogError::io(self.active.path(), e))
    }

    /// Seals the active segment and begins a new one with room for a record
    /// of `next_len` bytes.
    fn roll(&mut self, next_len: u64) -> Result<()> {
        self.sync()?;
        let id = self
            .active
            .id()
            .checked_add(1)
            .ok_or(LogError::SegmentIdsExhausted)?;
        let capacity = self
            .options
            .segment_size
            .max(SEGMENT_HEADER_LEN as u64 + next_len);
        let (segment, file) = create_segment(&self.dir, id, capacity)?;
        let segment = Arc::new(segment);
        self.active.seal();
        self.set.rcu(|set| {
            let mut segments = set.segments.clone();
            segments.push(Arc::clone(&segment));
            SegmentSet { segments }
        });
        self.active = segment;
        self.file = file;
        Ok(())
    }
}

/// Ids of the segment files in `dir`, ascending. Removes leftover temporary
/// files of segments whose creation was cut short.
fn list_segments(dir: &Path) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) {
            let path = entry.path();
            log::warn!(
                "removing {}, a segment whose creation did not finish",
                path.display()
            );
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        } else if let Some(id) = parse_segment_file_name(name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Removes every segment after `end` and cuts segment `end.segment` to
/// `end.offset`, syncing what it changed.
fn discard_after(dir: &Path, ids: &mut Vec<u32>, end: LogPosition) -> Result<()> {
    let mut removed = false;
    while let Some(&id) = ids.last() {
        if id <= end.segment {
            break;
        }
        let path = dir.join(segment_file_name(id));
        log::info!(
            "removing {}: it begins after the last checkpoint",
            path.display()
        );
        fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        ids.pop();
        removed = true;
    }
    if removed {
        sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    }
    let path = dir.join(segment_file_name(end.segment));
    if ids.last() != Some(&end.segment) {
        if ids.is_empty() && end.segment == 1 && end.offset == SEGMENT_HEADER_LEN as u64 {
            // A checkpoint of an empty log, taken before its first segment
            // existed on disk: nothing is missing.
            return Ok(());
        }
        return Err(LogError::Corruption {
            path,
            offset: 0,
            reason: format!(
                "the segment is missing, but the last checkpoint says {} bytes of it are durable",
                end.offset
            ),
        });
    }
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
    if len < end.offset {
        return Err(LogError::Corruption {
            path,
            offset: len,
            reason: format!(
                "the file ends at {len}, but the last checkpoint says {} bytes are durable",
                end.offset
            ),
        });
    }
    if len > end.offset {
        log::info!(
            "cutting {} to the last checkpoint: {} bytes after offset {} are replayed from the write-ahead log",
            path.display(),
            len - end.offset,
            end.offset
        );
        file.set_len(end.offset)
            .and_then(|()| file.sync_all())
            .map_err(|e| LogError::io(&path, e))?;
    }
    Ok(())
}

/// Creates segment `id` atomically: header to a temporary file, sync,
/// rename, directory sync. A crash leaves either no segment or a whole one.
fn create_segment(dir: &Path, id: u32, capacity: u64) -> Result<(Segment, File)> {
    let path = dir.join(segment_file_name(id));
    let tmp = dir.join(format!("{id:010}{TEMP_SUFFIX}"));
    let file = (|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&encode_header(id))?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(file)
    })()
    .map_err(|e| LogError::io(&path, e))?;
    let segment = Segment::map(id, path, &file, SEGMENT_HEADER_LEN as u64, capacity, false)?;
    Ok((segment, file))
}

/// Makes the creation, renaming or removal of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Checks the segment's header and hands each record to `visit`. Returns
/// the offset where the valid records end: the file's length, or, when a
/// torn tail is tolerated (the newest segment, with no checkpoint), the
/// start of the torn tail.
fn scan_segment(
    segment: &Segment,
    tolerate_torn_tail: bool,
    visit: &mut impl FnMut(Location, &Record<'_>),
) -> Result<u64> {
    let bytes = segment.bytes();
    let id = decode_header(bytes).map_err(|reason| LogError::BadSegmentHeader {
        path: segment.path().to_path_buf(),
        reason,
    })?;
    if id != segment.id() {
        return Err(LogError::BadSegmentHeader {
            path: segment.path().to_path_buf(),
            reason: format!("its header names segment {id}, not {}", segment.id()),
        });
    }
    // Read with the format's own limits, not a configured lower maximum, so
    // that lowering the maximum never makes old data unreadable.
    let limits = Limits::default();
    let mut at = SEGMENT_HEADER_LEN;
    while at < bytes.len() {
        match decode_with_limits(&bytes[at..], &limits) {
            Ok(decoded) => {
                let loc = Location {
                    segment: segment.id(),
                    offset: at as u32,
                    len: decoded.len as u32,
                };
                visit(loc, &decoded.record);
                at += decoded.len;
            }
            Err(err) => {
                if tolerate_torn_tail && !any_valid_record_after(bytes, at, &limits) {
                    return Ok(at as u64);
                }
                return Err(LogError::Corruption {
                    path: segment.path().to_path_buf(),
                    offset: at as u64,
                    reason: err.to_string(),
                });
            }
        }
    }
    Ok(bytes.len() as u64)
}

/// Whether a valid record starts anywhere after `bad`. A bad record with a
/// valid one after it is damage, not a torn write at the tail.
fn any_valid_record_after(bytes: &[u8], bad: usize, limits: &Limits) -> bool {
    (bad + 1..bytes.len()).any(|at| {
        bytes.get(at + kv_format::VERSION_OFFSET) == Some(&FORMAT_VERSION)
            && decode_with_limits(&bytes[at..], limits).is_ok()
    })
}
