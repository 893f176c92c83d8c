//! A shard's image: its slot table and arena as bytes, so that an index
//! saved by the engine at a clean close is loaded again without hashing a
//! key or probing a table.
//!
//! ```text
//! Format: { len u64 | slot_count u64 | top u64 | garbage u64
//!         | slots [u64; slot_count] | arena [u64; top] }
//! ```
//!
//! Every word is little-endian; slots and arena words are exactly the
//! shard's (see the crate's "Memory layout"): `len` keys, a table of
//! `slot_count` slots, `top` arena words of which `garbage` are removed or
//! moved entries.
//!
//! The bytes are only as sound as whatever stored them (the engine
//! checksums its file), but [`ShardImage::decode`] still checks every
//! invariant a lookup relies on and refuses an image that breaks one: the
//! arena parses as back-to-back entries ending at `top`, every slot points
//! at the start of a distinct entry, the table is in Robin Hood order and
//! within its maximum load, and the keys, live words and garbage add up.
//! The checks read the bytes in order (plus a bitmap of entry starts that
//! fits in cache), so they cost little next to the copy. They cannot check
//! that a key lies in the slot its hash chooses: that would take a hash and
//! a random read per key, the cost the image exists to avoid.

use std::sync::atomic::Ordering::Relaxed;

use crate::entry::{HEAD_WORD, Head};
use crate::shard::{
    CHUNK_WORDS, EMPTY, MAX_ARENA_WORDS, MAX_LOAD_DEN, MAX_LOAD_NUM, MIN_CHUNK_WORDS, MIN_SLOTS,
    Words, distance, home, slot_offset, slot_tag,
};
use crate::sync::AtomicU64;

/// Words of an image's header.
const HEADER_WORDS: usize = 4;

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

/// One shard's slot table and arena, decoded from its image and checked
/// (see [`ShardImage::decode`]); [`Index::from_shard_images`](crate::Index::from_shard_images)
/// makes an index of them.
pub struct ShardImage {
    pub(crate) len: usize,
    pub(crate) slots: Words,
    pub(crate) chunks: Vec<Words>,
    pub(crate) top: usize,
    pub(crate) garbage: usize,
}

impl std::fmt::Debug for ShardImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardImage")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .field("top", &self.top)
            .field("garbage", &self.garbage)
            .finish()
    }
}

/// Appends the image of a shard to `out`: `len` keys, its slot table, and
/// the first `top` words of its arena (`chunks`) of which `garbage` are
/// garbage.
pub(crate) fn encode(
    len: usize,
    slots: &[AtomicU64],
    chunks: &[Words],
    top: usize,
    garbage: usize,
    out: &mut Vec<u8>,
) {
    out.reserve((HEADER_WORDS + slots.len() + top) * size_of::<u64>());
    for word in [len, slots.len(), top, garbage] {
        out.extend_from_slice(&(word as u64).to_le_bytes());
    }
    for slot in slots.iter() {
        out.extend_from_slice(&slot.load(Relaxed).to_le_bytes());
    }
    let arena = chunks.iter().flat_map(|chunk| chunk.iter()).take(top);
    for word in arena {
        out.extend_from_slice(&word.load(Relaxed).to_le_bytes());
    }
}

/// Word `i` of `bytes` (which the caller has checked holds it).
fn word_at(bytes: &[u8], i: usize) -> u64 {
    let at = i * size_of::<u64>();
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + size_of::<u64>()]);
    u64::from_le_bytes(word)
}

/// A bitmap of arena offsets.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Clears bit `i`; returns whether it was set.
    fn take(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.0.get(word).is_some_and(|w| w & bit != 0);
        if was {
            self.0[word] &= !bit;
        }
        was
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

impl ShardImage {
    /// Decodes and checks the image of shard `shard` (the number is only
    /// for the error), as written by
    /// [`Index::encode_shard_image`](crate::Index::encode_shard_image).
    ///
    /// # Errors
    ///
    /// [`ImageError::Malformed`] if the bytes break any invariant of a
    /// shard (see the module docs); nothing is allocated from a length
    /// before it is checked against the bytes there are.
    pub fn decode(shard: usize, bytes: &[u8]) -> Result<ShardImage, ImageError> {
        let bad = |reason: String| ImageError::Malformed { shard, reason };
        if !bytes.len().is_multiple_of(size_of::<u64>())
            || bytes.len() < HEADER_WORDS * size_of::<u64>()
        {
            return Err(bad(format!("{} bytes is not a whole image", bytes.len())));
        }
        let words = bytes.len() / size_of::<u64>();
        let header = |i| usize::try_from(word_at(bytes, i)).unwrap_or(usize::MAX);
        let (len, cap, top, garbage) = (header(0), header(1), header(2), header(3));
        if cap < MIN_SLOTS || top > MAX_ARENA_WORDS {
            return Err(bad(format!(
                "{cap} slots or {top} arena words is out of range"
            )));
        }
        if Some(words)
            != HEADER_WORDS
                .checked_add(cap)
                .and_then(|n| n.checked_add(top))
        {
            return Err(bad(format!(
                "{words} words do not hold a header, {cap} slots and {top} arena words"
            )));
        }
        if len.saturating_mul(MAX_LOAD_DEN) > cap.saturating_mul(MAX_LOAD_NUM) {
            return Err(bad(format!("{len} keys overload {cap} slots")));
        }
        let slot = |pos: usize| word_at(bytes, HEADER_WORDS + pos);
        let arena = |off: usize| word_at(bytes, HEADER_WORDS + cap + off);

        // The arena is entries back to back up to `top`.
        let mut starts = Bits::new(top);
        let mut off = 0;
        while off < top {
            let word = arena(off + HEAD_WORD);
            if !Head::flags_known(word) {
                return Err(bad(format!(
                    "unknown flags in the entry at arena word {off}"
                )));
            }
            let end = off + Head::decode(word).entry_words();
            if end > top {
                return Err(bad(format!(
                    "the entry at arena word {off} passes the top, {top}"
                )));
            }
            starts.set(off);
            off = end;
        }

        // Every slot points at an entry of its own, in Robin Hood order.
        let mut occupied = 0;
        let mut previous_dist = None;
        for pos in 0..cap {
            let s = slot(pos);
            let Some(off) = slot_offset(s) else {
                previous_dist = None;
                continue;
            };
            if off >= top || !starts.take(off) {
                return Err(bad(format!(
                    "slot {pos} points at arena word {off}, which starts no entry of its own"
                )));
            }
            let dist = distance(pos, home(slot_tag(s), cap), cap);
            // The slot before position 0 is the last one: checked below.
            let before = if pos == 0 {
                let last = slot(cap - 1);
                (last != EMPTY).then(|| distance(cap - 1, home(slot_tag(last), cap), cap))
            } else {
                previous_dist
            };
            if dist > 0 && before.is_none_or(|b| b + 1 < dist) {
                return Err(bad(format!("slot {pos} breaks the Robin Hood order")));
            }
            previous_dist = Some(dist);
            occupied += 1;
        }
        if occupied != len {
            return Err(bad(format!(
                "{occupied} slots are used, but the image holds {len} keys"
            )));
        }
        // What no slot took is garbage.
        let mut unclaimed = 0;
        let mut off = 0;
        while off < top {
            let n = Head::decode(arena(off + HEAD_WORD)).entry_words();
            if starts.get(off) {
                unclaimed += n;
            }
            off += n;
        }
        if unclaimed != garbage {
            return Err(bad(format!(
                "{unclaimed} arena words are garbage, but the image says {garbage}"
            )));
        }

        let slots: Words = (0..cap).map(|pos| AtomicU64::new(slot(pos))).collect();
        let chunks = (0..top)
            .step_by(CHUNK_WORDS)
            .map(|start| {
                let end = (start + CHUNK_WORDS).min(top);
                let size = if end - start == CHUNK_WORDS {
                    CHUNK_WORDS
                } else {
                    (end - start).next_multiple_of(MIN_CHUNK_WORDS)
                };
                (0..size)
                    .map(|i| AtomicU64::new(if start + i < end { arena(start + i) } else { 0 }))
                    .collect::<Words>()
            })
            .collect();
        Ok(ShardImage {
            len,
            slots,
            chunks,
            top,
            garbage,
        })
    }
}
