//! One shard: a Robin Hood slot table and a word arena, both made of
//! atomics, read optimistically under a seqlock and written under a mutex.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{
    ArcSwap, AtomicBool, AtomicU64, AtomicUsize, Mutex, fence, spin_loop, yield_now,
};

use crate::entry::{
    EXPIRY_WORD, Entry, HEAD_WORD, Head, LOCATION_WORD, SEQ_WORD, decode_entry, encode_meta,
    entry_words, key_words, pack_key_word,
};
use crate::image::{self, ShardImage, ShardLoader};

/// A run of atomic words: a slot table or an arena chunk. Shared between the
/// writer and every published [`Storage`] that still uses it.
pub(crate) type Words = Arc<[AtomicU64]>;

// Format: slot u64 = { arena_offset + 1 u32 | tag u32 }, and 0 = empty.
//
// The tag is 32 bits of the key's hash. It also decides the slot's home
// position (`home`), so the table can be rebuilt from the slots alone,
// without reading a key from the arena.

/// The value of an empty slot.
const EMPTY: u64 = 0;
/// The smallest slot table.
pub(crate) const MIN_SLOTS: usize = 16;
/// The table grows before more than 7/8 of its slots are used.
pub(crate) const MAX_LOAD_NUM: usize = 7;
/// Denominator of the maximum load factor.
pub(crate) const MAX_LOAD_DEN: usize = 8;

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

pub(crate) fn make_slot(tag: u32, offset: usize) -> u64 {
    debug_assert!(offset < MAX_ARENA_WORDS);
    u64::from(tag) << u32::BITS | (offset as u64 + 1)
}

fn slot_tag(slot: u64) -> u32 {
    (slot >> u32::BITS) as u32
}

/// The arena offset of an occupied slot; `None` only for an empty slot.
fn slot_offset(slot: u64) -> Option<usize> {
    (slot as u32).checked_sub(1).map(|off| off as usize)
}

/// The home position of a tag in a table of `cap` slots: the tag scaled to
/// `[0, cap)` (multiply-shift), so tables need not be powers of two.
pub(crate) fn home(tag: u32, cap: usize) -> usize {
    ((u64::from(tag) * cap as u64) >> u32::BITS) as usize
}

/// How far `pos` is past `home`, wrapping around the end of the table.
pub(crate) fn distance(pos: usize, home: usize, cap: usize) -> usize {
    if pos >= home {
        pos - home
    } else {
        pos + cap - home
    }
}

fn next(pos: usize, cap: usize) -> usize {
    if pos + 1 == cap { 0 } else { pos + 1 }
}

/// The smallest table that holds `len` keys within the maximum load.
pub(crate) fn slots_for(len: usize) -> usize {
    (len * MAX_LOAD_DEN).div_ceil(MAX_LOAD_NUM).max(MIN_SLOTS)
}

pub(crate) fn zeroed(len: usize) -> Words {
    (0..len).map(|_| AtomicU64::new(0)).collect()
}

/// Inserts `slot` into a table that does not hold its key and has an empty
/// slot, keeping the Robin Hood order: along any probe sequence, slots are
/// sorted by home position, so a lookup stops at the first slot that is
/// closer to its home than the lookup is to its own.
fn rh_insert(slots: &[AtomicU64], mut slot: u64) {
    let cap = slots.len();
    let mut pos = home(slot_tag(slot), cap);
    let mut dist = 0;
    loop {
        let current = slots[pos].load(Relaxed);
        if current == EMPTY {
            slots[pos].store(slot, Relaxed);
            return;
        }
        let current_dist = distance(pos, home(slot_tag(current), cap), cap);
        if current_dist < dist {
            slots[pos].store(slot, Relaxed);
            slot = current;
            dist = current_dist;
        }
        pos = next(pos, cap);
        dist += 1;
        debug_assert!(dist <= cap, "kv-index: slot table is full");
    }
}

/// Empties the slot at `pos` by backward-shift deletion: the following
/// slots of its cluster that are not at home move back one position. No
/// tombstones are left, so probe lengths do not degrade with churn.
fn rh_remove(slots: &[AtomicU64], mut pos: usize) {
    let cap = slots.len();
    loop {
        let after = next(pos, cap);
        let slot = slots[after].load(Relaxed);
        if slot == EMPTY || distance(after, home(slot_tag(slot), cap), cap) == 0 {
            slots[pos].store(EMPTY, Relaxed);
            return;
        }
        slots[pos].store(slot, Relaxed);
        pos = after;
    }
}

/// A copy of `slots` rehashed into a table of `cap` slots.
fn rehash(slots: &[AtomicU64], cap: usize) -> Words {
    let table = zeroed(cap);
    for slot in slots.iter().map(|slot| slot.load(Relaxed)) {
        if slot != EMPTY {
            rh_insert(&table, slot);
        }
    }
    table
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
    slots: &'a [AtomicU64],
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
    fn find(&self, key: &[u8], tag: u32) -> Result<Option<Found>, Torn> {
        let cap = self.slots.len();
        if cap == 0 {
            return Ok(None);
        }
        let start = home(tag, cap);
        let mut pos = start;
        for dist in 0..cap {
            let slot = self.slots.get(pos).ok_or(Torn)?.load(Relaxed);
            if slot == EMPTY {
                return Ok(None);
            }
            let slot_tag = slot_tag(slot);
            if distance(pos, home(slot_tag, cap), cap) < dist {
                return Ok(None);
            }
            if slot_tag == tag {
                let off = slot_offset(slot).ok_or(Torn)?;
                if let Some((head, entry)) = self.read_if_key(off, key)? {
                    return Ok(Some(Found {
                        pos,
                        off,
                        head,
                        entry,
                    }));
                }
            }
            pos = next(pos, cap);
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
        let seq = self.word(off + SEQ_WORD)?;
        let expires_at = if head.has_expiry {
            self.word(off + EXPIRY_WORD)?
        } else {
            0
        };
        Ok(decode_entry(head, location, seq, expires_at))
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
        for slot in self.slots.iter().map(|slot| slot.load(Relaxed)) {
            let Some(off) = slot_offset(slot) else {
                continue;
            };
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
}

/// What readers see of a shard: published whole through an [`ArcSwap`].
/// The slot table and chunks are shared with the writer, which keeps
/// changing them in place under the seqlock.
struct Storage {
    slots: Words,
    chunks: Box<[Words]>,
}

impl Storage {
    fn view(&self) -> View<'_> {
        View {
            slots: &self.slots,
            chunks: &self.chunks,
        }
    }
}

/// The writer's state of a shard, behind the shard mutex.
struct Writer {
    /// The slot table; the same one the published storage holds.
    slots: Words,
    /// The arena chunks; the same ones the published storage holds.
    chunks: Vec<Words>,
    /// Arena words handed out so far; the arena is a bump allocator.
    top: usize,
    /// Words below `top` that no slot points to: removed and relocated
    /// entries.
    garbage: usize,
    /// Keys in the shard.
    len: usize,
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
            slots: &self.slots,
            chunks: &self.chunks,
        }
    }

    fn find(&self, key: &[u8], tag: u32) -> Option<Found> {
        self.view().find(key, tag).expect(CONSISTENT)
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
    /// An empty shard with a table of `slots` slots.
    pub(crate) fn new(slots: usize) -> Shard {
        let slots = zeroed(slots.max(MIN_SLOTS));
        Shard {
            version: AtomicU64::new(0),
            storage: ArcSwap::from_pointee(Storage {
                slots: slots.clone(),
                chunks: Box::new([]),
            }),
            len: AtomicUsize::new(0),
            loaded: AtomicBool::new(true),
            writer: Mutex::new(Writer {
                slots,
                chunks: Vec::new(),
                top: 0,
                garbage: 0,
                len: 0,
                pending: None,
            }),
        }
    }

    /// A shard of `len` keys that `loader` gives when it is first touched.
    pub(crate) fn pending(len: usize, loader: Arc<dyn ShardLoader>, shard: usize) -> Shard {
        let mut pending = Shard::new(0);
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
        let shard = Shard::new(0);
        shard.install(&mut shard.writer.lock(), image);
        shard
    }

    /// Makes `image` the shard's contents and publishes them: the writer
    /// lock is held (`w`).
    fn install(&self, w: &mut Writer, image: ShardImage) {
        let ShardImage {
            len,
            slots,
            chunks,
            top,
        } = image;
        w.slots = slots;
        w.chunks = chunks;
        w.top = top;
        w.garbage = 0;
        w.len = len;
        self.publish(w);
        self.len.store(len, Relaxed);
    }

    /// Appends the shard's image (`image.rs`) to `out`, taken under the
    /// writer lock, so it is one consistent state. A table more than twice
    /// the size its keys need (sized ahead for a load that found fewer
    /// keys) is saved rehashed to the size they need.
    pub(crate) fn encode_image(&self, out: &mut Vec<u8>) {
        let w = self.lock();
        let slots = if w.slots.len() > 2 * slots_for(w.len) {
            rehash(&w.slots, slots_for(w.len))
        } else {
            Arc::clone(&w.slots)
        };
        let view = w.view();
        let mut encoder = image::Encoder::new(out, w.len, slots.len());
        let mut key = Vec::new();
        for (pos, slot) in slots.iter().map(|slot| slot.load(Relaxed)).enumerate() {
            let Some(off) = slot_offset(slot) else {
                continue;
            };
            let head = Head::decode(view.word(off + HEAD_WORD).expect(CONSISTENT));
            let entry = view.read_meta(off, head).expect(CONSISTENT);
            key.clear();
            view.push_key(off, head, &mut key).expect(CONSISTENT);
            encoder.push(pos, slot_tag(slot), &entry, &key);
        }
    }

    /// Keys in the shard.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Looks `key` up without locking or writing shared memory.
    pub(crate) fn get(&self, key: &[u8], tag: u32) -> Option<Entry> {
        self.load();
        let mut backoff = Backoff::default();
        loop {
            let v1 = self.version.load(Acquire);
            if v1 & 1 == 0 {
                let storage = self.storage.load();
                let found = storage.view().find(key, tag);
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

    /// Sets `key` to `entry` if `accept` says so of the current entry
    /// (`None` when the key is absent); `accept` runs under the shard's
    /// writer lock, so the check and the change are one atomic step.
    /// Returns whether it did, and the entry it found.
    pub(crate) fn upsert(
        &self,
        key: &[u8],
        tag: u32,
        entry: Entry,
        accept: impl FnOnce(Option<&Entry>) -> bool,
    ) -> (bool, Option<Entry>) {
        let mut w = self.lock();
        let found = w.find(key, tag);
        let previous = found.map(|found| found.entry);
        if !accept(previous.as_ref()) {
            return (false, previous);
        }
        match found {
            Some(found) if entry.expires_at == 0 || found.head.has_expiry => {
                // Overwrite in place: same words, no new arena space.
                let (meta, n) = encode_meta(key.len(), &entry, found.head.has_expiry);
                self.write(|| {
                    for (i, &word) in meta[..n].iter().enumerate() {
                        store(&w.chunks, found.off + i, word);
                    }
                });
            }
            Some(found) => {
                // The old entry has no expiry word to overwrite: relocate.
                let off = self.append(&mut w, key, &entry);
                self.write(|| w.slots[found.pos].store(make_slot(tag, off), Relaxed));
                w.garbage += found.head.entry_words();
                self.maintain(&mut w);
            }
            None => {
                if (w.len + 1) * MAX_LOAD_DEN > w.slots.len() * MAX_LOAD_NUM {
                    // NOTE: growing by 1.25x rather than 1.5x or 2x keeps
                    // the average load near 0.78 (about 10 bytes of slot
                    // per key) for some 8% more time in a bulk load without
                    // `with_capacity`; rehashing reads only the slots.
                    let cap = (w.slots.len() * 5 / 4).max(slots_for(w.len + 1));
                    w.slots = rehash(&w.slots, cap);
                    self.publish(&w);
                }
                let off = self.append(&mut w, key, &entry);
                self.write(|| rh_insert(&w.slots, make_slot(tag, off)));
                w.len += 1;
                self.len.store(w.len, Relaxed);
            }
        }
        (true, previous)
    }

    /// Removes `key` if `expected` is `None` or equals its entry. Returns
    /// the removed entry.
    pub(crate) fn remove(&self, key: &[u8], tag: u32, expected: Option<&Entry>) -> Option<Entry> {
        let mut w = self.lock();
        let removed = self.remove_locked(&mut w, key, tag, expected);
        if removed.is_some() {
            self.maintain(&mut w);
        }
        removed
    }

    /// Removes each `(key, tag, expected)` whose current entry is still
    /// `expected`, under one hold of the writer lock.
    pub(crate) fn remove_batch<'k>(&self, batch: impl IntoIterator<Item = (&'k [u8], u32, Entry)>) {
        let mut w = self.lock();
        let mut removed = false;
        for (key, tag, expected) in batch {
            removed |= self
                .remove_locked(&mut w, key, tag, Some(&expected))
                .is_some();
        }
        if removed {
            self.maintain(&mut w);
        }
    }

    fn remove_locked(
        &self,
        w: &mut Writer,
        key: &[u8],
        tag: u32,
        expected: Option<&Entry>,
    ) -> Option<Entry> {
        let found = w.find(key, tag)?;
        if let Some(expected) = expected
            && found.entry != *expected
        {
            return None;
        }
        self.write(|| rh_remove(&w.slots, found.pos));
        w.len -= 1;
        self.len.store(w.len, Relaxed);
        w.garbage += found.head.entry_words();
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
        let slots = ARC_HEADER + w.slots.len() * words;
        let chunks: usize = w
            .chunks
            .iter()
            .map(|chunk| ARC_HEADER + chunk.len() * words)
            .sum();
        let directory = w.chunks.capacity() * size_of::<Words>();
        let published = ARC_HEADER + size_of::<Storage>() + w.chunks.len() * size_of::<Words>();
        slots + chunks + directory + published
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
            slots: Arc::clone(&w.slots),
            chunks: w.chunks.clone().into_boxed_slice(),
        });
        let old = self.write(|| self.storage.swap(storage));
        // Freed (if no reader holds it) outside the write section.
        drop(old);
    }

    /// Writes a new packed entry at the top of the arena, where no slot
    /// points yet (so outside a write section), and returns its offset.
    fn append(&self, w: &mut Writer, key: &[u8], entry: &Entry) -> usize {
        let has_expiry = entry.expires_at != 0;
        let words = entry_words(key.len(), has_expiry);
        if w.reserve(words) {
            self.publish(w);
        }
        let off = w.top;
        let (meta, n) = encode_meta(key.len(), entry, has_expiry);
        let key_words = key.chunks(size_of::<u64>()).map(pack_key_word);
        for (i, word) in meta[..n].iter().copied().chain(key_words).enumerate() {
            store(&w.chunks, off + i, word);
        }
        w.top += words;
        off
    }

    /// Compacts the arena when garbage passes its threshold, and shrinks a
    /// table that has become mostly empty.
    fn maintain(&self, w: &mut Writer) {
        let shrink = w.slots.len() > MIN_SLOTS && w.len * MAX_LOAD_DEN < w.slots.len();
        let cap = if shrink {
            (w.len * 2).max(MIN_SLOTS)
        } else {
            w.slots.len()
        };
        let compact = (w.garbage >= COMPACT_MIN_GARBAGE && w.garbage * COMPACT_RATIO > w.top)
            || (w.len == 0 && w.top > 0);
        if compact {
            self.compact(w, cap);
        } else if shrink {
            w.slots = rehash(&w.slots, cap);
            self.publish(w);
        }
    }

    /// Copies the live entries into a fresh arena and a fresh table of `cap`
    /// slots, then publishes both. Readers of the old storage keep it alive
    /// until they are done; the writer never changes it again.
    fn compact(&self, w: &mut Writer, cap: usize) {
        let view = w.view();
        let chunks = chunks_for(w.top - w.garbage);
        let same_table = cap == w.slots.len();
        let slots = zeroed(cap);
        let mut top = 0;
        for (pos, slot) in w.slots.iter().map(|slot| slot.load(Relaxed)).enumerate() {
            let Some(off) = slot_offset(slot) else {
                continue;
            };
            let head = Head::decode(view.word(off + HEAD_WORD).expect(CONSISTENT));
            let entry = view.read_meta(off, head).expect(CONSISTENT);
            // Drops an expiry word that an overwrite in place set to 0.
            let has_expiry = entry.expires_at != 0;
            let (meta, n) = encode_meta(head.key_len, &entry, has_expiry);
            let key_off = off + head.meta_words();
            let key_words =
                (0..key_words(head.key_len)).map(|i| view.word(key_off + i).expect(CONSISTENT));
            for (i, word) in meta[..n].iter().copied().chain(key_words).enumerate() {
                store(&chunks, top + i, word);
            }
            let moved = make_slot(slot_tag(slot), top);
            if same_table {
                slots[pos].store(moved, Relaxed);
            } else {
                rh_insert(&slots, moved);
            }
            top += entry_words(head.key_len, has_expiry);
        }
        w.slots = slots;
        w.chunks = chunks;
        w.top = top;
        w.garbage = 0;
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
    /// Checks the shard's invariants under the writer lock: the Robin Hood
    /// order, the key count, and that `top - garbage` is exactly the words
    /// the slots point to. Returns the slot table length.
    pub(crate) fn check(&self) -> usize {
        let w = self.lock();
        assert_eq!(self.version.load(Relaxed) & 1, 0);
        let storage = self.storage.load();
        assert!(Arc::ptr_eq(&storage.slots, &w.slots), "published slots");
        assert_eq!(storage.chunks.len(), w.chunks.len(), "published chunks");
        for (a, b) in storage.chunks.iter().zip(&w.chunks) {
            assert!(Arc::ptr_eq(a, b), "published chunk");
        }
        for chunk in w.chunks.iter().rev().skip(1) {
            assert_eq!(chunk.len(), CHUNK_WORDS, "only the last chunk is short");
        }
        let cap = w.slots.len();
        assert!(cap >= MIN_SLOTS);
        let view = w.view();
        let (mut len, mut live) = (0, 0);
        for pos in 0..cap {
            let slot = w.slots[pos].load(Relaxed);
            let Some(off) = slot_offset(slot) else {
                continue;
            };
            len += 1;
            let dist = distance(pos, home(slot_tag(slot), cap), cap);
            if dist > 0 {
                let before_pos = (pos + cap - 1) % cap;
                let before = w.slots[before_pos].load(Relaxed);
                assert_ne!(before, EMPTY, "a displaced slot follows an occupied one");
                let before_dist = distance(before_pos, home(slot_tag(before), cap), cap);
                assert!(before_dist + 1 >= dist, "Robin Hood order");
            }
            let head = Head::decode(view.word(off).unwrap());
            assert!(off + head.entry_words() <= w.top);
            live += head.entry_words();
        }
        assert_eq!(len, w.len);
        assert_eq!(len, self.len());
        assert_eq!(live + w.garbage, w.top, "garbage accounting");
        assert!(w.top <= arena_capacity(&w.chunks));
        assert!(len * MAX_LOAD_DEN <= cap * MAX_LOAD_NUM);
        cap
    }
}
