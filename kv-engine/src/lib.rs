//! kv: an embedded, persistent key-value store in the family of Bitcask and
//! HaloDB.
//!
//! Values live in append-only segment files; an in-memory hash index maps
//! every key to where its latest value lives, so a read is one index lookup
//! and one read from a memory-mapped file. All writes go through one writer
//! thread, which groups the writes of concurrent callers; reads run on the
//! caller's thread and never wait for the writer.
//!
//! ```
//! use kv_engine::Db;
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path())?;
//! db.put(b"apple", b"red")?;
//! assert_eq!(db.get(b"apple")?.as_deref(), Some(&b"red"[..]));
//! db.delete(b"apple")?;
//! assert_eq!(db.get(b"apple")?, None);
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limits
//!
//! Keys are 1 to 65,535 bytes. Values are 0 bytes to 64 MiB, or less as
//! [`Options::max_value_len`] says. Every key is held in memory.
//!
//! # Durability
//!
//! Every write goes to a write-ahead log before it reaches the segments.
//! Under [`SyncPolicy::Always`] (the default) a write is synced before it
//! is acknowledged, so it survives power loss. Under every policy an
//! acknowledged write has been handed to the operating system, so it
//! survives the process being killed; after a power loss what survives is
//! a prefix of the history. A [`WriteBatch`] is all or nothing.
//! [`Db::sync`] makes everything acknowledged durable.
//!
//! # Expiry, iteration, checkpoints, statistics
//!
//! [`Db::put_with_ttl`] writes a key that expires (time from
//! [`Options::clock`]; [`ManualClock`] for tests). [`Db::iter`] and
//! [`Db::keys`] walk every key lazily, without a key twice, and see every
//! key not written meanwhile exactly once, even while compaction runs.
//! [`Db::checkpoint`] writes a consistent copy into a new directory that
//! opens as a database. [`Db::stats`] reports sizes and counters.
//!
//! # What this crate is not
//!
//! Not a server, not ordered: there are no range scans, as a hash index
//! does not keep keys in order. It is the facade over the other kv crates
//! (`kv-format`, `kv-wal`, `kv-log`, `kv-index`, `kv-compact`), which users
//! need not name, and the only crate of kv that spawns threads.

#![forbid(unsafe_code)]

mod batch;
mod clock;
mod compactor;
mod copy;
mod db;
mod error;
mod fs;
mod iter;
mod marker;
mod options;
mod recovery;
mod reply;
mod salvage;
mod saved_index;
mod shared;
mod stats;
mod sync;
mod update;
mod usage;
mod value;
mod verify;
mod view;
mod wait;
mod writer;

#[cfg(all(test, kv_engine_loom))]
mod loom;

pub use batch::WriteBatch;
pub use clock::{Clock, ManualClock, SystemClock};
pub use compactor::CompactionReport;
pub use db::Db;
pub use error::Error;
pub use fs::{LOCK_FILE_NAME, WAL_DIR_NAME, holds_database};
pub use iter::{Iter, Keys};
/// The record format version this build writes (docs/format.md); it reads
/// every earlier one.
pub use kv_format::FORMAT_VERSION as RECORD_FORMAT_VERSION;
/// How many shards the index has: the range of [`Db::shard_keys`].
pub use kv_index::SHARDS as INDEX_SHARDS;
/// The segment file version this build writes (docs/format.md); it reads
/// every earlier one.
pub use kv_log::SEGMENT_VERSION;
pub use kv_wal::{RecoveryMode, SyncPolicy};
pub use options::Options;
pub use salvage::{Loss, Salvage, SalvageReport, SalvagedRecord, salvage};
pub use stats::Stats;
pub use update::Current;
pub use value::Value;
pub use verify::{Problem, VerifyReport, verify};

/// The result type of kv-engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Db;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn db_is_send_and_sync() {
        assert_send_sync::<Db>();
    }
}
