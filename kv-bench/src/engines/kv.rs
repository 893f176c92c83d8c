//! kv-engine.

use std::path::Path;

use anyhow::Result;
use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

use super::{Durability, Engine};

pub struct Kv {
    db: Db,
}

impl Kv {
    pub fn open(dir: &Path, durability: Durability) -> Result<Kv> {
        let sync = match durability {
            Durability::Sync => SyncPolicy::Always,
            Durability::Buffered => SyncPolicy::Never,
        };
        Ok(Kv {
            db: Db::open_with(dir, Options::default().sync(sync))?,
        })
    }
}

impl Engine for Kv {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.db.put(key, value)?)
    }

    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()> {
        let mut b = WriteBatch::new();
        for (k, v) in batch {
            b.put(k, v);
        }
        Ok(self.db.write(b)?)
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
        Ok(self.db.sync()?)
    }

    fn compact(&mut self) -> Option<Result<()>> {
        Some(self.db.compact().map(|_| ()).map_err(Into::into))
    }

    fn key_count(&self) -> Option<u64> {
        Some(self.db.len() as u64)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.db.close()?)
    }
}
