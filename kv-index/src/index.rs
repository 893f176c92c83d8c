//! The sharded index: hashing a key to its shard.

use xxhash_rust::xxh3::xxh3_64;

use crate::entry::Entry;
use crate::image::{ImageError, ShardImage, ShardLoader};
use crate::shard::{Copied, Hasher, KeyHash, Shard};
use crate::table::groups_for;

/// log2 of the number of shards.
pub(crate) const SHARD_BITS: u32 = 6;
/// The number of shards.
pub const SHARDS: usize = 1 << SHARD_BITS;
/// A key's home group in its shard is chosen by the 32 hash bits just
/// below the shard bits.
pub(crate) const TAG_SHIFT: u32 = u64::BITS - SHARD_BITS - u32::BITS;

/// The longest key the index stores, in bytes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The concurrent in-memory hash index from key to [`Entry`].
///
/// `Index` is `Send + Sync`; share it through an `Arc` or a reference.
/// Lookups take no lock and write no shared memory; writers lock one shard.
/// See the [crate documentation](crate) for the protocol and the layout.
pub struct Index {
    shards: Box<[Shard]>,
    /// A test-only hash function, to force collisions.
    #[cfg(test)]
    pub(crate) hasher: Option<fn(&[u8]) -> u64>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::with_capacity(0)
    }

    /// An empty index whose slot tables are sized for `keys` keys, so a
    /// bulk load of that many keys does not rehash. (Arenas grow in 32 KiB
    /// chunks, which costs no copying.)
    pub fn with_capacity(keys: usize) -> Index {
        let per_shard = keys / SHARDS;
        // Keys spread binomially over the shards: leave four standard
        // deviations of headroom.
        let headroom = 4 * per_shard.isqrt() + 8;
        let slots = if keys == 0 {
            0
        } else {
            groups_for(per_shard + headroom)
        };
        Index {
            shards: (0..SHARDS).map(|_| Shard::new(slots)).collect(),
            #[cfg(test)]
            hasher: None,
        }
    }

    /// An empty index that hashes keys with `hasher` instead of xxh3, so
    /// tests can force every key into one shard or onto one tag.
    #[cfg(test)]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn with_hasher(hasher: fn(&[u8]) -> u64) -> Index {
        Index {
            hasher: Some(hasher),
            ..Index::new()
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if let Some(hasher) = self.hasher {
            return hasher(key);
        }
        xxh3_64(key)
    }

    /// The key's shard and hash.
    fn locate(&self, key: &[u8]) -> (&Shard, u64) {
        let hash = self.hash(key);
        let shard = &self.shards[(hash >> (u64::BITS - SHARD_BITS)) as usize];
        (shard, hash)
    }

    /// The key's shard, and its hash with the hash function, for a change
    /// that may rebuild the shard's table.
    fn locate_mut(&self, key: &[u8]) -> (&Shard, (u64, Hasher<'_>)) {
        let (shard, hash) = self.locate(key);
        (shard, (hash, self.hasher()))
    }

    /// The hash function, for shards that hash keys again.
    fn hasher(&self) -> Hasher<'_> {
        self
    }

    /// The shard (`0..SHARDS`) that holds `key`: what a loader rebuilding
    /// one shard from its own records filters them by.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        (self.hash(key) >> (u64::BITS - SHARD_BITS)) as usize
    }

    /// The entry of `key`, if any.
    ///
    /// Lock-free: it retries while a writer changes the key's shard, but it
    /// takes no lock, writes no shared memory and does not allocate. (The
    /// one exception is the first touch of a shard of a [`lazy`](Index::lazy)
    /// index, which takes the shard's mutex to load it.)
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        let (shard, hash) = self.locate(key);
        shard.get(key, hash)
    }

    /// Sets the entry of `key` and returns the previous one.
    ///
    /// Overwriting a key updates its entry in place, except when an entry
    /// without expiry gets one, which moves it within the shard's arena.
    ///
    /// # Panics
    ///
    /// If `key` is longer than [`MAX_KEY_LEN`], or if one shard's arena
    /// would pass 2^32 words (32 GiB).
    pub fn insert(&self, key: &[u8], entry: Entry) -> Option<Entry> {
        check_key(key);
        let (shard, hash) = self.locate_mut(key);
        shard.upsert(key, hash, entry, None, |_, _| true).1
    }

    /// Sets the entry of `key` to `entry`, with sequence number `seq`, only
    /// if the key is absent or its current entry has a lower sequence
    /// number (an entry set by any other call counts as 0). Returns `Ok`
    /// with the entry it replaced (if any) when it set it, and `Err` with
    /// the current entry when that one is at least as new. The check and
    /// the change are one atomic step, so several threads can load records
    /// in any order and the newest record of each key wins.
    ///
    /// The sequence number costs a word (8 bytes) per key until
    /// [`forget_seqs`](Index::forget_seqs): a loader calls that once it is
    /// done. An overwrite by [`insert`](Index::insert) or
    /// [`compare_and_swap`](Index::compare_and_swap) sets it to 0.
    ///
    /// # Errors
    ///
    /// `Err(current)` is not a failure: it says the index kept `current`.
    ///
    /// # Panics
    ///
    /// As [`insert`](Index::insert).
    pub fn insert_if_newer(
        &self,
        key: &[u8],
        entry: Entry,
        seq: u64,
    ) -> Result<Option<Entry>, Entry> {
        check_key(key);
        let (shard, hash) = self.locate_mut(key);
        match shard.upsert(key, hash, entry, Some(seq), |current, current_seq| {
            current.is_none() || current_seq < seq
        }) {
            (true, previous) => Ok(previous),
            (false, Some(current)) => Err(current),
            // Rejected only when an entry exists.
            (false, None) => Ok(None),
        }
    }

    /// Drops the sequence numbers that [`insert_if_newer`](Index::insert_if_newer)
    /// stored, giving back their memory; shard by shard, each under its
    /// writer lock, while lookups go on. Later calls of `insert_if_newer`
    /// compare against 0 for the keys they find.
    pub fn forget_seqs(&self) {
        for shard in 0..SHARDS {
            self.forget_seqs_of(shard);
        }
    }

    /// [`forget_seqs`](Index::forget_seqs) for shard `shard` (`0..SHARDS`)
    /// only, so that a loader can spread the shards over its threads.
    pub fn forget_seqs_of(&self, shard: usize) {
        self.shards[shard].forget_seqs(self.hasher());
    }

    /// Removes `key` and returns its entry.
    pub fn remove(&self, key: &[u8]) -> Option<Entry> {
        let (shard, hash) = self.locate_mut(key);
        shard.remove(key, hash, None)
    }

    /// Replaces the entry of `key` with `new` only if it is currently
    /// `expected`; returns whether it did. For compaction: when a concurrent
    /// write has changed the key since `expected` was read, that write wins.
    ///
    /// # Panics
    ///
    /// As [`insert`](Index::insert).
    pub fn compare_and_swap(&self, key: &[u8], expected: &Entry, new: Entry) -> bool {
        check_key(key);
        let (shard, hash) = self.locate_mut(key);
        shard
            .upsert(key, hash, new, None, |current, _| current == Some(expected))
            .0
    }

    /// Removes `key` only if its entry is currently `expected`; returns
    /// whether it did.
    pub fn remove_if(&self, key: &[u8], expected: &Entry) -> bool {
        let (shard, hash) = self.locate_mut(key);
        shard.remove(key, hash, Some(expected)).is_some()
    }

    /// The number of keys. Summed over the shards without locking, so it is
    /// exact only when no writer runs.
    pub fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    /// Whether the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of heap the index holds: every slot table, arena chunk and
    /// chunk directory, and the shard structs, from their actual lengths and
    /// capacities. Storage that a reader still holds after it was replaced
    /// is not counted.
    pub fn memory_usage(&self) -> usize {
        let shards = self.shards.len() * size_of::<Shard>();
        shards + self.shards.iter().map(Shard::memory_usage).sum::<usize>()
    }

    /// Appends the image of shard `shard` (0 to [`SHARDS`] - 1) to `out`:
    /// every used slot's position, tag and entry, in slot order, taken
    /// under the shard's writer lock (see `image.rs` for the format).
    /// Saved for every shard, the images rebuild the index with
    /// [`Index::from_shard_images`] without hashing a key. Images are only
    /// read back by a build with the same layout: whoever stores them
    /// stores a version with them.
    ///
    /// # Panics
    ///
    /// If `shard` is not below [`SHARDS`].
    pub fn encode_shard_image(&self, shard: usize, out: &mut Vec<u8>) {
        self.shards[shard].encode_image(out, self.hasher());
    }

    /// The index whose shards are `images`, in shard order: one per shard,
    /// each decoded by [`ShardImage::decode`].
    ///
    /// # Errors
    ///
    /// [`ImageError::ShardCount`] unless there are exactly [`SHARDS`].
    pub fn from_shard_images(images: Vec<ShardImage>) -> Result<Index, ImageError> {
        if images.len() != SHARDS {
            return Err(ImageError::ShardCount {
                expected: SHARDS,
                got: images.len(),
            });
        }
        Ok(Index {
            shards: images.into_iter().map(Shard::from_image).collect(),
            #[cfg(test)]
            hasher: None,
        })
    }

    /// An index whose shards are loaded when first touched: shard `i`
    /// holds `keys[i]` keys (what [`len`](Index::len) reports until it is
    /// loaded) and gets its contents from `loader` (see [`ShardLoader`]).
    /// Opening with it costs nothing per key; a process that reads a few
    /// keys decodes only their shards. Every operation behaves as on an
    /// index built with [`from_shard_images`](Index::from_shard_images);
    /// the first one on each shard also waits for its load.
    ///
    /// # Errors
    ///
    /// [`ImageError::ShardCount`] unless `keys` has exactly [`SHARDS`]
    /// counts.
    pub fn lazy(
        keys: &[usize],
        loader: std::sync::Arc<dyn ShardLoader>,
    ) -> Result<Index, ImageError> {
        if keys.len() != SHARDS {
            return Err(ImageError::ShardCount {
                expected: SHARDS,
                got: keys.len(),
            });
        }
        Ok(Index {
            shards: keys
                .iter()
                .enumerate()
                .map(|(shard, &len)| Shard::pending(len, std::sync::Arc::clone(&loader), shard))
                .collect(),
            #[cfg(test)]
            hasher: None,
        })
    }

    /// Loads every shard not loaded yet, so that no later operation waits
    /// for a load (and a caller can tell its loader is done).
    pub fn load_all(&self) {
        for shard in &self.shards {
            shard.load();
        }
    }

    /// Loads shard `shard` (`0..SHARDS`) if it is not loaded yet: a
    /// background thread can decode an index ahead of use this way, one
    /// shard at a time, stopping when it is told to.
    ///
    /// # Panics
    ///
    /// If `shard >= SHARDS`.
    pub fn load_shard(&self, shard: usize) {
        self.shards[shard].load();
    }

    /// The shards not loaded yet (always 0 unless made by
    /// [`lazy`](Index::lazy)).
    pub fn pending_shards(&self) -> usize {
        self.shards.iter().filter(|s| !s.is_loaded()).count()
    }

    /// Calls `f` with every key and entry, in no particular order.
    ///
    /// Consistent per shard: it copies one shard at a time (optimistically,
    /// validated against concurrent writers, and under the shard's writer
    /// lock after a few failed tries), then calls `f` on the copy while
    /// holding nothing, so `f` may use the index and a writer is held up for
    /// at most one shard copy. Writes that land in a shard after its copy
    /// are not seen.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Entry)) {
        let mut keys = Vec::new();
        let mut copied = Vec::new();
        for shard in &self.shards {
            shard.snapshot(&mut keys, &mut copied);
            for c in &copied {
                f(key_of(&keys, c), c.entry);
            }
        }
    }

    /// Copies shard `shard` (`0..SHARDS`) into `into`, replacing what it
    /// held: the building block of iteration that can pause between
    /// shards. The copy is consistent (taken as by
    /// [`for_each`](Index::for_each)), and since a key lives in exactly one
    /// shard, copying every shard once visits every key at most once.
    ///
    /// # Panics
    ///
    /// If `shard >= SHARDS`.
    pub fn snapshot_shard(&self, shard: usize, into: &mut ShardSnapshot) {
        self.shards[shard].snapshot(&mut into.keys, &mut into.copied);
    }

    /// Removes every entry for which `f` returns false (the engine drops
    /// tombstones this way after a rebuild).
    ///
    /// Works shard by shard like [`for_each`](Index::for_each): `f` runs on
    /// a copy without holding anything, then the rejected entries are
    /// removed under one hold of the shard's writer lock, each only if it
    /// is unchanged, so an entry written concurrently (which `f` never saw)
    /// stays.
    pub fn retain(&self, mut f: impl FnMut(&[u8], &Entry) -> bool) {
        let mut keys = Vec::new();
        let mut copied = Vec::new();
        let mut rejected = Vec::new();
        for shard in &self.shards {
            shard.snapshot(&mut keys, &mut copied);
            rejected.clear();
            rejected.extend(
                copied
                    .iter()
                    .copied()
                    .filter(|c| !f(key_of(&keys, c), &c.entry)),
            );
            if !rejected.is_empty() {
                shard.remove_batch(
                    self.hasher(),
                    rejected.iter().map(|c| (key_of(&keys, c), c.entry)),
                );
            }
        }
    }
}

fn key_of<'k>(keys: &'k [u8], copied: &Copied) -> &'k [u8] {
    &keys[copied.key_start..copied.key_start + copied.key_len]
}

impl KeyHash for Index {
    fn hash_key(&self, key: &[u8]) -> u64 {
        self.hash(key)
    }
}

fn check_key(key: &[u8]) {
    assert!(
        key.len() <= MAX_KEY_LEN,
        "kv-index: a key of {} bytes is longer than {MAX_KEY_LEN}",
        key.len()
    );
}

#[cfg(test)]
impl Index {
    /// Checks every shard's invariants; returns the total slot count.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn check(&self) -> usize {
        self.shards.iter().map(|s| s.check(self.hasher())).sum()
    }
}

/// A copy of one shard's keys and entries, filled by
/// [`Index::snapshot_shard`]; reusable, so iterating every shard allocates
/// only as much as the largest shard needs.
#[derive(Debug, Default, Clone)]
pub struct ShardSnapshot {
    keys: Vec<u8>,
    copied: Vec<Copied>,
}

impl ShardSnapshot {
    /// An empty snapshot.
    pub fn new() -> ShardSnapshot {
        ShardSnapshot::default()
    }

    /// The number of entries copied.
    pub fn len(&self) -> usize {
        self.copied.len()
    }

    /// Whether no entry was copied.
    pub fn is_empty(&self) -> bool {
        self.copied.is_empty()
    }

    /// The `i`th key and entry, in no particular order.
    pub fn get(&self, i: usize) -> Option<(&[u8], Entry)> {
        self.copied.get(i).map(|c| (key_of(&self.keys, c), c.entry))
    }

    /// Every key and entry.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Entry)> + '_ {
        self.copied.iter().map(|c| (key_of(&self.keys, c), c.entry))
    }
}
