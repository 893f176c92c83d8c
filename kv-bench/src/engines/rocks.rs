//! RocksDB through the `rocksdb` crate (the `rocksdb` feature): an
//! LSM-tree, the engine most others are measured against.

use std::path::Path;

use anyhow::Result;
use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, Options, WriteBatch, WriteOptions};

use super::{Durability, Engine};
use crate::config::Config;

pub struct Rocks {
    db: DB,
    /// `sync` set for `Sync`; for `Buffered` the WAL is written (so a
    /// crash of the process loses nothing) but not synced.
    write: WriteOptions,
    /// Kept alive as long as the database uses it.
    _cache: Cache,
}

impl Rocks {
    pub fn open(dir: &Path, durability: Durability, c: &Config) -> Result<Rocks> {
        let threads = i32::try_from(c.background_threads).unwrap_or(1);
        let cache = Cache::new_lru_cache(c.cache_bytes as usize);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.increase_parallelism(threads);
        options.set_max_background_jobs(threads);
        options.set_compression_type(DBCompressionType::None);
        options.set_block_based_table_factory(&table);
        let db = DB::open(&options, dir)?;
        let mut write = WriteOptions::default();
        write.set_sync(durability == Durability::Sync);
        Ok(Rocks {
            db,
            write,
            _cache: cache,
        })
    }
}

impl Engine for Rocks {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put_opt(key, value, &self.write)?)
    }

    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()> {
        let mut b = WriteBatch::default();
        for (k, v) in batch {
            b.put(k, v);
        }
        Ok(self.db.write_opt(b, &self.write)?)
    }

    fn get(&self, key: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(match self.db.get_pinned(key)? {
            Some(v) => {
                sink(&v);
                true
            }
            None => false,
        })
    }

    fn sync(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    fn compact(&mut self) -> Option<Result<()>> {
        // `CompactRange` over everything flushes the memtable first.
        self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        Some(Ok(()))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}
