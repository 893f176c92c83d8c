//! [`Shared`]: the state that readers, the writer thread and compaction
//! share, and the read path it owns: finding a key's live entry, and reading
//! and checking the record it names (checksum, key, sequence number).
//!
//! It does not write: appending, updating the index for callers and
//! trimming the WAL are the writer's (`writer.rs`); compaction's changes are
//! `compactor.rs`'s. Opening builds it (`db.rs`, from what `recovery.rs`
//! found).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};

use crossbeam_channel::Sender;
use kv_format::{Limits, RecordKind};
use kv_index::{Entry, Index};
use kv_log::{Location, LogError, LogReader, Segment};
use parking_lot::Mutex;

use crate::clock::Monotonic;
use crate::saved_index::IndexHealth;
use crate::stats::Counters;
use crate::usage::SegmentUsage;
use crate::{Error, Result};

/// What an open loaded, from which it builds the [`Shared`] state
/// ([`Shared::new`]): by recovery for a writer, by `view.rs` for a
/// read-only view.
pub(crate) struct Loaded {
    pub(crate) index: Index,
    pub(crate) reader: LogReader,
    /// Live and dead bytes per segment.
    pub(crate) usage: std::collections::BTreeMap<u32, crate::usage::Usage>,
    /// Whether any record loaded expires.
    pub(crate) any_expiry: bool,
    /// Whether the index came from the saved index.
    pub(crate) index_loaded: bool,
    pub(crate) index_health: Arc<IndexHealth>,
    /// The segment of the marker's position (0 for a view: it never
    /// compacts).
    pub(crate) marker_segment: u32,
    /// The segments the marker lists (none for a view).
    pub(crate) listed: Vec<u32>,
}

/// State shared by readers, the writer thread and compaction.
pub(crate) struct Shared {
    pub(crate) index: Index,
    pub(crate) reader: LogReader,
    pub(crate) limits: Limits,
    /// Live and dead bytes per segment.
    pub(crate) usage: SegmentUsage,
    /// The segment of the last marker's position: every segment below
    /// it holds only durable, marker_segment records.
    pub(crate) marker_segment: AtomicU32,
    /// The segments the last durable marker lists, in id order: the only
    /// ones compaction may take (see `Writer::trim_wal`).
    pub(crate) listed: Mutex<Vec<u32>>,
    /// Segments compaction found damaged: it takes them no more.
    pub(crate) damaged: Mutex<std::collections::BTreeSet<u32>>,
    pub(crate) control: Control,
    /// Wakes the compactor thread (after a marker).
    pub(crate) wake_compactor: Sender<()>,
    /// The time, for expiry.
    pub(crate) time: Monotonic,
    pub(crate) stats: Counters,
    /// Set by the writer while it gathers, commits and syncs a group under
    /// `SyncPolicy::Always` (never written under the other policies):
    /// callers waiting for their reply keep their core meanwhile
    /// (`wait.rs`).
    pub(crate) committing: AtomicBool,
    /// Set if a shard of a saved index could be neither loaded nor
    /// rebuilt: a miss must then be checked against it.
    pub(crate) index_health: Arc<IndexHealth>,
}

impl Shared {
    /// The shared state of a database opened with `options`, from what its
    /// open loaded; `wake_compactor` wakes its compactor thread, if any.
    pub(crate) fn new(
        loaded: Loaded,
        options: &crate::Options,
        wake_compactor: Sender<()>,
    ) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            index: loaded.index,
            reader: loaded.reader,
            limits: Limits::with_max_value_len(options.max_value_len),
            usage: SegmentUsage::default(),
            marker_segment: AtomicU32::new(loaded.marker_segment),
            listed: Mutex::new(loaded.listed),
            damaged: Mutex::default(),
            control: Control::default(),
            wake_compactor,
            time: Monotonic::new(Arc::clone(&options.clock)),
            stats: Counters::default(),
            committing: AtomicBool::new(false),
            index_health: loaded.index_health,
        });
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        shared.stats.any_expiry.store(loaded.any_expiry, relaxed);
        shared
            .stats
            .index_loaded
            .store(loaded.index_loaded, relaxed);
        shared.usage.set(loaded.usage);
        shared
    }
}

/// Controls shared by the compactor thread and `Db`.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Held for the whole of a compaction pass: one at a time.
    pub(crate) running: Mutex<()>,
    pub(crate) paused: AtomicBool,
    pub(crate) stopping: AtomicBool,
}

impl Shared {
    /// Finds `key` as it is now, reads and checks its record, and hands the
    /// value to `f` while the segment is held.
    pub(crate) fn read_live<T>(
        &self,
        dir: &Path,
        key: &[u8],
        f: impl FnOnce(&Arc<Segment>, &[u8]) -> T,
    ) -> Result<Option<T>> {
        // The segment set is loaded before the index entry: a segment the
        // entry names is then in the set, unless it was added (a rotation, or a
        // compaction output, whose id can be lower than the newest log
        // segment's) after the set was loaded: then the set has changed
        // since, and a fresh load finds it. Each retry means the set changed,
        // so this ends. A segment leaves the set only after no entry points
        // at it, so an entry naming a segment missing from a set that has
        // not changed since is a real inconsistency.
        let mut segments = self.reader.segments();
        loop {
            let Some(entry) = self.live_entry(key) else {
                self.index_health.check()?;
                return Ok(None);
            };
            if let Some(segment) = segments.get(entry.segment) {
                return read_entry(segment, key, entry).map(|v| Some(f(segment, v)));
            }
            let fresh = self.reader.segments();
            if fresh.is_same_set(&segments) {
                return Err(Error::Corruption {
                    path: dir.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "the index points at segment {}, which is not in the database",
                        entry.segment
                    ),
                });
            }
            segments = fresh;
        }
    }

    /// The entry of `key` if it is present: not a tombstone, not expired.
    pub(crate) fn live_entry(&self, key: &[u8]) -> Option<Entry> {
        self.index
            .get(key)
            .filter(|e| !e.tombstone && !self.time.expired(e.expires_at))
    }
}

/// Reads and checks the record `entry` names, and returns its value.
pub(crate) fn read_entry<'s>(segment: &'s Segment, key: &[u8], entry: Entry) -> Result<&'s [u8]> {
    let loc = Location {
        segment: entry.segment,
        offset: entry.offset,
        len: entry.len,
    };
    let bytes = segment.read(loc.offset, loc.len).map_err(|e| match e {
        LogError::OutOfBounds { .. } => corrupt_index(segment.path(), loc, &e.to_string()),
        other => Error::from(other),
    })?;
    let record = segment
        .record_format()
        .decode(bytes)
        .map_err(|e| Error::Corruption {
            path: segment.path().to_path_buf(),
            offset: u64::from(loc.offset),
            reason: e.to_string(),
        })?
        .record;
    if record.key != key || record.kind != RecordKind::Put {
        return Err(Error::Corruption {
            path: segment.path().to_path_buf(),
            offset: u64::from(loc.offset),
            reason: "the record there is not the one the index expects".into(),
        });
    }
    Ok(record.value)
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
