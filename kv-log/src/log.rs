//! The segment log: the writer's [`Log`], the shared [`LogReader`], and
//! compaction outputs.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kv_format::{Limits, Record};

use crate::fault::{Faults, FileOp};
use crate::format::{
    HeaderError, MAX_SUPERSEDES, SegmentHeader, SegmentKind, TEMP_SUFFIX, claimed_header_len,
    decode_header, encode_header, hint_file_name, parse_hint_file_name, parse_segment_file_name,
    segment_file_name,
};
use crate::sync::{Arc, ArcSwap, AtomicU32, Guard, Mutex};
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

/// A point in the log's own segments: everything before `offset` in
/// segment `segment`, and everything in lower log segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The segment id.
    pub segment: u32,
    /// Byte offset in the segment file (at least the header length).
    pub offset: u64,
}

/// What a caller with a write-ahead log of its own recorded about the
/// segment log when it last made it durable (the engine's checkpoint
/// marker): [`Log::recover`] discards what lies beyond it and checks that
/// nothing before it went missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// The end of the durable segment data: log segments with a higher id
    /// are removed, and segment `end.segment` is cut to `end.offset`.
    pub end: LogPosition,
    /// The segments that existed then (none superseded by another of
    /// them). Each must still exist, or be superseded by a compaction
    /// output that exists; otherwise opening fails with
    /// [`LogError::Corruption`] naming it. `None` when not recorded.
    pub segments: Option<Vec<u32>>,
    /// The id the next new segment was to get ([`Log::next_segment_id`]):
    /// no new segment gets a lower one, even if the segments with the
    /// highest ids are gone. 0 when not recorded.
    pub next_id: u32,
}

impl Durable {
    /// Only an end position: no list of segments, no id floor.
    pub fn at(end: LogPosition) -> Durable {
        Durable {
            end,
            segments: None,
            next_id: 0,
        }
    }
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
    /// Makes chosen file operations fail, for tests (the `fail-points`
    /// feature). Default none.
    #[cfg(feature = "fail-points")]
    pub faults: Option<crate::FaultHook>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            write_buffer_size: 1 << 20,
            #[cfg(feature = "fail-points")]
            faults: None,
        }
    }
}

/// The segments that exist at one moment, in id order.
///
/// A reader loads the current set through [`LogReader::segments`]; the set
/// it holds stays valid (and its segments mapped) for as long as it holds
/// it, even if the writer or compaction moves on.
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

/// State shared by the writer, readers and compaction.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    set: ArcSwap<SegmentSet>,
    /// The id the next new segment gets; ids only grow.
    next_id: AtomicU32,
    /// The test seam of the `fail-points` feature; a no-op without it.
    faults: Faults,
    /// Why the log refuses changes, when the cause was found outside the
    /// writer (a compaction output's directory sync failed): the writer's
    /// own cause is in `Log::poisoned`.
    poisoned: Mutex<Option<String>>,
}

impl Shared {
    fn poison(&self, cause: String) {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if poisoned.is_none() {
            log::error!("the segment log refuses further changes: {cause}");
            *poisoned = Some(cause);
        }
    }

    fn poison_cause(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn allocate_id(&self) -> Result<u32> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == u32::MAX {
            return Err(LogError::SegmentIdsExhausted);
        }
        Ok(id)
    }

    fn add(&self, segment: &Arc<Segment>) {
        self.set.rcu(|set| {
            let mut segments = set.segments.clone();
            let at = segments.partition_point(|s| s.id() < segment.id());
            segments.insert(at, Arc::clone(segment));
            SegmentSet { segments }
        });
    }
}

/// A handle readers (and compaction) use to reach the segments, shared
/// with the writer.
///
/// Cloning it is cheap. Loading the segment set writes no shared memory on
/// the fast path (arc-swap keeps its bookkeeping thread-local), so readers
/// do not contend with one another.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// The segment set as a reader loaded it; derefs to [`SegmentSet`].
#[derive(Debug)]
pub struct SegmentsGuard(Guard<SegmentSet>);

impl Deref for SegmentsGuard {
    type Target = SegmentSet;
    fn deref(&self) -> &SegmentSet {
        &self.0
    }
}

impl SegmentsGuard {
    /// Whether `other` is the very set this guard holds: no segment was
    /// added or removed between the two loads. (While this guard holds its
    /// set, no later set can be allocated at its address.)
    pub fn is_same_set(&self, other: &SegmentsGuard) -> bool {
        std::ptr::eq::<SegmentSet>(&**self, &**other)
    }

    /// The set as an `Arc`, to hold for longer than a read (an iterator
    /// does): its segments stay mapped, and their files on disk, while it
    /// is held.
    pub fn to_arc(&self) -> Arc<SegmentSet> {
        Arc::clone(&self.0)
    }
}

impl LogReader {
    /// The current segments. Hold the guard only for the duration of a
    /// read; to keep one segment alive longer, clone its `Arc`.
    pub fn segments(&self) -> SegmentsGuard {
        SegmentsGuard(self.shared.set.load())
    }

    /// Begins a compaction output that will supersede the segments
    /// `supersedes`: records appended to it are not readable until
    /// [`CompactionOutput::finish`].
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] creating the file.
    pub fn create_output(&self, supersedes: &[u32]) -> Result<CompactionOutput> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err(LogError::Poisoned { cause });
        }
        let supersedes = self.with_lingering(supersedes);
        let supersedes = &supersedes[..];
        if supersedes.is_empty() || supersedes.len() > MAX_SUPERSEDES {
            return Err(LogError::io(
                &self.shared.dir,
                std::io::Error::other("a compaction output supersedes 1 to 65536 segments"),
            ));
        }
        let id = self.shared.allocate_id()?;
        let tmp = self.shared.dir.join(format!("{id:010}{TEMP_SUFFIX}"));
        let header = encode_header(id, SegmentKind::Compacted, supersedes);
        let faults = &self.shared.faults;
        let file = create_with_header(faults, &tmp, &header).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            LogError::io(&tmp, e)
        })?;
        Ok(CompactionOutput {
            shared: Arc::clone(&self.shared),
            id,
            tmp: Some(tmp),
            file,
            supersedes: supersedes.to_vec(),
            data_start: header.len() as u64,
            written: header.len() as u64,
            buf: Vec::new(),
        })
    }

    /// `inputs`, and every segment that an input supersedes whose file is
    /// still on disk (its unlink at retirement failed, or a crash came
    /// before open removed it): the new output names them too, so that
    /// supersession stays transitive. Without this, compacting an output
    /// would delete the only header naming such a file, and its old
    /// records would come back at the next open.
    ///
    /// An id a header names is always below that header's own id, and new
    /// ids are above every existing one, so a carried id never names a
    /// later segment.
    fn with_lingering(&self, inputs: &[u32]) -> Vec<u32> {
        let mut ids = inputs.to_vec();
        let set = self.shared.set.load();
        for id in inputs {
            let Some(input) = set.get(*id) else { continue };
            for &old in input.supersedes() {
                if old != *id
                    && !ids.contains(&old)
                    && self.shared.dir.join(segment_file_name(old)).exists()
                {
                    log::warn!(
                        "segment {old} is still on disk though segment {id} superseded it; the new output names it too"
                    );
                    ids.push(old);
                }
            }
        }
        ids
    }

    /// Removes the segments `ids` from the set and unlinks their files
    /// (the new output that holds their live records is already durable).
    /// Readers that hold them keep reading from the map; nothing deletes a
    /// file later.
    pub fn retire(&self, ids: &[u32]) {
        let retired: HashSet<u32> = ids.iter().copied().collect();
        let old = self.shared.set.rcu(|set| SegmentSet {
            segments: set
                .segments
                .iter()
                .filter(|s| !retired.contains(&s.id()))
                .cloned()
                .collect(),
        });
        for segment in old.segments.iter().filter(|s| retired.contains(&s.id())) {
            segment.retire();
        }
    }
}

/// A segment being written by compaction. Dropped without
/// [`finish`](CompactionOutput::finish), it deletes its temporary file.
#[derive(Debug)]
pub struct CompactionOutput {
    shared: Arc<Shared>,
    id: u32,
    tmp: Option<PathBuf>,
    file: File,
    supersedes: Vec<u32>,
    data_start: u64,
    written: u64,
    buf: Vec<u8>,
}

impl CompactionOutput {
    /// The id the output will have.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes of records appended so far.
    pub fn data_len(&self) -> u64 {
        self.written + self.buf.len() as u64 - self.data_start
    }

    /// Appends one encoded record (already checked by the caller, who read
    /// it from a segment) and returns where it will be.
    ///
    /// # Errors
    ///
    /// [`LogError::RecordTooLarge`] if the output would pass 4 GiB;
    /// [`LogError::Io`].
    pub fn append_encoded(&mut self, encoded: &[u8]) -> Result<Location> {
        let offset = self.written + self.buf.len() as u64;
        let end = offset + encoded.len() as u64;
        if end > MAX_SEGMENT_SIZE {
            return Err(LogError::RecordTooLarge {
                len: encoded.len() as u64,
                max: MAX_SEGMENT_SIZE - offset,
            });
        }
        self.buf.extend_from_slice(encoded);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(Location {
            segment: self.id,
            offset: offset as u32,
            len: encoded.len() as u32,
        })
    }

    fn flush(&mut self) -> Result<()> {
        let path = self.tmp.as_deref().unwrap_or(Path::new(""));
        let (file, at) = (&self.file, self.written);
        checked_write(&self.shared.faults, path, &self.buf, |b| {
            file.write_all_at(b, at)
        })
        .map_err(|e| LogError::io(path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes the output durable and visible: flush, sync, rename into
    /// place, sync the directory, map it and add it to the segment set.
    /// From here on it supersedes its inputs, even across a crash.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`]; the temporary file is then removed.
    pub fn finish(mut self) -> Result<Arc<Segment>> {
        self.flush()?;
        let path = self.shared.dir.join(segment_file_name(self.id));
        let tmp = self.tmp.clone().unwrap_or_default();
        let faults = &self.shared.faults;
        faults
            .check(FileOp::Sync, &tmp)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io(&tmp, e))?;
        faults
            .check(FileOp::Rename, &path)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| LogError::io(&path, e))?;
        self.tmp = None;
        if let Err(e) = sync_dir(&self.shared.dir, faults) {
            // After a failed sync the directory's state on disk is unknown,
            // and a later sync that succeeds proves nothing: the log refuses
            // every further change, as after any failed sync. Take the
            // output away again (best effort): an output on disk that is
            // not in the segment set would be invisible to the tombstone
            // rule of later runs. If it survives a crash anyway, it
            // supersedes its inputs as a crash right after the rename
            // would, and holds all their live records.
            let _ = fs::remove_file(&path);
            self.shared.poison(format!(
                "the directory sync after creating compaction output {} failed: {e}",
                self.id
            ));
            return Err(LogError::io(&self.shared.dir, e));
        }
        let header = SegmentHeader {
            id: self.id,
            kind: SegmentKind::Compacted,
            supersedes: std::mem::take(&mut self.supersedes),
            data_start: self.data_start,
        };
        let segment = Arc::new(Segment::map(
            path,
            header,
            &self.file,
            self.written,
            self.written,
            true,
            self.shared.faults.clone(),
        )?);
        self.shared.add(&segment);
        Ok(segment)
    }
}

impl Drop for CompactionOutput {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp
            && let Err(e) = fs::remove_file(tmp)
        {
            log::warn!("could not remove unfinished {}: {e}", tmp.display());
        }
    }
}

/// The writer's side of the segment log. One per directory.
#[derive(Debug)]
pub struct Log {
    options: LogOptions,
    shared: Arc<Shared>,
    active: Arc<Segment>,
    file: File,
    /// Encoded records not yet written to `file`; they start at
    /// `active.len()`.
    pending: Vec<u8>,
    /// Why the log refuses writes: a sync failed (a retried `fsync` can
    /// report success for pages the kernel dropped), or a failed write
    /// could not be cut off again.
    poisoned: Option<String>,
}

/// A segment file found at open, before it is mapped.
struct Found {
    id: u32,
    path: PathBuf,
    file: File,
    len: u64,
    header: SegmentHeader,
}

impl Log {
    /// Opens (creating if needed) the segment log in `dir` and hands every
    /// valid record, oldest segment first, to `visit`.
    ///
    /// A torn record at the tail of the newest log segment is cut off and
    /// the cut logged as a warning.
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] for a bad record anywhere but the tail of
    /// the newest log segment or a damaged segment header (offset 0),
    /// [`LogError::BadSegmentHeader`] for a file that is not a segment this
    /// build reads (another magic number, a later version), and
    /// [`LogError::Io`].
    pub fn open(
        dir: &Path,
        options: LogOptions,
        visit: impl FnMut(Location, &Record<'_>),
    ) -> Result<Log> {
        Log::open_at(dir, options, None, visit)
    }

    /// Opens the log like [`Log::open`], but first discards everything
    /// after `end` (see [`Log::recover`]).
    ///
    /// # Errors
    ///
    /// As [`Log::recover`], and [`LogError::Corruption`] from the scan.
    pub fn open_at(
        dir: &Path,
        options: LogOptions,
        end: Option<LogPosition>,
        mut visit: impl FnMut(Location, &Record<'_>),
    ) -> Result<Log> {
        let log = Log::recover(dir, options, end.map(Durable::at).as_ref())?;
        for segment in log.reader().segments().iter() {
            segment.for_each_record(&mut visit)?;
        }
        Ok(log)
    }

    /// Opens the log without reading its records (the caller loads them,
    /// for example with [`Segment::load`]).
    ///
    /// Compaction outputs delete the segments they supersede. When `end` is
    /// given (the position a caller with a write-ahead log last made
    /// durable), log segments with a higher id are removed and segment
    /// `end.segment` is cut to `end.offset`: the caller replays its own log
    /// for everything after it. Without `end`, the newest log segment is
    /// scanned for a torn tail, which is cut off.
    ///
    /// # Errors
    ///
    /// [`LogError::BadSegmentHeader`], [`LogError::Io`], and
    /// [`LogError::Corruption`] for a damaged segment header, when segment
    /// `end.segment` is missing or
    /// shorter than `end.offset`, or (without `end`) for a bad record in
    /// the newest log segment that is followed by a valid one.
    pub fn recover(dir: &Path, options: LogOptions, durable: Option<&Durable>) -> Result<Log> {
        let end = durable.map(|d| d.end);
        let mut options = options;
        options.segment_size = options
            .segment_size
            .clamp(SEGMENT_HEADER_LEN as u64 + 1, MAX_SEGMENT_SIZE);
        let faults = Faults {
            #[cfg(feature = "fail-points")]
            hook: options.faults.clone(),
        };
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut found = list_segments(dir)?;
        let max_id = found.iter().map(|f| f.id).max().unwrap_or(0);
        if let Some(expected) = durable.and_then(|d| d.segments.as_deref()) {
            check_present(dir, &found, expected)?;
        }
        let mut changed = remove_superseded(&mut found)?;
        if let Some(end) = end {
            changed |= discard_after(dir, &mut found, end, &faults)?;
        }
        changed |= remove_orphan_hints(dir, &found)?;
        let newest_log = found
            .iter()
            .filter(|f| f.header.kind == SegmentKind::Log)
            .map(|f| f.id)
            .max();
        if let Some(id) = newest_log {
            // The newest log segment is appended to again: a hint file of
            // it (written while it was sealed at the same length, before a
            // crash) would describe a segment that grew.
            changed |= remove_if_present(&dir.join(hint_file_name(id)))?;
        }
        if changed {
            sync_dir(dir, &faults).map_err(|e| LogError::io(dir, e))?;
        }

        let next_id = (max_id + 1).max(durable.map_or(0, |d| d.next_id));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            set: ArcSwap::from_pointee(SegmentSet::default()),
            next_id: AtomicU32::new(next_id),
            faults: faults.clone(),
            poisoned: Mutex::new(None),
        });
        let mut segments = Vec::with_capacity(found.len() + 1);
        let mut active = None;
        for f in found {
            let is_active = Some(f.id) == newest_log;
            let capacity = if is_active {
                options.segment_size.max(f.len)
            } else {
                f.len
            };
            let segment = Segment::map(
                f.path,
                f.header,
                &f.file,
                f.len,
                capacity,
                !is_active,
                faults.clone(),
            )?;
            if is_active && end.is_none() {
                let valid = segment.scan(true, &mut |_, _| {})?;
                if valid < f.len {
                    log::warn!(
                        "cutting a torn write off the end of {}: {} bytes at offset {valid}",
                        segment.path().display(),
                        f.len - valid
                    );
                    f.file
                        .set_len(valid)
                        .and_then(|()| faults.check(FileOp::Sync, segment.path()))
                        .and_then(|()| f.file.sync_all())
                        .map_err(|e| LogError::io(segment.path(), e))?;
                    segment.publish(valid);
                }
            }
            let segment = Arc::new(segment);
            if is_active {
                active = Some((Arc::clone(&segment), f.file));
            }
            segments.push(segment);
        }
        shared.set.store(Arc::new(SegmentSet { segments }));
        let (active, file) = match active {
            Some(active) => active,
            None => {
                let id = shared.allocate_id()?;
                let (segment, file) = create_log_segment(dir, id, options.segment_size, &faults)
                    .map_err(CreateError::into_error)?;
                let segment = Arc::new(segment);
                shared.add(&segment);
                (segment, file)
            }
        };
        Ok(Log {
            options,
            shared,
            active,
            file,
            pending: Vec::new(),
            poisoned: None,
        })
    }

    /// A handle for readers and compaction.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
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
        self.check_poisoned()?;
        let len = len as u64;
        let max = MAX_SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;
        if len > max {
            return Err(LogError::RecordTooLarge { len, max });
        }
        let mut end = self.end();
        let has_records = end > self.active.data_start();
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
    /// [`LogError::Poisoned`]; [`LogError::Io`] from the write. The
    /// buffered records are then dropped and were never readable, and
    /// whatever part of them reached the file is cut off again (made
    /// durable by the next sync), so the log is as before and takes later
    /// appends. If the cut fails, the log is poisoned.
    pub fn flush(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.active.len();
        let (file, pending) = (&self.file, &self.pending);
        let result = checked_write(&self.shared.faults, self.active.path(), pending, |b| {
            file.write_all_at(b, at)
        });
        let written = self.pending.len() as u64;
        self.pending.clear();
        if let Err(e) = result {
            // Nothing past `at` is published, so no reader can be looking
            // at the bytes cut off here.
            if let Err(cut) = self.file.set_len(at) {
                self.poisoned = Some(format!(
                    "a write to {} failed ({e}) and cutting it off failed too ({cut})",
                    self.active.path().display()
                ));
            }
            return Err(LogError::io(self.active.path(), e));
        }
        self.active.publish(at + written);
        Ok(())
    }

    /// Flushes and makes the active segment durable (fdatasync).
    ///
    /// # Errors
    ///
    /// [`LogError::Poisoned`]; [`LogError::Io`] from the write or the
    /// sync. A failed sync poisons the log: it is never retried.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        let path = self.active.path();
        let synced = self
            .shared
            .faults
            .check(FileOp::Sync, path)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = synced {
            self.poisoned = Some(format!("the sync of {} failed: {e}", path.display()));
            return Err(LogError::io(path, e));
        }
        Ok(())
    }

    /// Why the log refuses writes, if an earlier sync failed (of a segment,
    /// or of the directory after a compaction output was created), or a
    /// failed write could not be cut off.
    pub fn poison_cause(&self) -> Option<String> {
        self.poisoned.clone().or_else(|| self.shared.poison_cause())
    }

    fn check_poisoned(&self) -> Result<()> {
        match self.poison_cause() {
            Some(cause) => Err(LogError::Poisoned { cause }),
            None => Ok(()),
        }
    }

    /// The id the next new segment will get. A caller that records it
    /// durably (the engine's checkpoint marker) and passes it back to
    /// [`Log::recover`] makes sure ids are never reused, even after the
    /// segments with the highest ids are gone.
    pub fn next_segment_id(&self) -> u32 {
        self.shared.next_id.load(Ordering::Relaxed)
    }

    /// Seals the active segment (flushed and synced) and begins a new one,
    /// even if the active one has room. Does nothing if the active segment
    /// holds no record.
    ///
    /// # Errors
    ///
    /// An I/O error from the sync or the creation.
    pub fn seal_active(&mut self) -> Result<()> {
        if self.end() == self.active.data_start() {
            return Ok(());
        }
        self.roll(0)
    }

    /// Seals the active segment and begins a new one with room for a record
    /// of `next_len` bytes. If the new segment cannot be created before it
    /// is renamed into place, the active one stays active (flushed and
    /// synced); a failed sync poisons the log.
    fn roll(&mut self, next_len: u64) -> Result<()> {
        self.sync()?;
        let id = self.shared.allocate_id()?;
        let capacity = self
            .options
            .segment_size
            .max(SEGMENT_HEADER_LEN as u64 + next_len);
        let created = create_log_segment(&self.shared.dir, id, capacity, &self.shared.faults);
        let (segment, file) = match created {
            Ok(created) => created,
            Err(CreateError::Unchanged(e)) => return Err(e),
            Err(CreateError::Unsynced(e)) => {
                self.poisoned = Some(format!("creating segment {id} failed: {e}"));
                return Err(e);
            }
        };
        let segment = Arc::new(segment);
        self.active.seal();
        self.shared.add(&segment);
        self.active = segment;
        self.file = file;
        Ok(())
    }
}

/// The segment files in `dir`, by id, with their headers checked. Removes
/// leftover temporary files of segments whose creation was cut short.
fn list_segments(dir: &Path) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) || name.ends_with(".hint.tmp") {
            let path = entry.path();
            log::warn!(
                "removing {}, a file whose creation did not finish",
                path.display()
            );
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            continue;
        }
        let Some(id) = parse_segment_file_name(name) else {
            continue;
        };
        let path = entry.path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let (len, header) = read_segment_header(&file, &path, id)?;
        found.push(Found {
            id,
            path,
            file,
            len,
            header,
        });
    }
    found.sort_unstable_by_key(|f| f.id);
    Ok(found)
}

/// Reads and checks the header of segment file `path`, which must be
/// segment `id`; returns the file's length and the header.
pub(crate) fn read_segment_header(
    file: &File,
    path: &Path,
    id: u32,
) -> Result<(u64, SegmentHeader)> {
    let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    if len > MAX_SEGMENT_SIZE {
        return Err(LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason: format!("the file is {len} bytes, more than a segment can be"),
        });
    }
    // The fixed header says how long the whole header is; read that much
    // (bounded by the file and by MAX_SUPERSEDES) and check it all.
    let mut fixed = vec![0u8; (len as usize).min(SEGMENT_HEADER_LEN)];
    file.read_exact_at(&mut fixed, 0)
        .map_err(|e| LogError::io(path, e))?;
    let mut head = vec![0u8; claimed_header_len(&fixed).min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| LogError::io(path, e))?;
    let header = decode_header(&head).map_err(|e| match e {
        HeaderError::Damaged(reason) => LogError::Corruption {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("the segment header is damaged: {reason}"),
        },
        HeaderError::Unsupported(reason) => LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason,
        },
    })?;
    if header.id != id {
        return Err(LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason: format!("its header names segment {}, not {id}", header.id),
        });
    }
    Ok((len, header))
}

/// The ids that the compaction outputs in `found` supersede.
fn superseded_ids(found: &[Found]) -> HashSet<u32> {
    found
        .iter()
        .flat_map(|f| {
            f.header
                .supersedes
                .iter()
                .copied()
                .filter(move |&s| s != f.id)
        })
        .collect()
}

/// Checks that every segment in `expected` exists, or is superseded by a
/// compaction output that exists (which then holds its live records).
///
/// This is enough because a compaction output takes as inputs only
/// segments that existed at the caller's last record (they are below its
/// checkpoint), and is itself taken as an input only after a later record
/// lists it: so a segment of the record that is gone is named by a header
/// that exists.
fn check_present(dir: &Path, found: &[Found], expected: &[u32]) -> Result<()> {
    let present: HashSet<u32> = found.iter().map(|f| f.id).collect();
    let superseded = superseded_ids(found);
    let mut missing = expected
        .iter()
        .filter(|id| !present.contains(id) && !superseded.contains(id));
    if let Some(&id) = missing.next() {
        let others = missing.count();
        return Err(LogError::Corruption {
            path: dir.join(segment_file_name(id)),
            offset: 0,
            reason: format!(
                "the segment is missing{}: the last checkpoint lists it and no compaction output supersedes it",
                if others > 0 {
                    format!(" (and {others} more segments)")
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(())
}

/// Removes `path`; whether it existed.
fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LogError::io(path, e)),
    }
}

/// Deletes every segment that a compaction output supersedes: the output
/// holds all of their live records. Returns whether it deleted any.
fn remove_superseded(found: &mut Vec<Found>) -> Result<bool> {
    let superseded = superseded_ids(found);
    let mut removed = false;
    for f in found.iter().filter(|f| superseded.contains(&f.id)) {
        log::info!(
            "removing {}: a compaction output supersedes it",
            f.path.display()
        );
        fs::remove_file(&f.path).map_err(|e| LogError::io(&f.path, e))?;
        let hint = f.path.with_file_name(hint_file_name(f.id));
        if let Err(e) = fs::remove_file(&hint)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LogError::io(&hint, e));
        }
        removed = true;
    }
    found.retain(|f| !superseded.contains(&f.id));
    Ok(removed)
}

/// Removes hint files whose segment is gone.
fn remove_orphan_hints(dir: &Path, found: &[Found]) -> Result<bool> {
    let ids: HashSet<u32> = found.iter().map(|f| f.id).collect();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_hint_file_name)
            && !ids.contains(&id)
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Removes every log segment after `end` and cuts segment `end.segment` to
/// `end.offset`, syncing what it changed. Compaction outputs are kept: they
/// only ever hold records from before a checkpoint. Returns whether it
/// removed a file.
fn discard_after(
    dir: &Path,
    found: &mut Vec<Found>,
    end: LogPosition,
    faults: &Faults,
) -> Result<bool> {
    let mut removed = false;
    for f in found
        .iter()
        .filter(|f| f.header.kind == SegmentKind::Log && f.id > end.segment)
    {
        log::info!(
            "removing {}: it begins after the last checkpoint",
            f.path.display()
        );
        fs::remove_file(&f.path).map_err(|e| LogError::io(&f.path, e))?;
        let hint = dir.join(hint_file_name(f.id));
        if let Err(e) = fs::remove_file(&hint)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LogError::io(&hint, e));
        }
        removed = true;
    }
    found.retain(|f| !(f.header.kind == SegmentKind::Log && f.id > end.segment));

    let Some(f) = found
        .iter_mut()
        .find(|f| f.id == end.segment && f.header.kind == SegmentKind::Log)
    else {
        if !found.iter().any(|f| f.header.kind == SegmentKind::Log)
            && end.offset == SEGMENT_HEADER_LEN as u64
        {
            // A checkpoint of an empty log, taken before its first segment
            // existed on disk: nothing is missing.
            return Ok(removed);
        }
        return Err(LogError::Corruption {
            path: dir.join(segment_file_name(end.segment)),
            offset: 0,
            reason: format!(
                "the segment is missing, but the last checkpoint says {} bytes of it are durable",
                end.offset
            ),
        });
    };
    if f.len < end.offset {
        return Err(LogError::Corruption {
            path: f.path.clone(),
            offset: f.len,
            reason: format!(
                "the file ends at {}, but the last checkpoint says {} bytes are durable",
                f.len, end.offset
            ),
        });
    }
    if f.len > end.offset {
        log::info!(
            "cutting {} to the last checkpoint: {} bytes after offset {} are replayed from the write-ahead log",
            f.path.display(),
            f.len - end.offset,
            end.offset
        );
        f.file
            .set_len(end.offset)
            .and_then(|()| faults.check(FileOp::Sync, &f.path))
            .and_then(|()| f.file.sync_all())
            .map_err(|e| LogError::io(&f.path, e))?;
        f.len = end.offset;
        // A hint file describes the old length; it is stale now.
        let _ = fs::remove_file(dir.join(hint_file_name(f.id)));
    }
    Ok(removed)
}

/// Why [`create_log_segment`] failed, and what state it left.
enum CreateError {
    /// Nothing changed: the temporary file (if any) was removed.
    Unchanged(LogError),
    /// The segment was renamed into place but the directory sync failed.
    Unsynced(LogError),
}

impl CreateError {
    fn into_error(self) -> LogError {
        match self {
            CreateError::Unchanged(e) | CreateError::Unsynced(e) => e,
        }
    }
}

/// Puts copies of the sealed `segments` and their hint files into the
/// directory `to` (which must exist), for a checkpoint of the log: each
/// file is hard-linked, or copied where a link cannot be made (another file
/// system). Then creates an empty log segment numbered after all of them,
/// so that a [`Log`] opened in `to` appends there and never to a linked
/// file, and syncs everything. Returns the position of that new segment's
/// start: the end of the copied log.
///
/// Sealed segments and hint files are never changed in place (a hint file
/// is written once, by a rename), which is what makes sharing them by link
/// safe. A segment retired meanwhile has lost its file but stays readable
/// while the caller holds it: it is copied from the map; a hint file that
/// disappears meanwhile is skipped (loading scans instead).
///
/// # Errors
///
/// [`LogError::Io`] for a file that cannot be linked, copied or synced.
pub fn copy_segments(segments: &[Arc<Segment>], to: &Path) -> Result<LogPosition> {
    let mut max_id = 0;
    for segment in segments {
        max_id = max_id.max(segment.id());
        let target = to.join(segment_file_name(segment.id()));
        if link_or_copy(segment.path(), &target)?.is_none() {
            // Retired meanwhile: its file is unlinked, but the held map
            // still has every byte.
            write_synced(&target, segment.bytes()).map_err(|e| LogError::io(&target, e))?;
        }
        let hint = segment.path().with_file_name(hint_file_name(segment.id()));
        link_or_copy(&hint, &to.join(hint_file_name(segment.id())))?;
    }
    let id = max_id
        .checked_add(1)
        .ok_or_else(|| LogError::io(to, std::io::Error::other("segment ids are exhausted")))?;
    // Creating the segment syncs the directory, which makes the links
    // durable too.
    // The segments share their log's fault hook (a test seam).
    let faults = segments
        .first()
        .map(|s| s.faults().clone())
        .unwrap_or_default();
    create_log_segment(to, id, SEGMENT_HEADER_LEN as u64 + 1, &faults)
        .map_err(CreateError::into_error)?;
    Ok(LogPosition {
        segment: id,
        offset: SEGMENT_HEADER_LEN as u64,
    })
}

/// Creates `path` holding `bytes`, synced.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Hard-links `from` to `to`, or copies and syncs it if the link fails.
/// `Ok(None)` if `from` does not exist.
fn link_or_copy(from: &Path, to: &Path) -> Result<Option<()>> {
    match fs::hard_link(from, to) {
        Ok(()) => return Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => return Ok(None),
        Err(e) => log::debug!(
            "cannot link {} to {} ({e}); copying it",
            from.display(),
            to.display()
        ),
    }
    let copied = (|| {
        fs::copy(from, to)?;
        File::open(to)?.sync_all()
    })();
    match copied {
        Ok(()) => Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
            let _ = fs::remove_file(to);
            Ok(None)
        }
        Err(e) => Err(LogError::io(to, e)),
    }
}

/// Creates log segment `id` atomically: header to a temporary file, sync,
/// rename, directory sync. A crash leaves either no segment or a whole one.
fn create_log_segment(
    dir: &Path,
    id: u32,
    capacity: u64,
    faults: &Faults,
) -> std::result::Result<(Segment, File), CreateError> {
    let path = dir.join(segment_file_name(id));
    let tmp = dir.join(format!("{id:010}{TEMP_SUFFIX}"));
    let header = encode_header(id, SegmentKind::Log, &[]);
    let file = (|| {
        let file = create_with_header(faults, &tmp, &header)?;
        faults.check(FileOp::Sync, &tmp)?;
        file.sync_all()?;
        faults.check(FileOp::Rename, &path)?;
        fs::rename(&tmp, &path)?;
        Ok(file)
    })()
    .map_err(|e| {
        // Best effort: a temporary file left behind is removed at open.
        let _ = fs::remove_file(&tmp);
        CreateError::Unchanged(LogError::io(&path, e))
    })?;
    sync_dir(dir, faults).map_err(|e| CreateError::Unsynced(LogError::io(dir, e)))?;
    let header = SegmentHeader {
        id,
        kind: SegmentKind::Log,
        supersedes: Vec::new(),
        data_start: SEGMENT_HEADER_LEN as u64,
    };
    let segment = Segment::map(
        path,
        header,
        &file,
        SEGMENT_HEADER_LEN as u64,
        capacity,
        false,
        faults.clone(),
    )
    .map_err(CreateError::Unchanged)?;
    Ok((segment, file))
}

/// Writes `bytes` with `write`, unless the fault hook fails the write: then
/// only the first half is written (a write cut short, as by a full disk)
/// and the injected error returned.
pub(crate) fn checked_write(
    faults: &Faults,
    path: &Path,
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Err(e) = faults.check(FileOp::Write, path) {
        write(&bytes[..bytes.len() / 2])?;
        return Err(e);
    }
    write(bytes)
}

/// Creates (or truncates) the temporary file `tmp` and writes a segment
/// `header` to it, unsynced: the first step of making a segment.
fn create_with_header(faults: &Faults, tmp: &Path, header: &[u8]) -> std::io::Result<File> {
    faults.check(FileOp::Create, tmp)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    checked_write(faults, tmp, header, |b| file.write_all(b))?;
    Ok(file)
}

/// Makes the creation, renaming or removal of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path, faults: &Faults) -> std::io::Result<()> {
    faults.check(FileOp::Sync, dir)?;
    File::open(dir)?.sync_all()
}
