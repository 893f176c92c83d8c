//! The index entry and its packed form in a shard's arena.

/// Where a key's latest record lives, plus what the engine needs without
/// reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The id of the segment file holding the record.
    pub segment: u32,
    /// The byte offset of the record in that segment.
    pub offset: u32,
    /// The encoded length of the record, in bytes.
    pub len: u32,
    /// When the record expires, in milliseconds since the Unix epoch; 0
    /// means never.
    pub expires_at: u64,
    /// The record is a tombstone. The engine keeps tombstones in the index
    /// only while it rebuilds the index from segments.
    pub tombstone: bool,
}

// Format: { head u64 = key_len u16 | flags u16 | len u32 } { location u64 = segment u32 | offset u32 }
//         [ expires_at u64, only if flags has HAS_EXPIRY ] [ seq u64, only if flags has HAS_SEQ ]
//         { key [ceil(key_len / 8) u64] }
//
// Fields inside a word are listed from the least significant bit up. Key
// bytes are packed eight to a word in little-endian order (key byte 0 is the
// lowest byte of the first key word), and the last key word is zero-padded.

/// Word index of the head word (key length, flags, record length).
pub(crate) const HEAD_WORD: usize = 0;
/// Word index of the location word (segment, offset).
pub(crate) const LOCATION_WORD: usize = HEAD_WORD + 1;
/// Word index of the expiry, present only when the head has [`HAS_EXPIRY`].
pub(crate) const EXPIRY_WORD: usize = LOCATION_WORD + 1;

/// Bit offset of the key length in the head word.
const KEY_LEN_SHIFT: u32 = 0;
/// Bit offset of the flags in the head word.
const FLAGS_SHIFT: u32 = KEY_LEN_SHIFT + u16::BITS;
/// Bit offset of the record length in the head word.
const LEN_SHIFT: u32 = FLAGS_SHIFT + u16::BITS;
const _: () = assert!(LEN_SHIFT + u32::BITS == u64::BITS);

/// Flag: the record is a tombstone.
const TOMBSTONE: u16 = 0b01;
/// Flag: the entry has an expiry word. Its value may be 0 (never expires)
/// after an overwrite in place.
const HAS_EXPIRY: u16 = 0b10;
/// Flag: the entry has a sequence number word, after the expiry word if
/// there is one. Only entries set by [`Index::insert_if_newer`] have one,
/// until [`Index::forget_seqs`]; its value may be 0 (none) after an
/// overwrite in place.
///
/// [`Index::insert_if_newer`]: crate::Index::insert_if_newer
/// [`Index::forget_seqs`]: crate::Index::forget_seqs
const HAS_SEQ: u16 = 0b100;
/// Flag: no slot points to the entry any more (it was removed or moved),
/// so a walk of the arena skips it.
const DEAD: u16 = 0b1000;

/// The head word `word` with the dead flag set.
pub(crate) fn dead(word: u64) -> u64 {
    word | u64::from(DEAD) << FLAGS_SHIFT
}

/// The decoded head word of a packed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Key length in bytes.
    pub(crate) key_len: usize,
    /// Whether the entry has an expiry word.
    pub(crate) has_expiry: bool,
    /// Whether the entry has a sequence number word.
    pub(crate) has_seq: bool,
    /// Whether the entry is garbage.
    pub(crate) dead: bool,
    /// Whether the record is a tombstone.
    pub(crate) tombstone: bool,
    /// The record length.
    pub(crate) len: u32,
}

impl Head {
    /// Decodes a head word. Any word decodes: unknown flag bits are ignored,
    /// so a word read during a torn read never causes a panic.
    pub(crate) fn decode(word: u64) -> Head {
        let flags = (word >> FLAGS_SHIFT) as u16;
        Head {
            key_len: usize::from((word >> KEY_LEN_SHIFT) as u16),
            has_expiry: flags & HAS_EXPIRY != 0,
            has_seq: flags & HAS_SEQ != 0,
            dead: flags & DEAD != 0,
            tombstone: flags & TOMBSTONE != 0,
            len: (word >> LEN_SHIFT) as u32,
        }
    }

    /// Number of meta words before the key.
    pub(crate) fn meta_words(self) -> usize {
        meta_words(self.has_expiry, self.has_seq)
    }

    /// Word index of the sequence number word, if the entry has one.
    pub(crate) fn seq_word(self) -> Option<usize> {
        self.has_seq.then(|| meta_words(self.has_expiry, false))
    }

    /// Total number of words of the packed entry.
    pub(crate) fn entry_words(self) -> usize {
        entry_words(self.key_len, self.has_expiry, self.has_seq)
    }
}

/// Number of meta words before the key.
pub(crate) fn meta_words(has_expiry: bool, has_seq: bool) -> usize {
    EXPIRY_WORD + usize::from(has_expiry) + usize::from(has_seq)
}

/// Number of words the key occupies.
pub(crate) fn key_words(key_len: usize) -> usize {
    key_len.div_ceil(size_of::<u64>())
}

/// Total number of words of a packed entry.
pub(crate) fn entry_words(key_len: usize, has_expiry: bool, has_seq: bool) -> usize {
    meta_words(has_expiry, has_seq) + key_words(key_len)
}

/// Packs up to eight key bytes into a word, zero-padding a short chunk.
pub(crate) fn pack_key_word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = chunk.len().min(bytes.len());
    bytes[..n].copy_from_slice(&chunk[..n]);
    u64::from_le_bytes(bytes)
}

/// The meta words of `entry` for a key of `key_len` bytes: the head and
/// location words, then the expiry word if `has_expiry`, then the
/// sequence number word if `seq` is given. Returns the words and how many
/// of them are used.
pub(crate) fn encode_meta(
    key_len: usize,
    entry: &Entry,
    has_expiry: bool,
    seq: Option<u64>,
) -> ([u64; 4], usize) {
    debug_assert!(key_len <= usize::from(u16::MAX));
    debug_assert!(has_expiry || entry.expires_at == 0);
    let mut flags = 0u16;
    if entry.tombstone {
        flags |= TOMBSTONE;
    }
    if has_expiry {
        flags |= HAS_EXPIRY;
    }
    if seq.is_some() {
        flags |= HAS_SEQ;
    }
    let head = (key_len as u64 & u64::from(u16::MAX)) << KEY_LEN_SHIFT
        | u64::from(flags) << FLAGS_SHIFT
        | u64::from(entry.len) << LEN_SHIFT;
    let location = u64::from(entry.segment) | u64::from(entry.offset) << u32::BITS;
    let mut words = [head, location, 0, 0];
    let mut n = EXPIRY_WORD;
    if has_expiry {
        words[n] = entry.expires_at;
        n += 1;
    }
    if let Some(seq) = seq {
        words[n] = seq;
        n += 1;
    }
    (words, n)
}

/// Rebuilds an entry from its decoded head and its location and expiry
/// words (`expires_at` is 0 when the entry has no expiry word).
pub(crate) fn decode_entry(head: Head, location: u64, expires_at: u64) -> Entry {
    Entry {
        segment: location as u32,
        offset: (location >> u32::BITS) as u32,
        len: head.len,
        expires_at,
        tombstone: head.tombstone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let entry = Entry {
            segment: u32::MAX - 1,
            offset: 0xdead_beef,
            len: u32::MAX,
            expires_at: 17,
            tombstone: true,
        };
        for has_expiry in [false, true] {
            for seq in [None, Some(u64::MAX)] {
                let entry = Entry {
                    expires_at: if has_expiry { entry.expires_at } else { 0 },
                    ..entry
                };
                let (words, n) = encode_meta(65_535, &entry, has_expiry, seq);
                assert_eq!(n, meta_words(has_expiry, seq.is_some()));
                let head = Head::decode(words[HEAD_WORD]);
                assert_eq!(head.key_len, 65_535);
                assert_eq!(head.has_expiry, has_expiry);
                assert_eq!(head.seq_word().map(|w| words[w]), seq);
                let expires_at = if has_expiry { words[EXPIRY_WORD] } else { 0 };
                let decoded = decode_entry(head, words[LOCATION_WORD], expires_at);
                assert_eq!(decoded, entry);
            }
        }
    }

    #[test]
    fn entry_sizes() {
        assert_eq!(entry_words(1, false, false), 3);
        assert_eq!(entry_words(8, false, false), 3);
        assert_eq!(entry_words(9, false, false), 4);
        assert_eq!(entry_words(16, false, false), 4);
        assert_eq!(entry_words(16, true, false), 5);
        assert_eq!(entry_words(16, true, true), 6);
        assert_eq!(entry_words(65_535, true, false), 3 + 8192);
    }

    #[test]
    fn key_words_are_little_endian_and_padded() {
        assert_eq!(pack_key_word(b"\x01"), 1);
        assert_eq!(pack_key_word(b"\x01\x02"), 0x0201);
        assert_eq!(pack_key_word(&[0xff; 8]), u64::MAX);
        assert_eq!(pack_key_word(b""), 0);
    }
}
