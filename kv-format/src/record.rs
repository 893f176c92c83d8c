//! The record layout, its constants, and encode/decode.

use crate::{FormatError, Result};

// Format: { checksum u64 | version u8 | flags u8 | key_len u16 | value_len u32
//         | seq u64 | expires_at u64 | key | value }, little-endian.

/// Offset of the xxh3-64 checksum, which covers every byte after it.
pub const CHECKSUM_OFFSET: usize = 0;
/// Offset of the format version byte.
pub const VERSION_OFFSET: usize = CHECKSUM_OFFSET + size_of::<u64>();
/// Offset of the flags byte.
pub const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
/// Offset of the key length (u16).
pub const KEY_LEN_OFFSET: usize = FLAGS_OFFSET + size_of::<u8>();
/// Offset of the value length (u32).
pub const VALUE_LEN_OFFSET: usize = KEY_LEN_OFFSET + size_of::<u16>();
/// Offset of the sequence number (u64).
pub const SEQ_OFFSET: usize = VALUE_LEN_OFFSET + size_of::<u32>();
/// Offset of the expiry time (u64, milliseconds since the Unix epoch).
pub const EXPIRES_AT_OFFSET: usize = SEQ_OFFSET + size_of::<u64>();
/// Length of the fixed header; the key starts here.
pub const HEADER_LEN: usize = EXPIRES_AT_OFFSET + size_of::<u64>();

/// The record format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The longest value this format allows, in bytes (64 MiB). [`Limits`]
/// can set a lower maximum.
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// The `expires_at` of a record that never expires.
pub const NO_EXPIRY: u64 = 0;

const _: () = assert!(HEADER_LEN == 32);

/// The flag bits of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// The record deletes its key; it has no value.
    pub const TOMBSTONE: Flags = Flags(0b0000_0001);
    /// Every bit that this version defines.
    const KNOWN: u8 = Self::TOMBSTONE.0;

    /// The raw flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Parses a flags byte, rejecting bits no version defines.
    pub const fn from_bits(bits: u8) -> Result<Flags> {
        if bits & !Self::KNOWN != 0 {
            return Err(FormatError::UnknownFlags(bits));
        }
        Ok(Flags(bits))
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Whether a record sets a value or deletes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// The record sets the key to its value.
    Put,
    /// The record deletes the key. It has an empty value.
    Tombstone,
}

/// Size limits checked by [`encode`] and [`decode_with_limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest value accepted, at most [`MAX_VALUE_LEN`].
    pub max_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_len: MAX_VALUE_LEN,
        }
    }
}

impl Limits {
    /// Limits with a lower value maximum; values above [`MAX_VALUE_LEN`] are
    /// clamped to it.
    pub fn with_max_value_len(max_value_len: usize) -> Limits {
        Limits {
            max_value_len: max_value_len.min(MAX_VALUE_LEN),
        }
    }

    /// Checks a key and value length against the format and these limits.
    ///
    /// # Errors
    ///
    /// [`FormatError::EmptyKey`], [`FormatError::KeyTooLarge`] or
    /// [`FormatError::ValueTooLarge`].
    pub fn check(&self, key_len: usize, value_len: usize) -> Result<()> {
        if key_len == 0 {
            return Err(FormatError::EmptyKey);
        }
        if key_len > MAX_KEY_LEN {
            return Err(FormatError::KeyTooLarge {
                len: key_len,
                max: MAX_KEY_LEN,
            });
        }
        let max = self.max_value_len.min(MAX_VALUE_LEN);
        if value_len > max {
            return Err(FormatError::ValueTooLarge {
                len: value_len,
                max,
            });
        }
        Ok(())
    }
}

/// One record: a put or a tombstone, borrowing its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's sequence number; a higher number is a later write.
    pub seq: u64,
    /// When the record expires, in milliseconds since the Unix epoch, or
    /// [`NO_EXPIRY`].
    pub expires_at: u64,
    /// Put or tombstone.
    pub kind: RecordKind,
    /// The key, 1 to [`MAX_KEY_LEN`] bytes.
    pub key: &'a [u8],
    /// The value; empty for a tombstone.
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// A put that never expires.
    pub fn put(seq: u64, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record {
            seq,
            expires_at: NO_EXPIRY,
            kind: RecordKind::Put,
            key,
            value,
        }
    }

    /// A tombstone for `key`.
    pub fn tombstone(seq: u64, key: &'a [u8]) -> Record<'a> {
        Record {
            seq,
            expires_at: NO_EXPIRY,
            kind: RecordKind::Tombstone,
            key,
            value: &[],
        }
    }

    /// Whether this record deletes its key.
    pub fn is_tombstone(&self) -> bool {
        self.kind == RecordKind::Tombstone
    }

    /// The number of bytes [`encode`] writes for this record.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.key.len(), self.value.len())
    }
}

/// The header fields of a record, as read from its first [`HEADER_LEN`]
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The checksum stored in the record.
    pub checksum: u64,
    /// The flag bits.
    pub flags: Flags,
    /// Key length in bytes.
    pub key_len: u16,
    /// Value length in bytes.
    pub value_len: u32,
    /// Sequence number.
    pub seq: u64,
    /// Expiry in milliseconds since the Unix epoch, or [`NO_EXPIRY`].
    pub expires_at: u64,
}

impl RecordHeader {
    /// The length of the whole record this header starts.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.key_len) + u64::from(self.value_len)
    }

    /// Put or tombstone.
    pub fn kind(&self) -> RecordKind {
        if self.flags.contains(Flags::TOMBSTONE) {
            RecordKind::Tombstone
        } else {
            RecordKind::Put
        }
    }
}

/// A record decoded from the front of a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The record, borrowing key and value from the input.
    pub record: Record<'a>,
    /// How many bytes of the input the record took.
    pub len: usize,
}

/// The number of bytes a record with these key and value lengths takes.
pub const fn encoded_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + key_len + value_len
}

/// The checksum of a record: xxh3-64 over every byte after the checksum
/// field. `record` must be the whole encoded record.
pub fn checksum(record_after_checksum: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(record_after_checksum)
}

fn check_record(record: &Record<'_>, limits: &Limits) -> Result<()> {
    limits.check(record.key.len(), record.value.len())?;
    if record.is_tombstone() && !record.value.is_empty() {
        return Err(FormatError::TombstoneWithValue(record.value.len()));
    }
    Ok(())
}

/// Appends the encoding of `record` to `buf` and returns its length.
///
/// Checks the record against the default [`Limits`]; a caller with lower
/// limits checks them first with [`Limits::check`].
///
/// # Errors
///
/// An empty or oversized key, an oversized value, or a tombstone with a
/// value.
pub fn encode(record: &Record<'_>, buf: &mut Vec<u8>) -> Result<usize> {
    check_record(record, &Limits::default())?;
    let len = record.encoded_len();
    let start = buf.len();
    buf.resize(start + len, 0);
    write_unchecked(record, &mut buf[start..]);
    Ok(len)
}

/// Writes the encoding of `record` to the front of `out` and returns its
/// length, for callers that manage their own buffers.
///
/// # Errors
///
/// As [`encode`], and [`FormatError::BufferTooSmall`] when `out` is shorter
/// than [`Record::encoded_len`].
pub fn encode_into(record: &Record<'_>, out: &mut [u8]) -> Result<usize> {
    check_record(record, &Limits::default())?;
    let len = record.encoded_len();
    let Some(out) = out.get_mut(..len) else {
        return Err(FormatError::BufferTooSmall {
            needed: len,
            available: out.len(),
        });
    };
    write_unchecked(record, out);
    Ok(len)
}

/// Gives the encoded record at the front of `record` the sequence number
/// `seq`, and its checksum again; returns the record's length. For a
/// writer that assigns sequence numbers to records encoded earlier, on
/// another thread ([`encode`] with any `seq`): the record's other bytes
/// are unchanged.
///
/// # Errors
///
/// As [`decode_header`] (with the default [`Limits`]), and
/// [`FormatError::Truncated`] when `record` is shorter than the lengths in
/// its header.
pub fn set_seq(record: &mut [u8], seq: u64) -> Result<usize> {
    let len = decode_header(record, &Limits::default())?.record_len() as usize;
    let available = record.len();
    let Some(record) = record.get_mut(..len) else {
        return Err(FormatError::Truncated {
            needed: len as u64,
            available,
        });
    };
    record[SEQ_OFFSET..EXPIRES_AT_OFFSET].copy_from_slice(&seq.to_le_bytes());
    let sum = checksum(&record[VERSION_OFFSET..]);
    record[CHECKSUM_OFFSET..VERSION_OFFSET].copy_from_slice(&sum.to_le_bytes());
    Ok(len)
}

/// Writes a record whose lengths were checked into `out`, which is exactly
/// its encoded length.
fn write_unchecked(record: &Record<'_>, out: &mut [u8]) {
    let flags = match record.kind {
        RecordKind::Put => Flags::default(),
        RecordKind::Tombstone => Flags::TOMBSTONE,
    };
    out[VERSION_OFFSET] = FORMAT_VERSION;
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
    let sum = checksum(&out[VERSION_OFFSET..]);
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

/// Reads and checks the header at the front of `bytes`, without verifying
/// the checksum or reading the key and value.
///
/// Useful to learn a record's length before the rest of it is at hand. The
/// header's own fields are validated (version, flags, lengths against the
/// limits), so a length it returns is safe to use for bounds.
///
/// # Errors
///
/// [`FormatError::Truncated`] when fewer than [`HEADER_LEN`] bytes are
/// given; a version, flag or length error for a header that no valid
/// record has.
pub fn decode_header(bytes: &[u8], limits: &Limits) -> Result<RecordHeader> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(FormatError::Truncated {
            needed: HEADER_LEN as u64,
            available: bytes.len(),
        });
    };
    let version = head[VERSION_OFFSET];
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let flags = Flags::from_bits(head[FLAGS_OFFSET])?;
    let header = RecordHeader {
        checksum: read_u64(head, CHECKSUM_OFFSET),
        flags,
        key_len: read_u16(head, KEY_LEN_OFFSET),
        value_len: read_u32(head, VALUE_LEN_OFFSET),
        seq: read_u64(head, SEQ_OFFSET),
        expires_at: read_u64(head, EXPIRES_AT_OFFSET),
    };
    limits.check(usize::from(header.key_len), header.value_len as usize)?;
    if header.kind() == RecordKind::Tombstone && header.value_len != 0 {
        return Err(FormatError::TombstoneWithValue(header.value_len as usize));
    }
    Ok(header)
}

/// Decodes the record at the front of `bytes` with the default [`Limits`].
///
/// Bytes after the record are ignored; [`Decoded::len`] says where the next
/// record starts.
///
/// # Errors
///
/// A typed [`FormatError`] for any malformed input: truncation, a checksum
/// mismatch, an unknown version or flag, or a length out of bounds.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>> {
    decode_with_limits(bytes, &Limits::default())
}

/// Decodes the record at the front of `bytes`, rejecting values longer than
/// `limits` allow.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_with_limits<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Decoded<'a>> {
    let header = decode_header(bytes, limits)?;
    let record_len = header.record_len();
    // record_len is at most HEADER_LEN + u16::MAX + MAX_VALUE_LEN, far below
    // usize::MAX on every supported target.
    let len = record_len as usize;
    let Some(whole) = bytes.get(..len) else {
        return Err(FormatError::Truncated {
            needed: record_len,
            available: bytes.len(),
        });
    };
    let computed = checksum(&whole[VERSION_OFFSET..]);
    if computed != header.checksum {
        return Err(FormatError::ChecksumMismatch {
            stored: header.checksum,
            computed,
        });
    }
    let key_end = HEADER_LEN + usize::from(header.key_len);
    Ok(Decoded {
        record: Record {
            seq: header.seq,
            expires_at: header.expires_at,
            kind: header.kind(),
            key: &whole[HEADER_LEN..key_end],
            value: &whole[key_end..],
        },
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = (u64, u64, bool, Vec<u8>, Vec<u8>)> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 1..300),
            proptest::collection::vec(any::<u8>(), 0..2000),
        )
    }

    proptest! {
        #[test]
        fn round_trip((seq, expires_at, tomb, key, value) in arb_record()) {
            let record = Record {
                seq,
                expires_at,
                kind: if tomb { RecordKind::Tombstone } else { RecordKind::Put },
                key: &key,
                value: if tomb { &[] } else { &value },
            };
            let mut buf = vec![0xAA; 3]; // encode appends after existing bytes
            let len = encode(&record, &mut buf).unwrap();
            prop_assert_eq!(len, record.encoded_len());
            prop_assert_eq!(buf.len(), 3 + len);
            let mut tail = buf[3..].to_vec();
            tail.extend_from_slice(b"trailing bytes are ignored");
            let decoded = decode(&tail).unwrap();
            prop_assert_eq!(decoded.record, record);
            prop_assert_eq!(decoded.len, len);

            let mut exact = vec![0; len];
            prop_assert_eq!(encode_into(&record, &mut exact).unwrap(), len);
            prop_assert_eq!(&exact[..], &buf[3..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = decode_with_limits(&bytes, &Limits::with_max_value_len(16));
        }

        #[test]
        fn random_bytes_with_valid_header_fields_fail_checksum(
            seq in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 1..200)
        ) {
            // A header that passes every field check but whose checksum was
            // not computed over these bytes must be rejected.
            let mut bytes = vec![0u8; HEADER_LEN];
            bytes[VERSION_OFFSET] = FORMAT_VERSION;
            bytes[KEY_LEN_OFFSET..VALUE_LEN_OFFSET].copy_from_slice(&(body.len() as u16).to_le_bytes());
            bytes[SEQ_OFFSET..EXPIRES_AT_OFFSET].copy_from_slice(&seq.to_le_bytes());
            bytes.extend_from_slice(&body);
            let matches = checksum(&bytes[VERSION_OFFSET..]) == 0;
            let mismatch = matches!(decode(&bytes), Err(FormatError::ChecksumMismatch { .. }));
            prop_assert!(matches || mismatch, "decode accepted bytes with a wrong checksum");
        }

        #[test]
        fn flipped_bit_is_detected(
            (seq, expires_at, _tomb, key, value) in arb_record(),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let record = Record { seq, expires_at, kind: RecordKind::Put, key: &key, value: &value };
            let mut buf = Vec::new();
            encode(&record, &mut buf).unwrap();
            let at = pos.index(buf.len());
            buf[at] ^= 1 << bit;
            // Any single flipped bit either fails to decode or, if it hits a
            // length field, decodes nothing that equals the original record.
            match decode(&buf) {
                Err(_) => {}
                Ok(d) => prop_assert!(false, "flip at {at} decoded as {:?}", d.record.seq),
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = Vec::new();
        encode(&Record::put(42, b"some key", b"some value bytes"), &mut buf).unwrap();
        for cut in 0..buf.len() {
            let err = decode(&buf[..cut]).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
        assert!(decode(&buf).is_ok());
    }

    #[test]
    fn limits_are_enforced() {
        let mut buf = Vec::new();
        assert_eq!(
            encode(&Record::put(1, b"", b"v"), &mut buf),
            Err(FormatError::EmptyKey)
        );
        let big_key = vec![0u8; MAX_KEY_LEN + 1];
        assert!(matches!(
            encode(&Record::put(1, &big_key, b"v"), &mut buf),
            Err(FormatError::KeyTooLarge { len, .. }) if len == MAX_KEY_LEN + 1
        ));
        let max_key = vec![7u8; MAX_KEY_LEN];
        assert!(encode(&Record::put(1, &max_key, b"v"), &mut buf).is_ok());
        let big_value = vec![0u8; MAX_VALUE_LEN + 1];
        assert!(matches!(
            encode(&Record::put(1, b"k", &big_value), &mut buf),
            Err(FormatError::ValueTooLarge { .. })
        ));
        let tomb_with_value = Record {
            kind: RecordKind::Tombstone,
            ..Record::put(1, b"k", b"v")
        };
        assert_eq!(
            encode(&tomb_with_value, &mut buf),
            Err(FormatError::TombstoneWithValue(1))
        );

        // A record valid under the default limits is rejected by lower ones.
        buf.clear();
        encode(&Record::put(1, b"k", &[1u8; 100]), &mut buf).unwrap();
        assert!(matches!(
            decode_with_limits(&buf, &Limits::with_max_value_len(99)),
            Err(FormatError::ValueTooLarge { len: 100, max: 99 })
        ));
        assert!(decode_with_limits(&buf, &Limits::with_max_value_len(100)).is_ok());
    }

    #[test]
    fn header_fields_are_validated() {
        let mut buf = Vec::new();
        encode(&Record::tombstone(9, b"gone"), &mut buf).unwrap();
        let d = decode(&buf).unwrap();
        assert!(d.record.is_tombstone());
        assert!(d.record.value.is_empty());

        let mut bad = buf.clone();
        bad[VERSION_OFFSET] = 2;
        assert_eq!(decode(&bad), Err(FormatError::UnsupportedVersion(2)));
        let mut bad = buf.clone();
        bad[FLAGS_OFFSET] = 0x80;
        assert_eq!(decode(&bad), Err(FormatError::UnknownFlags(0x80)));
        let mut bad = buf.clone();
        bad[KEY_LEN_OFFSET..VALUE_LEN_OFFSET].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(decode(&bad), Err(FormatError::EmptyKey));
        let mut bad = buf.clone();
        bad[VALUE_LEN_OFFSET..SEQ_OFFSET].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bad),
            Err(FormatError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn encode_into_rejects_short_buffer() {
        let record = Record::put(1, b"key", b"value");
        let mut small = [0u8; 10];
        assert_eq!(
            encode_into(&record, &mut small),
            Err(FormatError::BufferTooSmall {
                needed: record.encoded_len(),
                available: 10
            })
        );
    }

    /// Golden bytes: a put and a tombstone as this build writes them.
    /// Computed once by running the encoder, then checked by hand against
    /// the record table of docs/format.md: every field at the offset the
    /// table gives (literal positions, not this module's offset constants,
    /// so that moving a field fails here), little-endian, and the checksum
    /// (checked with the reference `xxhsum -H3` too) over bytes 8 to the
    /// end. Changing the format must change these bytes, docs/format.md and
    /// the version together.
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
    fn the_encoding_is_frozen() {
        let put = Record {
            seq: 0x0102_0304_0506_0708,
            expires_at: 0x1122_3344_5566_7788,
            kind: RecordKind::Put,
            key: b"k",
            value: b"vv",
        };
        let tombstone = Record::tombstone(0x0102_0304_0506_0708, b"k");
        for (record, golden) in [(put, &GOLDEN_PUT[..]), (tombstone, &GOLDEN_TOMBSTONE[..])] {
            let mut buf = Vec::new();
            encode(&record, &mut buf).unwrap();
            assert_eq!(buf, golden, "{record:?} encodes to other bytes");
            let decoded = decode(golden).unwrap();
            assert_eq!(decoded.record, record);
            assert_eq!(decoded.len, golden.len());
            // The checksum covers bytes 8 to the end (docs/format.md).
            let sum = xxhash_rust::xxh3::xxh3_64(&golden[8..]);
            assert_eq!(golden[..8], sum.to_le_bytes());
        }
    }

    #[test]
    fn set_seq_gives_a_record_a_new_sequence_number_and_checksum() {
        let mut buf = Vec::new();
        let record = Record {
            expires_at: 77,
            ..Record::put(0, b"key", b"value")
        };
        encode(&record, &mut buf).unwrap();
        buf.extend_from_slice(b"next record");
        assert_eq!(set_seq(&mut buf, 42).unwrap(), record.encoded_len());
        let decoded = decode(&buf).unwrap();
        assert_eq!(decoded.record, Record { seq: 42, ..record });
        let mut fresh = Vec::new();
        encode(&Record { seq: 42, ..record }, &mut fresh).unwrap();
        assert_eq!(
            &buf[..fresh.len()],
            &fresh[..],
            "same bytes as encoding with seq 42"
        );
        assert!(matches!(
            set_seq(&mut buf[..20], 1),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            set_seq(&mut fresh[..39], 1),
            Err(FormatError::Truncated { .. })
        ));
    }
}
