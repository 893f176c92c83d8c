//! Record format version 2, what this build writes.
//!
//! ```text
//! Format: { checksum u32 | flags u8 | key_len varint | value_len varint | seq u64
//!         | [ expires_at u64, if flags bit 1 ] | key [key_len] | value [value_len] }
//! ```
//!
//! The checksum is the low 32 bits of xxh3-64 of every byte after it. A
//! varint is unsigned LEB128 in its shortest form: seven bits a byte, low
//! bits first, the high bit set on every byte but the last; a key length
//! takes at most 3 bytes, a value length at most 4. The sequence number is
//! fixed-width so that [`crate::set_seq`] can patch it in place. A 16-byte
//! key with a 100-byte value and no expiry has a 15-byte header; with a
//! value of 128 bytes to 16 KiB, 16.

use crate::{Flags, FormatError, Record, RecordFormat, RecordHeader, RecordKind, Result};

/// The bytes of the checksum.
pub(crate) const CHECKSUM_LEN: usize = size_of::<u32>();
const FLAGS_OFFSET: usize = CHECKSUM_LEN;
const KEY_LEN_OFFSET: usize = FLAGS_OFFSET + size_of::<u8>();
/// The most bytes a key length takes (`u16::MAX` needs 16 bits).
const KEY_LEN_MAX_BYTES: usize = 3;
/// The most bytes a value length takes (`MAX_VALUE_LEN`, 2^26, needs 27).
const VALUE_LEN_MAX_BYTES: usize = 4;
/// The shortest header: one byte per length, no expiry.
pub(crate) const MIN_HEADER_LEN: usize = KEY_LEN_OFFSET + 2 + size_of::<u64>();
/// The longest header: the longest lengths, and an expiry.
pub(crate) const MAX_HEADER_LEN: usize =
    KEY_LEN_OFFSET + KEY_LEN_MAX_BYTES + VALUE_LEN_MAX_BYTES + size_of::<u64>() + size_of::<u64>();

const _: () = assert!(MIN_HEADER_LEN == 15);
const _: () = assert!(MAX_HEADER_LEN == 28);
const _: () = assert!(crate::MAX_VALUE_LEN < 1 << (7 * VALUE_LEN_MAX_BYTES));

/// The checksum of a whole version 2 record: the low 32 bits of xxh3-64 of
/// every byte after the checksum field.
pub(crate) fn checksum(record: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&record[CHECKSUM_LEN..]) & u64::from(u32::MAX)
}

/// The bytes `n` takes as a varint.
const fn varint_len(n: u32) -> usize {
    match n {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    }
}

/// The bytes of `record` in this layout (its lengths already checked).
pub(crate) fn encoded_len(record: &Record<'_>) -> usize {
    header_len(record) + record.key.len() + record.value.len()
}

fn header_len(record: &Record<'_>) -> usize {
    let expiry = if record.expires_at != crate::NO_EXPIRY {
        size_of::<u64>()
    } else {
        0
    };
    KEY_LEN_OFFSET
        + varint_len(record.key.len() as u32)
        + varint_len(record.value.len() as u32)
        + size_of::<u64>()
        + expiry
}

fn put_varint(out: &mut [u8], at: usize, mut n: u32) -> usize {
    let mut at = at;
    while n >= 0x80 {
        out[at] = (n as u8) | 0x80;
        n >>= 7;
        at += 1;
    }
    out[at] = n as u8;
    at + 1
}

/// Writes a record whose lengths were checked into `out`, which is exactly
/// its encoded length.
pub(crate) fn write_unchecked(record: &Record<'_>, out: &mut [u8]) {
    let mut flags = match record.kind {
        RecordKind::Put => 0,
        RecordKind::Tombstone => Flags::TOMBSTONE.bits(),
    };
    if record.expires_at != crate::NO_EXPIRY {
        flags |= Flags::EXPIRES.bits();
    }
    out[FLAGS_OFFSET] = flags;
    // The lengths were checked against MAX_KEY_LEN and MAX_VALUE_LEN, which
    // fit u32.
    let at = put_varint(out, KEY_LEN_OFFSET, record.key.len() as u32);
    let mut at = put_varint(out, at, record.value.len() as u32);
    out[at..at + 8].copy_from_slice(&record.seq.to_le_bytes());
    at += 8;
    if record.expires_at != crate::NO_EXPIRY {
        out[at..at + 8].copy_from_slice(&record.expires_at.to_le_bytes());
        at += 8;
    }
    let key_end = at + record.key.len();
    out[at..key_end].copy_from_slice(record.key);
    out[key_end..].copy_from_slice(record.value);
    let sum = checksum(out) as u32;
    out[..CHECKSUM_LEN].copy_from_slice(&sum.to_le_bytes());
}

/// Gives the whole record `record`, whose checked header is `header`, the
/// sequence number `seq`, and its checksum again.
pub(crate) fn patch_seq(record: &mut [u8], header: &RecordHeader, seq: u64) {
    let mut at = usize::from(header.header_len) - size_of::<u64>();
    if header.flags.contains(Flags::EXPIRES) {
        at -= size_of::<u64>();
    }
    record[at..at + 8].copy_from_slice(&seq.to_le_bytes());
    let sum = checksum(record) as u32;
    record[..CHECKSUM_LEN].copy_from_slice(&sum.to_le_bytes());
}

/// Reads the varint at `at`, at most `max_bytes` long, in its shortest
/// form; returns it and where it ends.
fn read_varint(
    bytes: &[u8],
    at: usize,
    max_bytes: usize,
    field: &'static str,
) -> Result<(u32, usize)> {
    let mut n = 0u32;
    for i in 0..max_bytes {
        let Some(&b) = bytes.get(at + i) else {
            return Err(FormatError::Truncated {
                needed: (at + i + 1) as u64,
                available: bytes.len(),
            });
        };
        n |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // The shortest form: no last byte of zero after the first.
            if b == 0 && i > 0 {
                return Err(FormatError::MalformedLength(field));
            }
            return Ok((n, at + i + 1));
        }
    }
    Err(FormatError::MalformedLength(field))
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    let Some(b) = bytes.get(at..at + 8) else {
        return Err(FormatError::Truncated {
            needed: (at + 8) as u64,
            available: bytes.len(),
        });
    };
    let mut a = [0; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// The header at the front of `bytes`, its own fields checked (flags,
/// varints, the key length's range, an expiry that is not 0); the caller
/// checks the lengths against the limits.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<RecordHeader> {
    let Some(fixed) = bytes.get(..KEY_LEN_OFFSET) else {
        return Err(FormatError::Truncated {
            needed: MIN_HEADER_LEN as u64,
            available: bytes.len(),
        });
    };
    let mut sum = [0; CHECKSUM_LEN];
    sum.copy_from_slice(&fixed[..CHECKSUM_LEN]);
    let flags = Flags::from_bits(fixed[FLAGS_OFFSET], RecordFormat::V2)?;
    let (key_len, at) = read_varint(bytes, KEY_LEN_OFFSET, KEY_LEN_MAX_BYTES, "key")?;
    let key_len = u16::try_from(key_len).map_err(|_| FormatError::KeyTooLarge {
        len: key_len as usize,
        max: crate::MAX_KEY_LEN,
    })?;
    let (value_len, at) = read_varint(bytes, at, VALUE_LEN_MAX_BYTES, "value")?;
    let seq = read_u64(bytes, at)?;
    let mut end = at + 8;
    let mut expires_at = crate::NO_EXPIRY;
    if flags.contains(Flags::EXPIRES) {
        expires_at = read_u64(bytes, end)?;
        end += 8;
        if expires_at == crate::NO_EXPIRY {
            return Err(FormatError::ZeroExpiry);
        }
    }
    Ok(RecordHeader {
        checksum: u64::from(u32::from_le_bytes(sum)),
        flags,
        key_len,
        value_len,
        seq,
        expires_at,
        header_len: end as u8,
    })
}
