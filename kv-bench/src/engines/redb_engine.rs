//! redb 4: a copy-on-write B-tree.

use std::path::Path;

use anyhow::Result;
use redb::{Database, ReadableDatabase, TableDefinition};

use super::{Durability, Engine};
use crate::config::Config;

const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("bench");

pub struct Redb {
    db: Database,
    durability: redb::Durability,
}

impl Redb {
    pub fn open(dir: &Path, durability: Durability, c: &Config) -> Result<Redb> {
        let db = Database::builder()
            .set_cache_size(c.cache_bytes as usize)
            .create(dir.join("bench.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(TABLE)?;
        tx.commit()?;
        let durability = match durability {
            Durability::Sync => redb::Durability::Immediate,
            Durability::Buffered => redb::Durability::None,
        };
        Ok(Redb { db, durability })
    }

    fn commit(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &[u8], &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut table = tx.open_table(TABLE)?;
            f(&mut table)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Engine for Redb {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.commit(|t| {
            t.insert(key, value)?;
            Ok(())
        })
    }

    fn write_batch(&self, batch: &[(&[u8], &[u8])]) -> Result<()> {
        self.commit(|t| {
            for (k, v) in batch {
                t.insert(*k, *v)?;
            }
            Ok(())
        })
    }

    fn get(&self, key: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(TABLE)?;
        Ok(match table.get(key)? {
            Some(v) => {
                sink(v.value());
                true
            }
            None => false,
        })
    }

    fn sync(&self) -> Result<()> {
        // An empty commit with `Immediate` durability makes every earlier
        // `None` commit durable.
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        tx.commit()?;
        Ok(())
    }

    fn compact(&mut self) -> Option<Result<()>> {
        // `compact` returns whether it did anything; repeat until it cannot.
        let mut run = || -> Result<()> {
            for _ in 0..100 {
                if !self.db.compact()? {
                    break;
                }
            }
            Ok(())
        };
        Some(run())
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self.db);
        Ok(())
    }
}
