//! fjall 3: an LSM-tree.

use std::path::Path;

use anyhow::Result;
use fjall::config::CompressionPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Durability, Engine};
use crate::config::Config;

pub struct Fjall {
    db: Database,
    keyspace: Keyspace,
    /// Applied to every commit: `SyncData` for `Sync`, `Buffer` (handed to
    /// the OS, as kv-engine does under `SyncPolicy::Never`) for `Buffered`.
    mode: PersistMode,
}

impl Fjall {
    pub fn open(dir: &Path, durability: Durability, c: &Config) -> Result<Fjall> {
        let db = Database::builder(dir)
            .cache_size(c.cache_bytes)
            .worker_threads(c.background_threads)
            .manual_journal_persist(true)
            .open()?;
        let keyspace = db.keyspace("bench", || {
            KeyspaceCreateOptions::default()
                .data_block_compression_policy(CompressionPolicy::disabled())
        })?;
        let mode = match durability {
            Durability::Sync => PersistMode::SyncData,
            Durability::Buffered => PersistMode::Buffer,
        };
        Ok(Fjall { db, keyspace, mode })
    }
}

impl Engine for Fjall {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.keyspace.insert(key, value)?;
        self.db.persist(self.mode)?;
        Ok(())
    }

    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()> {
        let mut b = self.db.batch().durability(Some(self.mode));
        for (k, v) in batch {
            b.insert(&self.keyspace, *k, *v);
        }
        b.commit()?;
        Ok(())
    }

    fn get(&self, key: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(match self.keyspace.get(key)? {
            Some(v) => {
                sink(&v);
                true
            }
            None => false,
        })
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn compact(&mut self) -> Option<Result<()>> {
        // As RocksDB's `CompactRange` does: flush the memtable first, so
        // the compaction covers every key, then merge everything.
        let run = || -> Result<()> {
            self.keyspace.rotate_memtable_and_wait()?;
            self.keyspace.major_compact()?;
            Ok(())
        };
        Some(run())
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}
