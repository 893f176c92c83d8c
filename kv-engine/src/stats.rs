//! Counters and the [`Stats`] snapshot returned by [`Db::stats`](crate::Db::stats).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a database's size and activity, from [`Db::stats`](crate::Db::stats).
///
/// Byte counts are of records (headers included) in segment files unless
/// said otherwise. Counts of operations are since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Keys present (not deleted, not expired).
    pub keys: u64,
    /// Bytes of records that serve reads.
    pub live_bytes: u64,
    /// Bytes of records that no longer do (overwritten, deleted, expired,
    /// tombstones): what compaction can reclaim.
    pub dead_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of the segment files, headers included.
    pub segment_bytes: u64,
    /// Bytes of the write-ahead log's files.
    pub wal_bytes: u64,
    /// Compaction runs completed (each writes one segment).
    pub compactions: u64,
    /// Bytes of records compaction has reclaimed.
    pub bytes_reclaimed: u64,
    /// Bytes of memory the in-memory index holds.
    pub index_memory: u64,
    /// Puts applied, each put of a batch counted.
    pub puts: u64,
    /// Reads made (`get`, `get_pinned`, `contains_key`).
    pub gets: u64,
    /// Deletes applied, each delete of a batch counted.
    pub deletes: u64,
    /// Segments compaction found damaged and leaves alone since (each is
    /// named in the log; `kv verify` reports every damaged place).
    pub damaged_segments: u64,
    /// Whether this open loaded the index that the last clean close saved
    /// (the file `INDEX`, see [`Options::save_index`](crate::Options::save_index)),
    /// rather than rebuilding it from hint files and segments.
    pub index_loaded: bool,
    /// Shards of a loaded index not decoded yet: a loaded index decodes
    /// each of its 64 shards when something first touches it, so until
    /// then `index_memory` leaves them out.
    pub index_shards_pending: u64,
}

/// A counter that many threads bump without sharing a cache line: each
/// thread adds to one of several padded cells, and a read sums them.
#[derive(Debug, Default)]
pub(crate) struct Striped {
    cells: [Padded; STRIPES],
}

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl Striped {
    pub(crate) fn add(&self, n: u64) {
        let stripe = STRIPE.with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        });
        self.cells[stripe].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// The counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: Striped,
    /// Bumped by the writer thread only.
    pub(crate) puts: AtomicU64,
    /// Bumped by the writer thread only.
    pub(crate) deletes: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) bytes_reclaimed: AtomicU64,
    /// Whether any record with an expiry has been loaded or written: until
    /// then `len` need not look for expired keys.
    pub(crate) any_expiry: AtomicBool,
    /// Set once at open: the index was loaded from `INDEX`.
    pub(crate) index_loaded: AtomicBool,
}
