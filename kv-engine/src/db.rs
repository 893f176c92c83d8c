//! The `Db` facade: opening, the read path, and handing writes to the
//! writer thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use kv_format::{Limits, NO_EXPIRY, RecordKind, decode};
use kv_index::{Entry, Index};
use kv_log::{Location, Log, LogPosition, LogReader, SEGMENT_HEADER_LEN, Segment};
use kv_wal::{Position, Wal};
use parking_lot::Mutex;

use crate::checkpoint::Checkpoint;
use crate::clock::Monotonic;
use crate::compactor::{self, CompactionReport, PassOptions};
use crate::copy;
use crate::fault::Faults;
use crate::fs::{WAL_DIR_NAME, create_dir, lock_dir};
use crate::iter::{Iter, Keys};
use crate::reply::{self, Reply};
use crate::shared::{Control, Shared};
use crate::stats::{Counters, Stats};
use crate::usage::{SegmentUsage, Usage};
use crate::value::Value;
use crate::writer::{Command, Write, Writer, entry_for};
use crate::{Error, Options, Result, WriteBatch};

/// An open database.
///
/// `Db` is `Send + Sync`: share it across threads with an `Arc`. Reads run
/// on the calling thread against the in-memory index and the mapped
/// segments; writes are handed to one writer thread, which groups the
/// writes of concurrent callers into one append.
///
/// Dropping a `Db` closes it cleanly; [`Db::close`] does the same and
/// reports any error.
pub struct Db {
    shared: Arc<Shared>,
    commands: Sender<Command>,
    writer: Mutex<Option<JoinHandle<()>>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    options: Options,
    dir: PathBuf,
    /// Held with an OS file lock for as long as the `Db` lives; declared
    /// last so that it is released only after the writer has stopped.
    _lock: File,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens the database in `path` with default [`Options`], creating the
    /// directory if it is missing.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another `Db` has the directory open,
    /// [`Error::Corruption`] for damaged data, [`Error::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Options::default())
    }

    /// Opens the database in `path` with `options`, creating the directory
    /// if it is missing.
    ///
    /// Recovery: segment data after the last checkpoint is discarded (the
    /// write-ahead log holds all of it); the segments are loaded into the
    /// index on two threads, each from its hint file if valid, else by a
    /// scan (for each key the record with the highest sequence number wins,
    /// and a tombstone removes the key); then the WAL is replayed from the
    /// checkpoint, its torn tail (if any) cut off. Damage anywhere else is
    /// [`Error::Corruption`] naming the file and offset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] if a field of `options` is out of range
    /// (see [`Options::validate`]); else as [`Db::open`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        options.validate()?;
        let dir = path.as_ref().to_path_buf();
        create_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let checkpoint = Checkpoint::read(&dir)?;
        if checkpoint.is_none() {
            refuse_data_without_marker(&dir)?;
        }

        // 1. The segments, up to the last checkpoint: what they hold beyond
        //    it may be incomplete, and the WAL has all of it. Every segment
        //    the marker lists must be there.
        let checkpoint_seq = checkpoint.as_ref().map_or(0, |c| c.seq);
        let durable = checkpoint.as_ref().map_or(
            kv_log::Durable::at(LogPosition {
                segment: 1,
                offset: SEGMENT_HEADER_LEN as u64,
            }),
            Checkpoint::durable,
        );
        let segments_end = durable.end;
        let faults = Faults::new(&options);
        let mut log = Log::recover(
            &dir,
            faults.log_options(options.segment_size),
            Some(&durable),
        )?;
        // Sized from the hint files' record counts (an upper bound on the
        // keys they hold), so that loading does not rehash.
        let hinted: u64 = log
            .reader()
            .segments()
            .iter()
            .filter_map(|s| s.hinted_records())
            .sum();
        let index = Index::with_capacity(usize::try_from(hinted).unwrap_or(0));
        let mut tally = load_segments(&log.reader(), &index)?;
        tally.max_seq = tally.max_seq.max(checkpoint_seq);

        // 2. The WAL after the checkpoint, applied to the segments.
        let wal_dir = dir.join(WAL_DIR_NAME);
        let wal = Wal::open(&wal_dir, options.wal_options())?;
        let mut replay = wal.read_from(checkpoint.as_ref().map_or(Position::START, |c| c.wal_from));
        let mut payload = Vec::new();
        let mut replayed = 0u64;
        while let Some(position) = replay.next_into(&mut payload) {
            let position = position?;
            let mut at = 0;
            while at < payload.len() {
                let decoded = decode(&payload[at..]).map_err(|e| Error::Corruption {
                    path: wal_dir.join(kv_wal::file_name(position.file)),
                    offset: position.offset,
                    reason: format!("a WAL record holds a bad data record: {e}"),
                })?;
                let r = decoded.record;
                if r.seq > checkpoint_seq {
                    let loc = log.append_encoded(&payload[at..at + decoded.len])?;
                    tally.usage.entry(loc.segment).or_default().total += u64::from(loc.len);
                    tally.load(&index, loc, r.key, r.seq, r.expires_at, r.kind);
                    replayed += 1;
                }
                at += decoded.len;
            }
        }
        log.flush()?;
        if tally.tombstones_loaded > 0 {
            index.retain(|_, entry| !entry.tombstone);
        }
        let max_seq = tally.max_seq;
        let any_expiry = tally.any_expiry;
        let usage = tally.finish();
        log::debug!(
            "opened {}: {} keys, {replayed} records replayed from the WAL, next sequence number {}",
            dir.display(),
            index.len(),
            max_seq + 1
        );

        let (wake_compactor, wake) = crossbeam_channel::bounded(1);
        let live = crate::writer::live_segments(&log.reader().segments());
        // A marker that does not list exactly the segments there are now (an
        // output finished after it, a superseded input removed, a version 1
        // marker) is replaced before compaction may take any of them.
        let stale_marker = checkpoint
            .as_ref()
            .is_none_or(|c| c.segments.as_ref() != Some(&live));
        let shared = Arc::new(Shared {
            index,
            reader: log.reader(),
            limits: Limits::with_max_value_len(options.max_value_len),
            usage: SegmentUsage::default(),
            checkpointed: AtomicU32::new(segments_end.segment),
            listed: Mutex::new(live),
            damaged: Mutex::default(),
            control: Control::default(),
            wake_compactor,
            time: Monotonic::new(Arc::clone(&options.clock)),
            stats: Counters::default(),
        });
        if any_expiry {
            shared.stats.any_expiry.store(true, Ordering::Relaxed);
        }
        shared.usage.set(usage);
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            log,
            wal,
            next_seq: max_seq + 1,
            max_group: options.max_group_size.max(1),
            checkpoint_bytes: options.checkpoint_wal_size,
            wal_bytes: 0,
            poisoned: None,
            buf: Vec::new(),
            faults,
        };
        if replayed > 0 || stale_marker {
            // Make what was replayed durable in the segments, so the WAL
            // can be dropped; a new database gets its first marker, and one
            // that lists the wrong segments a true one.
            writer.checkpoint()?;
        }
        let (commands, rx) = crossbeam_channel::bounded(options.max_group_size.max(1) * 4);
        let handle = std::thread::Builder::new()
            .name("kv-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        let compactor = if options.background_compaction {
            let shared = Arc::clone(&shared);
            let interval = options.compaction_interval;
            let pass = options.background_pass();
            let handle = std::thread::Builder::new()
                .name("kv-compactor".into())
                .spawn(move || compactor::background(shared, wake, interval, pass))
                .map_err(|source| Error::Io {
                    path: dir.clone(),
                    source,
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(Db {
            shared,
            commands,
            writer: Mutex::new(Some(handle)),
            compactor: Mutex::new(compactor),
            options,
            dir,
            _lock: lock,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Sets `key` to `value`. When this returns `Ok`, the write is in the
    /// write-ahead log (synced, under [`SyncPolicy::Always`](crate::SyncPolicy::Always))
    /// and visible to every reader.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`]
    /// for bad input; [`Error::Poisoned`] or [`Error::Io`] when the write
    /// could not be made; [`Error::Closed`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.shared.limits.check(key.len(), value.len())?;
        self.submit(Write::Put {
            key: key.into(),
            value: value.into(),
            ttl: None,
        })
    }

    /// Sets `key` to `value` for `ttl`: from then on the key reads as
    /// absent, is left out of iteration and [`Db::len`], and compaction
    /// drops it. The expiry is an absolute time, read from
    /// [`Options::clock`] when the write is applied and stored in the
    /// record, so it holds across reopen. A `ttl` of zero writes a key that
    /// has already expired.
    ///
    /// # Errors
    ///
    /// As [`Db::put`].
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        self.shared.limits.check(key.len(), value.len())?;
        self.submit(Write::Put {
            key: key.into(),
            value: value.into(),
            ttl: Some(ttl),
        })
    }

    /// Deletes `key`. Deleting an absent key is not an error.
    ///
    /// # Errors
    ///
    /// As [`Db::put`].
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.shared.limits.check(key.len(), 0)?;
        self.submit(Write::Delete { key: key.into() })
    }

    /// Applies every operation of `batch` atomically: after any crash,
    /// either all of them are there or none. Readers may see the batch's
    /// keys change one by one while it is applied, never before it is in
    /// the write-ahead log.
    ///
    /// # Errors
    ///
    /// As [`Db::put`] for any of its keys and values, and
    /// [`Error::BatchTooLarge`] when its encoded size passes the WAL's
    /// record limit (256 MiB). On error nothing of the batch is applied.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        for op in &batch.ops {
            self.shared.limits.check(op.key().len(), op.value_len())?;
        }
        let encoded = batch.payload_bytes + batch.len() * kv_format::HEADER_LEN;
        if encoded > kv_wal::MAX_RECORD_LEN as usize {
            return Err(Error::BatchTooLarge {
                len: encoded,
                max: kv_wal::MAX_RECORD_LEN as usize,
            });
        }
        self.submit(Write::Batch(batch))
    }

    fn submit(&self, write: Write) -> Result<()> {
        reply::call(|reply| {
            // A failed send drops the command and with it the reply, which
            // reports `Closed`.
            let _ = self.commands.send(Command::Write { write, reply });
        })
    }

    /// Makes every write acknowledged so far durable on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the sync fails (the database then refuses writes),
    /// [`Error::Poisoned`], [`Error::Closed`].
    pub fn sync(&self) -> Result<()> {
        reply::call(|reply: Reply| {
            let _ = self.commands.send(Command::Sync { reply });
        })
    }

    /// The value of `key`, copied out, or `None` if it is absent.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] if the stored record fails its checksum or is
    /// not the record the index expects: never wrong data. Bad keys give
    /// [`Error::EmptyKey`] or [`Error::KeyTooLarge`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_value(key, |_, value| value.to_vec())
    }

    /// The value of `key` without copying it: a [`Value`] that borrows the
    /// mapped segment and keeps it alive while held.
    ///
    /// # Errors
    ///
    /// As [`Db::get`].
    pub fn get_pinned(&self, key: &[u8]) -> Result<Option<Value>> {
        self.with_value(key, Value::new)
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`] or [`Error::KeyTooLarge`].
    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        self.shared.stats.gets.add(1);
        Ok(self.live_entry(key).is_some())
    }

    /// The number of keys present. Once any key has been written with a
    /// time to live, this walks the index to leave out expired keys
    /// (`O(keys)`, shard by shard, holding up no writer); before that it
    /// is one counter.
    pub fn len(&self) -> usize {
        if !self.shared.stats.any_expiry.load(Ordering::Relaxed) {
            return self.shared.index.len();
        }
        let time = &self.shared.time;
        let mut live = 0;
        self.shared.index.for_each(|_, entry| {
            if !entry.tombstone && !time.expired(entry.expires_at) {
                live += 1;
            }
        });
        live
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key present, in no particular order, lazily: see [`Db::iter`]
    /// for what it guarantees under concurrent writes and compaction.
    pub fn keys(&self) -> Keys {
        Keys::new(Arc::clone(&self.shared))
    }

    /// Every key present and its value, in no particular order, lazily.
    ///
    /// The index is walked one shard (1/64 of the keys) at a time: each
    /// shard is copied in one consistent step, together with the set of
    /// segments its entries point into, and the values are read from those
    /// segments, which stay readable while the iterator holds them even if
    /// compaction retires them meanwhile. So, while writes and compaction
    /// go on:
    ///
    /// - no key is seen twice (a key lives in one shard, copied once);
    /// - a key present for the whole iteration and not written during it
    ///   is seen exactly once, with its value;
    /// - a key written, deleted or expiring during the iteration may or may
    ///   not be seen, and if seen, its value is one that was written for it
    ///   at some time during the iteration.
    ///
    /// Writers are held up by at most one shard's copy. The iterator holds
    /// the segments of one shard's copy at a time, so files that compaction
    /// retires are deleted only after it moves on.
    ///
    /// # Errors
    ///
    /// An item is [`Error::Corruption`] if a record fails its checksum;
    /// iteration can go on past it.
    pub fn iter(&self) -> Iter {
        Iter::new(Arc::clone(&self.shared), self.dir.clone())
    }

    /// Sizes, space and activity counters: see [`Stats`].
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let set = shared.reader.segments();
        let present: Vec<u32> = set.iter().map(|s| s.id()).collect();
        let now = shared.time.now();
        let (mut live_bytes, mut dead_bytes) = (0, 0);
        for u in shared.usage.snapshot(&present).values() {
            let dead = u.dead_at(now);
            dead_bytes += dead;
            live_bytes += u.total - dead;
        }
        let wal_bytes = std::fs::read_dir(self.dir.join(WAL_DIR_NAME))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Stats {
            keys: self.len() as u64,
            live_bytes,
            dead_bytes,
            segments: set.len() as u64,
            segment_bytes: set.iter().map(|s| s.len()).sum(),
            wal_bytes,
            compactions: shared.stats.compactions.load(Ordering::Relaxed),
            bytes_reclaimed: shared.stats.bytes_reclaimed.load(Ordering::Relaxed),
            index_memory: shared.index.memory_usage() as u64,
            puts: shared.stats.puts.load(Ordering::Relaxed),
            gets: shared.stats.gets.sum(),
            deletes: shared.stats.deletes.load(Ordering::Relaxed),
            damaged_segments: shared.damaged.lock().len() as u64,
        }
    }

    /// Writes a consistent copy of the database, as of one moment, into
    /// the new directory `dir`, which [`Db::open`] opens as a complete
    /// database (with its own lock, independent of this one).
    ///
    /// The copy holds every write acknowledged before the call, and is
    /// exactly the database as it was at one moment during it. The writer
    /// seals the active segment and takes a checkpoint (the only moment
    /// writers wait); then, on the caller's thread, sealed segments and
    /// their hint files are hard-linked into the copy (copied where a link
    /// cannot be made, as across file systems) while reads, writes and
    /// compaction go on. Sealed segment files are never changed in place,
    /// and the copy appends to a new segment of its own, so the two
    /// databases never write to a shared file.
    ///
    /// The copy is built in a temporary directory of the call's own next to
    /// `dir`, locked while it is built, and renamed into place as its last
    /// step, after everything in it is synced: a checkpoint cut short by a
    /// crash leaves no `dir`, never a partial one (the next checkpoint to
    /// the same `dir` removes the leftover). Calls to the same `dir` at
    /// once, from any threads or processes, never mix: the first to finish
    /// writes `dir`, and the others fail.
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointTarget`] if `dir` exists and is not an empty
    /// directory, or has no parent, or another checkpoint filled it while
    /// this one was built; [`Error::Io`]; [`Error::Poisoned`] and
    /// [`Error::Closed`] as for writes.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        copy::checkpoint(dir.as_ref(), &self.commands, &Faults::new(&self.options))
    }

    /// Compacts now: seals the active segment, takes a checkpoint, and
    /// compacts every sealed segment that holds any dead bytes; then takes
    /// another checkpoint, which empties the WAL, and writes the hint files
    /// that sealed segments lack. Runs on the caller's
    /// thread, without the rate limit, even while compaction is paused;
    /// reads and writes go on meanwhile. A background pass in progress is
    /// waited for.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] if a segment is damaged (nothing is changed by
    /// the run that found it), [`Error::Io`], [`Error::Poisoned`],
    /// [`Error::Closed`].
    pub fn compact(&self) -> Result<CompactionReport> {
        let _running = self.shared.control.running.lock();
        self.checkpoint_now(true)?;
        let report = compactor::pass(
            &self.shared,
            PassOptions {
                min_dead_ratio: 0.0,
                rate: None,
                pausable: false,
                run_bytes: self.options.run_bytes(),
            },
        )?;
        self.checkpoint_now(false)?;
        compactor::write_missing_hints(&self.shared);
        Ok(report)
    }

    /// Pauses background compaction (a run in progress waits at its next
    /// record). [`Db::compact`] still runs.
    pub fn pause_compaction(&self) {
        self.shared.control.paused.store(true, Ordering::Relaxed);
    }

    /// Resumes background compaction.
    pub fn resume_compaction(&self) {
        self.shared.control.paused.store(false, Ordering::Relaxed);
        let _ = self.shared.wake_compactor.try_send(());
    }

    /// Asks the writer to take a checkpoint now, sealing the active segment
    /// first if `seal`.
    fn checkpoint_now(&self, seal: bool) -> Result<()> {
        reply::call(|reply| {
            let _ = self.commands.send(Command::Checkpoint { seal, reply });
        })
    }

    /// Flushes, syncs and closes the database, waiting for the writer
    /// thread, and releases the directory lock.
    ///
    /// # Errors
    ///
    /// The error of the final sync, if it fails.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        // Compaction first: a run in progress is cancelled and leaves
        // nothing behind.
        self.shared.control.stopping.store(true, Ordering::Relaxed);
        let _ = self.shared.wake_compactor.try_send(());
        if let Some(compactor) = self.compactor.lock().take()
            && compactor.join().is_err()
        {
            log::error!("the compactor thread panicked");
        }
        let Some(handle) = self.writer.lock().take() else {
            return Ok(());
        };
        let result = reply::call(|reply| {
            let _ = self.commands.send(Command::Close { reply });
        });
        if handle.join().is_err() {
            return Err(Error::Poisoned {
                reason: "the writer thread panicked".into(),
            });
        }
        result
    }

    fn live_entry(&self, key: &[u8]) -> Option<Entry> {
        self.shared.live_entry(key)
    }

    /// Finds `key`, reads and checks its record, and hands the value to
    /// `f` while the segment is held.
    fn with_value<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&Arc<Segment>, &[u8]) -> T,
    ) -> Result<Option<T>> {
        check_key(key)?;
        self.shared.stats.gets.add(1);
        self.shared.read_live(&self.dir, key, f)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("closing {} failed: {e}", self.dir.display());
        }
    }
}

/// What loading learns besides the index: per segment the total bytes,
/// the lowest sequence number and the bytes the index points at; the
/// tombstones loaded; the highest sequence number.
#[derive(Default)]
struct Tally {
    usage: BTreeMap<u32, Usage>,
    /// Bytes of index entries per segment (tombstone entries included), as
    /// entries come and go.
    pointed: BTreeMap<u32, i64>,
    /// The same, for tombstone entries only.
    tombstones: BTreeMap<u32, i64>,
    tombstones_loaded: u64,
    max_seq: u64,
    /// Bytes of entries with an expiry per segment, and the segment's
    /// latest expiry.
    expiring: BTreeMap<u32, (i64, u64)>,
    any_expiry: bool,
}

impl Tally {
    /// Offers one record to the index: the newest record of each key wins.
    /// Tombstones stay in the index until everything is loaded, since a
    /// lower-numbered record of the key may still come.
    fn load(
        &mut self,
        index: &Index,
        loc: Location,
        key: &[u8],
        seq: u64,
        expires_at: u64,
        kind: RecordKind,
    ) {
        let u = self.usage.entry(loc.segment).or_default();
        u.min_seq = u.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        let entry = entry_for(loc, seq, expires_at, kind);
        if let Ok(previous) = index.insert_if_newer(key, entry) {
            self.count(&entry, 1);
            if let Some(previous) = previous {
                self.count(&previous, -1);
            }
        }
        if kind == RecordKind::Tombstone {
            self.tombstones_loaded += 1;
        }
        if expires_at != NO_EXPIRY {
            self.any_expiry = true;
            let e = self.expiring.entry(loc.segment).or_default();
            e.1 = e.1.max(expires_at);
        }
    }

    fn count(&mut self, e: &Entry, sign: i64) {
        let len = i64::from(e.len) * sign;
        *self.pointed.entry(e.segment).or_default() += len;
        if e.tombstone {
            *self.tombstones.entry(e.segment).or_default() += len;
        } else if e.expires_at != NO_EXPIRY {
            self.expiring.entry(e.segment).or_default().0 += len;
        }
    }

    fn merge(&mut self, other: Tally) {
        for (id, u) in other.usage {
            let mine = self.usage.entry(id).or_default();
            mine.total += u.total;
            mine.min_seq = mine.min_seq.min(u.min_seq);
        }
        for (id, n) in other.pointed {
            *self.pointed.entry(id).or_default() += n;
        }
        for (id, n) in other.tombstones {
            *self.tombstones.entry(id).or_default() += n;
        }
        for (id, (bytes, latest)) in other.expiring {
            let mine = self.expiring.entry(id).or_default();
            mine.0 += bytes;
            mine.1 = mine.1.max(latest);
        }
        self.any_expiry |= other.any_expiry;
        self.tombstones_loaded += other.tombstones_loaded;
        self.max_seq = self.max_seq.max(other.max_seq);
    }

    /// The usage of every segment once loading is done: dead bytes are what
    /// no live (non-tombstone) entry points at.
    fn finish(mut self) -> BTreeMap<u32, Usage> {
        for (id, u) in self.usage.iter_mut() {
            let live = self.pointed.get(id).copied().unwrap_or(0)
                - self.tombstones.get(id).copied().unwrap_or(0);
            u.dead = u.total.saturating_sub(live.max(0) as u64);
            if let Some(&(bytes, latest)) = self.expiring.get(id) {
                u.expiring = bytes.max(0) as u64;
                u.latest_expiry = latest;
            }
        }
        self.usage
    }
}

/// Loads every segment into the index, on two threads: from its hint file
/// where it has a valid one, else by scanning it.
fn load_segments(reader: &LogReader, index: &Index) -> Result<Tally> {
    let segments: Vec<Arc<Segment>> = reader.segments().iter().cloned().collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let load = || -> Result<Tally> {
        let mut tally = Tally::default();
        while let Some(segment) = segments.get(next.fetch_add(1, Ordering::Relaxed)) {
            tally.usage.entry(segment.id()).or_default().total += segment.data_len();
            segment.load(|loc, meta| {
                tally.load(index, loc, meta.key, meta.seq, meta.expires_at, meta.kind);
            })?;
        }
        Ok(tally)
    };
    let results: Vec<Result<Tally>> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(load)).collect();
        let mut results = vec![load()];
        results.extend(helpers.into_iter().map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(Error::Poisoned {
                    reason: "a loader thread panicked".into(),
                })
            })
        }));
        results
    });
    let mut tally = Tally::default();
    for result in results {
        tally.merge(result?);
    }
    Ok(tally)
}

/// A directory without a checkpoint marker must hold no data: the engine
/// writes a marker when it creates a database, so segments or WAL frames
/// without one mean the marker was lost, and opening would take the
/// database for an empty one (and cut its segments). Files a first open cut
/// short can leave (an empty segment 1, an empty WAL file) are allowed.
fn refuse_data_without_marker(dir: &Path) -> Result<()> {
    match data_without_marker(dir)? {
        Some(reason) => Err(Error::Corruption {
            path: dir.join(crate::checkpoint::CHECKPOINT_FILE_NAME),
            offset: 0,
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a directory without a checkpoint marker cannot be a new database
/// (the data files it holds), or `None` if it holds none.
pub(crate) fn data_without_marker(dir: &Path) -> Result<Option<String>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let len = entry.metadata().map_err(io(&entry.path()))?.len();
        if (kv_log::segment_id_of(name).is_some() && len > SEGMENT_HEADER_LEN as u64)
            || kv_log::hint_segment_of(name).is_some()
        {
            found.push(name.to_string());
        }
    }
    let wal_dir = dir.join(WAL_DIR_NAME);
    if let Ok(entries) = std::fs::read_dir(&wal_dir) {
        for entry in entries {
            let entry = entry.map_err(io(&wal_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let len = entry.metadata().map_err(io(&entry.path()))?.len();
            if name.ends_with(kv_wal::FILE_SUFFIX) && len > kv_wal::FILE_HEADER_LEN as u64 {
                found.push(format!("{WAL_DIR_NAME}/{name}"));
            }
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    found.sort();
    let shown = found.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    Ok(Some(format!(
        "the checkpoint marker is missing, but the directory holds data ({shown}{}); \
             without the marker it cannot be opened safely: restore the CHECKPOINT file",
        if found.len() > 3 {
            format!(" and {} more files", found.len() - 3)
        } else {
            String::new()
        }
    )))
}

fn check_key(key: &[u8]) -> Result<()> {
    Limits::default().check(key.len(), 0).map_err(Error::from)
}
