//! The writer's side of the segment log: [`Log`] appends, flushes, syncs,
//! rotates to a new segment, and is poisoned by a failed sync. Opening
//! it (`Log::recover`) is in `recover.rs`.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;

use kv_format::{Limits, Record};
use kv_fs::{AppendMap, CreateError};

use crate::create::create_log_segment;
use crate::set::Shared;
use crate::sync::Arc;
use crate::{
    Durable, Location, LogError, LogOptions, LogPosition, LogReader, MAX_SEGMENT_SIZE, Result,
    SEGMENT_HEADER_LEN, Segment,
};

/// The writer's side of the segment log. One per directory.
#[derive(Debug)]
pub struct Log {
    pub(crate) options: LogOptions,
    pub(crate) shared: Arc<Shared>,
    pub(crate) active: Arc<Segment>,
    /// The active segment's file, appended through a writable mapping (or
    /// with `pwrite`, for a long append).
    /// Bytes past `active.len()` are appended but not yet published (made
    /// readable by [`Log::flush`]).
    pub(crate) out: AppendMap,
    /// Where [`Log::append`] encodes a record before copying it.
    pub(crate) scratch: Vec<u8>,
    /// Why the log refuses writes: a sync failed (a retried `fsync` can
    /// report success for pages the kernel dropped), or a failed write
    /// could not be discarded.
    pub(crate) poisoned: Option<String>,
}

impl Drop for Log {
    /// Cuts the active segment's file to what was flushed: records
    /// appended and never flushed are dropped, as they were never
    /// readable, and so is the space allocated ahead. Best effort and not
    /// synced: a crash here is a crash a moment earlier, which recovery
    /// handles.
    fn drop(&mut self) {
        if let Err(e) = self.out.truncate(self.active.len()) {
            log::debug!(
                "could not cut {} at close: {e}",
                self.active.path().display()
            );
        }
    }
}

impl Log {
    /// Opens (creating if needed) the segment log in `dir` and hands every
    /// valid record, oldest segment first, to `visit`.
    ///
    /// A torn record at the tail of the newest log segment is cut off and
    /// the cut logged as a warning.
    ///
    /// # File ownership
    ///
    /// The caller keeps other processes from truncating or rewriting the
    /// directory's files while the log is open: they are mapped (see the
    /// crate docs, "Platform and file ownership").
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
    /// A record that cannot be encoded, or an I/O error while rotating.
    pub fn append(&mut self, record: &Record<'_>) -> Result<Location> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let appended = match kv_format::encode(record, &mut scratch) {
            Ok(_) => self.append_bytes(&scratch),
            Err(e) => Err(e.into()),
        };
        self.scratch = scratch;
        appended
    }

    /// Like [`Log::append`], for a record the caller already encoded with
    /// `kv-format` (for example into its write-ahead log), so it is not
    /// encoded twice.
    ///
    /// # Errors
    ///
    /// [`LogError::Format`] if `encoded` is not exactly one valid record;
    /// an I/O error while rotating.
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
        self.append_bytes(encoded)
    }

    /// Like [`Log::append_encoded`] for each of the records `encoded` holds
    /// back to back, in order, but with one copy for all those that fit in
    /// the active segment (one `pwrite` for a long run: see
    /// `kv_fs::WRITE_THROUGH_MIN`) rather than one per record. `located`
    /// gets each record's range in `encoded` and its location, once the
    /// record is in the file.
    ///
    /// # Errors
    ///
    /// [`LogError::Format`] if `encoded` is not a sequence of whole records
    /// with valid headers, [`LogError::RecordTooLarge`] if one is too large
    /// for any segment: nothing of it is appended then. An I/O error while
    /// writing or rotating: then everything appended since the last
    /// [`Log::flush`] is discarded, as a failed [`Log::append_encoded`]
    /// discards it.
    pub fn append_encoded_many(
        &mut self,
        encoded: &[u8],
        mut located: impl FnMut(Range<usize>, Location),
    ) -> Result<()> {
        // Check every record first, so that a bad one appends nothing.
        let limits = Limits::default();
        let mut at = 0;
        while at < encoded.len() {
            let header = kv_format::decode_header(&encoded[at..], &limits)?;
            let len = header.record_len();
            if len > (encoded.len() - at) as u64 {
                return Err(LogError::Format(kv_format::FormatError::Truncated {
                    needed: len,
                    available: encoded.len() - at,
                }));
            }
            check_record_len(len)?;
            at += len as usize;
        }
        let mut run = 0..0;
        while run.end < encoded.len() {
            // Lengths were checked above.
            let len = kv_format::decode_header(&encoded[run.end..], &limits)?.record_len();
            if self.fits(self.end() + (run.end - run.start) as u64, len) {
                run.end += len as usize;
                continue;
            }
            if run.is_empty() {
                // The first record of a run that does not fit: one record
                // alone, which rotates.
                let record = run.end..run.end + len as usize;
                located(record.clone(), self.append_bytes(&encoded[record.clone()])?);
                run = record.end..record.end;
            } else {
                self.append_run(encoded, run.clone(), &mut located)?;
                run = run.end..run.end;
            }
        }
        if !run.is_empty() {
            self.append_run(encoded, run, &mut located)?;
        }
        Ok(())
    }

    /// Copies the records `encoded[run]`, which fit in the active segment,
    /// to its end in one append, and reports where each went.
    fn append_run(
        &mut self,
        encoded: &[u8],
        run: Range<usize>,
        located: &mut impl FnMut(Range<usize>, Location),
    ) -> Result<()> {
        self.check_poisoned()?;
        let start = self.end();
        if let Err(e) = self.out.append(&encoded[run.clone()], &self.shared.faults) {
            return Err(self.discard_unpublished(e));
        }
        let mut at = run.start;
        while at < run.end {
            let len = kv_format::decode_header(&encoded[at..], &Limits::default())?.record_len();
            located(
                at..at + len as usize,
                Location {
                    segment: self.active.id(),
                    // The run fits below capacity <= MAX_SEGMENT_SIZE = u32::MAX.
                    offset: (start + (at - run.start) as u64) as u32,
                    len: len as u32,
                },
            );
            at += len as usize;
        }
        Ok(())
    }

    /// Copies one encoded record to the end of the active segment (rotating
    /// first if it does not fit). On failure, everything appended since
    /// the last [`Log::flush`] is discarded, as a failed flush discards it.
    fn append_bytes(&mut self, encoded: &[u8]) -> Result<Location> {
        self.check_poisoned()?;
        let len = encoded.len() as u64;
        check_record_len(len)?;
        let mut end = self.end();
        if !self.fits(end, len) {
            self.rotate(len)?;
            end = self.end();
        }
        if let Err(e) = self.out.append(encoded, &self.shared.faults) {
            return Err(self.discard_unpublished(e));
        }
        Ok(Location {
            segment: self.active.id(),
            // end + len <= capacity <= MAX_SEGMENT_SIZE = u32::MAX.
            offset: end as u32,
            len: len as u32,
        })
    }

    /// Whether a record of `len` bytes at offset `end` of the active
    /// segment stays in it: within its capacity, and within the segment
    /// size unless it is the segment's first record.
    fn fits(&self, end: u64, len: u64) -> bool {
        end + len <= self.active.capacity()
            && (end == self.active.data_start() || end + len <= self.options.segment_size)
    }

    /// After a failed append: cuts the file back to the published length,
    /// so that nothing appended since the last flush stays in it (no
    /// reader can be looking at those bytes: they were never published).
    /// If the cut fails, the log is poisoned.
    fn discard_unpublished(&mut self, e: std::io::Error) -> LogError {
        let at = self.active.len();
        if let Err(cut) = self.out.truncate(at) {
            self.poisoned = Some(format!(
                "an append to {} failed ({e}) and cutting it off failed too ({cut})",
                self.active.path().display()
            ));
        }
        LogError::io(self.active.path(), e)
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
        self.out.len()
    }

    /// Makes the records appended since the last flush readable. They are
    /// already in the file (copied into its mapping, so in the page cache:
    /// they survive the process being killed); this does not sync, and
    /// makes no system call.
    ///
    /// # Errors
    ///
    /// [`LogError::Poisoned`].
    pub fn flush(&mut self) -> Result<()> {
        self.check_poisoned()?;
        self.active.publish(self.out.len());
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
        if let Err(e) = self.out.sync_data(&self.shared.faults) {
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
    /// durably (the engine's marker) and passes it back to
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
        self.rotate(0)
    }

    /// Seals the active segment and begins a new one with room for a record
    /// of `next_len` bytes. If the new segment cannot be created before it
    /// is renamed into place, the active one stays active (flushed and
    /// synced); a failed sync poisons the log.
    fn rotate(&mut self, next_len: u64) -> Result<()> {
        self.cut_allocated_tail()?;
        self.sync()?;
        let id = self.shared.allocate_id()?;
        let capacity = self
            .options
            .segment_size
            .max(SEGMENT_HEADER_LEN as u64 + next_len);
        let created = create_log_segment(&self.shared.dir, id, capacity, &self.shared.faults);
        let (segment, out) = match created {
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
        self.out = out;
        Ok(())
    }

    /// Cuts the space allocated ahead off the active segment's file, so
    /// that it ends with its last record; the next append allocates again.
    /// Durable with the next [`Log::sync`]. The owner calls it before the
    /// last sync of a clean close; rotation does it before sealing.
    ///
    /// # Errors
    ///
    /// [`LogError::Poisoned`]; [`LogError::Io`] from the truncation (the
    /// file is as it was then).
    pub fn cut_allocated_tail(&mut self) -> Result<()> {
        self.check_poisoned()?;
        self.flush()?;
        self.out
            .cut_tail()
            .map_err(|e| LogError::io(self.active.path(), e))
    }
}

/// A record of `len` bytes fits in a segment of its own.
fn check_record_len(len: u64) -> Result<()> {
    let max = MAX_SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;
    if len > max {
        return Err(LogError::RecordTooLarge { len, max });
    }
    Ok(())
}
