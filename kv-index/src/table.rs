//! A shard's slot table: groups of twelve slots, each group one cache line
//! of atomic words, probed group after group as in a Swiss table.
//!
//! ```text
//! Format: group { ctrl [u8; 12] | zero [u8; 4] } { offset + 1 u32 [12] }, 64 bytes, 64-aligned
//! ```
//!
//! A slot is a control byte and a 32-bit arena offset (stored plus one, so
//! 0 is none): five bytes, where a slot of a 32-bit tag and an offset
//! would take eight. The control byte is [`EMPTY`], [`DELETED`] or
//! [`FULL`] with 7 bits of the key's hash. A key's home group is chosen by
//! 32 other bits of its hash; a lookup compares the control bytes of a
//! group at once (SWAR), reads the arena only where they match (a false
//! match costs one key comparison, about 1 in 128 per full slot), and stops
//! at the first group with an empty slot. Removal leaves [`DELETED`] in a
//! group with no empty slot, since a probe may have passed it; a rebuild
//! clears them. The control bytes keep too few hash bits to place a key in
//! a table of another size, so growing or shrinking hashes every key
//! again from the arena (`Shard`'s `rebuild`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::index::TAG_SHIFT;
use crate::sync::AtomicU64;

/// Slots in a group.
pub(crate) const GROUP_SLOTS: usize = 12;
/// The table may fill up to 7/8 of its slots, counting [`DELETED`] ones...
pub(crate) const MAX_LOAD_NUM: usize = 7;
/// ...out of this denominator.
pub(crate) const MAX_LOAD_DEN: usize = 8;

/// The control byte of a slot never used since the table was built.
pub(crate) const EMPTY: u8 = 0;
/// The control byte of a slot whose key was removed from a group that had
/// no empty slot: lookups go on past it, inserts may take it.
pub(crate) const DELETED: u8 = 1;
/// The bit of a full slot's control byte; the other 7 are hash bits.
pub(crate) const FULL: u8 = 0x80;

/// Each byte's low 7 bits.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// One in each byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The control bytes the second control word holds.
const SECOND_WORD_MASK: u16 = (1 << (GROUP_SLOTS - 8)) - 1;

/// A group of [`GROUP_SLOTS`] slots, one cache line.
#[repr(C, align(64))]
pub(crate) struct Group {
    /// Control bytes of slots 0-7, then 8-11 (the last four bytes are 0).
    ctrl: [AtomicU64; 2],
    /// Offset plus one of slot `2k` in the low half of word `k`, of slot
    /// `2k + 1` in its high half; 0 when the slot holds none.
    offsets: [AtomicU64; GROUP_SLOTS / 2],
}

const _: () = assert!(size_of::<Group>() == 64);

/// A slot table, shared between the writer and every published storage
/// that still uses it.
pub(crate) type Groups = Arc<[Group]>;

/// A table of `groups` groups, every slot empty.
pub(crate) fn empty_groups(groups: usize) -> Groups {
    (0..groups)
        .map(|_| Group {
            ctrl: [AtomicU64::new(0), AtomicU64::new(0)],
            offsets: std::array::from_fn(|_| AtomicU64::new(0)),
        })
        .collect()
}

/// The fewest groups that hold `len` keys within the maximum load (at
/// least one).
pub(crate) fn groups_for(len: usize) -> usize {
    (len * MAX_LOAD_DEN)
        .div_ceil(MAX_LOAD_NUM * GROUP_SLOTS)
        .max(1)
}

/// Whether a table of `groups` groups may hold `used` full and deleted
/// slots.
pub(crate) fn within_load(used: usize, groups: usize) -> bool {
    used * MAX_LOAD_DEN <= groups * GROUP_SLOTS * MAX_LOAD_NUM
}

/// The 32 hash bits that choose a key's home group, and its control byte
/// (7 other hash bits).
pub(crate) fn split_hash(hash: u64) -> (u32, u8) {
    ((hash >> TAG_SHIFT) as u32, FULL | (hash as u8 & !FULL))
}

/// The home group of a key in a table of `groups` groups: its 32 hash bits
/// scaled to `[0, groups)`, so table sizes need not be powers of two.
pub(crate) fn home(h32: u32, groups: usize) -> usize {
    ((u64::from(h32) * groups as u64) >> u32::BITS) as usize
}

/// The group after `g` in a table of `groups`, wrapping around.
pub(crate) fn next_group(g: usize, groups: usize) -> usize {
    if g + 1 == groups { 0 } else { g + 1 }
}

/// 0x80 in every byte of `x` that is 0, and 0 elsewhere. Exact: no borrow
/// crosses a byte.
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Gathers the top bit of each byte of `x` into bit `i` for byte `i`.
fn byte_bits(x: u64) -> u16 {
    // Each byte's bit lands in its own bit of the top byte: no carries.
    (((x >> 7) & ONES).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u16
}

impl Group {
    /// Both control words, read once.
    pub(crate) fn ctrl_words(&self) -> [u64; 2] {
        [self.ctrl[0].load(Relaxed), self.ctrl[1].load(Relaxed)]
    }

    /// Bit `i` set for each slot `i` whose control byte is `c`, in control
    /// words read by [`ctrl_words`](Group::ctrl_words).
    pub(crate) fn matching(words: [u64; 2], c: u8) -> u16 {
        let pattern = ONES.wrapping_mul(u64::from(c));
        byte_bits(zero_bytes(words[0] ^ pattern))
            | (byte_bits(zero_bytes(words[1] ^ pattern)) & SECOND_WORD_MASK) << 8
    }

    /// Bit `i` set for each slot `i` that is not full (empty or deleted).
    pub(crate) fn free(words: [u64; 2]) -> u16 {
        let high = FULL as u64 * ONES;
        byte_bits(!words[0] & high) | (byte_bits(!words[1] & high) & SECOND_WORD_MASK) << 8
    }

    /// The control byte of slot `i`.
    pub(crate) fn ctrl(&self, i: usize) -> u8 {
        (self.ctrl[i / 8].load(Relaxed) >> (i % 8 * 8)) as u8
    }

    /// Sets the control byte of slot `i`. Only the writer changes a group,
    /// so a load and a store suffice.
    pub(crate) fn set_ctrl(&self, i: usize, c: u8) {
        let word = &self.ctrl[i / 8];
        let shift = i % 8 * 8;
        let old = word.load(Relaxed);
        word.store(old & !(0xff << shift) | u64::from(c) << shift, Relaxed);
    }

    /// The arena offset of slot `i`, if it holds one.
    pub(crate) fn offset(&self, i: usize) -> Option<usize> {
        let word = self.offsets.get(i / 2)?.load(Relaxed);
        ((word >> (i % 2 * 32)) as u32)
            .checked_sub(1)
            .map(|off| off as usize)
    }

    /// Sets (or with `None` clears) the arena offset of slot `i`.
    pub(crate) fn set_offset(&self, i: usize, off: Option<usize>) {
        let stored = off.map_or(0, |off| {
            debug_assert!(off < u32::MAX as usize);
            off as u64 + 1
        });
        let word = &self.offsets[i / 2];
        let shift = i % 2 * 32;
        let old = word.load(Relaxed);
        word.store(old & !(0xffff_ffff << shift) | stored << shift, Relaxed);
    }
}

/// The group and index in it of slot position `pos`.
pub(crate) fn slot_at(pos: usize) -> (usize, usize) {
    (pos / GROUP_SLOTS, pos % GROUP_SLOTS)
}

/// Puts a key (its `h32` and control byte `c`) at arena offset `off` into
/// the first free slot of its probe sequence, in a table that does not hold
/// it and has a free slot. Returns the slot's position and whether it was
/// empty (rather than deleted).
pub(crate) fn insert(groups: &[Group], h32: u32, c: u8, off: usize) -> (usize, bool) {
    let n = groups.len();
    let mut g = home(h32, n);
    loop {
        let group = &groups[g];
        let free = Group::free(group.ctrl_words());
        if free != 0 {
            let i = free.trailing_zeros() as usize;
            let was_empty = group.ctrl(i) == EMPTY;
            group.set_offset(i, Some(off));
            group.set_ctrl(i, c);
            return (g * GROUP_SLOTS + i, was_empty);
        }
        g = next_group(g, n);
    }
}

/// Empties the slot at `pos`: [`EMPTY`] if its group has an empty slot
/// (no probe ever passed a group with one), else [`DELETED`]. Returns
/// whether it became empty.
pub(crate) fn remove(groups: &[Group], pos: usize) -> bool {
    let (g, i) = slot_at(pos);
    let group = &groups[g];
    let empty = Group::matching(group.ctrl_words(), EMPTY) != 0;
    group.set_ctrl(i, if empty { EMPTY } else { DELETED });
    group.set_offset(i, None);
    empty
}

/// Every full slot of `groups`, in position order: its position, control
/// byte and arena offset. A torn slot (full, without an offset) is
/// skipped; only readers racing a writer see one.
pub(crate) fn full_slots(groups: &[Group]) -> impl Iterator<Item = (usize, u8, usize)> + '_ {
    groups.iter().enumerate().flat_map(|(g, group)| {
        (0..GROUP_SLOTS).filter_map(move |i| {
            let c = group.ctrl(i);
            let off = group.offset(i)?;
            (c & FULL != 0).then_some((g * GROUP_SLOTS + i, c, off))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_exact() {
        let group = &empty_groups(1)[0];
        assert_eq!(Group::matching(group.ctrl_words(), EMPTY), 0xfff);
        assert_eq!(Group::free(group.ctrl_words()), 0xfff);
        for (i, c) in [(0, 0x80), (1, DELETED), (7, 0xff), (8, 0x81), (11, 0x80)] {
            group.set_ctrl(i, c);
        }
        let words = group.ctrl_words();
        assert_eq!(Group::matching(words, 0x80), 1 << 0 | 1 << 11);
        assert_eq!(Group::matching(words, 0xff), 1 << 7);
        assert_eq!(Group::matching(words, 0x81), 1 << 8);
        assert_eq!(Group::matching(words, DELETED), 1 << 1);
        assert_eq!(
            Group::matching(words, EMPTY),
            0xfff & !(1 | 2 | 1 << 7 | 1 << 8 | 1 << 11)
        );
        assert_eq!(Group::free(words), 0xfff & !(1 | 1 << 7 | 1 << 8 | 1 << 11));
        // Every byte value, in every position, matches only itself.
        for c in 0..=255u8 {
            for i in 0..GROUP_SLOTS {
                let group = &empty_groups(1)[0];
                group.set_ctrl(i, c);
                let want = if c == EMPTY { 0xfff } else { 1 << i };
                assert_eq!(Group::matching(group.ctrl_words(), c), want, "{c} at {i}");
            }
        }
    }

    #[test]
    fn offsets_round_trip_in_both_halves() {
        let group = &empty_groups(1)[0];
        for i in 0..GROUP_SLOTS {
            assert_eq!(group.offset(i), None);
            group.set_offset(i, Some(i * 1_000_003));
        }
        group.set_offset(3, Some(u32::MAX as usize - 1));
        for i in 0..GROUP_SLOTS {
            let want = if i == 3 {
                u32::MAX as usize - 1
            } else {
                i * 1_000_003
            };
            assert_eq!(group.offset(i), Some(want));
        }
        group.set_offset(4, None);
        assert_eq!((group.offset(4), group.offset(5)), (None, Some(5_000_015)));
    }

    #[test]
    fn removal_leaves_deleted_only_in_a_group_without_an_empty_slot() {
        let groups = empty_groups(2);
        // Twelve keys homed in group 0 fill it; the thirteenth spills over.
        let spots: Vec<_> = (0..13).map(|off| insert(&groups, 0, 0x80, off)).collect();
        assert!(spots.iter().all(|&(_, was_empty)| was_empty));
        assert_eq!(spots[12].0, GROUP_SLOTS);
        assert!(!remove(&groups, 3), "group 0 is full: a probe passed it");
        assert_eq!(groups[0].ctrl(3), DELETED);
        // An insert takes the deleted slot back.
        assert_eq!(insert(&groups, 0, 0x80, 99), (3, false));
        assert!(remove(&groups, GROUP_SLOTS), "group 1 has empty slots");
        assert_eq!(groups[1].ctrl(0), EMPTY);
    }
}
