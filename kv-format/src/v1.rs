//! Record format version 1 (up to commit e1a3b18), read by this build.
//!
//! ```text
//! Format: { checksum u64 | version u8 = 1 | flags u8 | key_len u16 | value_len u32
//!         | seq u64 | expires_at u64 | key [key_len] | value [value_len] }
//! ```
//!
//! A fixed 32-byte header; the checksum is xxh3-64 of every byte after it.
//! `expires_at` is always stored, 0 for never; the only flag is the
//! tombstone.

use crate::{Flags, FormatError, Record, RecordFormat, RecordHeader, RecordKind, Result};

/// Offset of the xxh3-64 checksum, which covers every byte after it.
const CHECKSUM_OFFSET: usize = 0;
/// Offset of the format version byte.
const VERSION_OFFSET: usize = CHECKSUM_OFFSET + size_of::<u64>();
const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
const KEY_LEN_OFFSET: usize = FLAGS_OFFSET + size_of::<u8>();
const VALUE_LEN_OFFSET: usize = KEY_LEN_OFFSET + size_of::<u16>();
const SEQ_OFFSET: usize = VALUE_LEN_OFFSET + size_of::<u32>();
const EXPIRES_AT_OFFSET: usize = SEQ_OFFSET + size_of::<u64>();
/// Length of the fixed header; the key starts here.
pub(crate) const HEADER_LEN: usize = EXPIRES_AT_OFFSET + size_of::<u64>();
/// The bytes of the checksum.
pub(crate) const CHECKSUM_LEN: usize = VERSION_OFFSET;

const _: () = assert!(HEADER_LEN == 32);

/// The checksum of a whole version 1 record: xxh3-64 of every byte after
/// the checksum field.
pub(crate) fn checksum(record: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&record[VERSION_OFFSET..])
}

/// Writes a record whose lengths were checked into `out`, which is exactly
/// its encoded length.
pub(crate) fn write_unchecked(record: &Record<'_>, out: &mut [u8]) {
    let flags = match record.kind {
        RecordKind::Put => Flags::default(),
        RecordKind::Tombstone => Flags::TOMBSTONE,
    };
    out[VERSION_OFFSET] = 1;
    out[FLAGS_OFFSET] = flags.bits();
    // The lengths were checked against MAX_KEY_LEN and MAX_VALUE_LEN, which
    // fit u16 and u32.
    out[KEY_LEN_OFFSET..VALUE_LEN_OFFSET].copy_from_slice(&(record.key.len() as u16).to_le_bytes());
    out[VALUE_LEN_OFFSET..SEQ_OFFSET].copy_from_slice(&(record.value.len() as u32).to_le_bytes());
    out[SEQ_OFFSET..EXPIRES_AT_OFFSET].copy_from_slice(&record.seq.to_le_bytes());
    out[EXPIRES_AT_OFFSET..HEADER_LEN].copy_from_slice(&record.expires_at.to_le_bytes());
    let key_end = HEADER_LEN + record.key.len();
    out[HEADER_LEN..key_end].copy_from_slice(record.key);
    out[key_end..].copy_from_slice(record.value);
    let sum = checksum(out);
    out[CHECKSUM_OFFSET..VERSION_OFFSET].copy_from_slice(&sum.to_le_bytes());
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0; 2];
    b.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(b)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// The header at the front of `bytes`, its own fields checked (the version
/// byte, the flags); lengths are checked by the caller.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<RecordHeader> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN as u64,
            available: bytes.len(),
        });
    };
    let version = head[VERSION_OFFSET];
    if version != 1 {
        return Err(FormatError::UnsupportedVersion(version));
    }
    Ok(RecordHeader {
        checksum: read_u64(head, CHECKSUM_OFFSET),
        flags: Flags::from_bits(head[FLAGS_OFFSET], RecordFormat::V1)?,
        key_len: read_u16(head, KEY_LEN_OFFSET),
        value_len: read_u32(head, VALUE_LEN_OFFSET),
        seq: read_u64(head, SEQ_OFFSET),
        expires_at: read_u64(head, EXPIRES_AT_OFFSET),
        header_len: HEADER_LEN as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden bytes: a put and a tombstone as the builds of version 1 wrote
    /// them (frozen at commit e1a3b18, where they were checked by hand
    /// against the table of docs/format.md and with `xxhsum -H3`).
    #[rustfmt::skip]
    const GOLDEN_PUT: [u8; 35] = [
        0xef, 0xb5, 0x79, 0xc3, 0x75, 0x10, 0xa6, 0xae, // 0..8   checksum
        0x01,                                           // 8      version 1
        0x00,                                           // 9      flags: a put
        0x01, 0x00,                                     // 10..12 key_len 1
        0x02, 0x00, 0x00, 0x00,                         // 12..16 value_len 2
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 16..24 seq
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // 24..32 expires_at
        b'k',                                           // 32     key
        b'v', b'v',                                     // 33..35 value
    ];

    /// See [`GOLDEN_PUT`].
    #[rustfmt::skip]
    const GOLDEN_TOMBSTONE: [u8; 33] = [
        0x6d, 0x24, 0xa8, 0x5d, 0xdc, 0x3a, 0x28, 0xdc, // 0..8   checksum
        0x01,                                           // 8      version 1
        0x01,                                           // 9      flags: bit 0, tombstone
        0x01, 0x00,                                     // 10..12 key_len 1
        0x00, 0x00, 0x00, 0x00,                         // 12..16 value_len 0
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 16..24 seq
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 24..32 expires_at: never
        b'k',                                           // 32     key
    ];

    #[test]
    fn version_1_records_still_decode_and_encode_to_the_same_bytes() {
        let put = Record {
            seq: 0x0102_0304_0506_0708,
            expires_at: 0x1122_3344_5566_7788,
            kind: RecordKind::Put,
            key: b"k",
            value: b"vv",
        };
        let tombstone = Record::tombstone(0x0102_0304_0506_0708, b"k");
        for (record, golden) in [(put, &GOLDEN_PUT[..]), (tombstone, &GOLDEN_TOMBSTONE[..])] {
            let decoded = RecordFormat::V1.decode(golden).unwrap();
            assert_eq!(decoded.record, record);
            assert_eq!(decoded.len, golden.len());
            let mut buf = Vec::new();
            RecordFormat::V1.encode(&record, &mut buf).unwrap();
            assert_eq!(buf, golden, "{record:?} encodes to other bytes");
            // The current layout does not take them for its own.
            assert!(crate::decode(golden).is_err());
        }
    }

    #[test]
    fn version_1_header_fields_are_validated() {
        let mut buf = Vec::new();
        RecordFormat::V1
            .encode(&Record::tombstone(9, b"gone"), &mut buf)
            .unwrap();
        let v1 = RecordFormat::V1;
        assert!(v1.decode(&buf).unwrap().record.is_tombstone());
        let mut bad = buf.clone();
        bad[VERSION_OFFSET] = 2;
        assert_eq!(v1.decode(&bad), Err(FormatError::UnsupportedVersion(2)));
        let mut bad = buf.clone();
        bad[FLAGS_OFFSET] = 0x02;
        assert_eq!(v1.decode(&bad), Err(FormatError::UnknownFlags(0x02)));
        let mut bad = buf.clone();
        bad[KEY_LEN_OFFSET..VALUE_LEN_OFFSET].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(v1.decode(&bad), Err(FormatError::EmptyKey));
        let mut bad = buf.clone();
        bad[VALUE_LEN_OFFSET..SEQ_OFFSET].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            v1.decode(&bad),
            Err(FormatError::ValueTooLarge { .. })
        ));
        for cut in 0..buf.len() {
            assert!(matches!(
                v1.decode(&buf[..cut]),
                Err(FormatError::Truncated { .. })
            ));
        }
        for at in 0..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert!(v1.decode(&bad).is_err(), "flip at {at} accepted");
        }
    }
}
