//! The entries of a hint file: how each version lays them out, written by
//! [`Segment::write_hint`](crate::Segment::write_hint) (version 2) and
//! read back, version 1 or 2, by [`Entries`]. The file around them (header,
//! checksum) is in `format.rs`; docs/format.md draws both.
//!
//! ```text
//! version 2: { flags u8 | key_len varint | len varint | seq_delta varint
//!            | [ expires_at u64, if flags has HAS_EXPIRY ] | key [key_len] }
//! version 1: { key_len u16 | flags u8 | reserved u8 | offset u32 | len u32
//!            | seq u64 | expires_at u64 | key [key_len] }
//! ```
//!
//! A version 2 file has one entry for every record of its segment, in
//! order, so an entry's offset is not stored: the first record starts
//! where the segment's data does, and each next one where the one before
//! ended. `seq_delta` is the entry's sequence number less the one before
//! it (0 before the first), zigzag-encoded. A varint is LEB128, at most
//! ten bytes, with no bits past 64. A 16-byte key takes 21 bytes where
//! version 1 took 44.

use kv_format::RecordKind;

use crate::RecordMeta;
use crate::format::{read_u16, read_u32, read_u64};

/// Flag: the record is a tombstone.
const TOMBSTONE: u8 = 1;
/// Flag (version 2): the entry has an `expires_at`.
const HAS_EXPIRY: u8 = 2;
/// The fixed part of a version 1 entry.
const V1_ENTRY_LEN: usize = 2 + 1 + 1 + 4 + 4 + 8 + 8;
/// The longest a varint is.
const MAX_VARINT_LEN: usize = 10;

/// One entry: where its record is and what it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) meta: RecordMeta<'a>,
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// A varint at the start of `b`, and its length; `None` if it is cut
/// short, longer than ten bytes, or past 64 bits.
fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(byte & 0x7F);
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return None;
        }
        x |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

fn zigzag(delta: i64) -> u64 {
    ((delta << 1) ^ (delta >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Writes version 2 entries, one per record in segment order.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    previous_seq: u64,
}

impl Writer {
    /// Appends the entry of the next record (`len` bytes) to `out`.
    pub(crate) fn push(&mut self, out: &mut Vec<u8>, len: u32, meta: &RecordMeta<'_>) {
        let mut flags = 0;
        if meta.kind == RecordKind::Tombstone {
            flags |= TOMBSTONE;
        }
        if meta.expires_at != kv_format::NO_EXPIRY {
            flags |= HAS_EXPIRY;
        }
        out.push(flags);
        put_varint(out, meta.key.len() as u64);
        put_varint(out, u64::from(len));
        put_varint(out, zigzag(meta.seq.wrapping_sub(self.previous_seq) as i64));
        if flags & HAS_EXPIRY != 0 {
            out.extend_from_slice(&meta.expires_at.to_le_bytes());
        }
        out.extend_from_slice(meta.key);
        self.previous_seq = meta.seq;
    }
}

/// The entries of a hint file's body (the bytes between its header and
/// its checksum), parsed one by one. Each item is the entry and its byte
/// offset in the body, or, for an entry that does not parse, that offset:
/// nothing follows it.
pub(crate) struct Entries<'a> {
    body: &'a [u8],
    version: u16,
    at: usize,
    /// Version 2: where the next record starts.
    next_offset: u64,
    previous_seq: u64,
    failed: bool,
}

impl<'a> Entries<'a> {
    /// The entries of `body`, of a hint file of `version` (1 or 2) for a
    /// segment whose records start at `data_start`.
    pub(crate) fn new(body: &'a [u8], version: u16, data_start: u64) -> Entries<'a> {
        Entries {
            body,
            version,
            at: 0,
            next_offset: data_start,
            previous_seq: 0,
            failed: false,
        }
    }

    fn parse_v1(&self, b: &'a [u8]) -> Option<(Entry<'a>, usize)> {
        let fixed = b.get(..V1_ENTRY_LEN)?;
        let key_len = usize::from(read_u16(fixed, 0));
        let flags = fixed[2];
        if key_len == 0 || flags & !TOMBSTONE != 0 {
            return None;
        }
        let key = b.get(V1_ENTRY_LEN..V1_ENTRY_LEN + key_len)?;
        let entry = Entry {
            offset: read_u32(fixed, 4),
            len: read_u32(fixed, 8),
            meta: RecordMeta {
                key,
                seq: read_u64(fixed, 12),
                expires_at: read_u64(fixed, 20),
                kind: kind(flags),
            },
        };
        Some((entry, V1_ENTRY_LEN + key_len))
    }

    fn parse_v2(&self, b: &'a [u8]) -> Option<(Entry<'a>, usize)> {
        let flags = *b.first()?;
        if flags & !(TOMBSTONE | HAS_EXPIRY) != 0 {
            return None;
        }
        let mut at = 1;
        let mut varint = || {
            let (x, n) = get_varint(b.get(at..)?)?;
            at += n;
            Some(x)
        };
        let key_len = usize::try_from(varint()?).ok()?;
        let len = u32::try_from(varint()?).ok()?;
        let seq = self.previous_seq.wrapping_add(unzigzag(varint()?) as u64);
        let expires_at = if flags & HAS_EXPIRY != 0 {
            let e = read_u64(b.get(at..at + 8)?, 0);
            at += 8;
            if e == kv_format::NO_EXPIRY {
                return None;
            }
            e
        } else {
            kv_format::NO_EXPIRY
        };
        if key_len == 0 || key_len > usize::from(u16::MAX) {
            return None;
        }
        let key = b.get(at..at.checked_add(key_len)?)?;
        let offset = u32::try_from(self.next_offset).ok()?;
        let entry = Entry {
            offset,
            len,
            meta: RecordMeta {
                key,
                seq,
                expires_at,
                kind: kind(flags),
            },
        };
        Some((entry, at + key_len))
    }
}

fn kind(flags: u8) -> RecordKind {
    if flags & TOMBSTONE != 0 {
        RecordKind::Tombstone
    } else {
        RecordKind::Put
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(usize, Entry<'a>), usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.body.len() {
            return None;
        }
        let rest = &self.body[self.at..];
        let parsed = if self.version == 1 {
            self.parse_v1(rest)
        } else {
            self.parse_v2(rest)
        };
        let Some((entry, n)) = parsed else {
            self.failed = true;
            return Some(Err(self.at));
        };
        let at = self.at;
        self.at += n;
        self.next_offset = u64::from(entry.offset) + u64::from(entry.len);
        self.previous_seq = entry.meta.seq;
        Some(Ok((at, entry)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overlong_ones() {
        for x in [0, 1, 127, 128, 300, u32::MAX.into(), u64::MAX - 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, x);
            assert_eq!(get_varint(&b), Some((x, b.len())));
            assert!(b.len() <= MAX_VARINT_LEN);
            assert_eq!(get_varint(&b[..b.len() - 1]), None, "cut short");
        }
        // Eleven bytes, and ten whose last passes 64 bits.
        assert_eq!(get_varint(&[0x80; 11]), None);
        let mut past = vec![0xFF; 9];
        past.push(0x02);
        assert_eq!(get_varint(&past), None);
    }

    #[test]
    fn a_16_byte_key_takes_21_bytes() {
        let mut out = Vec::new();
        let meta = RecordMeta {
            key: &[7; 16],
            seq: 1,
            expires_at: 0,
            kind: RecordKind::Put,
        };
        Writer::default().push(&mut out, 148, &meta);
        assert_eq!(out.len(), 21);
    }

    #[rustfmt::skip]
    const GOLDEN_ENTRIES: [u8; 19] = [
        // A put of key "k", 57 bytes, seq 300, with an expiry.
        0x02,                                           // flags: has expires_at
        0x01,                                           // key_len 1
        0x39,                                           // len 57
        0xd8, 0x04,                                     // seq_delta: 300 - 0, zigzag 600
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // expires_at
        0x6b,                                           // key "k"
        // Then a tombstone of "k", 40 bytes, seq 299 (one less).
        0x01,                                           // flags: tombstone
        0x01,                                           // key_len 1
        0x28,                                           // len 40
        0x01,                                           // seq_delta: -1, zigzag 1
        0x6b,                                           // key "k"
    ];

    #[test]
    fn the_version_2_entries_are_frozen() {
        let put = RecordMeta {
            key: b"k",
            seq: 300,
            expires_at: 0x0102_0304_0506_0708,
            kind: RecordKind::Put,
        };
        let tombstone = RecordMeta {
            key: b"k",
            seq: 299,
            expires_at: 0,
            kind: RecordKind::Tombstone,
        };
        let mut out = Vec::new();
        let mut writer = Writer::default();
        writer.push(&mut out, 57, &put);
        writer.push(&mut out, 40, &tombstone);
        assert_eq!(out, GOLDEN_ENTRIES);
        let parsed: Vec<_> = Entries::new(&GOLDEN_ENTRIES, 2, 32)
            .map(|e| e.unwrap().1)
            .collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            (parsed[0].offset, parsed[0].len, parsed[0].meta),
            (32, 57, put)
        );
        assert_eq!(
            (parsed[1].offset, parsed[1].len, parsed[1].meta),
            (89, 40, tombstone)
        );
    }

    proptest! {
        #[test]
        fn entries_round_trip(records in proptest::collection::vec(
            (1usize..40, 1u32..100_000, any::<u64>(), any::<bool>(), any::<bool>()),
            0..50,
        )) {
            let mut body = Vec::new();
            let mut writer = Writer::default();
            let keys: Vec<Vec<u8>> = records.iter().map(|r| vec![r.0 as u8; r.0]).collect();
            let metas: Vec<(u32, RecordMeta<'_>)> = records
                .iter()
                .zip(&keys)
                .map(|(&(_, len, seq, tomb, exp), key)| {
                    (len, RecordMeta {
                        key,
                        seq,
                        expires_at: if exp { seq | 1 } else { 0 },
                        kind: if tomb { RecordKind::Tombstone } else { RecordKind::Put },
                    })
                })
                .collect();
            for (len, meta) in &metas {
                writer.push(&mut body, *len, meta);
            }
            let mut offset = 32u64;
            let parsed: Vec<_> = Entries::new(&body, 2, 32).collect();
            prop_assert_eq!(parsed.len(), metas.len());
            for (got, (len, meta)) in parsed.iter().zip(&metas) {
                let (_, entry) = got.as_ref().expect("parses");
                prop_assert_eq!(u64::from(entry.offset), offset);
                prop_assert_eq!(entry.len, *len);
                prop_assert_eq!(entry.meta, *meta);
                offset += u64::from(*len);
            }
        }

        #[test]
        fn any_body_parses_or_stops_without_panicking(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            version in 1u16..=2,
        ) {
            let mut n = 0;
            for item in Entries::new(&body, version, 32) {
                n += 1;
                prop_assert!(n <= body.len());
                if item.is_err() {
                    break;
                }
            }
        }
    }
}
