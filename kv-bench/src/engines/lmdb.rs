//! LMDB through heed: a copy-on-write B-tree in one memory map.

#![allow(unsafe_code)]

use std::path::Path;

use anyhow::Result;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};

use super::{Durability, Engine};
use crate::config::Config;

pub struct Lmdb {
    env: Env,
    db: Database<'static, Bytes, Bytes>,
}

impl Lmdb {
    pub fn open(dir: &Path, durability: Durability, c: &Config) -> Result<Lmdb> {
        let mut options = EnvOpenOptions::new();
        options.map_size(c.lmdb_map_size).max_readers(126);
        if durability == Durability::Buffered {
            // SAFETY: `MDB_NOSYNC` only drops the sync at commit (a crash
            // of the machine may lose the latest commits, which is what
            // `Buffered` means); the workload syncs with `mdb_env_sync`.
            unsafe {
                options.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the directory is fresh and private to this process, and
        // no other code maps or truncates its files while the `Env` lives.
        let env = unsafe { options.open(dir)? };
        let wtxn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database::<Bytes, Bytes>(wtxn, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        Ok(Lmdb { env, db })
    }
}

impl Engine for Lmdb {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut tx = self.env.write_txn()?;
        self.db.put(&mut tx, key, value)?;
        tx.commit()?;
        Ok(())
    }

    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()> {
        let mut tx = self.env.write_txn()?;
        for (k, v) in batch {
            self.db.put(&mut tx, k, v)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, key: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let tx = self.env.read_txn()?;
        Ok(match self.db.get(&tx, key)? {
            Some(v) => {
                sink(v);
                true
            }
            None => false,
        })
    }

    fn sync(&self) -> Result<()> {
        self.env.force_sync()?;
        Ok(())
    }

    fn compact(&mut self) -> Option<Result<()>> {
        None
    }

    fn compaction_note(&self) -> &'static str {
        "n/a (no in-place compaction; freed pages are reused)"
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.env.force_sync()?;
        let closing = self.env.prepare_for_closing();
        closing.wait();
        Ok(())
    }
}
