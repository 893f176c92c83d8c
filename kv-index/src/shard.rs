//! One shard: a slot table of groups (`table.rs`) and a word arena, both
//! made of atomics, read optimistically under a seqlock and written under
//! a mutex.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{
    ArcSwap, AtomicBool, AtomicU64, AtomicUsize, Mutex, fence, spin_loop, yield_now,
};

use crate::entry::{
    EXPIRY_WORD, Entry, HEAD_WORD, Head, LOCATION_WORD, dead, decode_entry, encode_meta,
    entry_words, key_words, pack_key_word,
};
use crate::image::{self, ShardImage, ShardLoader};
use crate::table::{
    self, EMPTY, GROUP_SLOTS, Group, Groups, MAX_LOAD_DEN, empty_groups, groups_for, home,
    next_group, split_hash, within_load,
};

/// A run of atomic words: an arena chunk. Shared between the writer and
/// every published [`Storage`] that still uses it.
pub(crate) type Words = Arc<[AtomicU64]>;

/// log2 of the words in a full arena chunk.
const CHUNK_SHIFT: u32 = 12;
/// Words in a full arena chunk (32 KiB). Every chunk but the last is full.
pub(crate) const CHUNK_WORDS: usize = 1 << CHUNK_SHIFT;
/// Mask of a word's index inside its chunk.
const CHUNK_MASK: usize = CHUNK_WORDS - 1;
/// Words in the smallest last chunk; a small last chunk doubles (by copy)
/// until it is full, so a small shard does not hold a whole chunk.
pub(crate) const MIN_CHUNK_WORDS: usize = 64;
/// The most words a shard's arena may address: offsets are stored plus one
/// in 32 bits.
pub(crate) const MAX_ARENA_WORDS: usize = u32::MAX as usize;

/// The arena is compacted once garbage exceeds 1/`COMPACT_RATIO` of it...
const COMPACT_RATIO: usize = 4;
/// ...and is at least this many words, so tiny shards are not recopied on
/// every delete.
const COMPACT_MIN_GARBAGE: usize = 512;
/// Optimistic attempts at copying a shard before [`Shard::snapshot`] takes
/// the writer lock.
const OPTIMISTIC_SNAPSHOTS: usize = 4;

/// Heap bytes of an `Arc` allocation's header (strong and weak counts).
const ARC_HEADER: usize = 2 * size_of::<usize>();

/// Message of the invariant checks on the writer's own, consistent view.
const CONSISTENT: &str = "kv-index: the writer's view of its shard is consistent";

/// The hash function of the index a shard belongs to: a rebuild of the
/// slot table hashes every key again.
pub(crate) trait KeyHash {
    /// The 64-bit hash of `key`.
    fn hash_key(&self, key: &[u8]) -> u64;
}

impl<F: Fn(&[u8]) -> u64> KeyHash for F {
    fn hash_key(&self, key: &[u8]) -> u64 {
        self(key)
    }
}

/// A shard's view of its index's hash function.
pub(crate) type Hasher<'a> = &'a dyn KeyHash;

pub(crate) fn zeroed(len: usize) -> Words {
    (0..len).map(|_| AtomicU64::new(0)).collect()
}

/// Stores `word` at arena offset `off` of a view that the writer owns.
fn store(chunks: &[Words], off: usize, word: u64) {
    chunks[off >> CHUNK_SHIFT][off & CHUNK_MASK].store(word, Relaxed);
}

/// Words that fit in an arena of these chunks.
fn arena_capacity(chunks: &[Words]) -> usize {
    chunks
        .last()
        .map_or(0, |last| (chunks.len() - 1) * CHUNK_WORDS + last.len())
}

/// Fresh chunks holding exactly `words` words, rounded up to
/// [`MIN_CHUNK_WORDS`].
fn chunks_for(words: usize) -> Vec<Words> {
    let mut chunks: Vec<Words> = (0..words / CHUNK_WORDS)
        .map(|_| zeroed(CHUNK_WORDS))
        .collect();
    let rest = words % CHUNK_WORDS;
    if rest > 0 {
        chunks.push(zeroed(rest.next_multiple_of(MIN_CHUNK_WORDS)));
    }
    chunks
}

/// A read that raced a writer went out of bounds or found an impossible
/// value. The caller's version check fails, and it retries.
#[derive(Debug)]
struct Torn;

/// A key found in a view.
#[derive(Debug, Clone, Copy)]
struct Found {
    /// Its slot position.
    pos: usize,
    /// Its arena offset.
    off: usize,
    /// Its decoded head word.
    head: Head,
    /// Its entry.
    entry: Entry,
}

/// One entry copied by [`Shard::snapshot`]; its key is
/// `keys[key_start..key_start + key_len]` of the snapshot's key buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    /// Where the key starts in the key buffer.
    pub(crate) key_start: usize,
    /// The key length.
    pub(crate) key_len: usize,
    /// The entry.
    pub(crate) entry: Entry,
}

/// A slot table and arena to read from: a reader's published [`Storage`]
/// or the writer's own state.
///
/// Every read is a `Relaxed` load and every index is bounds-checked, so a
/// reader racing a writer sees some mix of old and new words, never a data
/// race or a panic; [`Torn`] reports the impossible mixes it notices, and
/// the seqlock catches the rest.
#[derive(Clone, Copy)]
struct View<'a> {
    groups: &'a [Group],
    chunks: &'a [Words],
}

impl View<'_> {
    fn word(&self, off: usize) -> Result<u64, Torn> {
        self.chunks
            .get(off >> CHUNK_SHIFT)
            .and_then(|chunk| chunk.get(off & CHUNK_MASK))
            .map(|word| word.load(Relaxed))
            .ok_or(Torn)
    }

    /// Looks `key` up. The probe is bounded by the table length, and each
    /// key comparison by the key length, whatever the racing writer does.
    fn find(&self, key: &[u8], hash: u64) -> Result<Option<Found>, Torn> {
        let n = self.groups.len();
        if n == 0 {
            return Ok(None);
        }
        let (h32, c) = split_hash(hash);
        let mut g = home(h32, n);
        for _ in 0..n {
            let group = self.groups.get(g).ok_or(Torn)?;
            let words = group.ctrl_words();
            let mut matches = Group::matching(words, c);
            while matches != 0 {
                let i = matches.trailing_zeros() as usize;
                matches &= matches - 1;
                let off = group.offset(i).ok_or(Torn)?;
                if let Some((head, entry)) = self.read_if_key(off, key)? {
                    return Ok(Some(Found {
                        pos: g * GROUP_SLOTS + i,
                        off,
                        head,
                        entry,
                    }));
                }
            }
            if Group::matching(words, EMPTY) != 0 {
                return Ok(None);
            }
            g = next_group(g, n);
        }
        Ok(None)
    }

    /// The entry at `off` if its key is `key`.
    fn read_if_key(&self, off: usize, key: &[u8]) -> Result<Option<(Head, Entry)>, Torn> {
        let head = Head::decode(self.word(off + HEAD_WORD)?);
        if head.key_len != key.len() {
            return Ok(None);
        }
        let key_off = off + head.meta_words();
        for (i, chunk) in key.chunks(size_of::<u64>()).enumerate() {
            if self.word(key_off + i)? != pack_key_word(chunk) {
                return Ok(None);
            }
        }
        Ok(Some((head, self.read_meta(off, head)?)))
    }

    /// The entry whose head word, already read, is `head`.
    fn read_meta(&self, off: usize, head: Head) -> Result<Entry, Torn> {
        let location = self.word(off + LOCATION_WORD)?;
        let expires_at = if head.has_expiry {
            self.word(off + EXPIRY_WORD)?
        } else {
            0
        };
        Ok(decode_entry(head, location, expires_at))
    }

    /// The sequence number of the entry at `off` whose head is `head`: 0
    /// if it has none.
    fn read_seq(&self, off: usize, head: Head) -> Result<u64, Torn> {
        head.seq_word().map_or(Ok(0), |word| self.word(off + word))
    }

    /// Appends the key of the entry at `off`, whose head is `head`, to `out`.
    fn push_key(&self, off: usize, head: Head, out: &mut Vec<u8>) -> Result<(), Torn> {
        let start = out.len();
        let key_off = off + head.meta_words();
        for i in 0..key_words(head.key_len) {
            out.extend_from_slice(&self.word(key_off + i)?.to_le_bytes());
        }
        out.truncate(start + head.key_len);
        Ok(())
    }

    /// Appends every key to `keys` and every entry to `out`. The total key
    /// bytes are bounded by the arena size, so a torn read cannot make this
    /// allocate without bound.
    fn copy_all(&self, keys: &mut Vec<u8>, out: &mut Vec<Copied>) -> Result<(), Torn> {
        let budget = self.chunks.len() * CHUNK_WORDS * size_of::<u64>();
        for (_, _, off) in table::full_slots(self.groups) {
            let head = Head::decode(self.word(off + HEAD_WORD)?);
            let entry = self.read_meta(off, head)?;
            let key_start = keys.len();
            if key_start + head.key_len > budget {
                return Err(Torn);
            }
            self.push_key(off, head, keys)?;
            out.push(Copied {
                key_start,
                key_len: head.key_len,
                entry,
            });
        }
        Ok(())
    }

    /// A table of `groups` groups holding every live entry of the arena
    /// below `top`, each placed by its key's hash again: no deleted slot
    /// is left. It walks the arena in order, skipping dead entries, so
    /// its reads are sequential (the old table's order is random).
    fn rebuild(&self, top: usize, groups: usize, hash: Hasher<'_>) -> Groups {
        let table = empty_groups(groups);
        let mut key = Vec::new();
        for (off, head) in self.live(top) {
            key.clear();
            self.push_key(off, head, &mut key).expect(CONSISTENT);
            let (h32, c) = split_hash(hash.hash_key(&key));
            table::insert(&table, h32, c, off);
        }
        table
    }

    /// The offset and head of every live entry of a consistent arena below
    /// `top`, in arena order.
    fn live(&self, top: usize) -> impl Iterator<Item = (usize, Head)> + '_ {
        let mut off = 0;
        std::iter::from_fn(move || {
            while off < top {
                let at = off;
                let head = Head::decode(self.word(at + HEAD_WORD).expect(CONSISTENT));
                off += head.entry_words();
                if !head.dead {
                    return Some((at, head));
                }
            }
            None
        })
    }
}

/// What readers see of a shard: published whole through an [`ArcSwap`].
/// The slot table and chunks are shared with the writer, which keeps
/// changing them in place under the seqlock.
struct Storage {
    groups: Groups,
    chunks: Box<[Words]>,
}

impl Storage {
    fn view(&self) -> View<'_> {
        View {
            groups: &self.groups,
            chunks: &self.chunks,
        }
    }
}

/// The writer's state of a shard, behind the shard mutex.
struct Writer {
    /// The slot table; the same one the published storage holds.
    groups: Groups,
    /// The arena chunks; the same ones the published storage holds.
    chunks: Vec<Words>,
    /// Arena words handed out so far; the arena is a bump allocator.
    top: usize,
    /// Words below `top` that no slot points to: removed and relocated
    /// entries.
    garbage: usize,
    /// Keys in the shard: its full slots.
    len: usize,
    /// Full and deleted slots: what the load limit counts.
    used: usize,
    /// Whether some entry may have a sequence number word
    /// ([`Shard::forget_seqs`] drops them).
    seqs: bool,
    /// Where the shard's contents come from while it is not loaded.
    pending: Option<Pending>,
}

/// What a shard that is not loaded yet loads its contents from.
struct Pending {
    loader: Arc<dyn ShardLoader>,
    shard: usize,
}

impl Writer {
    fn view(&self) -> View<'_> {
        View {
            groups: &self.groups,
            chunks: &self.chunks,
        }
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<Found> {
        self.view().find(key, hash).expect(CONSISTENT)
    }

    /// A table of `groups` groups for the live entries (`View::rebuild`).
    fn rebuild(&self, groups: usize, hash: Hasher<'_>) -> Groups {
        self.view().rebuild(self.top, groups, hash)
    }

    /// Marks the entry `found` as garbage: no slot points to it any more.
    /// Inside a write section: readers may still reach it.
    fn bury(&mut self, found: &Found) {
        let head = self.view().word(found.off + HEAD_WORD).expect(CONSISTENT);
        store(&self.chunks, found.off + HEAD_WORD, dead(head));
        self.garbage += found.head.entry_words();
    }

    /// Makes room for `words` more words at `top`. Returns whether the
    /// chunks changed, in which case they must be published before any slot
    /// points into the new room.
    ///
    /// # Panics
    ///
    /// If the shard's arena would pass [`MAX_ARENA_WORDS`] (32 GiB).
    fn reserve(&mut self, words: usize) -> bool {
        let needed = self.top + words;
        assert!(
            needed <= MAX_ARENA_WORDS,
            "kv-index: a shard's arena would exceed {MAX_ARENA_WORDS} words"
        );
        let mut changed = false;
        while arena_capacity(&self.chunks) < needed {
            changed = true;
            let full = self.chunks.len().saturating_sub(1) * CHUNK_WORDS;
            match self.chunks.last_mut() {
                Some(last) if last.len() < CHUNK_WORDS => {
                    // Grow the small last chunk by copy; the old one stays
                    // valid for readers of the old storage.
                    let len = (needed - full)
                        .max(last.len() * 2)
                        .next_multiple_of(MIN_CHUNK_WORDS)
                        .min(CHUNK_WORDS);
                    let grown: Words = (0..len)
                        .map(|i| AtomicU64::new(last.get(i).map_or(0, |w| w.load(Relaxed))))
                        .collect();
                    *last = grown;
                }
                _ => {
                    let len = (needed - arena_capacity(&self.chunks))
                        .next_power_of_two()
                        .clamp(MIN_CHUNK_WORDS, CHUNK_WORDS);
                    self.chunks.push(zeroed(len));
                }
            }
        }
        changed
    }
}

/// One shard of the index.
///
/// Aligned to two cache lines so that one shard's writer does not disturb
/// readers of its neighbours.
#[repr(align(128))]
pub(crate) struct Shard {
    /// The seqlock version: odd while the writer changes reachable words.
    version: AtomicU64,
    /// The storage readers use. Replaced when the table or arena is
    /// reallocated.
    storage: ArcSwap<Storage>,
    /// Keys in the shard, kept for lock-free [`Index::len`](crate::Index::len).
    len: AtomicUsize,
    /// Whether the shard holds its contents. A lazily loaded shard starts
    /// empty, with its loader in `Writer::pending`: the first operation
    /// that touches it loads it under the writer lock ([`Shard::lock`]),
    /// publishes the storage, then sets this (`Release`); a reader that
    /// sees it set (`Acquire`) sees that storage.
    loaded: AtomicBool,
    /// The writer's state; readers take this mutex only to load the
    /// shard, once.
    writer: Mutex<Writer>,
}

impl Shard {
    /// An empty shard with a table of `groups` groups (at least one).
    pub(crate) fn new(groups: usize) -> Shard {
        let groups = empty_groups(groups.max(1));
        Shard {
            version: AtomicU64::new(0),
            storage: ArcSwap::from_pointee(Storage {
                groups: groups.clone(),
                chunks: Box::new([]),
            }),
            len: AtomicUsize::new(0),
            loaded: AtomicBool::new(true),
            writer: Mutex::new(Writer {
                groups,
                chunks: Vec::new(),
                top: 0,
                garbage: 0,
                len: 0,
                used: 0,
                seqs: false,
                pending: None,
            }),
        }
    }

    /// A shard of `len` keys that `loader` gives when it is first touched.
    pub(crate) fn pending(len: usize, loader: Arc<dyn ShardLoader>, shard: usize) -> Shard {
        let mut pending = Shard::new(1);
        pending.len = AtomicUsize::new(len);
        pending.loaded = AtomicBool::new(false);
        pending.writer.lock().pending = Some(Pending { loader, shard });
        pending
    }

    /// Whether the shard holds its contents (it was not created lazily,
    /// or something touched it since).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Acquire)
    }

    /// Takes the writer lock, loading the shard first if it waits to be.
    fn lock(&self) -> impl std::ops::DerefMut<Target = Writer> + '_ {
        let mut w = self.writer.lock();
        // The loader stays until its load returns: if it panics, the shard
        // is still pending (not silently empty), and the next touch tries
        // again.
        if let Some(image) = w.pending.as_ref().map(|p| p.loader.load(p.shard)) {
            w.pending = None;
            self.install(&mut w, image);
            self.loaded.store(true, Release);
        }
        w
    }

    /// Makes sure the shard is loaded (before a lock-free read of it).
    pub(crate) fn load(&self) {
        if !self.loaded.load(Acquire) {
            drop(self.lock());
        }
    }

    /// A shard of a decoded, checked image.
    pub(crate) fn from_image(image: ShardImage) -> Shard {
        let shard = Shard::new(1);
        shard.install(&mut shard.writer.lock(), image);
        shard
    }

    /// Makes `image` the shard's contents and publishes them: the writer
    /// lock is held (`w`).
    fn install(&self, w: &mut Writer, image: ShardImage) {
        let ShardImage {
            len,
            groups,
            chunks,
            top,
        } = image;
        w.groups = groups;
        w.chunks = chunks;
        w.top = top;
        w.garbage = 0;
        w.len = len;
        // An image holds no deleted slot.
        w.used = len;
        w.seqs = false;
        self.publish(w);
        self.len.store(len, Relaxed);
    }

    /// Appends the shard's image (`image.rs`) to `out`, taken under the
    /// writer lock, so it is one consistent state. A table with deleted
    /// slots, or with more room than an eighth above what its keys need
    /// (after growth, or sized ahead for a load that found fewer keys), is
    /// saved rebuilt at the size its keys need: a closed database's index
    /// loads as small as it can be, for a hash of every key at the close
    /// and a rebuild of the shard at its first new key.
    pub(crate) fn encode_image(&self, out: &mut Vec<u8>, hash: Hasher<'_>) {
        let w = self.lock();
        let view = w.view();
        let need = groups_for(w.len);
        let groups = if w.groups.len() > need + need / 8 || w.used > w.len {
            w.rebuild(need, hash)
        } else {
            Arc::clone(&w.groups)
        };
        let mut encoder = image::Encoder::new(out, w.len, groups.len());
        let mut key = Vec::new();
        for (pos, c, off) in table::full_slots(&groups) {
            let head = Head::decode(view.word(off + HEAD_WORD).expect(CONSISTENT));
            let entry = view.read_meta(off, head).expect(CONSISTENT);
            key.clear();
            view.push_key(off, head, &mut key).expect(CONSISTENT);
            encoder.push(pos, c, &entry, &key);
        }
    }

    /// Keys in the shard.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Looks `key` (whose hash is `hash`) up without locking or writing
    /// shared memory.
    pub(crate) fn get(&self, key: &[u8], hash: u64) -> Option<Entry> {
        self.load();
        let mut backoff = Backoff::default();
        loop {
            let v1 = self.version.load(Acquire);
            if v1 & 1 == 0 {
                let storage = self.storage.load();
                let found = storage.view().find(key, hash);
                fence(Acquire);
                if self.version.load(Relaxed) == v1 {
                    return match found {
                        Ok(found) => found.map(|found| found.entry),
                        Err(Torn) => {
                            debug_assert!(false, "kv-index: torn read under a stable version");
                            None
                        }
                    };
                }
            }
            backoff.snooze();
        }
    }

    /// Sets `key` (its hash, and the index's hash function) to `entry`,
    /// with sequence number `seq` if given, if
    /// `accept` says so of the current entry (`None` when the key is
    /// absent) and its sequence number (0 if it has none); `accept` runs
    /// under the shard's writer lock, so the check and the change are one
    /// atomic step. Returns whether it did, and the entry it found.
    pub(crate) fn upsert(
        &self,
        key: &[u8],
        (key_hash, hash): (u64, Hasher<'_>),
        entry: Entry,
        seq: Option<u64>,
        accept: impl FnOnce(Option<&Entry>, u64) -> bool,
    ) -> (bool, Option<Entry>) {
        let mut w = self.lock();
        let found = w.find(key, key_hash);
        let previous = found.map(|found| found.entry);
        let previous_seq = found.map_or(0, |found| {
            w.view().read_seq(found.off, found.head).expect(CONSISTENT)
        });
        if !accept(previous.as_ref(), previous_seq) {
            return (false, previous);
        }
        match found {
            Some(found)
                if (entry.expires_at == 0 || found.head.has_expiry)
                    && (seq.is_none() || found.head.has_seq) =>
            {
                // Overwrite in place: same words, no new arena space.
                let seq = found.head.has_seq.then_some(seq.unwrap_or(0));
                let (meta, n) = encode_meta(key.len(), &entry, found.head.has_expiry, seq);
                self.write(|| {
                    for (i, &word) in meta[..n].iter().enumerate() {
                        store(&w.chunks, found.off + i, word);
                    }
                });
            }
            Some(found) => {
                // The old entry has no expiry or sequence number word to
                // overwrite: relocate.
                let off = self.append(&mut w, key, &entry, seq);
                let (g, i) = table::slot_at(found.pos);
                self.write(|| {
                    w.groups[g].set_offset(i, Some(off));
                    w.bury(&found);
                });
                self.maintain(&mut w, hash);
            }
            None => {
                if !within_load(w.used + 1, w.groups.len()) {
                    // Grow, or only clear deleted slots if the keys leave
                    // a quarter of the room free. NOTE: growing by 1.25x
                    // rather than 2x keeps the average load near 0.78
                    // (about 6.4 bytes of slot per key) for some more time
                    // in a bulk load without `with_capacity`.
                    let n = w.groups.len();
                    let groups = if within_load(4 * (w.len + 1), 3 * n) {
                        n
                    } else {
                        (n * 5 / 4).max(n + 1).max(groups_for(w.len + 1))
                    };
                    w.groups = w.rebuild(groups, hash);
                    w.used = w.len;
                    self.publish(&w);
                }
                let off = self.append(&mut w, key, &entry, seq);
                let (h32, c) = split_hash(key_hash);
                let (_, was_empty) = self.write(|| table::insert(&w.groups, h32, c, off));
                w.used += usize::from(was_empty);
                w.len += 1;
                self.len.store(w.len, Relaxed);
            }
        }
        (true, previous)
    }

    /// Removes `key` if `expected` is `None` or equals its entry. Returns
    /// the removed entry.
    pub(crate) fn remove(
        &self,
        key: &[u8],
        (key_hash, hash): (u64, Hasher<'_>),
        expected: Option<&Entry>,
    ) -> Option<Entry> {
        let mut w = self.lock();
        let removed = self.remove_locked(&mut w, key, key_hash, expected);
        if removed.is_some() {
            self.maintain(&mut w, hash);
        }
        removed
    }

    /// Removes each `(key, expected)` whose current entry is still
    /// `expected`, under one hold of the writer lock.
    pub(crate) fn remove_batch<'k>(
        &self,
        hash: Hasher<'_>,
        batch: impl IntoIterator<Item = (&'k [u8], Entry)>,
    ) {
        let mut w = self.lock();
        let mut removed = false;
        for (key, expected) in batch {
            removed |= self
                .remove_locked(&mut w, key, hash.hash_key(key), Some(&expected))
                .is_some();
        }
        if removed {
            self.maintain(&mut w, hash);
        }
    }

    fn remove_locked(
        &self,
        w: &mut Writer,
        key: &[u8],
        key_hash: u64,
        expected: Option<&Entry>,
    ) -> Option<Entry> {
        let found = w.find(key, key_hash)?;
        if let Some(expected) = expected
            && found.entry != *expected
        {
            return None;
        }
        let emptied = self.write(|| {
            w.bury(&found);
            table::remove(&w.groups, found.pos)
        });
        w.used -= usize::from(emptied);
        w.len -= 1;
        self.len.store(w.len, Relaxed);
        Some(found.entry)
    }

    /// Copies the shard's keys into `keys` and its entries into `out`
    /// (both cleared first). Tries a few optimistic copies validated by the
    /// seqlock; if writers keep interfering, copies under the writer lock,
    /// which holds a writer up for one copy at most.
    pub(crate) fn snapshot(&self, keys: &mut Vec<u8>, out: &mut Vec<Copied>) {
        self.load();
        for _ in 0..OPTIMISTIC_SNAPSHOTS {
            let v1 = self.version.load(Acquire);
            if v1 & 1 == 1 {
                spin_loop();
                continue;
            }
            keys.clear();
            out.clear();
            let storage = self.storage.load();
            let copied = storage.view().copy_all(keys, out);
            fence(Acquire);
            if copied.is_ok() && self.version.load(Relaxed) == v1 {
                return;
            }
        }
        let w = self.lock();
        keys.clear();
        out.clear();
        w.view().copy_all(keys, out).expect(CONSISTENT);
    }

    /// Heap bytes held by the shard (not counting the shard struct itself),
    /// from the lengths and capacities of its allocations. A shard not
    /// loaded yet holds only its empty table (what its loader holds is
    /// the loader's).
    pub(crate) fn memory_usage(&self) -> usize {
        let w = self.writer.lock();
        let words = size_of::<AtomicU64>();
        // The `Arc`'s header is padded to the groups' alignment.
        let groups = size_of::<Group>() * (1 + w.groups.len());
        let chunks: usize = w
            .chunks
            .iter()
            .map(|chunk| ARC_HEADER + chunk.len() * words)
            .sum();
        let directory = w.chunks.capacity() * size_of::<Words>();
        let published = ARC_HEADER + size_of::<Storage>() + w.chunks.len() * size_of::<Words>();
        groups + chunks + directory + published
    }

    /// Runs `f`, which changes words that readers can reach, inside a
    /// seqlock write section. Must be called with the writer lock held.
    fn write<R>(&self, f: impl FnOnce() -> R) -> R {
        let v = self.version.load(Relaxed);
        debug_assert!(v & 1 == 0, "kv-index: nested seqlock write");
        self.version.store(v + 1, Relaxed);
        // Orders the odd version before the changes: a reader that sees any
        // change also sees the odd version on its second check.
        fence(Release);
        let result = f();
        self.version.store(v + 2, Release);
        result
    }

    /// Publishes the writer's slot table and chunks to readers.
    fn publish(&self, w: &Writer) {
        let storage = Arc::new(Storage {
            groups: Arc::clone(&w.groups),
            chunks: w.chunks.clone().into_boxed_slice(),
        });
        let old = self.write(|| self.storage.swap(storage));
        // Freed (if no reader holds it) outside the write section.
        drop(old);
    }

    /// Writes a new packed entry at the top of the arena, where no slot
    /// points yet (so outside a write section), and returns its offset.
    fn append(&self, w: &mut Writer, key: &[u8], entry: &Entry, seq: Option<u64>) -> usize {
        let has_expiry = entry.expires_at != 0;
        let words = entry_words(key.len(), has_expiry, seq.is_some());
        if w.reserve(words) {
            self.publish(w);
        }
        w.seqs |= seq.is_some();
        let off = w.top;
        let (meta, n) = encode_meta(key.len(), entry, has_expiry, seq);
        let key_words = key.chunks(size_of::<u64>()).map(pack_key_word);
        for (i, word) in meta[..n].iter().copied().chain(key_words).enumerate() {
            store(&w.chunks, off + i, word);
        }
        w.top += words;
        off
    }

    /// Compacts the arena when garbage passes its threshold, and shrinks a
    /// table that has become mostly empty.
    fn maintain(&self, w: &mut Writer, hash: Hasher<'_>) {
        let n = w.groups.len();
        let shrink = n > 1 && w.len * MAX_LOAD_DEN < n * GROUP_SLOTS;
        let compact = (w.garbage >= COMPACT_MIN_GARBAGE && w.garbage * COMPACT_RATIO > w.top)
            || (w.len == 0 && w.top > 0);
        let groups = if shrink { groups_for(w.len * 2) } else { n };
        if compact {
            self.repack(w, groups, hash, true);
        } else if shrink {
            w.groups = w.rebuild(groups, hash);
            w.used = w.len;
            self.publish(w);
        }
    }

    /// Drops every entry's sequence number word, by copying the live
    /// entries into a fresh arena and table (`repack`); a table sized far
    /// ahead of its keys (by a loader's estimate) shrinks to a load of
    /// about 0.7. A shard not loaded yet has none, and stays unloaded.
    pub(crate) fn forget_seqs(&self, hash: Hasher<'_>) {
        if !self.is_loaded() {
            return;
        }
        let mut w = self.lock();
        if w.seqs {
            let need = groups_for(w.len);
            let groups = if w.groups.len() > 2 * need {
                need + need / 4
            } else {
                w.groups.len()
            };
            self.repack(&mut w, groups, hash, false);
        }
    }

    /// Copies the live entries, in arena order (sequential reads) and
    /// without expiry or sequence number words an overwrite in place set
    /// to 0 (nor any sequence number unless `keep_seqs`), into a fresh
    /// arena, places them in a fresh table of `groups` groups by their
    /// hashes (which clears deleted slots), and publishes both. Readers of
    /// the old storage keep it alive until they are done; the writer never
    /// changes it again.
    fn repack(&self, w: &mut Writer, groups: usize, hash: Hasher<'_>, keep_seqs: bool) {
        let view = w.view();
        let kept = |off: usize, head: Head| {
            let entry = view.read_meta(off, head).expect(CONSISTENT);
            let seq = Some(view.read_seq(off, head).expect(CONSISTENT))
                .filter(|&seq| keep_seqs && seq != 0);
            (entry, seq)
        };
        // Sized exactly: dropped words leave no idle room at the end.
        let words = view
            .live(w.top)
            .map(|(off, head)| {
                let (entry, seq) = kept(off, head);
                entry_words(head.key_len, entry.expires_at != 0, seq.is_some())
            })
            .sum();
        let chunks = chunks_for(words);
        let table = empty_groups(groups);
        let mut key = Vec::new();
        let mut top = 0;
        for (off, head) in view.live(w.top) {
            let (entry, seq) = kept(off, head);
            let (meta, n) = encode_meta(head.key_len, &entry, entry.expires_at != 0, seq);
            key.clear();
            view.push_key(off, head, &mut key).expect(CONSISTENT);
            let key_words = key.chunks(size_of::<u64>()).map(pack_key_word);
            let mut end = top;
            for word in meta[..n].iter().copied().chain(key_words) {
                store(&chunks, end, word);
                end += 1;
            }
            let (h32, c) = split_hash(hash.hash_key(&key));
            table::insert(&table, h32, c, top);
            top = end;
        }
        w.groups = table;
        w.chunks = chunks;
        w.top = top;
        w.garbage = 0;
        w.used = w.len;
        w.seqs &= keep_seqs;
        self.publish(w);
    }
}

/// Exponential spinning, then yielding, while a writer holds the version
/// odd.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    /// Spins up to this many times as 2^n before yielding instead.
    const SPIN_LIMIT: u32 = 6;

    fn snooze(&mut self) {
        if self.0 <= Self::SPIN_LIMIT {
            for _ in 0..1u32 << self.0 {
                spin_loop();
            }
            self.0 += 1;
        } else {
            yield_now();
        }
    }
}

#[cfg(test)]
impl Shard {
    /// Checks the shard's invariants under the writer lock: every key is
    /// found where it lies by its own hash, the key and used counts, the
    /// load limit, and that `top - garbage` is exactly the words the slots
    /// point to. Returns the number of slots.
    pub(crate) fn check(&self, hash: Hasher<'_>) -> usize {
        let w = self.lock();
        assert_eq!(self.version.load(Relaxed) & 1, 0);
        let storage = self.storage.load();
        assert!(Arc::ptr_eq(&storage.groups, &w.groups), "published groups");
        assert_eq!(storage.chunks.len(), w.chunks.len(), "published chunks");
        for (a, b) in storage.chunks.iter().zip(&w.chunks) {
            assert!(Arc::ptr_eq(a, b), "published chunk");
        }
        for chunk in w.chunks.iter().rev().skip(1) {
            assert_eq!(chunk.len(), CHUNK_WORDS, "only the last chunk is short");
        }
        let n = w.groups.len();
        assert!(n >= 1);
        let view = w.view();
        let (mut len, mut used, mut live) = (0, 0, 0);
        let mut key = Vec::new();
        for (g, group) in w.groups.iter().enumerate() {
            for i in 0..GROUP_SLOTS {
                let c = group.ctrl(i);
                if c == EMPTY || c == table::DELETED {
                    assert_eq!(group.offset(i), None, "a free slot holds no offset");
                    used += usize::from(c == table::DELETED);
                    continue;
                }
                assert!(c & table::FULL != 0, "control byte {c:#x}");
                let off = group.offset(i).expect("a full slot holds an offset");
                len += 1;
                used += 1;
                let head = Head::decode(view.word(off).unwrap());
                assert!(off + head.entry_words() <= w.top);
                live += head.entry_words();
                key.clear();
                view.push_key(off, head, &mut key).unwrap();
                let key_hash = hash.hash_key(&key);
                assert_eq!(split_hash(key_hash).1, c, "the control byte is the key's");
                let found = view
                    .find(&key, key_hash)
                    .unwrap()
                    .expect("found by its hash");
                assert_eq!(found.pos, g * GROUP_SLOTS + i, "found where it lies");
            }
        }
        assert!(
            w.groups.iter().all(|g| g.ctrl_words()[1] >> 32 == 0),
            "the spare control bytes stay 0"
        );
        assert_eq!(len, w.len);
        assert_eq!(len, self.len());
        assert_eq!(used, w.used);
        assert_eq!(live + w.garbage, w.top, "garbage accounting");
        // A walk of the arena finds the live entries and the garbage.
        let (mut off, mut walked_live, mut walked_dead) = (0, 0, 0);
        while off < w.top {
            let head = Head::decode(view.word(off).unwrap());
            if head.dead {
                walked_dead += head.entry_words();
            } else {
                walked_live += 1;
            }
            off += head.entry_words();
        }
        assert_eq!(off, w.top, "the arena walk ends at the top");
        assert_eq!((walked_live, walked_dead), (len, w.garbage), "dead marks");
        assert!(w.top <= arena_capacity(&w.chunks));
        assert!(within_load(used, n));
        n * GROUP_SLOTS
    }
}
