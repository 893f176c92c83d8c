//! One adapter per engine behind the `Engine` trait, so that every
//! workload runs the same code against each of them.
//!
//! Each adapter maps the two durability settings to the engine's own
//! knobs; the mapping is listed in `settings` and printed in the report.

use std::path::Path;

use anyhow::{Result, bail};

use crate::config::Config;

mod fjall_engine;
mod kv;
mod lmdb;
mod redb_engine;
#[cfg(feature = "rocksdb")]
mod rocks;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is durable when it returns.
    Sync,
    /// No sync per commit; the workload syncs once at the end, inside its
    /// timer.
    Buffered,
}

impl Durability {
    pub fn label(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
        }
    }
}

/// A key-value engine as the workloads see it. Every write call is one
/// commit.
pub trait Engine: Send + Sync {
    /// One key, one commit.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Many keys, one atomic commit.
    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()>;
    /// Hands the value of `key` to `sink` without copying where the engine
    /// allows it; `false` if the key is absent.
    fn get(&self, key: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<bool>;
    /// Makes every commit so far durable (the one sync of `Buffered`).
    fn sync(&self) -> Result<()>;
    /// Compacts as far as the engine can, if it has compaction; `None`
    /// otherwise, and `compaction_note` says why.
    fn compact(&mut self) -> Option<Result<()>>;
    fn compaction_note(&self) -> &'static str {
        ""
    }
    /// How many keys are present, where the engine knows without a scan.
    fn key_count(&self) -> Option<u64> {
        None
    }
    /// Closes cleanly (everything durable, background work stopped).
    fn close(self: Box<Self>) -> Result<()>;
}

/// Engines built into this binary, kv first.
pub fn names() -> Vec<&'static str> {
    let mut names = vec!["kv", "fjall", "lmdb", "redb"];
    if cfg!(feature = "rocksdb") {
        names.push("rocksdb");
    }
    names
}

/// The crate (and version) behind each engine, and how it is configured,
/// for the report.
pub fn describe(name: &str, c: &Config) -> (String, String) {
    let cache = format!("{} MiB", c.cache_bytes >> 20);
    let threads = c.background_threads;
    match name {
        "kv" => (
            format!("kv-engine {}", env!("CARGO_PKG_VERSION")),
            "sync: `SyncPolicy::Always`; buffered: `SyncPolicy::Never` + `Db::sync()`. \
             No cache of its own (values are read from the mapped segments); one writer \
             thread and one background compaction thread (defaults)."
                .into(),
        ),
        "fjall" => (
            concat!("fjall ", env!("KV_BENCH_VERSION_FJALL")).into(),
            format!(
                "sync: `PersistMode::SyncData` on every commit; buffered: `PersistMode::Buffer` \
                 per commit + `persist(SyncData)`. Block cache {cache}, {threads} worker threads, \
                 compression off."
            ),
        ),
        "lmdb" => (
            concat!(
                "LMDB (lmdb-master-sys ",
                env!("KV_BENCH_VERSION_LMDB_MASTER_SYS"),
                ") through heed ",
                env!("KV_BENCH_VERSION_HEED")
            )
            .into(),
            format!(
                "sync: defaults (sync at commit); buffered: `MDB_NOSYNC` + `mdb_env_sync`. \
                 Map size {} GiB; no cache of its own (OS page cache); no background threads.",
                c.lmdb_map_size >> 30
            ),
        ),
        "redb" => (
            concat!("redb ", env!("KV_BENCH_VERSION_REDB")).into(),
            format!(
                "sync: `Durability::Immediate`; buffered: `Durability::None` + one \
                 `Immediate` commit. Cache {cache}; no background threads."
            ),
        ),
        "rocksdb" => (
            concat!(
                "RocksDB (librocksdb-sys ",
                env!("KV_BENCH_VERSION_LIBROCKSDB_SYS"),
                ") through rocksdb ",
                env!("KV_BENCH_VERSION_ROCKSDB")
            )
            .into(),
            format!(
                "sync: `WriteOptions::set_sync(true)`; buffered: WAL unsynced + \
                 `flush_wal(true)`. Block cache {cache}, {threads} background jobs, \
                 compression off."
            ),
        ),
        _ => (name.into(), String::new()),
    }
}

/// Opens (creating) engine `name` in `dir`.
pub fn open(name: &str, dir: &Path, durability: Durability, c: &Config) -> Result<Box<dyn Engine>> {
    std::fs::create_dir_all(dir)?;
    Ok(match name {
        "kv" => Box::new(kv::Kv::open(dir, durability)?),
        "fjall" => Box::new(fjall_engine::Fjall::open(dir, durability, c)?),
        "lmdb" => Box::new(lmdb::Lmdb::open(dir, durability, c)?),
        "redb" => Box::new(redb_engine::Redb::open(dir, durability, c)?),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocks::Rocks::open(dir, durability, c)?),
        other => bail!("unknown engine {other:?} (built in: {:?})", names()),
    })
}
