//! The `Db` facade: its public methods, opening (which wires recovery,
//! `Shared`, the `Writer` and the two threads together) and shutdown.
//!
//! The methods are thin: writes are checked against the limits and handed
//! to the writer thread (`writer.rs`); reads go through `Shared`'s read path
//! (`shared.rs`); iteration is `iter.rs`, compaction `compactor.rs`, the
//! checkpoint copy `copy.rs`, and what opening recovers `recovery.rs`. No
//! module of the crate imports this one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use kv_format::{Limits, Record};
use kv_index::Entry;
use kv_log::Segment;
use parking_lot::Mutex;

use crate::compactor::{self, CompactionReport, PassOptions};
use crate::copy;
use crate::fs::{WAL_DIR_NAME, check_exists, create_dir, lock_dir};
use crate::iter::{Iter, Keys};
use crate::recovery::{self, Recovered};
use crate::reply::{self, Reply};
use crate::saved_index;
use crate::shared::{Loaded, Shared};
use crate::stats::Stats;
use crate::update::{Current, Update};
use crate::value::Value;
use crate::view;
use crate::writer::{Command, Write, Writer};
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
    /// Whether this is a read-only view (`view.rs`): no writer thread, no
    /// compactor, no lock; writes are refused.
    read_only: bool,
    /// Held with an OS file lock for as long as the `Db` lives; declared
    /// last so that it is released only after the writer has stopped.
    /// `None` for a read-only view, which takes no lock.
    _lock: Option<File>,
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
    /// Recovery: segment data after the last marker is discarded (the
    /// write-ahead log holds all of it); the segments are loaded into the
    /// index on two threads, each from its hint file if valid, else by a
    /// scan (for each key the record with the highest sequence number wins,
    /// and a tombstone removes the key); then the WAL is replayed from the
    /// marker, its torn tail (if any) cut off. Damage anywhere else is
    /// [`Error::Corruption`] naming the file and offset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] if a field of `options` is out of range
    /// (see [`Options::validate`]); [`Error::NotADatabase`] if the
    /// directory holds no database and [`Options::create_if_missing`] is
    /// off; else as [`Db::open`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        options.validate()?;
        let dir = path.as_ref().to_path_buf();
        if options.read_only {
            return Db::open_view(dir, options);
        }
        check_exists(&dir, options.create_if_missing)?;
        create_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let faults = options.faults();
        let Recovered {
            log,
            wal,
            index,
            usage,
            max_seq,
            any_expiry,
            marker_segment,
            live,
            replayed,
            stale_marker,
            index_loaded,
            index_health,
        } = recovery::recover(&dir, &options, &faults)?;
        // A saved index that was not loaded is of no more use; one that
        // was is kept until the database changes (the writer removes it).
        if !index_loaded {
            saved_index::remove(&dir);
        }

        let (wake_compactor, wake) = crossbeam_channel::bounded(1);
        let loaded = Loaded {
            index,
            reader: log.reader(),
            usage,
            any_expiry,
            index_loaded,
            index_health,
            marker_segment,
            listed: live,
        };
        let shared = Shared::new(loaded, &options, wake_compactor);
        let mut writer = Writer::new(
            Arc::clone(&shared),
            dir.clone(),
            log,
            wal,
            max_seq + 1,
            &options,
            faults,
        );
        if index_loaded {
            writer.saved_index_loaded();
        }
        if replayed > 0 || stale_marker {
            // Make what was replayed durable in the segments, so the WAL
            // can be dropped; a new database gets its first marker, and one
            // that lists the wrong segments a true one.
            writer.trim_wal()?;
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
            read_only: false,
            _lock: Some(lock),
        })
    }

    /// Opens the database in `path` read-only: a consistent view of it as
    /// of one moment during the call, which changes no byte in the
    /// directory and may be taken while another process (or another `Db`
    /// of this one) has the database open for writing.
    ///
    /// The view holds every write acknowledged before the call, and
    /// possibly writes made during it (each whole: a [`WriteBatch`] is
    /// all or nothing), in the order they were made; never a value that
    /// was not written. It does not follow later writes: open it again for
    /// a newer view. Nothing is created, removed, cut short or locked, so
    /// it works on a read-only directory or mount, and any number of views
    /// can be open at once; the writer beside it goes on writing,
    /// compacting and trimming its WAL meanwhile, and the files it deletes
    /// stay readable through the view's maps (disk space is given back
    /// when the view is dropped). A torn tail left by a crash is read
    /// around, not cut: the next writable open cuts it. With no writer
    /// beside it, damage is reported as [`Db::open`] reports it.
    ///
    /// The view loads the whole index, as an open after a crash does
    /// (from the saved index only if the writer has not changed anything
    /// since its clean close), and holds in memory the records the WAL has
    /// beyond the last checkpoint marker (at most about
    /// [`Options::max_wal_size`] bytes).
    ///
    /// [`Db::put`], [`Db::delete`], [`Db::write`], [`Db::sync`],
    /// [`Db::compact`] and [`Db::checkpoint`] return [`Error::ReadOnly`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = kv_engine::Db::open(dir.path())?;
    /// db.put(b"k", b"v1")?;
    /// let view = kv_engine::Db::open_read_only(dir.path())?;
    /// db.put(b"k", b"v2")?;
    /// assert_eq!(view.get(b"k")?.as_deref(), Some(&b"v1"[..]));
    /// assert!(matches!(view.put(b"k", b"v3"), Err(kv_engine::Error::ReadOnly)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotADatabase`] if `path` holds no database;
    /// [`Error::Corruption`] for damaged data; [`Error::Unsettled`] if the
    /// writer beside it changed the files under every attempt;
    /// [`Error::Io`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Options::default().read_only(true))
    }

    /// The read-only open (`view.rs`): no writer, no compactor, no lock.
    fn open_view(dir: PathBuf, options: Options) -> Result<Db> {
        check_exists(&dir, false)?;
        let viewed = view::open(&dir, &options)?;
        // Nobody listens: what would wake a compactor is dropped.
        let (wake_compactor, _) = crossbeam_channel::bounded(1);
        let shared = Shared::new(viewed, &options, wake_compactor);
        // Commands sent to no writer fail, and their replies say `Closed`;
        // every write method refuses first (`Db::writable`).
        let (commands, _) = crossbeam_channel::bounded(1);
        Ok(Db {
            shared,
            commands,
            writer: Mutex::new(None),
            compactor: Mutex::new(None),
            options,
            dir,
            read_only: true,
            _lock: None,
        })
    }

    /// Whether the database was opened read-only
    /// ([`Db::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses a write to a read-only view.
    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
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
        self.writable()?;
        self.shared.limits.check(key.len(), value.len())?;
        self.submit_record(&Record::put(0, key, value))
    }

    /// Sets `key` to `value` for `ttl`: from then on the key reads as
    /// absent, is left out of iteration and [`Db::len`], and compaction
    /// drops it. The expiry is an absolute time, read from
    /// [`Options::clock`] when the write is made and stored in the
    /// record, so it holds across reopen. A `ttl` of zero writes a key that
    /// has already expired.
    ///
    /// # Errors
    ///
    /// As [`Db::put`].
    pub fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<()> {
        self.writable()?;
        self.shared.limits.check(key.len(), value.len())?;
        self.submit_record(&Record {
            expires_at: self.shared.time.expiry_after(ttl),
            ..Record::put(0, key, value)
        })
    }

    /// Deletes `key`. Deleting an absent key is not an error.
    ///
    /// # Errors
    ///
    /// As [`Db::put`].
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.writable()?;
        self.shared.limits.check(key.len(), 0)?;
        self.submit_record(&Record::tombstone(0, key))
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
        self.writable()?;
        if batch.is_empty() {
            return Ok(());
        }
        for op in &batch.ops {
            self.shared.limits.check(op.key_len, op.value_len)?;
        }
        let encoded = batch.encoded_len();
        if encoded > kv_wal::MAX_RECORD_LEN as usize {
            return Err(Error::BatchTooLarge {
                len: encoded,
                max: kv_wal::MAX_RECORD_LEN as usize,
            });
        }
        self.submit(Write::Batch(batch))
    }

    /// Reads `keys` and writes what `f` makes of them, as one atomic step:
    /// no other write comes between the read and the write. `f` gets each
    /// key's [`Current`] value (`None` if absent), in the order of `keys`,
    /// fills the batch to apply (it may write any keys, or none), and
    /// returns what this call returns once the batch is applied, with the
    /// durability of any write ([`Options::sync`]). The primitive for
    /// increments, compare-and-swap, set-if-absent and the like.
    ///
    /// `f` runs on the writer thread, which every write waits for: keep it
    /// short, and do not call the `Db` from it (that would wait for
    /// itself). A panic in `f` is caught: nothing is written, and the call
    /// returns [`Error::UpdatePanicked`].
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = kv_engine::Db::open(dir.path())?;
    /// let incr = |db: &kv_engine::Db| {
    ///     db.update(&[b"hits"], |current, batch| {
    ///         let n = current[0].as_ref().map_or(0, |c| {
    ///             std::str::from_utf8(&c.value).unwrap().parse::<u64>().unwrap()
    ///         }) + 1;
    ///         batch.put(b"hits", n.to_string().as_bytes());
    ///         n
    ///     })
    /// };
    /// assert_eq!(incr(&db)?, 1);
    /// assert_eq!(incr(&db)?, 2);
    /// assert_eq!(db.get(b"hits")?.as_deref(), Some(&b"2"[..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Db::write`] for the keys read and the batch made;
    /// [`Error::Corruption`] if a value read fails its checks (then `f`
    /// does not run); [`Error::UpdatePanicked`].
    pub fn update<T, F>(&self, keys: &[&[u8]], f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&[Option<Current>], &mut WriteBatch) -> T + Send + 'static,
    {
        self.writable()?;
        for key in keys {
            check_key(key)?;
        }
        let slot = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        let update = Update {
            keys: keys.iter().map(|k| k.to_vec()).collect(),
            run: Box::new(move |current, batch| {
                *out.lock() = Some(f(current, batch));
            }),
        };
        let committing = || self.shared.committing.load(Ordering::Relaxed);
        reply::call_while(committing, |reply| {
            let _ = self.commands.send(Command::Update { update, reply });
        })?;
        // Set before the writer replied; taken once.
        let value = slot.lock().take();
        value.ok_or(Error::Closed)
    }

    /// Encodes `record` on this thread, into its reusable buffer, and
    /// submits it: the writer sets its sequence number.
    fn submit_record(&self, record: &Record<'_>) -> Result<()> {
        let mut buffer = reply::take_buffer();
        kv_format::encode(record, &mut buffer)?;
        self.submit(Write::Record(buffer))
    }

    fn submit(&self, write: Write) -> Result<()> {
        let committing = || self.shared.committing.load(Ordering::Relaxed);
        reply::call_while(committing, |reply| {
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
        self.writable()?;
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
        if self.live_entry(key).is_some() {
            return Ok(true);
        }
        self.shared.index_health.check()?;
        Ok(false)
    }

    /// How long `key` has left to live: `None` if it is absent, `Some(None)`
    /// if it never expires, `Some(Some(left))` if it expires after `left`
    /// (rounded down to the millisecond; never zero: a key with no time
    /// left is absent). An index lookup; the record is not read.
    ///
    /// ```
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir()?;
    /// let db = kv_engine::Db::open(dir.path())?;
    /// db.put(b"forever", b"v")?;
    /// db.put_with_ttl(b"session", b"v", Duration::from_secs(60))?;
    /// assert_eq!(db.ttl(b"forever")?, Some(None));
    /// assert!(db.ttl(b"session")?.flatten().is_some_and(|left| left <= Duration::from_secs(60)));
    /// assert_eq!(db.ttl(b"absent")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`] or [`Error::KeyTooLarge`]; as [`Db::get`] if a
    /// shard of the index could not be loaded.
    pub fn ttl(&self, key: &[u8]) -> Result<Option<Option<Duration>>> {
        check_key(key)?;
        let Some(entry) = self.live_entry(key) else {
            self.shared.index_health.check()?;
            return Ok(None);
        };
        if entry.expires_at == kv_format::NO_EXPIRY {
            return Ok(Some(None));
        }
        let left = entry
            .expires_at
            .saturating_sub(self.shared.time.now())
            .max(1);
        Ok(Some(Some(Duration::from_millis(left))))
    }

    /// The number of keys present. Once any key has been written with a
    /// time to live, this walks the index to leave out expired keys
    /// (`O(keys)`, shard by shard, holding up no writer); before that it
    /// is one counter. (If a shard of a saved index could be neither
    /// loaded nor rebuilt, which reads report as [`Error::Corruption`],
    /// its keys are not counted.)
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
    /// for what it guarantees under concurrent writes and compaction. (If
    /// a shard of a saved index could be neither loaded nor rebuilt, its
    /// keys are missing here; [`Db::iter`] ends with
    /// [`Error::Corruption`] instead.)
    pub fn keys(&self) -> Keys {
        Keys::new(Arc::clone(&self.shared))
    }

    /// The keys present in shard `shard` of the index (`0..INDEX_SHARDS`;
    /// none past it), copied in one consistent step: a cursor for a scan in
    /// steps that each return whole shards (Redis's `SCAN`). A key lives in
    /// one shard for good, so a walk of every shard sees each key present
    /// throughout exactly once.
    pub fn shard_keys(&self, shard: usize) -> Vec<Vec<u8>> {
        if shard >= kv_index::SHARDS {
            return Vec::new();
        }
        let mut copy = kv_index::ShardSnapshot::new();
        self.shared.index.snapshot_shard(shard, &mut copy);
        let time = &self.shared.time;
        (0..)
            .map_while(|i| copy.get(i))
            .filter(|(_, e)| !e.tombstone && !time.expired(e.expires_at))
            .map(|(k, _)| k.to_vec())
            .collect()
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
            index_loaded: shared.stats.index_loaded.load(Ordering::Relaxed),
            index_shards_pending: shared.index.pending_shards() as u64,
        }
    }

    /// Writes a consistent copy of the database, as of one moment, into
    /// the new directory `dir`, which [`Db::open`] opens as a complete
    /// database (with its own lock, independent of this one).
    ///
    /// The copy holds every write acknowledged before the call, and is
    /// exactly the database as it was at one moment during it. The writer
    /// seals the active segment and trims the WAL (the only moment
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
    /// directory, is inside the database's own directory, or has no parent, or another checkpoint filled it while
    /// this one was built; [`Error::Io`]; [`Error::Poisoned`] and
    /// [`Error::Closed`] as for writes.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.writable()?;
        copy::checkpoint(
            dir.as_ref(),
            &self.dir,
            &self.commands,
            &self.options.faults(),
        )
    }

    /// Compacts now: seals the active segment, trims the WAL, and compacts
    /// every sealed segment that holds any dead bytes; then trims the WAL
    /// again, which empties it, and writes the hint files
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
        self.writable()?;
        let _running = self.shared.control.running.lock();
        self.trim_wal_now(true)?;
        let report = compactor::pass(
            &self.shared,
            PassOptions {
                min_dead_ratio: 0.0,
                space_target: 1.0,
                rate: None,
                pausable: false,
                run_bytes: self.options.run_bytes(),
            },
        )?;
        self.trim_wal_now(false)?;
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

    /// Asks the writer to trim the WAL now, sealing the active segment
    /// first if `seal`.
    fn trim_wal_now(&self, seal: bool) -> Result<()> {
        reply::call(|reply| {
            let _ = self.commands.send(Command::TrimWal { seal, reply });
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
                cause: "the writer thread panicked".into(),
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

fn check_key(key: &[u8]) -> Result<()> {
    Limits::default().check(key.len(), 0).map_err(Error::from)
}
