//! [`Wal`]: the single-owner write-ahead log.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kv_fs::{AppendMap, CreateError, Faults, FileOp};

use crate::error::io_error;
use crate::format::{self, FILE_HEADER_LEN, FIRST_FILE_NUMBER, FrameLayout, frame_len};
use crate::replay::{End, FileCursor, FrameError, Replay, tail_outcome};
use crate::{Error, RecoveryMode, Result, SyncPolicy, WalOptions, fs};

/// A buffer that grew past this for one large record is shrunk back after
/// it is written.
const RETAINED_BUFFER_CAPACITY: usize = 1 << 20;

/// The most address space the mapping of an active file takes when it is
/// opened.
///
/// NOTE: the mapping of the active file starts at
/// [`WalOptions::max_file_size`] (at least one allocation chunk), so that a
/// file is never remapped while it grows to its limit (64 MiB by default):
/// a mapping takes address space only, no memory, until its pages are
/// written, and the file is allocated ahead one chunk at a time whatever
/// the mapping's size. This clamp keeps a huge configured `max_file_size`
/// from reserving a huge range up front; past it, and for a record larger
/// than a file, `AppendMap` maps more when an append needs it.
const MAX_INITIAL_MAPPING: u64 = 256 << 20;

/// Where a frame starts: a file number and a byte offset in that file.
///
/// Positions order as the frames do in the log. A position from
/// [`Wal::end_position`] is where the next frame will go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The number of the file the frame is in.
    pub file: u64,
    /// The byte offset of the frame in its file.
    pub offset: u64,
}

impl Position {
    /// A position before every frame of every log: replaying from here
    /// yields everything.
    pub const START: Position = Position { file: 0, offset: 0 };

    /// The position `offset` bytes into file `file`.
    pub const fn new(file: u64, offset: u64) -> Position {
        Position { file, offset }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// Counters of what a [`Wal`] has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Records appended.
    pub appends: u64,
    /// Flushes that wrote frames: one copy of everything buffered into the
    /// mapped file.
    pub writes: u64,
    /// Data syncs (`fdatasync`) of WAL files.
    pub syncs: u64,
    /// Frame bytes written.
    pub bytes_written: u64,
    /// New files started.
    pub rotations: u64,
}

/// The torn tail that [`Wal::open`] cut off the last file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Where the file now ends: the position of the first bad frame.
    pub position: Position,
    /// How many bytes were cut off.
    pub dropped_bytes: u64,
}

/// The file being appended to, through a writable mapping of space
/// allocated ahead (`kv_fs::AppendMap`): the file is the frames written,
/// then zeros up to the end of the space allocated, which rotation and
/// [`Wal::close`] cut off.
struct ActiveFile {
    number: u64,
    map: AppendMap,
    /// The bytes handed to the operating system (copied into the mapped
    /// file): where the next frame goes. Equal to `map.len()`, except after
    /// a failed write that could not be discarded, which poisons the `Wal`.
    written: u64,
}

impl ActiveFile {
    /// Maps `file`, WAL file `number` at `path` (open for reading and
    /// writing), whose frames end at `written`, and which ends there too.
    fn new(
        number: u64,
        file: File,
        path: PathBuf,
        written: u64,
        options: &WalOptions,
    ) -> Result<ActiveFile> {
        let capacity = options
            .max_file_size
            .clamp(kv_fs::ALLOCATION_CHUNK, MAX_INITIAL_MAPPING);
        let map = AppendMap::new(file, path.clone(), written, capacity).map_err(io_error(&path))?;
        Ok(ActiveFile {
            number,
            map,
            written,
        })
    }

    fn path(&self) -> &Path {
        self.map.path()
    }

    /// Cuts the file to `len` bytes (at most what was written), the space
    /// allocated ahead with it. Not durable until the next sync.
    fn cut_to(&mut self, len: u64) -> io::Result<()> {
        // An allocation that failed midway is cut off too (AppendMap
        // remembers it).
        self.map.truncate(len)?;
        self.written = self.map.len();
        Ok(())
    }
}

/// A write-ahead log with one owner: a directory of numbered files that
/// records are appended to, in order.
///
/// `append` only buffers a record; [`Wal::commit`] copies everything
/// buffered into the active file, which is mapped (no system call, except
/// one `fallocate` per mebibyte appended, and one `pwrite` for 16 KiB or
/// more or when a sync follows), and syncs it if the
/// [`SyncPolicy`] says so, and a record is acknowledged when the commit
/// after it returns. Calling `append` for several records and then
/// `commit` once is group commit; [`SharedWal`](crate::SharedWal) does it
/// for many threads.
///
/// A failed sync poisons the `Wal`: every later `append`, `flush`, `sync`,
/// `commit` and `rotate` returns [`Error::Poisoned`]. Reopening it recovers
/// what reached the disk. A failed write (a full disk, say) is discarded
/// instead: the file is cut back to the end of the last frame written
/// before it and synced, the records of the failed write are dropped, and
/// later writes go on; only if discarding it fails is the `Wal` poisoned.
///
/// Dropping a `Wal` does no I/O: records appended but not flushed are
/// discarded (they were never acknowledged), and the last file keeps the
/// zeros allocated ahead of its frames, as after a crash (the next open
/// cuts them off). [`Wal::close`] flushes, cuts them off and syncs first.
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    active: ActiveFile,
    /// Frames appended but not yet written.
    buf: Vec<u8>,
    /// The files before the active one, with their sizes.
    older: BTreeMap<u64, u64>,
    /// When the oldest write not yet synced was made.
    unsynced_since: Option<Instant>,
    /// Why the `Wal` refuses to write, after a failed sync or a failed
    /// write that could not be discarded.
    poisoned: Option<String>,
    /// The test seam of the `fail-points` feature; a no-op without it.
    faults: Faults,
    stats: WalStats,
    recovered_tail: Option<TruncatedTail>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("end", &self.end_position())
            .field("files", &(self.older.len() + 1))
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens the log in `dir`, creating the directory and a first file if
    /// needed, and positions it after the last valid frame.
    ///
    /// Only the last file is read through, to find its end. Zeros from the
    /// end of its frames to the end of the file are the space allocated
    /// ahead of the frames (left by a crash, or by a `Wal` dropped without
    /// [`Wal::close`]): the clean end of the log, in every mode. They are
    /// cut off and the cut synced; nothing is logged and
    /// [`Wal::truncated_tail`] stays `None`. A bad frame that nothing valid
    /// follows and that is not only zeros (garbage, a cut-off frame, with
    /// zeros after it or not) is a torn tail: under
    /// [`RecoveryMode::TolerateCorruptedTail`] the file is truncated at the
    /// bad frame and synced before this returns, and a warning is logged.
    /// Older files are only checked for a valid header; damage in them is
    /// found by [`Wal::replay`]. Temporary files left by an interrupted file
    /// creation are deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for a bad frame followed by valid ones, or any
    /// bad frame under [`RecoveryMode::AbsoluteConsistency`];
    /// [`Error::NotAWalFile`] or [`Error::UnsupportedVersion`] for a file
    /// with a foreign header; [`Error::InvalidOptions`]; [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        options.validate()?;
        let faults = options.faults();
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir(&dir, &faults)?;
        fs::remove_temp_files(&dir, &faults)?;
        let mut files = fs::list_wal_files(&dir)?;
        let last = files.pop();
        // Every header is checked before anything is changed: a file of a
        // later payload version refuses the open as it is.
        let mut older = BTreeMap::new();
        for (number, path) in files {
            let mut file = File::open(&path).map_err(io_error(&path))?;
            let header = fs::read_file_header(&mut file, &path, number)?;
            check_payload_version(&path, header.payload_version, &options)?;
            let len = file.metadata().map_err(io_error(&path))?.len();
            older.insert(number, len);
        }
        let (active, recovered_tail, old_format) = match last {
            None => {
                let (file, path) =
                    fs::create_wal_file(&dir, FIRST_FILE_NUMBER, options.payload_version, &faults)
                        .map_err(CreateError::into_inner)?;
                let active = ActiveFile::new(
                    FIRST_FILE_NUMBER,
                    file,
                    path,
                    FILE_HEADER_LEN as u64,
                    &options,
                )?;
                (active, None, false)
            }
            Some((number, path)) => recover_last(number, path, &options, &faults)?,
        };
        let mut wal = Wal {
            dir,
            options,
            active,
            buf: Vec::new(),
            older,
            unsynced_since: None,
            poisoned: None,
            faults,
            stats: WalStats::default(),
            recovered_tail,
        };
        if old_format {
            // Every frame this build writes is version 2, and a file holds
            // frames of one version and payloads of one payload version: a
            // log written by an older build, or with another payload
            // version, goes on in a new file. The old file is synced first, as every
            // rotation does (the build that wrote it may not have), so that
            // only the last file can have a torn tail.
            wal.sync_active()?;
            wal.rotate()?;
        }
        Ok(wal)
    }

    /// Iterates over the records of the log in `dir`, in order, starting at
    /// the first frame at or after `from`.
    ///
    /// This reads the files as they are and changes nothing: zeros after
    /// the frames of the last file (the space allocated ahead) end the
    /// iteration in every mode, and a torn tail ends it under
    /// [`RecoveryMode::TolerateCorruptedTail`]; both stay on disk until
    /// [`Wal::open`] cuts them off. Files before
    /// `from.file` are not read; `from` must be a frame's position (as
    /// returned by `append` or `end_position`) or a file's start, and unless
    /// it is [`Position::START`] its file must exist: if it does not, the
    /// first item is [`Error::MissingFile`] naming it (the records it held
    /// would otherwise be skipped without a word).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed. The iterator yields
    /// the errors described at [`Replay`].
    pub fn replay(dir: impl AsRef<Path>, from: Position, mode: RecoveryMode) -> Result<Replay> {
        let dir = dir.as_ref().to_path_buf();
        let files = fs::list_wal_files(&dir)?;
        Ok(Replay::new(dir, files, from, None, mode))
    }

    /// Iterates over the records of the log in `dir` as [`Wal::replay`]
    /// does, for a log that another process may be appending to and
    /// trimming meanwhile (a read-only view beside a live writer).
    ///
    /// Every file from `from.file` on is opened by this call, so that the
    /// iteration reads them even if the writer deletes them later; files
    /// the writer creates after it are not read. The replay ends at the
    /// first bad frame of the last file, whatever follows it: the writer
    /// may be copying frames into it as it is read, so what lies there is
    /// not yet a frame. What the iteration returns is therefore a prefix of
    /// the log as the writer wrote it, ending at a frame boundary. Damage
    /// in any other file is reported as by [`Wal::replay`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed or a file opened;
    /// [`Error::MissingFile`] if a file is gone between the listing and
    /// its opening (the writer trimmed the log: a caller retries from its
    /// own newer position). The iterator yields the errors described at
    /// [`Replay`].
    pub fn replay_live(dir: impl AsRef<Path>, from: Position) -> Result<Replay> {
        let dir = dir.as_ref().to_path_buf();
        let files = fs::list_wal_files(&dir)?;
        Replay::live(dir, files, from)
    }

    /// Iterates over the records this `Wal` has written (flushed), from
    /// `from` to the current [`Wal::flushed_position`]. Records appended
    /// after this call are not included.
    pub fn read_from(&self, from: Position) -> Replay {
        let mut files: Vec<_> = self
            .older
            .keys()
            .map(|&number| (number, self.dir.join(format::file_name(number))))
            .collect();
        files.push((self.active.number, self.active.path().to_path_buf()));
        Replay::new(
            self.dir.clone(),
            files,
            from,
            Some(self.flushed_position()),
            self.options.recovery,
        )
    }

    /// Appends a record to the buffer and returns its position. Nothing is
    /// written until [`Wal::flush`], [`Wal::commit`] or [`Wal::sync`].
    ///
    /// If the record would take the active file past
    /// [`WalOptions::max_file_size`], the log first rotates to a new file
    /// (see [`Wal::rotate`]).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyRecord`], [`Error::RecordTooLarge`], [`Error::Poisoned`],
    /// or the errors of [`Wal::rotate`].
    pub fn append(&mut self, payload: &[u8]) -> Result<Position> {
        self.check_poisoned()?;
        check_payload_len(payload.len(), self.options.max_record_len)?;
        let position = self.reserve(frame_len(payload.len()))?;
        // The frame's header check and checksum depend on where it goes.
        format::encode_frame(position.file, position.offset, payload, &mut self.buf);
        self.stats.appends += 1;
        Ok(position)
    }

    /// The position for a frame of `frame_len` bytes, rotating first if it
    /// does not fit in the active file. A file holds at least one frame.
    fn reserve(&mut self, frame_len: usize) -> Result<Position> {
        let end = self.end_position();
        if end.offset > FILE_HEADER_LEN as u64
            && end.offset.saturating_add(frame_len as u64) > self.options.max_file_size
        {
            return self.rotate();
        }
        Ok(end)
    }

    /// Writes everything buffered to the active file (a process crash can
    /// no longer lose it), without syncing: one copy into the mapped file,
    /// and no system call unless the space allocated ahead runs out (then
    /// one `fallocate` of the next mebibyte) or the buffer holds 16 KiB or
    /// more (then one `pwrite`: `kv_fs::WRITE_THROUGH_MIN`).
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`]; [`Error::Io`] if the write fails (the
    /// allocation fails: a full disk, say). The buffered records are then
    /// dropped (none of them is acknowledged) and the file is cut back to
    /// where the write began and synced, so that no part of them can come
    /// back at the next open; the `Wal` takes later writes. If discarding
    /// it fails too, the `Wal` is poisoned.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_before(false)
    }

    /// [`Wal::flush`]; when `sync_follows`, with one `pwrite` however short
    /// the buffer is (`kv_fs::AppendMap::write_through`: a page stored into
    /// through the mapping costs more to sync).
    fn flush_before(&mut self, sync_follows: bool) -> Result<()> {
        self.check_poisoned()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.write_buffer(sync_follows) {
            self.buf.clear();
            self.shrink_buffer();
            let path = self.active.path().to_path_buf();
            let written = self.active.written;
            return match self.discard_written_after(written) {
                Ok(()) => {
                    log::warn!(
                        "write to WAL file {} failed ({source}); its records were dropped \
                         and the file cut back to {written} bytes",
                        path.display()
                    );
                    Err(Error::Io { path, source })
                }
                Err(discard) => Err(self.poison(
                    "write",
                    io::Error::new(
                        source.kind(),
                        format!("{source}, and cutting the file back failed: {discard}"),
                    ),
                )),
            };
        }
        let len = self.buf.len() as u64;
        self.active.written += len;
        debug_assert_eq!(self.active.written, self.active.map.len());
        self.stats.writes += 1;
        self.stats.bytes_written += len;
        self.buf.clear();
        self.shrink_buffer();
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn shrink_buffer(&mut self) {
        if self.buf.capacity() > RETAINED_BUFFER_CAPACITY {
            self.buf.shrink_to(RETAINED_BUFFER_CAPACITY);
        }
    }

    fn write_buffer(&mut self, sync_follows: bool) -> io::Result<()> {
        if sync_follows {
            self.active.map.write_through(&self.buf, &self.faults)
        } else {
            self.active.map.append(&self.buf, &self.faults)
        }
    }

    /// Cuts the active file back to `len` bytes (at or after the header,
    /// at most what was written), with the space allocated after it, and
    /// syncs it, so that nothing written after `len` can come back at the
    /// next open; the next frame goes at `len`.
    fn discard_written_after(&mut self, len: u64) -> io::Result<()> {
        self.active.cut_to(len)?;
        self.active.map.sync_data(&self.faults)?;
        self.unsynced_since = None;
        self.stats.syncs += 1;
        Ok(())
    }

    /// Takes back every record at or after `position`, which the caller
    /// got from [`Wal::end_position`] before appending them: buffered ones
    /// are dropped, written ones cut off the file, and the file synced.
    ///
    /// For an owner whose own step after a commit failed (the engine, when
    /// it cannot apply a group it logged): those records must not be
    /// acknowledged, and must not come back at the next open. They must
    /// not have been acknowledged already.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`]; [`Error::InvalidOptions`] (and the `Wal` is
    /// poisoned) if `position` is not in the active file, because the log
    /// rotated after it; [`Error::Io`] if cutting or syncing the file
    /// fails, which poisons the `Wal`.
    pub fn discard_from(&mut self, position: Position) -> Result<()> {
        self.check_poisoned()?;
        let end = self.end_position();
        if position >= end {
            return Ok(());
        }
        if position.file != self.active.number || position.offset < FILE_HEADER_LEN as u64 {
            let error = Error::InvalidOptions(format!(
                "cannot discard the records after {position}: the log has moved on to file {}",
                self.active.number
            ));
            self.poison_with(error.to_string());
            return Err(error);
        }
        if position.offset >= self.active.written {
            let keep = (position.offset - self.active.written) as usize;
            self.buf.truncate(keep);
            return Ok(());
        }
        self.buf.clear();
        if let Err(source) = self.discard_written_after(position.offset) {
            return Err(self.poison("cutting back", source));
        }
        Ok(())
    }

    /// Flushes, then syncs (`fdatasync`) the active file, whatever the
    /// policy. Does nothing more if everything written is already synced.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`]; [`Error::Io`] if the write fails (discarded as
    /// [`Wal::flush`] says) or the sync fails, which poisons the `Wal`.
    pub fn sync(&mut self) -> Result<()> {
        self.flush_before(true)?;
        if self.unsynced_since.is_some() {
            self.sync_active()?;
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        if let Err(source) = self.sync_file() {
            return Err(self.poison("sync", source));
        }
        self.stats.syncs += 1;
        self.unsynced_since = None;
        Ok(())
    }

    fn sync_file(&mut self) -> io::Result<()> {
        self.active.map.sync_data(&self.faults)
    }

    /// Flushes, cuts the space allocated ahead off the active file, and
    /// syncs it if anything written or cut is not yet durable: after this,
    /// the file is exactly its frames, durably.
    fn seal_active(&mut self) -> Result<()> {
        self.flush_before(true)?;
        let len = self.active.written;
        let cut = self.active.map.allocated() > len;
        if let Err(source) = self.active.cut_to(len) {
            // The map may no longer know how long the file is, and a store
            // past its end would raise SIGBUS: write nothing more.
            return Err(self.poison("cutting the allocated tail", source));
        }
        if cut || self.unsynced_since.is_some() {
            self.sync_active()?;
        }
        Ok(())
    }

    /// Makes every record appended so far durable under the policy, and so
    /// acknowledges them: flushes (one copy into the mapped file), then
    /// syncs under [`SyncPolicy::Always`], and under
    /// [`SyncPolicy::Interval`] if the oldest unsynced write is at least the
    /// interval old.
    ///
    /// # Errors
    ///
    /// As [`Wal::sync`].
    pub fn commit(&mut self) -> Result<()> {
        self.flush_before(self.options.sync == SyncPolicy::Always)?;
        if self.sync_due(Instant::now()) {
            self.sync_active()?;
        }
        Ok(())
    }

    /// When [`Wal::sync_if_due`] must next be called so that nothing written
    /// stays unsynced longer than the policy allows; `None` if nothing
    /// written is unsynced or the policy is [`SyncPolicy::Never`].
    ///
    /// This crate spawns no threads: under [`SyncPolicy::Interval`] the
    /// owner wakes at this instant (a timed wait on its queue, say) and
    /// calls `sync_if_due`.
    pub fn sync_deadline(&self) -> Option<Instant> {
        let since = self.unsynced_since?;
        match self.options.sync {
            SyncPolicy::Always => Some(since),
            SyncPolicy::Interval(interval) => since.checked_add(interval),
            SyncPolicy::Never => None,
        }
    }

    fn sync_due(&self, now: Instant) -> bool {
        self.sync_deadline().is_some_and(|deadline| deadline <= now)
    }

    /// Syncs if [`Wal::sync_deadline`] has passed, and says whether it did.
    /// Records buffered but not flushed are left alone.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`]; [`Error::Io`] if the sync fails, which poisons
    /// the `Wal`.
    pub fn sync_if_due(&mut self) -> Result<bool> {
        self.check_poisoned()?;
        if !self.sync_due(Instant::now()) {
            return Ok(false);
        }
        self.sync_active()?;
        Ok(true)
    }

    /// Closes the active file and starts a new one, and returns the position
    /// where its first frame will go.
    ///
    /// The active file is flushed, the space allocated ahead of its frames
    /// cut off, and the file synced first, whatever the policy, so that
    /// once the new file exists every older file is exactly its frames,
    /// durably: only the last file of a log can end with a torn write or
    /// with zeros. The new file is created under a temporary name, its
    /// header synced, renamed into place, and the directory synced.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`]; [`Error::Io`] if any step fails. A failed flush
    /// is discarded as [`Wal::flush`] says. A failure before the new file
    /// is renamed into place removes the temporary file and leaves the log
    /// as it was (the old file stays active, and allocates again when it is
    /// appended to). A failed cut of the allocated space, or a failed sync,
    /// of the old file or of the directory after the rename, poisons the
    /// `Wal`.
    pub fn rotate(&mut self) -> Result<Position> {
        self.check_poisoned()?;
        self.seal_active()?;
        let Some(number) = self.active.number.checked_add(1) else {
            let error = Error::InvalidOptions("the WAL has run out of file numbers".to_owned());
            self.poisoned = Some(error.to_string());
            return Err(error);
        };
        let (file, path) = match fs::create_wal_file(
            &self.dir,
            number,
            self.options.payload_version,
            &self.faults,
        ) {
            Ok(created) => created,
            Err(CreateError::Unchanged(error)) => {
                log::warn!("creating WAL file {number} failed, staying on the old one: {error}");
                return Err(error);
            }
            Err(CreateError::Unsynced(error)) => {
                self.poisoned = Some(format!("creating WAL file {number} failed: {error}"));
                return Err(error);
            }
        };
        let new = match ActiveFile::new(number, file, path, FILE_HEADER_LEN as u64, &self.options) {
            Ok(new) => new,
            Err(error) => {
                // The file exists under its name, durably: the log cannot
                // stay on the old one, nor go on in the new one unmapped.
                self.poison_with(format!("mapping WAL file {number} failed: {error}"));
                return Err(error);
            }
        };
        let old = std::mem::replace(&mut self.active, new);
        self.older.insert(old.number, old.written);
        self.stats.rotations += 1;
        log::debug!("WAL rotated to {}", self.active.path().display());
        Ok(Position::new(number, FILE_HEADER_LEN as u64))
    }

    /// Deletes every file whose frames are all before `position` (every
    /// file numbered below `position.file`, except the active one), syncs
    /// the directory, and returns how many were deleted.
    ///
    /// Use it after a marker: once everything before `position` is
    /// safe elsewhere, replay starts at `position`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file cannot be deleted or the directory synced.
    /// Files deleted before the failure stay deleted. A file that cannot be
    /// deleted does not poison the `Wal` (it is only replayed needlessly);
    /// a failed directory sync does.
    pub fn remove_before(&mut self, position: Position) -> Result<usize> {
        let doomed: Vec<u64> = self
            .older
            .range(..position.file)
            .map(|(&number, _)| number)
            .collect();
        let mut removed = 0;
        let mut failure = None;
        // Oldest first, so that a crash midway leaves a contiguous log.
        for number in doomed {
            let path = self.dir.join(format::file_name(number));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    failure = Some(Error::Io { path, source });
                    break;
                }
            }
            self.older.remove(&number);
            removed += 1;
        }
        if removed > 0
            && let Err(error) = fs::sync_dir(&self.dir, &self.faults)
        {
            // A later directory sync could report success for a directory
            // the kernel failed to write back: refuse to go on.
            self.poison_with(format!("syncing the WAL directory failed: {error}"));
            return Err(error);
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }

    /// Flushes, cuts the space allocated ahead off the last file, syncs
    /// and closes the log: the last file is then exactly its frames.
    ///
    /// # Errors
    ///
    /// As [`Wal::sync`]; a failed cut poisons the `Wal` as a failed sync
    /// does.
    pub fn close(mut self) -> Result<()> {
        self.check_poisoned()?;
        self.seal_active()
    }

    /// Where the next appended frame will go (after the buffered ones).
    pub fn end_position(&self) -> Position {
        Position::new(
            self.active.number,
            self.active.written + self.buf.len() as u64,
        )
    }

    /// The end of what has been written to the operating system.
    pub fn flushed_position(&self) -> Position {
        Position::new(self.active.number, self.active.written)
    }

    /// The bytes of the log's files up to the end of the frames written:
    /// not counting buffered frames, nor the zeros allocated ahead at the
    /// end of the active file (less than a mebibyte), which
    /// [`Wal::rotate`] and [`Wal::close`] cut off.
    pub fn size_on_disk(&self) -> u64 {
        self.older.values().sum::<u64>() + self.active.written
    }

    /// The number of files in the log.
    pub fn file_count(&self) -> usize {
        self.older.len() + 1
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.options
    }

    /// What this `Wal` has done since it was opened.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// The torn tail [`Wal::open`] cut off, if it found one.
    pub fn truncated_tail(&self) -> Option<TruncatedTail> {
        self.recovered_tail
    }

    /// Why the `Wal` refuses to write, if an earlier sync failed (or a
    /// failed write could not be discarded).
    pub fn poison_cause(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a failed sync (or a failed write that could not be rolled
    /// back); the `Wal` writes nothing more.
    fn poison(&mut self, operation: &str, source: io::Error) -> Error {
        let path = self.active.path().to_path_buf();
        log::error!(
            "{operation} of WAL file {} failed, refusing further writes: {source}",
            path.display()
        );
        self.poisoned = Some(format!(
            "{operation} of {} failed: {source}",
            path.display()
        ));
        self.buf.clear();
        Error::Io { path, source }
    }

    /// Marks the `Wal` unusable for a reason other than an I/O error.
    pub(crate) fn poison_with(&mut self, cause: String) {
        self.poisoned.get_or_insert(cause);
        self.buf.clear();
    }
}

/// Checks a payload's length against the format and the configured maximum.
pub(crate) fn check_payload_len(len: usize, max: u32) -> Result<()> {
    if len == 0 {
        return Err(Error::EmptyRecord);
    }
    if len > max as usize {
        return Err(Error::RecordTooLarge { len, max });
    }
    Ok(())
}

/// Refuses a file of a later payload version than `options` write: payload
/// versions only grow, so a newer owner wrote it.
fn check_payload_version(path: &Path, version: u8, options: &WalOptions) -> Result<()> {
    if version > options.payload_version {
        return Err(Error::UnsupportedPayloadVersion {
            path: path.to_path_buf(),
            version,
            supported: options.payload_version,
        });
    }
    Ok(())
}

/// Finds the end of the last file, cutting off the zeros allocated ahead
/// of its frames, and a torn tail if the recovery mode allows; the third
/// value says whether the file is of an older format version than this
/// build writes, or of another payload version than the options'.
fn recover_last(
    number: u64,
    path: PathBuf,
    options: &WalOptions,
    faults: &Faults,
) -> Result<(ActiveFile, Option<TruncatedTail>, bool)> {
    let mut cursor = FileCursor::open(path.clone(), number, 0, None, None)?;
    let layout = cursor.layout;
    let payload_version = cursor.payload_version;
    check_payload_version(&path, payload_version, options)?;
    let mut scratch = Vec::new();
    let cut_at = loop {
        match cursor.next_frame(&mut scratch) {
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(FrameError::Io(source)) => return Err(Error::Io { path, source }),
            Err(FrameError::Bad { offset, bad }) => {
                let end = tail_outcome(&path, offset, bad, layout, options.recovery)?;
                break Some((offset, end));
            }
        }
    };
    let end = cursor.offset;
    drop(cursor);
    let file = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let mut truncated = None;
    if let Some((offset, how)) = cut_at {
        let len = file.metadata().map_err(io_error(&path))?.len();
        // The cut is synced before anything is appended, so a crash cannot
        // bring torn bytes back behind new frames.
        //
        // NOTE: the zeros allocated ahead are cut too, rather than mapped
        // and written over: zeros left by a crash need not be allocated
        // space (a file system may have grown the file without writing it),
        // and a store into a hole of a mapping on a full disk raises
        // SIGBUS. New space is allocated, as for every file, when appended.
        file.set_len(offset)
            .and_then(|()| faults.check(FileOp::Sync, &path))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        match how {
            End::Allocated => log::debug!(
                "WAL file {} ends at byte offset {offset}: cut off the {} bytes of zeros \
                 allocated after its frames",
                path.display(),
                len - offset
            ),
            End::Torn => {
                log::warn!(
                    "cut the torn tail of WAL file {} at byte offset {offset}: {} dropped \
                     (a write cut short by a crash)",
                    path.display(),
                    if len - offset == 1 {
                        "1 byte".to_string()
                    } else {
                        format!("{} bytes", len - offset)
                    }
                );
                truncated = Some(TruncatedTail {
                    position: Position::new(number, offset),
                    dropped_bytes: len - offset,
                });
            }
        }
    }
    let active = ActiveFile::new(number, file, path, end, options)?;
    let other_format =
        layout != FrameLayout::current(number) || payload_version != options.payload_version;
    Ok((active, truncated, other_format))
}
