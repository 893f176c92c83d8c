//! A shard's image: its slot table and entries as bytes, so that an index
//! saved by the engine at a clean close is loaded again without hashing a
//! key or probing a table: decoding writes the slots and the arena in
//! order.
//!
//! ```text
//! Format: { len u64 | group_count u64 } entries [len]
//! entry:  { position_delta varint | ctrl u8 | key_len varint | flags u8
//!         | record_len varint | segment varint | offset varint
//!         | [ expires_at u64, if flags has HAS_EXPIRY ] | key [key_len] }
//! ```
//!
//! Integers are little-endian; a varint is LEB128 (at most ten bytes, no
//! bits past 64). `len` keys in a table of `group_count` groups of 12
//! slots (`table.rs`); one entry per full slot, in slot order, and no
//! deleted slot. `position_delta` is the slot's position less the previous
//! full slot's, less one (the first: its position), and `ctrl` its control
//! byte (7 hash bits and the full bit), so the table is rebuilt exactly as
//! it was. Flags: bit 0 tombstone, bit 1 an `expires_at` follows (never 0).
//! The arena is rebuilt packed, in slot order, without garbage.
//!
//! The bytes are only as sound as whatever stored them (the engine
//! checksums its file), but [`ShardImage::decode`] still checks every
//! invariant a lookup relies on and refuses an image that breaks one: every
//! field in range, positions inside the table and in order, every control
//! byte full, the load within its maximum, the count of entries and the
//! end of the bytes. It cannot check that a key lies where its hash leads:
//! that would take a hash per key, part of the cost the image exists to
//! avoid. A key that does not is not found, and nothing worse.

use crate::entry::{Entry, encode_meta, entry_words, pack_key_word};
use crate::shard::{CHUNK_WORDS, MAX_ARENA_WORDS, MIN_CHUNK_WORDS, Words};
use crate::sync::AtomicU64;
use crate::table::{FULL, GROUP_SLOTS, Groups, empty_groups, groups_for, slot_at, within_load};

/// Bytes of an image's header.
const HEADER_LEN: usize = 16;
/// Flag: the record is a tombstone.
const TOMBSTONE: u8 = 1;
/// Flag: an `expires_at` follows.
const HAS_EXPIRY: u8 = 2;
/// The longest a varint is.
const MAX_VARINT_LEN: usize = 10;

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a shard image of this build: the reason says
    /// which check failed. Rebuild the index from the data instead.
    #[error("the index image of shard {shard} is malformed: {reason}")]
    Malformed {
        /// The shard, counting from 0.
        shard: usize,
        /// The check that failed.
        reason: String,
    },
    /// Not one image per shard.
    #[error("an index needs {expected} shard images, got {got}")]
    ShardCount {
        /// [`SHARDS`](crate::SHARDS).
        expected: usize,
        /// Images given.
        got: usize,
    },
}

/// Where a lazily loaded index ([`Index::lazy`](crate::Index::lazy))
/// gets the contents of its shards.
pub trait ShardLoader: Send + Sync {
    /// The contents of shard `shard` (`0..SHARDS`), decoded. Called at
    /// most once per shard, by the first operation that touches it (a
    /// lookup, a write, an iteration or an image), on that operation's
    /// thread and with the shard's writer lock held: every other operation
    /// on the shard waits for it, so it must not use the index it loads.
    ///
    /// It cannot fail: a loader whose image turns out bad must build the
    /// shard some other way (the engine rebuilds it from its segments),
    /// or give an empty shard and tell its own users that the index is
    /// incomplete. The key count given to [`Index::lazy`](crate::Index::lazy)
    /// is replaced by the image's.
    fn load(&self, shard: usize) -> ShardImage;
}

/// One shard's slot table and arena, decoded from its image and checked
/// (see [`ShardImage::decode`]); [`Index::from_shard_images`](crate::Index::from_shard_images)
/// makes an index of them.
pub struct ShardImage {
    pub(crate) len: usize,
    pub(crate) groups: Groups,
    pub(crate) chunks: Vec<Words>,
    pub(crate) top: usize,
}

impl std::fmt::Debug for ShardImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardImage")
            .field("len", &self.len)
            .field("groups", &self.groups.len())
            .field("top", &self.top)
            .finish()
    }
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Writes one shard's image, entry by entry in slot order.
pub(crate) struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    next_pos: usize,
}

impl<'a> Encoder<'a> {
    /// Starts the image of a shard of `len` keys in `groups` groups.
    pub(crate) fn new(out: &'a mut Vec<u8>, len: usize, groups: usize) -> Encoder<'a> {
        out.extend_from_slice(&(len as u64).to_le_bytes());
        out.extend_from_slice(&(groups as u64).to_le_bytes());
        Encoder { out, next_pos: 0 }
    }

    /// Appends the entry of the full slot at `pos` (above the previous
    /// one's), with control byte `ctrl`, `entry` and `key`.
    pub(crate) fn push(&mut self, pos: usize, ctrl: u8, entry: &Entry, key: &[u8]) {
        debug_assert!(pos >= self.next_pos);
        put_varint(self.out, (pos - self.next_pos) as u64);
        self.next_pos = pos + 1;
        self.out.push(ctrl);
        put_varint(self.out, key.len() as u64);
        let mut flags = 0;
        if entry.tombstone {
            flags |= TOMBSTONE;
        }
        if entry.expires_at != 0 {
            flags |= HAS_EXPIRY;
        }
        self.out.push(flags);
        for x in [entry.len, entry.segment, entry.offset] {
            put_varint(self.out, u64::from(x));
        }
        if entry.expires_at != 0 {
            self.out.extend_from_slice(&entry.expires_at.to_le_bytes());
        }
        self.out.extend_from_slice(key);
    }
}

/// Reads an image's fields in order; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(x))
    }

    /// A varint; `None` if it is cut short, longer than ten bytes, or
    /// past 64 bits.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // Most fields fit in one byte.
        let first = *self.bytes.get(self.at)?;
        if first < 0x80 {
            self.at += 1;
            return Some(u64::from(first));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Option<u64> {
        let mut x = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7F);
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return None;
            }
            x |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Some(x);
            }
        }
        None
    }

    #[inline]
    fn varint_u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }
}

/// An arena written word by word into chunks: full chunks, then a last
/// one rounded up to [`MIN_CHUNK_WORDS`] (as the shard grows them). One
/// chunk's worth is buffered, so decoding never holds a second copy of
/// the arena.
#[derive(Default)]
struct ArenaBuilder {
    chunks: Vec<Words>,
    current: Vec<u64>,
    top: usize,
}

impl ArenaBuilder {
    /// Appends `words`, splitting them where a chunk fills.
    fn extend(&mut self, mut words: &[u64]) {
        self.top += words.len();
        while !words.is_empty() {
            let room = CHUNK_WORDS - self.current.len();
            let (now, later) = words.split_at(room.min(words.len()));
            self.current.extend_from_slice(now);
            if self.current.len() == CHUNK_WORDS {
                self.flush(CHUNK_WORDS);
            }
            words = later;
        }
    }

    fn flush(&mut self, size: usize) {
        let chunk = (0..size)
            .map(|i| AtomicU64::new(self.current.get(i).copied().unwrap_or(0)))
            .collect();
        // (`current` keeps its capacity: one buffer for the whole shard.)
        self.chunks.push(chunk);
        self.current.clear();
    }

    fn finish(mut self) -> (Vec<Words>, usize) {
        if !self.current.is_empty() {
            self.flush(self.current.len().next_multiple_of(MIN_CHUNK_WORDS));
        }
        (self.chunks, self.top)
    }
}

impl ShardImage {
    /// The image of an empty shard.
    pub fn empty() -> ShardImage {
        let mut bytes = Vec::new();
        Encoder::new(&mut bytes, 0, 1);
        ShardImage::decode(0, &bytes).expect("kv-index: an empty image decodes")
    }

    /// The keys in the shard.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shard holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decodes and checks the image of shard `shard` (the number is only
    /// for the error), as written by
    /// [`Index::encode_shard_image`](crate::Index::encode_shard_image).
    ///
    /// # Errors
    ///
    /// [`ImageError::Malformed`] if the bytes break any invariant of a
    /// shard (see the module docs). Nothing is allocated from a length
    /// before it is checked against the bytes there are: the table is at
    /// most twice the size its keys need, and every key takes bytes.
    pub fn decode(shard: usize, bytes: &[u8]) -> Result<ShardImage, ImageError> {
        let bad = |reason: String| ImageError::Malformed { shard, reason };
        let mut r = Reader { bytes, at: 0 };
        let (Some(len), Some(groups)) = (r.u64(), r.u64()) else {
            return Err(bad(format!(
                "{} bytes is shorter than a header",
                bytes.len()
            )));
        };
        // Each entry takes at least 7 bytes (its fields, with an empty
        // key).
        let most_keys = (bytes.len() - HEADER_LEN) / 7;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= most_keys)
            .ok_or_else(|| bad(format!("{len} keys do not fit in {} bytes", bytes.len())))?;
        let groups = usize::try_from(groups)
            .ok()
            .filter(|&groups| groups >= 1 && groups <= 2 * groups_for(len))
            .ok_or_else(|| bad(format!("{groups} groups is out of range for {len} keys")))?;
        if !within_load(len, groups) {
            return Err(bad(format!("{len} keys overload {groups} groups")));
        }
        let slots = groups * GROUP_SLOTS;

        let table = empty_groups(groups);
        let mut arena = ArenaBuilder {
            current: Vec::with_capacity(CHUNK_WORDS),
            ..ArenaBuilder::default()
        };
        let mut key_words = Vec::new();
        let mut next_pos = 0usize;
        for i in 0..len {
            let malformed = || bad(format!("entry {i} is malformed or cut short"));
            let delta = r.varint().ok_or_else(malformed)?;
            let pos = usize::try_from(delta)
                .ok()
                .and_then(|d| next_pos.checked_add(d))
                .filter(|&pos| pos < slots)
                .ok_or_else(|| bad(format!("entry {i} lies past the {slots} slots")))?;
            let ctrl = r.u8().ok_or_else(malformed)?;
            if ctrl & FULL == 0 {
                return Err(bad(format!(
                    "slot {pos} has control byte {ctrl:#04x}, not a full one"
                )));
            }
            let key_len = r
                .varint()
                .and_then(|k| usize::try_from(k).ok())
                .filter(|&k| k <= crate::MAX_KEY_LEN)
                .ok_or_else(malformed)?;
            let flags = r.u8().filter(|f| f & !(TOMBSTONE | HAS_EXPIRY) == 0);
            let flags = flags.ok_or_else(malformed)?;
            let record_len = r.varint_u32().ok_or_else(malformed)?;
            let segment = r.varint_u32().ok_or_else(malformed)?;
            let offset = r.varint_u32().ok_or_else(malformed)?;
            let expires_at = if flags & HAS_EXPIRY != 0 {
                r.u64().filter(|&e| e != 0).ok_or_else(malformed)?
            } else {
                0
            };
            let key = r.take(key_len).ok_or_else(malformed)?;
            next_pos = pos + 1;

            let entry = Entry {
                segment,
                offset,
                len: record_len,
                expires_at,
                tombstone: flags & TOMBSTONE != 0,
            };
            let off = arena.top;
            if off + entry_words(key_len, expires_at != 0, false) > MAX_ARENA_WORDS {
                return Err(bad("the arena passes its largest size".into()));
            }
            let (meta, n) = encode_meta(key_len, &entry, expires_at != 0, None);
            arena.extend(&meta[..n]);
            key_words.clear();
            key_words.extend(key.chunks(size_of::<u64>()).map(pack_key_word));
            arena.extend(&key_words);
            let (g, i) = slot_at(pos);
            table[g].set_offset(i, Some(off));
            table[g].set_ctrl(i, ctrl);
        }
        if r.at != bytes.len() {
            return Err(bad(format!(
                "{} bytes follow the last of its {len} entries",
                bytes.len() - r.at
            )));
        }
        let (chunks, top) = arena.finish();
        Ok(ShardImage {
            len,
            groups: table,
            chunks,
            top,
        })
    }
}
