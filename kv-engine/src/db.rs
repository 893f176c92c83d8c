//! The `Db` facade: opening, the read path, and handing writes to the
//! writer thread.

use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use kv_format::{Limits, NO_EXPIRY, RecordKind, decode};
use kv_index::{Entry, Index};
use kv_log::{
    Location, Log, LogError, LogOptions, LogPosition, LogReader, SEGMENT_HEADER_LEN, Segment,
};
use kv_wal::{Position, Wal};
use parking_lot::Mutex;

use crate::checkpoint::Checkpoint;
use crate::reply::{self, Reply};
use crate::writer::{Command, Write, Writer, recover_record};
use crate::{Error, Options, Result, WriteBatch};

/// The name of the lock file in the database directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// The name of the write-ahead log's subdirectory.
pub const WAL_DIR_NAME: &str = "wal";

/// State shared by readers and the writer thread.
pub(crate) struct Shared {
    pub(crate) index: Index,
    pub(crate) reader: LogReader,
    pub(crate) limits: Limits,
}

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
    /// The index is rebuilt by scanning every segment in order: for each
    /// key, the record with the highest sequence number wins, and a
    /// tombstone removes the key. A torn write at the tail of the newest
    /// segment is cut off; damage anywhere else is [`Error::Corruption`].
    ///
    /// # Errors
    ///
    /// As [`Db::open`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = lock_dir(&dir)?;
        let checkpoint = Checkpoint::read(&dir)?;

        // 1. The segments, up to the last checkpoint: what they hold beyond
        //    it may be incomplete, and the WAL has all of it.
        let index = Index::new();
        let checkpoint_seq = checkpoint.map_or(0, |c| c.seq);
        let mut max_seq = checkpoint_seq;
        let segments_end = checkpoint.map_or(
            LogPosition {
                segment: 1,
                offset: SEGMENT_HEADER_LEN as u64,
            },
            |c| c.segments_end,
        );
        let mut log = Log::open_at(
            &dir,
            LogOptions {
                segment_size: options.segment_size,
                ..LogOptions::default()
            },
            Some(segments_end),
            |loc, record| {
                max_seq = max_seq.max(record.seq);
                recover_record(&index, loc, record);
            },
        )?;

        // 2. The WAL after the checkpoint, applied to the segments.
        let wal_dir = dir.join(WAL_DIR_NAME);
        let wal = Wal::open(&wal_dir, options.wal_options())?;
        let mut replay = wal.read_from(checkpoint.map_or(Position::START, |c| c.wal_from));
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
                let record = decoded.record;
                if record.seq > checkpoint_seq {
                    let loc = log.append_encoded(&payload[at..at + decoded.len])?;
                    recover_record(&index, loc, &record);
                    max_seq = max_seq.max(record.seq);
                    replayed += 1;
                }
                at += decoded.len;
            }
        }
        log.flush()?;
        index.retain(|_, entry| !entry.tombstone);
        log::debug!(
            "opened {}: {} keys, {replayed} records replayed from the WAL, next sequence number {}",
            dir.display(),
            index.len(),
            max_seq + 1
        );

        let shared = Arc::new(Shared {
            index,
            reader: log.reader(),
            limits: Limits::with_max_value_len(options.max_value_len),
        });
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
        };
        if replayed > 0 || checkpoint.is_none() {
            // Make what was replayed durable in the segments, so the WAL
            // can be dropped; a new database gets its first marker.
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
        Ok(Db {
            shared,
            commands,
            writer: Mutex::new(Some(handle)),
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
        self.with_value(key, |segment, value| Value {
            segment: Arc::clone(segment),
            start: value.as_ptr() as usize - segment.bytes().as_ptr() as usize,
            len: value.len(),
        })
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`] or [`Error::KeyTooLarge`].
    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        Ok(self.live_entry(key).is_some())
    }

    /// The number of keys present.
    pub fn len(&self) -> usize {
        self.shared.index.len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key present, in no particular order.
    ///
    /// The keys are gathered from the index one shard at a time, so writers
    /// are held up for no more than one shard's copy. Each key present for
    /// the whole call is returned exactly once; a key written or deleted
    /// during the call may or may not be.
    pub fn keys(&self) -> Keys {
        let mut keys = Vec::with_capacity(self.shared.index.len());
        self.shared.index.for_each(|key, entry| {
            if !entry.tombstone && !expired(entry.expires_at) {
                keys.push(key.to_vec());
            }
        });
        Keys {
            inner: keys.into_iter(),
        }
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
        self.shared
            .index
            .get(key)
            .filter(|e| !e.tombstone && !expired(e.expires_at))
    }

    /// Finds `key`, reads and checks its record, and hands the value to
    /// `f` while the segment is held.
    fn with_value<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&Arc<Segment>, &[u8]) -> T,
    ) -> Result<Option<T>> {
        check_key(key)?;
        let Some(entry) = self.live_entry(key) else {
            return Ok(None);
        };
        let segments = self.shared.reader.segments();
        let loc = Location {
            segment: entry.segment,
            offset: entry.offset,
            len: entry.len,
        };
        let Some(segment) = segments.get(loc.segment) else {
            return Err(corrupt_index(&self.dir, loc, "the segment does not exist"));
        };
        let bytes = segment.read(loc.offset, loc.len).map_err(|e| match e {
            LogError::OutOfBounds { .. } => corrupt_index(segment.path(), loc, &e.to_string()),
            other => Error::from(other),
        })?;
        let record = decode(bytes)
            .map_err(|e| Error::Corruption {
                path: segment.path().to_path_buf(),
                offset: u64::from(loc.offset),
                reason: e.to_string(),
            })?
            .record;
        if record.key != key || record.seq != entry.seq || record.kind != RecordKind::Put {
            return Err(Error::Corruption {
                path: segment.path().to_path_buf(),
                offset: u64::from(loc.offset),
                reason: "the record there is not the one the index expects".into(),
            });
        }
        Ok(Some(f(segment, record.value)))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("closing {} failed: {e}", self.dir.display());
        }
    }
}

/// An iterator over keys, returned by [`Db::keys`].
#[derive(Debug)]
pub struct Keys {
    inner: std::vec::IntoIter<Vec<u8>>,
}

impl Iterator for Keys {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.inner.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Keys {}

/// A value read without copying: it borrows the mapped segment that holds
/// it and keeps that segment alive while held. Derefs to `[u8]`.
#[derive(Debug, Clone)]
pub struct Value {
    segment: Arc<Segment>,
    start: usize,
    len: usize,
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // The range was taken from this segment's readable bytes, which
        // never shrink while the segment lives.
        &self.segment.bytes()[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    Limits::default().check(key.len(), 0).map_err(Error::from)
}

fn expired(expires_at: u64) -> bool {
    if expires_at == NO_EXPIRY {
        return false;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    now >= expires_at
}

fn corrupt_index(path: &Path, loc: Location, why: &str) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        offset: u64::from(loc.offset),
        reason: format!(
            "the index points at {} bytes in segment {}, but {why}",
            loc.len, loc.segment
        ),
    }
}

/// Takes the directory's lock file with an OS lock (flock), released when
/// the process dies. A second open, from any process, fails at once.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}
