//! The writer's side of the segment log: [`Log`] appends, flushes, syncs,
//! rotates to a new segment, and is poisoned by a failed sync. Opening
//! it (`Log::recover`) is in `recover.rs`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use kv_format::{Limits, Record};
use kv_fs::{CreateError, FileOp};

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
    pub(crate) file: File,
    /// Encoded records not yet written to `file`; they start at
    /// `active.len()`.
    pub(crate) pending: Vec<u8>,
    /// Why the log refuses writes: a sync failed (a retried `fsync` can
    /// report success for pages the kernel dropped), or a failed write
    /// could not be discarded.
    pub(crate) poisoned: Option<String>,
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
            self.rotate(len)?;
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
    /// whatever part of them reached the file is discarded (made
    /// durable by the next sync), so the log is as before and takes later
    /// appends. If the cut fails, the log is poisoned.
    pub fn flush(&mut self) -> Result<()> {
        self.check_poisoned()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.active.len();
        let (file, pending) = (&self.file, &self.pending);
        let result = kv_fs::write_or_tear(&self.shared.faults, self.active.path(), pending, |b| {
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
