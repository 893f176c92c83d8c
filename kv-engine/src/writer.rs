//! The writer thread: the only code that appends to the write-ahead log and
//! the active segment, or changes the index on behalf of callers
//! (compaction appends only to its own outputs).
//!
//! For each group of writes: encode the records (assigning sequence
//! numbers), append one WAL payload per write, commit the WAL (one write,
//! and one sync if the policy says so), append the same record bytes to the
//! segments, make them readable, update the index, and only then
//! acknowledge each caller.
//!
//! **Gathering a group under `SyncPolicy::Always`.** Callers that each wait
//! for their write's sync before writing again fall into cohorts that
//! alternate: the callers a sync releases come back just after the next
//! group has been taken without them, so each sync covers half of them. So
//! when the writer takes a group, it waits a moment for as many writes as
//! the last sync released plus those that were already queued then (at
//! most half the last sync's duration, and [`MAX_GATHER`]): PostgreSQL's
//! `commit_delay` with `commit_siblings`, bounded by the sync's own cost.
//! A lone caller never waits: the sync before its write released only it.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kv_format::{Record, RecordKind, decode_header};
use kv_fs::{CreateError, Faults};
use kv_index::Entry;
use kv_log::{Location, Log};
use kv_wal::Wal;

use crate::batch::{OpKind, WriteBatch};
use crate::marker::Marker;
use crate::reply::Reply;
use crate::saved_index;
use crate::shared::Shared;
use crate::update::Update;
use crate::usage::UsageDelta;
use crate::wait::{SpinThenPark, Spun};
use crate::{Error, Options, Result, SyncPolicy};

/// The longest the writer waits to gather a group's writes (see the module
/// docs).
const MAX_GATHER: Duration = Duration::from_micros(200);
/// Bytes appended to the active segment between two looks of
/// `Writer::seal_early` at the live bytes.
const SEAL_CHECK_EVERY: u64 = 1 << 20;

/// One write a caller asked for: the unit of atomicity.
pub(crate) enum Write {
    /// One put or tombstone, encoded by the caller (with any sequence
    /// number: the writer sets it), in the caller's reusable buffer
    /// (`reply::take_buffer`), which the writer gives back.
    Record(Vec<u8>),
    /// A batch, encoded by the writer.
    Batch(WriteBatch),
}

/// A message to the writer thread.
pub(crate) enum Command {
    Write {
        write: Write,
        reply: Reply,
    },
    /// Read keys and write what the caller's function makes of them, as
    /// one atomic step among the other writes (`update.rs`).
    Update {
        update: Update,
        reply: Reply,
    },
    /// Make everything acknowledged so far durable.
    Sync {
        reply: Reply,
    },
    /// Write a marker and trim the WAL now, sealing the active segment
    /// first if `seal` (so that compaction can reach everything written so
    /// far).
    TrimWal {
        seal: bool,
        reply: Reply,
    },
    /// Seal the active segment, trim the WAL, and send back the sealed
    /// segments as of that moment (for the on-disk copy,
    /// `Db::checkpoint`).
    PrepareCopy {
        reply: crossbeam_channel::Sender<Result<CopySource>>,
    },
    /// Commit, trim the WAL and stop.
    Close {
        reply: Reply,
    },
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    dir: PathBuf,
    log: Log,
    wal: Wal,
    /// The sequence number the next record gets.
    next_seq: u64,
    max_group: usize,
    /// `SyncPolicy::Always`: every commit syncs, and groups are gathered.
    sync_always: bool,
    /// How many writes the next group waits for: those the last sync
    /// released and those queued when it ended (see the module docs).
    gather_target: usize,
    /// How long the last commit's sync took.
    last_sync: Duration,
    /// `Options::max_wal_size`.
    max_wal_bytes: u64,
    /// The WAL is trimmed once it has grown this much since the last
    /// marker: [`wal_limit`] of the segments' bytes at the last trim.
    wal_limit: u64,
    /// WAL bytes appended since the last marker.
    wal_bytes: u64,
    /// When the last write reached the WAL: an idle writer trims the WAL
    /// [`IDLE_TRIM`] after it.
    last_append: Instant,
    /// Set by the first failed sync (or failed write that could not be
    /// discarded); every later write is refused.
    poisoned: Option<String>,
    /// The encoded records of the current group, back to back.
    buf: Vec<u8>,
    /// The current group's writes, and where each record went; kept, with
    /// the bookkeeping delta, so that a group allocates nothing.
    pending: Vec<Pending>,
    applied: Vec<(Range<usize>, Location)>,
    usage: UsageDelta,
    /// The test seam of the `fail-points` feature (for the marker).
    faults: Faults,
    /// Save the index at close (`Options::save_index`).
    save_index: bool,
    /// The index was loaded from `INDEX` at open and nothing has changed
    /// since: no write, no marker. The file, the marker and the segments
    /// still describe the database, so a close keeps them as they are.
    saved_index_current: bool,
    /// Whether the index may still have shards to decode (it was loaded
    /// from `INDEX` and not every shard has been touched yet): see
    /// `load_shards_of`.
    index_pending: bool,
    /// Whether the active segment is sealed early (`seal_early`): with
    /// background compaction on.
    seal_early: bool,
    /// The fewest bytes an active segment holds before it is sealed early.
    seal_min_len: u64,
    /// The active segment's offset at which `seal_early` looks next...
    next_seal_check: u64,
    /// ...and the segment it looked at last.
    seal_checked_segment: u32,
    /// The segments (ids and data lengths) when the saved index was
    /// loaded: compaction, on its own thread, changes them.
    loaded_segments: Vec<(u32, u64)>,
}

/// What an on-disk copy copies: the sealed segments as of a marker, and
/// the last sequence number they hold.
pub(crate) struct CopySource {
    pub(crate) segments: Vec<Arc<kv_log::Segment>>,
    pub(crate) seq: u64,
}

/// A caller's write in the current group: its reply and its records'
/// bytes in `Writer::buf`.
struct Pending {
    reply: Reply,
    records: Range<usize>,
}

impl Writer {
    /// A writer over what opening recovered: `log` and `wal` as recovery
    /// left them, and `next_seq` above every sequence number in them.
    pub(crate) fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        log: Log,
        wal: Wal,
        next_seq: u64,
        options: &Options,
        faults: Faults,
    ) -> Writer {
        let first_wal_limit =
            wal_limit(options.max_wal_size, log.reader().segments().total_bytes());
        Writer {
            shared,
            dir,
            log,
            wal,
            next_seq,
            max_group: options.max_group_size.max(1),
            sync_always: matches!(options.sync, SyncPolicy::Always),
            gather_target: 0,
            last_sync: Duration::ZERO,
            max_wal_bytes: options.max_wal_size,
            wal_limit: first_wal_limit,
            wal_bytes: 0,
            last_append: Instant::now(),
            poisoned: None,
            buf: Vec::new(),
            pending: Vec::new(),
            applied: Vec::new(),
            usage: UsageDelta::default(),
            faults,
            save_index: options.save_index,
            saved_index_current: false,
            index_pending: false,
            loaded_segments: Vec::new(),
            seal_early: options.background_compaction,
            seal_min_len: options.segment_size / 16,
            next_seal_check: 0,
            seal_checked_segment: 0,
        }
    }

    /// Says that open loaded the index from `INDEX`, which the writer keeps
    /// until the database changes (see `saved_index.rs`).
    pub(crate) fn saved_index_loaded(&mut self) {
        self.saved_index_current = true;
        self.index_pending = true;
        self.loaded_segments = self.segments();
    }

    /// The segments there are, with their data lengths.
    fn segments(&self) -> Vec<(u32, u64)> {
        saved_index::segments(&self.log.reader())
    }

    /// The database is about to change: `INDEX` no longer describes it.
    /// Removing it is tidiness, not safety (a stale file never matches the
    /// next marker), so a failure is only logged.
    fn saved_index_goes_stale(&mut self) {
        if std::mem::take(&mut self.saved_index_current) {
            saved_index::remove(&self.dir);
        }
    }

    /// Serves commands until a `Close` arrives or every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let mut group = Vec::with_capacity(self.max_group);
        loop {
            let idle_trim = self.idle_trim_at();
            let deadline = match (self.wal.sync_deadline(), idle_trim) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match next_command(&rx, deadline) {
                Ok(command) => command,
                // Interval policy: wake in time to sync what is due; and
                // trim the WAL of a writer gone idle.
                Err(RecvTimeoutError::Timeout) => {
                    self.sync_if_due();
                    if idle_trim.is_some_and(|at| at <= Instant::now())
                        && let Err(e) = self.trim_wal()
                    {
                        self.poison_unless_recoverable(&e);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Group commit: take whatever else is already waiting, so that
            // many callers share one write and one sync.
            let mut next = Some(first);
            let mut gather_until = None;
            while let Some(command) = next.take() {
                match command {
                    Command::Write { write, reply } => {
                        group.push((write, reply));
                        if group.len() < self.max_group {
                            next = rx.try_recv().ok();
                            if next.is_none() && group.len() < self.gather_target {
                                next = self.gather(&rx, &mut gather_until);
                            }
                        }
                    }
                    Command::Update { update, reply } => {
                        let queued: Vec<&Write> = group.iter().map(|(w, _)| w).collect();
                        match update.evaluate(&self.shared, &self.dir, &queued) {
                            // Acknowledged with the group, even when it
                            // writes nothing: what it read assumed the
                            // group's writes.
                            Ok(batch) => group.push((Write::Batch(batch), reply)),
                            Err(e) => reply.send(Err(e)),
                        }
                        if group.len() < self.max_group {
                            next = rx.try_recv().ok();
                        }
                    }
                    Command::Sync { reply } => {
                        self.commit_group(&mut group);
                        reply.send(self.sync());
                        next = rx.try_recv().ok();
                    }
                    Command::TrimWal { seal, reply } => {
                        self.commit_group(&mut group);
                        let result = self.refusal().and_then(|()| {
                            if seal {
                                self.log.seal_active()?;
                            }
                            self.trim_wal()
                        });
                        if let Err(e) = &result {
                            self.poison_unless_recoverable(e);
                        }
                        reply.send(result);
                        next = rx.try_recv().ok();
                    }
                    Command::PrepareCopy { reply } => {
                        self.commit_group(&mut group);
                        let result = self.prepare_copy();
                        if let Err(e) = &result {
                            self.poison_unless_recoverable(e);
                        }
                        let _ = reply.send(result);
                        next = rx.try_recv().ok();
                    }
                    Command::Close { reply } => {
                        self.commit_group(&mut group);
                        reply.send(self.close());
                        return;
                    }
                }
            }
            let writes = group.len();
            self.commit_group(&mut group);
            if self.sync_always {
                // Cleared by the commit, unless the group was refused.
                self.shared.committing.store(false, Ordering::Relaxed);
                self.gather_target = (writes + rx.len()).min(self.max_group);
            }
            self.sync_if_due();
            let seal = self.poisoned.is_none() && self.seal_early();
            if (seal || self.wal_bytes >= self.wal_limit)
                && self.poisoned.is_none()
                && let Err(e) = self.trim_wal()
            {
                self.poison_unless_recoverable(&e);
            }
        }
        // Every `Db` handle is gone without a Close: still leave the files
        // synced and marker_segment.
        if let Err(e) = self.close() {
            log::error!("closing {} failed: {e}", self.dir.display());
        }
    }

    /// Waits, yielding the core, for the next write of a group that has
    /// fewer than `gather_target`: until `until` (set on the first call of
    /// a group: half the last sync's duration from now, [`MAX_GATHER`] at
    /// most).
    fn gather(&self, rx: &Receiver<Command>, until: &mut Option<Instant>) -> Option<Command> {
        let until = *until.get_or_insert_with(|| {
            // The callers already in the group keep their cores while it
            // gathers too: the gathering can outlast their active wait.
            self.shared.committing.store(true, Ordering::Relaxed);
            Instant::now() + (self.last_sync / 2).min(MAX_GATHER)
        });
        loop {
            if let Ok(command) = rx.try_recv() {
                return Some(command);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Commits the group's WAL frames. Under `SyncPolicy::Always` (a sync
    /// per commit) the callers waiting for the group keep their cores
    /// meanwhile (`Shared::committing`), and the sync's duration bounds
    /// the next gathering; under the other policies a commit is a copy into
    /// the mapped file, with nothing around it.
    fn commit_wal(&mut self) -> kv_wal::Result<()> {
        if !self.sync_always {
            return self.wal.commit();
        }
        self.shared.committing.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let committed = self.wal.commit();
        self.shared.committing.store(false, Ordering::Relaxed);
        self.last_sync = started.elapsed();
        committed
    }

    fn poison(&mut self, err: &Error) {
        if self.poisoned.is_none() {
            log::error!("refusing further writes to {}: {err}", self.dir.display());
            self.poisoned = Some(err.to_string());
        }
    }

    fn refusal(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Makes everything acknowledged durable: the WAL holds it all.
    fn sync(&mut self) -> Result<()> {
        self.refusal()?;
        let result = self.wal.sync().map_err(Error::from);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    /// When to trim the WAL if no command comes: [`IDLE_TRIM`] after the
    /// last write, if any write since the last marker is in it. A trim
    /// that fails waits for the size-based one.
    fn idle_trim_at(&self) -> Option<Instant> {
        (self.wal_bytes > 0 && self.poisoned.is_none()).then(|| self.last_append + IDLE_TRIM)
    }

    fn sync_if_due(&mut self) {
        if self.poisoned.is_none()
            && let Err(e) = self.wal.sync_if_due()
        {
            self.poison(&e.into());
        }
    }

    fn close(&mut self) -> Result<()> {
        self.refusal()?;
        if self.save_index
            && self.saved_index_current
            && self.segments() == self.loaded_segments
            && !self.shared.index_health.bad_image()
        {
            // Opened from the saved index and not changed since (a
            // read-only session): the marker, the segments and `INDEX` all
            // still hold, so none is rewritten.
            return self
                .log
                .cut_allocated_tail()
                .and_then(|()| self.log.sync())
                .map_err(|e| {
                    let e = Error::from(e);
                    self.poison(&e);
                    e
                });
        }
        // The active segment ends with its last record once closed (the
        // trim's sync makes the cut durable).
        let result = self
            .log
            .cut_allocated_tail()
            .map_err(Error::from)
            .and_then(|()| self.write_marker());
        match result {
            Ok(marker) => {
                if self.save_index {
                    self.save_index(&marker);
                }
                Ok(())
            }
            Err(e) => {
                self.poison(&e);
                Err(e)
            }
        }
    }

    /// Saves the index as of `marker`, the last one (`saved_index.rs`), so
    /// that the next open need not rebuild it. Failing loses nothing (the
    /// next open rebuilds the index), so it is a warning, not an error.
    fn save_index(&self, marker: &Marker) {
        if let Err(e) = self.shared.index_health.check_whole(&self.shared.index) {
            // Saving what is left would hide the loss from the next open.
            log::warn!("not saving the index ({e}); the next open rebuilds it from the segments");
            saved_index::remove(&self.dir);
            return;
        }
        let segments = self.segments();
        let ids: Vec<u32> = segments.iter().map(|&(id, _)| id).collect();
        let usage = self.shared.usage.snapshot(&ids);
        let context = saved_index::Context {
            segments: segments
                .into_iter()
                .map(|(id, data_len)| (id, data_len, usage[&id]))
                .collect(),
            max_seq: self.next_seq - 1,
            any_expiry: self.shared.stats.any_expiry.load(Ordering::Relaxed),
        };
        if let Err(e) = saved_index::save(
            &self.dir,
            &self.faults,
            &self.shared.index,
            marker,
            &context,
        ) {
            log::warn!(
                "could not save the index in {} ({e}); the next open rebuilds it from the segments",
                self.dir.display()
            );
        }
    }

    /// Makes the segments durable, records that in the marker,
    /// and drops the WAL files the segments now cover.
    pub(crate) fn trim_wal(&mut self) -> Result<()> {
        self.write_marker().map(drop)
    }

    /// [`Writer::trim_wal`], returning the marker written.
    fn write_marker(&mut self) -> Result<Marker> {
        self.saved_index_goes_stale();
        self.log.sync()?;
        let segments_end = self.log.position();
        // Everything appended from here on goes to a new WAL file; the
        // older files hold nothing the segments do not.
        let wal_from = self.wal.rotate()?;
        // The segments that must exist from now on. A compaction output
        // finished after this load is not listed, and its inputs are; it
        // names them itself, and compaction does not take it before a
        // later marker lists it (`Shared::listed`), so a listed segment
        // that is gone at open is always named by an output that exists.
        let segments = self.log.reader().segments().live_ids();
        let marker = Marker {
            seq: self.next_seq - 1,
            segments_end,
            wal_from,
            next_segment_id: self.log.next_segment_id(),
            segments: Some(segments.clone()),
        };
        marker
            .write(&self.dir, &self.faults)
            .map_err(|e| self.marker_failed(e))?;
        self.wal.remove_before(wal_from)?;
        self.wal_bytes = 0;
        self.wal_limit = wal_limit(
            self.max_wal_bytes,
            self.log.reader().segments().total_bytes(),
        );
        // Every segment before this one is now marker_segment, and every
        // listed one named by a durable marker: compaction may take them.
        *self.shared.listed.lock() = segments;
        self.shared
            .marker_segment
            .store(segments_end.segment, Ordering::Release);
        let _ = self.shared.wake_compactor.try_send(());
        Ok(marker)
    }

    /// Seals, trims the WAL and captures the sealed segments: every write
    /// acknowledged so far is in them, durably. The capture is one load of
    /// the segment set, less the inputs of a compaction output that is
    /// already in it (between an output's `finish` and the retirement of
    /// its inputs the set holds both; the output has every live record of
    /// them); an output holds only records of segments marker_segment before
    /// now.
    fn prepare_copy(&mut self) -> Result<CopySource> {
        self.refusal()?;
        self.log.seal_active()?;
        self.trim_wal()?;
        let active = self.log.position().segment;
        let set = self.log.reader().segments();
        let live = set.live_ids();
        let segments = set
            .iter()
            .filter(|s| s.id() != active && live.binary_search(&s.id()).is_ok())
            .cloned()
            .collect();
        Ok(CopySource {
            segments,
            seq: self.next_seq - 1,
        })
    }

    /// Logs, applies and acknowledges a group of writes.
    fn commit_group(&mut self, group: &mut Vec<(Write, Reply)>) {
        if group.is_empty() {
            return;
        }
        self.saved_index_goes_stale();
        if let Err(err) = self.refusal() {
            for (_, reply) in group.drain(..) {
                reply.send(Err(err.duplicate()));
            }
            return;
        }
        self.buf.clear();
        let mut pending = std::mem::take(&mut self.pending);
        let mut applied = std::mem::take(&mut self.applied);
        pending.clear();
        applied.clear();
        let mut failure = None;
        for (write, reply) in group.drain(..) {
            let start = self.buf.len();
            match self.encode(write, &reply) {
                Ok(()) => pending.push(Pending {
                    reply,
                    records: start..self.buf.len(),
                }),
                // Inputs were checked by the caller, so this is not expected;
                // the write is refused and the group goes on.
                Err(e) => {
                    self.buf.truncate(start);
                    reply.send(Err(e));
                }
            }
        }
        self.load_shards_of(&pending);
        // Where this group begins, to take it back if it fails.
        let (wal_start, log_start) = (self.wal.end_position(), self.log.position());
        // Write-ahead: every write's records go to the WAL as one payload,
        // and the WAL is committed before anything else happens.
        for p in &pending {
            // An update that wrote nothing has no frame.
            if p.records.is_empty() {
                continue;
            }
            if let Err(e) = self.wal.append(&self.buf[p.records.clone()]) {
                failure = Some(Error::from(e));
                break;
            }
            self.wal_bytes += p.records.len() as u64;
        }
        self.last_append = Instant::now();
        // A group of updates that wrote nothing has nothing to commit.
        let nothing = pending.iter().all(|p| p.records.is_empty());
        if failure.is_none()
            && !nothing
            && let Err(e) = self.commit_wal()
        {
            failure = Some(Error::from(e));
        }
        if failure.is_none() {
            match self.append_to_segments(&pending, &mut applied) {
                Ok(()) => {}
                Err(e) => failure = Some(e),
            }
        }
        if let Some(err) = failure {
            // Nothing of this group was made visible or acknowledged. Take
            // it back out of the files so that later writes can go on, or
            // refuse every later write if that is not safe.
            if !self.discard_group(wal_start, log_start) {
                self.poison(&err);
            }
            for p in pending.drain(..) {
                p.reply.send(Err(err.duplicate()));
            }
            self.pending = pending;
            self.applied = applied;
            return;
        }
        apply_records(&self.shared, &self.buf, &applied, &mut self.usage);
        for p in pending.drain(..) {
            p.reply.send(Ok(()));
        }
        self.pending = pending;
        self.applied = applied;
    }

    /// After a group failed: removes its records from the WAL and the
    /// segments, so that the database can take later writes (a write that
    /// failed for a full disk succeeds once space is freed). Returns false,
    /// and the caller poisons the database, when that is not safe:
    ///
    /// - a sync failed, of the WAL or of a segment (both then refuse
    ///   writes): after a failed `fsync` the kernel may have dropped pages
    ///   that a retried `fsync` would report durable;
    /// - some of the group's records reached a segment and were made
    ///   readable (the active segment rotated in the middle of the
    ///   group): they cannot be discarded while readers may map them;
    /// - the WAL cannot be cut back to where the group began (it rotated
    ///   since, or cutting or syncing it failed).
    ///
    /// A failed segment write was already cut off by the log, and a failed
    /// WAL write by the WAL; what may remain is the group's frames in the
    /// WAL when a later step failed, which `discard_from` cuts off and
    /// syncs, so they cannot come back at the next open either. The index
    /// was not touched: it is updated only after every step succeeded.
    /// The sequence numbers the group took are not reused (a gap is fine).
    fn discard_group(
        &mut self,
        wal_start: kv_wal::Position,
        log_start: kv_log::LogPosition,
    ) -> bool {
        if self.wal.poison_cause().is_some() || self.log.poison_cause().is_some() {
            return false;
        }
        if self.log.position() != log_start {
            return false;
        }
        match self.wal.discard_from(wal_start) {
            Ok(()) => true,
            Err(e) => {
                log::error!("cannot take a failed group back out of the WAL: {e}");
                false
            }
        }
    }

    /// After a failed WAL trim (or seal, or copy preparation): poisons the
    /// database unless the failure left the files in a state it can go on
    /// from. A sync that failed has poisoned the WAL or the segment log
    /// (and a failed marker's directory sync poisons the database in
    /// `marker_failed`); every other failure (a write, rename or file
    /// creation refused, `ENOSPC` say) left the old marker in place and the
    /// WAL whole, and a later trim tries again.
    fn poison_unless_recoverable(&mut self, err: &Error) {
        if self.wal.poison_cause().is_some() || self.log.poison_cause().is_some() {
            self.poison(err);
        }
        // Retry only after another trim's worth of writes, not after
        // every group.
        self.wal_bytes = 0;
    }

    /// A failed marker write: a failure after the rename (the directory
    /// sync) leaves it unknown which marker a crash would keep, and the
    /// directory untrustworthy, so it poisons the database.
    fn marker_failed(&mut self, e: CreateError<Error>) -> Error {
        match e {
            CreateError::Unchanged(e) => e,
            CreateError::Unsynced(e) => {
                self.poison(&e);
                e
            }
        }
    }

    /// Puts the records of one write at the end of `self.buf`, with
    /// consecutive sequence numbers; a caller's record buffer goes back to
    /// it through `reply`.
    fn encode(&mut self, write: Write, reply: &Reply) -> Result<()> {
        let seq = self.next_seq;
        let time = &self.shared.time;
        let put = |seq, key, value, ttl: &Option<Duration>| Record {
            expires_at: ttl.map_or(kv_format::NO_EXPIRY, |ttl| time.expiry_after(ttl)),
            ..Record::put(seq, key, value)
        };
        match write {
            Write::Record(bytes) => {
                let start = self.buf.len();
                self.buf.extend_from_slice(&bytes);
                reply.give_back(bytes);
                let len = kv_format::set_seq(&mut self.buf[start..], seq)?;
                debug_assert_eq!(start + len, self.buf.len(), "one record per buffer");
                self.buf.truncate(start + len);
                self.next_seq += 1;
            }
            Write::Batch(batch) => {
                for (i, op) in batch.ops().enumerate() {
                    let seq = seq + i as u64;
                    let record = match op.kind {
                        OpKind::Put { ttl } => put(seq, op.key, op.value, &ttl),
                        OpKind::Delete => Record::tombstone(seq, op.key),
                    };
                    kv_format::encode(&record, &mut self.buf)?;
                }
                self.next_seq += batch.ops.len() as u64;
            }
        }
        Ok(())
    }

    /// Seals the active segment before it is full once it holds a quarter
    /// of the database's live bytes (and at least a sixteenth of the
    /// segment size). Only sealed segments are compacted, so under steady
    /// overwrites of a database not much larger than a segment, most dead
    /// bytes would otherwise wait in the active one; this keeps the active
    /// segment a bounded share of the disk, whatever the segment size.
    /// Looks at most once per [`SEAL_CHECK_EVERY`] bytes appended, and only
    /// with background compaction on. Returns whether it sealed (the
    /// caller then writes a marker, which lets compaction take the sealed
    /// segment at once).
    fn seal_early(&mut self) -> bool {
        if !self.seal_early {
            return false;
        }
        let at = self.log.position();
        if at.segment != self.seal_checked_segment {
            self.seal_checked_segment = at.segment;
            self.next_seal_check = self.seal_min_len;
        }
        if at.offset < self.next_seal_check {
            return false;
        }
        self.next_seal_check = at.offset + SEAL_CHECK_EVERY;
        if at.offset < self.shared.usage.live_at(self.shared.time.now()) / 4 {
            return false;
        }
        match self.log.seal_active() {
            Ok(()) => true,
            Err(e) => {
                let e = Error::from(e);
                log::warn!("could not seal the active segment early ({e})");
                self.poison_unless_recoverable(&e);
                false
            }
        }
    }

    /// While a saved index still has shards to decode, loads the shard of
    /// every key in `pending` before any of their records reaches a
    /// segment: a shard is never loaded (so never rebuilt from the
    /// segments, `recovery::rebuild_shard`) while the segments hold a
    /// record of its keys that the index has not had yet.
    fn load_shards_of(&mut self, pending: &[Pending]) {
        if !self.index_pending {
            return;
        }
        let index = &self.shared.index;
        if index.pending_shards() == 0 {
            self.index_pending = false;
            return;
        }
        for p in pending {
            let mut at = p.records.start;
            while at < p.records.end {
                let bytes = &self.buf[at..p.records.end];
                let header = decode_header(bytes, &kv_format::Limits::default())
                    .expect("kv-engine: the writer decodes only records it has just encoded");
                let key_start = usize::from(header.header_len);
                let key = &bytes[key_start..key_start + usize::from(header.key_len)];
                index.load_shard(index.shard_of(key));
                at += header.record_len() as usize;
            }
        }
    }

    /// Appends every record of `pending` to the segments and makes them
    /// readable; fills `applied` with each record's bytes in `buf` and its
    /// location.
    fn append_to_segments(
        &mut self,
        pending: &[Pending],
        applied: &mut Vec<(Range<usize>, Location)>,
    ) -> Result<()> {
        // The writes' records are back to back in `buf` (a write that
        // failed to encode left nothing there): one append for them all.
        debug_assert!(
            pending
                .windows(2)
                .all(|w| w[0].records.end == w[1].records.start)
        );
        if let (Some(first), Some(last)) = (pending.first(), pending.last())
            && first.records.start < last.records.end
        {
            let base = first.records.start;
            self.log
                .append_encoded_many(&self.buf[base..last.records.end], |range, loc| {
                    applied.push((base + range.start..base + range.end, loc));
                })?;
        }
        self.log.flush()?;
        Ok(())
    }
}

/// How long the writer waits without a command before it trims the WAL
/// (`Writer::idle_trim_at`): a database that stops being written to gives
/// back the WAL's disk, up to an eighth of its segments, instead of
/// holding it until the next trim or the close. Long enough that a busy
/// caller's pauses do not trim.
const IDLE_TRIM: Duration = Duration::from_secs(2);

/// The least WAL growth that the segments' size lowers the trim point to.
const MIN_WAL_LIMIT: u64 = 4 << 20;

/// How much the WAL may grow before it is trimmed, over segments holding
/// `segment_bytes`: an eighth of them, so that the WAL (which holds the
/// same records again) stays a small share of the directory, but at least
/// [`MIN_WAL_LIMIT`] (a trim syncs the segments and rewrites the marker)
/// and at most `max_wal_size`.
fn wal_limit(max_wal_size: u64, segment_bytes: u64) -> u64 {
    (segment_bytes / 8)
        .clamp(MIN_WAL_LIMIT, MIN_WAL_LIMIT.max(max_wal_size))
        .min(max_wal_size)
}

/// Applies records, in order, to the index: a put replaces the key's
/// entry, a tombstone removes it; and counts the bytes each makes dead.
fn apply_records(
    shared: &Shared,
    buf: &[u8],
    applied: &[(Range<usize>, Location)],
    usage: &mut UsageDelta,
) {
    let index = &shared.index;
    let (mut puts, mut deletes, mut expiring) = (0, 0, false);
    for (range, loc) in applied {
        // These bytes were encoded by this thread a moment ago, so the
        // header is read without verifying the checksum again.
        let bytes = &buf[range.clone()];
        let header = decode_header(bytes, &kv_format::Limits::default())
            .expect("kv-engine: the writer decodes only records it has just encoded");
        let key_start = usize::from(header.header_len);
        let key = &bytes[key_start..key_start + usize::from(header.key_len)];
        usage.appended(loc.segment, loc.len, header.seq, header.expires_at);
        match header.kind() {
            RecordKind::Put => {
                puts += 1;
                expiring |= header.expires_at != kv_format::NO_EXPIRY;
                let old = index.insert(key, entry_for(*loc, header.expires_at, RecordKind::Put));
                usage.superseded(old);
            }
            RecordKind::Tombstone => {
                deletes += 1;
                usage.superseded(index.remove(key));
                // A tombstone serves no read: it is dead from the start, and
                // compaction keeps it only while it is needed.
                usage.dead_on_arrival(loc.segment, loc.len);
            }
        }
    }
    shared.usage.apply(usage);
    // Only this thread writes these two: no read-modify-write needed.
    let stats = &shared.stats;
    stats
        .puts
        .store(stats.puts.load(Ordering::Relaxed) + puts, Ordering::Relaxed);
    stats.deletes.store(
        stats.deletes.load(Ordering::Relaxed) + deletes,
        Ordering::Relaxed,
    );
    if expiring {
        stats.any_expiry.store(true, Ordering::Relaxed);
    }
}

/// The index entry for a record at `loc`.
pub(crate) fn entry_for(loc: Location, expires_at: u64, kind: RecordKind) -> Entry {
    Entry {
        segment: loc.segment,
        offset: loc.offset,
        len: loc.len,
        expires_at,
        tombstone: kind == RecordKind::Tombstone,
    }
}

/// The next command, waiting for it until `deadline` if one is given:
/// first actively for a bounded time (`wait.rs`), since the next write of
/// a busy caller arrives within microseconds and a sleeping writer costs
/// each caller a futex wake-up; then blocking, so that an idle database
/// uses no CPU.
fn next_command(
    rx: &Receiver<Command>,
    deadline: Option<Instant>,
) -> Result<Command, RecvTimeoutError> {
    let mut wait = SpinThenPark::new();
    loop {
        match rx.try_recv() {
            Ok(command) => return Ok(command),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(RecvTimeoutError::Disconnected);
            }
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(RecvTimeoutError::Timeout);
        }
        if wait.spin() == Spun::Park {
            return match deadline {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
        }
    }
}
