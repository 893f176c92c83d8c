//! Iteration over the index, shard by shard: [`Keys`] and [`Iter`], and the
//! `ShardWalk` under both. Each shard is copied in one consistent step;
//! `Iter` reads values from the segment set loaded before the copy, or
//! afresh through `Shared::read_live` for a segment made since. See
//! [`Db::iter`](crate::Db::iter) for what a walk guarantees.
//!
//! It reads through the read path of `shared.rs` and changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use kv_index::{Entry, Index, SHARDS, ShardSnapshot};

use crate::Result;
use crate::shared::{Shared, read_entry};
use crate::value::Value;

/// Where a walk over the index's shards is.
#[derive(Debug)]
struct ShardWalk {
    /// The next shard to copy.
    next: usize,
    /// The current shard's copy, and the next entry of it to visit.
    copy: ShardSnapshot,
    at: usize,
}

impl ShardWalk {
    fn new() -> ShardWalk {
        ShardWalk {
            next: 0,
            copy: ShardSnapshot::new(),
            at: 0,
        }
    }

    /// The next key and entry of the current copy, or `None` when it is
    /// used up and `refill` must be called.
    fn next_entry(&mut self) -> Option<(&[u8], Entry)> {
        let item = self.copy.get(self.at)?;
        self.at += 1;
        Some(item)
    }

    /// Copies the next shard; `false` once every shard has been copied.
    fn refill(&mut self, index: &Index) -> bool {
        if self.next == SHARDS {
            return false;
        }
        index.snapshot_shard(self.next, &mut self.copy);
        self.next += 1;
        self.at = 0;
        true
    }
}

/// An iterator over the keys present, returned by [`Db::keys`](crate::Db::keys). Holds the
/// database's shared state (not the `Db` itself) while it lives.
pub struct Keys {
    shards: ShardWalk,
    shared: Arc<Shared>,
}

impl Keys {
    pub(crate) fn new(shared: Arc<Shared>) -> Keys {
        Keys {
            shards: ShardWalk::new(),
            shared,
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("shard", &self.shards.next)
            .finish_non_exhaustive()
    }
}

impl Iterator for Keys {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.shards.next_entry() {
                Some((key, entry)) => {
                    if !entry.tombstone && !self.shared.time.expired(entry.expires_at) {
                        return Some(key.to_vec());
                    }
                }
                None => {
                    if !self.shards.refill(&self.shared.index) {
                        return None;
                    }
                }
            }
        }
    }
}

/// An iterator over the keys present and their values, returned by
/// [`Db::iter`](crate::Db::iter); see there for its guarantees. Holds the database's shared
/// state (not the `Db` itself) and the segments of the current shard's
/// entries while it lives.
pub struct Iter {
    shards: ShardWalk,
    shared: Arc<Shared>,
    /// The segments loaded before the current shard was copied.
    held: Option<Arc<kv_log::SegmentSet>>,
    dir: PathBuf,
    /// The key of the last item, if it was a damaged record.
    damaged: Option<Vec<u8>>,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("shard", &self.shards.next)
            .finish_non_exhaustive()
    }
}

impl Iter {
    pub(crate) fn new(shared: Arc<Shared>, dir: PathBuf) -> Iter {
        Iter {
            shards: ShardWalk::new(),
            shared,
            held: None,
            dir,
            damaged: None,
        }
    }

    /// After an item that is an error reading a key's value (a record that
    /// fails its checks: [`Error::Corruption`](crate::Error::Corruption)),
    /// that key; `None` after any other item. Iteration can go on past such
    /// an error, so a caller can leave the damaged key out and name it
    /// (as `kv export --skip-damaged` does).
    pub fn damaged_key(&self) -> Option<&[u8]> {
        self.damaged.as_deref()
    }

    fn value(&self, key: &[u8], entry: Entry) -> Result<Option<Value>> {
        // The segment set was loaded before the shard was copied, so it
        // holds every segment the copy names, unless the segment was made
        // (by a rotation or a compaction) in between: then read the key as it
        // is now, like `get`. An untouched key has the same value there.
        if let Some(segment) = self.held.as_ref().and_then(|set| set.get(entry.segment)) {
            return read_entry(segment, key, entry).map(|v| Some(Value::new(segment, v)));
        }
        self.shared.read_live(&self.dir, key, Value::new)
    }
}

impl Iterator for Iter {
    type Item = Result<(Vec<u8>, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.damaged = None;
        loop {
            let Some((key, entry)) = self.shards.next_entry() else {
                // Load the segments before copying the shard: see `value`.
                self.held = Some(self.shared.reader.segments().to_arc());
                if !self.shards.refill(&self.shared.index) {
                    self.held = None;
                    return None;
                }
                if let Err(e) = self.shared.index_health.check() {
                    // A shard is missing: say so once, and stop.
                    self.shards.next = SHARDS;
                    self.shards.copy = ShardSnapshot::new();
                    return Some(Err(e));
                }
                continue;
            };
            if entry.tombstone || self.shared.time.expired(entry.expires_at) {
                continue;
            }
            let key = key.to_vec();
            match self.value(&key, entry) {
                Ok(Some(value)) => return Some(Ok((key, value))),
                // Deleted or expired since the copy.
                Ok(None) => continue,
                Err(e) => {
                    self.damaged = Some(key);
                    return Some(Err(e));
                }
            }
        }
    }
}
