//! What a record is, whatever its layout: [`Record`], its [`Flags`],
//! [`Limits`] and [`RecordHeader`], the [`RecordFormat`] that says which
//! layout some bytes are in, and the free functions that encode and decode
//! the layout this build writes ([`RecordFormat::CURRENT`]). The layouts
//! themselves are in `v1.rs` and `v2.rs`.

use crate::{FormatError, Result, v1, v2};

/// The record format version this build writes: [`RecordFormat::CURRENT`].
/// Records carry no version of their own (version 1 did): the file that
/// holds them says which layout they are in.
pub const FORMAT_VERSION: u8 = RecordFormat::CURRENT.version();
/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The longest value this format allows, in bytes (64 MiB). [`Limits`]
/// can set a lower maximum.
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// The `expires_at` of a record that never expires.
pub const NO_EXPIRY: u64 = 0;
/// The shortest header of the current layout: a key and a value shorter
/// than 128 bytes each, no expiry.
pub const MIN_HEADER_LEN: usize = v2::MIN_HEADER_LEN;
/// The longest header of the current layout: a key of 16 KiB or more, a
/// value of 2 MiB or more, and an expiry.
pub const MAX_HEADER_LEN: usize = v2::MAX_HEADER_LEN;
/// The shortest record of any layout this build reads (a one-byte key, no
/// value): a file of `n` bytes holds at most `n / MIN_RECORD_LEN` records.
pub const MIN_RECORD_LEN: usize = MIN_HEADER_LEN + 1;

/// The layouts of a record this build reads. Which one some bytes are in is
/// said by the file that holds them (the version of a segment header, the
/// payload version of a WAL file), never guessed from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// Version 1 (up to commit e1a3b18): a fixed 32-byte header with a
    /// 64-bit checksum and a version byte. Read, and written only on
    /// request ([`RecordFormat::encode`]), for tests of old files.
    V1,
    /// Version 2: a 15 to 28-byte header with a 32-bit checksum and varint
    /// lengths; what this build writes.
    V2,
}

impl RecordFormat {
    /// The layout this build writes.
    pub const CURRENT: RecordFormat = RecordFormat::V2;

    /// The layout of version `version`, if this build reads it.
    pub const fn from_version(version: u8) -> Option<RecordFormat> {
        match version {
            1 => Some(RecordFormat::V1),
            2 => Some(RecordFormat::V2),
            _ => None,
        }
    }

    /// The version number of this layout.
    pub const fn version(self) -> u8 {
        match self {
            RecordFormat::V1 => 1,
            RecordFormat::V2 => 2,
        }
    }

    /// The bytes of a record's checksum, which come first and cover every
    /// byte after them.
    pub const fn checksum_len(self) -> usize {
        match self {
            RecordFormat::V1 => v1::CHECKSUM_LEN,
            RecordFormat::V2 => v2::CHECKSUM_LEN,
        }
    }

    /// The number of bytes `record` takes in this layout.
    pub fn encoded_len(self, record: &Record<'_>) -> usize {
        match self {
            RecordFormat::V1 => v1::HEADER_LEN + record.key.len() + record.value.len(),
            RecordFormat::V2 => v2::encoded_len(record),
        }
    }

    /// Appends the encoding of `record` in this layout to `buf` and returns
    /// its length. Only [`RecordFormat::CURRENT`] is written by the engine;
    /// the others are for tests and tools that build old files.
    ///
    /// # Errors
    ///
    /// As [`encode`].
    pub fn encode(self, record: &Record<'_>, buf: &mut Vec<u8>) -> Result<usize> {
        check_record(record, &Limits::default())?;
        let len = self.encoded_len(record);
        let start = buf.len();
        buf.resize(start + len, 0);
        match self {
            RecordFormat::V1 => v1::write_unchecked(record, &mut buf[start..]),
            RecordFormat::V2 => v2::write_unchecked(record, &mut buf[start..]),
        }
        Ok(len)
    }

    /// Reads and checks the header at the front of `bytes` in this layout,
    /// without verifying the checksum or reading the key and value: see
    /// [`decode_header`].
    ///
    /// # Errors
    ///
    /// As [`decode_header`].
    pub fn decode_header(self, bytes: &[u8], limits: &Limits) -> Result<RecordHeader> {
        let header = match self {
            RecordFormat::V1 => v1::decode_header(bytes)?,
            RecordFormat::V2 => v2::decode_header(bytes)?,
        };
        limits.check(usize::from(header.key_len), header.value_len as usize)?;
        if header.kind() == RecordKind::Tombstone && header.value_len != 0 {
            return Err(FormatError::TombstoneWithValue(header.value_len as usize));
        }
        Ok(header)
    }

    /// Decodes the record at the front of `bytes` in this layout, rejecting
    /// values longer than `limits` allow: see [`decode_with_limits`].
    ///
    /// # Errors
    ///
    /// As [`decode`].
    pub fn decode_with_limits<'a>(self, bytes: &'a [u8], limits: &Limits) -> Result<Decoded<'a>> {
        let header = self.decode_header(bytes, limits)?;
        let record_len = header.record_len();
        // record_len is at most MAX_HEADER_LEN + u16::MAX + MAX_VALUE_LEN,
        // far below usize::MAX on every supported target.
        let len = record_len as usize;
        let Some(whole) = bytes.get(..len) else {
            return Err(FormatError::Truncated {
                needed: record_len,
                available: bytes.len(),
            });
        };
        let computed = match self {
            RecordFormat::V1 => v1::checksum(whole),
            RecordFormat::V2 => v2::checksum(whole),
        };
        if computed != header.checksum {
            return Err(FormatError::ChecksumMismatch {
                stored: header.checksum,
                computed,
            });
        }
        let key_start = usize::from(header.header_len);
        let key_end = key_start + usize::from(header.key_len);
        Ok(Decoded {
            record: Record {
                seq: header.seq,
                expires_at: header.expires_at,
                kind: header.kind(),
                key: &whole[key_start..key_end],
                value: &whole[key_end..],
            },
            len,
        })
    }

    /// Decodes the record at the front of `bytes` in this layout with the
    /// default [`Limits`].
    ///
    /// # Errors
    ///
    /// As [`decode`].
    pub fn decode(self, bytes: &[u8]) -> Result<Decoded<'_>> {
        self.decode_with_limits(bytes, &Limits::default())
    }
}

/// The flag bits of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    /// The record deletes its key; it has no value.
    pub const TOMBSTONE: Flags = Flags(0b0000_0001);
    /// An expiry time follows the sequence number (version 2; version 1
    /// always stores one, 0 for never).
    pub const EXPIRES: Flags = Flags(0b0000_0010);

    /// The raw flags byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Parses a flags byte, rejecting bits that `format` does not define.
    pub const fn from_bits(bits: u8, format: RecordFormat) -> Result<Flags> {
        let known = match format {
            RecordFormat::V1 => Self::TOMBSTONE.0,
            RecordFormat::V2 => Self::TOMBSTONE.0 | Self::EXPIRES.0,
        };
        if bits & !known != 0 {
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
        RecordFormat::CURRENT.encoded_len(self)
    }
}

/// The header fields of a record, as read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The checksum stored in the record (version 2 stores 32 bits).
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
    /// The length of the header: the key starts here.
    pub header_len: u8,
}

impl RecordHeader {
    /// The length of the whole record this header starts.
    pub fn record_len(&self) -> u64 {
        u64::from(self.header_len) + u64::from(self.key_len) + u64::from(self.value_len)
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

pub(crate) fn check_record(record: &Record<'_>, limits: &Limits) -> Result<()> {
    limits.check(record.key.len(), record.value.len())?;
    if record.is_tombstone() && !record.value.is_empty() {
        return Err(FormatError::TombstoneWithValue(record.value.len()));
    }
    Ok(())
}

/// Appends the encoding of `record` in the current layout to `buf` and
/// returns its length.
///
/// Checks the record against the default [`Limits`]; a caller with lower
/// limits checks them first with [`Limits::check`].
///
/// # Errors
///
/// An empty or oversized key, an oversized value, or a tombstone with a
/// value.
pub fn encode(record: &Record<'_>, buf: &mut Vec<u8>) -> Result<usize> {
    RecordFormat::CURRENT.encode(record, buf)
}

/// Writes the encoding of `record` in the current layout to the front of
/// `out` and returns its length, for callers that manage their own buffers.
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
    v2::write_unchecked(record, out);
    Ok(len)
}

/// Gives the encoded record (current layout) at the front of `record` the
/// sequence number `seq`, and its checksum again; returns the record's
/// length. For a writer that assigns sequence numbers to records encoded
/// earlier, on another thread ([`encode`] with any `seq`): the record's
/// other bytes are unchanged, and so is its length (the sequence number is
/// stored in a fixed eight bytes).
///
/// # Errors
///
/// As [`decode_header`] (with the default [`Limits`]), and
/// [`FormatError::Truncated`] when `record` is shorter than the lengths in
/// its header.
pub fn set_seq(record: &mut [u8], seq: u64) -> Result<usize> {
    let header = decode_header(record, &Limits::default())?;
    let len = header.record_len() as usize;
    let available = record.len();
    let Some(record) = record.get_mut(..len) else {
        return Err(FormatError::Truncated {
            needed: len as u64,
            available,
        });
    };
    v2::patch_seq(record, &header, seq);
    Ok(len)
}

/// Reads and checks the header (current layout) at the front of `bytes`,
/// without verifying the checksum or reading the key and value.
///
/// Useful to learn a record's length before the rest of it is at hand. The
/// header's own fields are validated (flags, lengths against the limits),
/// so a length it returns is safe to use for bounds.
///
/// # Errors
///
/// [`FormatError::Truncated`] when the bytes end inside the header; a
/// flag, varint or length error for a header that no valid record has.
pub fn decode_header(bytes: &[u8], limits: &Limits) -> Result<RecordHeader> {
    RecordFormat::CURRENT.decode_header(bytes, limits)
}

/// Decodes the record (current layout) at the front of `bytes` with the
/// default [`Limits`].
///
/// Bytes after the record are ignored; [`Decoded::len`] says where the next
/// record starts.
///
/// # Errors
///
/// A typed [`FormatError`] for any malformed input: truncation, a checksum
/// mismatch, an unknown flag, a malformed varint, or a length out of
/// bounds.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>> {
    RecordFormat::CURRENT.decode(bytes)
}

/// Decodes the record (current layout) at the front of `bytes`, rejecting
/// values longer than `limits` allow.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_with_limits<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Decoded<'a>> {
    RecordFormat::CURRENT.decode_with_limits(bytes, limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = (u64, u64, bool, Vec<u8>, Vec<u8>)> {
        (
            any::<u64>(),
            prop_oneof![Just(NO_EXPIRY), any::<u64>()],
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
            for format in [RecordFormat::V1, RecordFormat::V2] {
                let mut buf = vec![0xAA; 3]; // encode appends after existing bytes
                let len = format.encode(&record, &mut buf).unwrap();
                prop_assert_eq!(len, format.encoded_len(&record));
                prop_assert_eq!(buf.len(), 3 + len);
                let mut tail = buf[3..].to_vec();
                tail.extend_from_slice(b"trailing bytes are ignored");
                let decoded = format.decode(&tail).unwrap();
                prop_assert_eq!(decoded.record, record);
                prop_assert_eq!(decoded.len, len);
            }
            let mut buf = Vec::new();
            let len = encode(&record, &mut buf).unwrap();
            let mut exact = vec![0; len];
            prop_assert_eq!(encode_into(&record, &mut exact).unwrap(), len);
            prop_assert_eq!(&exact[..], &buf[..]);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for format in [RecordFormat::V1, RecordFormat::V2] {
                let _ = format.decode(&bytes);
                let _ = format.decode_with_limits(&bytes, &Limits::with_max_value_len(16));
            }
        }

        #[test]
        fn random_bytes_with_valid_header_fields_fail_checksum(
            seq in any::<u64>(), stored in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 1..100)
        ) {
            // A header that passes every field check but whose checksum was
            // not computed over these bytes must be rejected.
            let mut bytes = stored.to_le_bytes().to_vec();
            bytes.push(0); // flags: a put
            bytes.push(body.len() as u8); // key length
            bytes.push(0); // value length
            bytes.extend_from_slice(&seq.to_le_bytes());
            bytes.extend_from_slice(&body);
            let matches = v2::checksum(&bytes) == u64::from(stored);
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

    /// Random bytes pass no checksum, so here it is made right: a header
    /// of random varint bytes (shortest form or not, long or short), the
    /// checksum over whatever the header says the record is. What decodes
    /// then must re-encode to exactly its bytes: one record has one
    /// encoding. Deterministic (xorshift), and it checks that many cases
    /// decode, so that it cannot pass by rejecting everything.
    #[test]
    fn bytes_that_decode_re_encode_to_themselves() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut accepted, mut overlong) = (0, 0);
        for _ in 0..50_000 {
            let mut bytes = vec![0, 0, 0, 0, (next() % 4) as u8];
            for max in [3, 4] {
                let n = 1 + (next() % max) as usize;
                for i in 0..n {
                    // Small lengths, continuation bits as drawn.
                    let b = (next() % 40) as u8 | if i + 1 < n { 0x80 } else { 0 };
                    bytes.push(if i + 1 == n && next() % 4 == 0 { 0 } else { b });
                }
            }
            let len = 8 + 8 + (next() % 300) as usize;
            bytes.extend((0..len).map(|_| next() as u8));
            let end = RecordFormat::V2
                .decode_header(&bytes, &Limits::default())
                .map_or(bytes.len() as u64, |h| h.record_len())
                .min(bytes.len() as u64) as usize;
            let sum = (v2::checksum(&bytes[..end.max(4)]) as u32).to_le_bytes();
            bytes[..4].copy_from_slice(&sum);
            match decode(&bytes) {
                Ok(d) => {
                    accepted += 1;
                    let mut again = Vec::new();
                    encode(&d.record, &mut again).unwrap();
                    assert_eq!(&again[..], &bytes[..d.len]);
                }
                Err(FormatError::MalformedLength(_) | FormatError::ZeroExpiry) => overlong += 1,
                Err(_) => {}
            }
        }
        assert!(accepted > 1_000, "only {accepted} of 50,000 decoded");
        assert!(
            overlong > 1_000,
            "only {overlong} non-canonical headers seen"
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for expires_at in [NO_EXPIRY, 5] {
            let record = Record {
                expires_at,
                ..Record::put(42, b"some key", &[7; 200])
            };
            let mut buf = Vec::new();
            encode(&record, &mut buf).unwrap();
            for cut in 0..buf.len() {
                let err = decode(&buf[..cut]).unwrap_err();
                assert!(
                    matches!(err, FormatError::Truncated { .. }),
                    "cut at {cut}: {err}"
                );
            }
            assert!(decode(&buf).is_ok());
        }
    }

    #[test]
    fn header_lengths_are_as_documented() {
        let key = [b'k'; 16];
        let header = |value_len: usize, expires_at: u64| {
            let value = vec![0u8; value_len];
            let record = Record {
                expires_at,
                ..Record::put(u64::MAX, &key, &value)
            };
            record.encoded_len() - 16 - value_len
        };
        assert_eq!(header(100, NO_EXPIRY), 15);
        assert_eq!(header(100, 1), 23);
        assert_eq!(header(1000, NO_EXPIRY), 16);
        assert_eq!(header(16 << 10, NO_EXPIRY), 17);
        assert_eq!(header(MAX_VALUE_LEN, NO_EXPIRY), 18);
        let long_key = [b'k'; MAX_KEY_LEN];
        let longest = Record {
            expires_at: 1,
            ..Record::put(1, &long_key, &[])
        };
        assert_eq!(longest.encoded_len() - MAX_KEY_LEN, 4 + 1 + 3 + 1 + 8 + 8);
        let big_value = vec![0u8; 2 << 20];
        let longest_header = Record {
            expires_at: 1,
            ..Record::put(1, &long_key, &big_value)
        };
        assert_eq!(
            longest_header.encoded_len() - MAX_KEY_LEN - big_value.len(),
            MAX_HEADER_LEN
        );
        assert_eq!(RecordFormat::V1.encoded_len(&longest), 32 + MAX_KEY_LEN);
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

    /// A version 2 header, field by field.
    fn header(flags: u8, key_len: &[u8], value_len: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 0, flags];
        bytes.extend_from_slice(key_len);
        bytes.extend_from_slice(value_len);
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(tail);
        bytes.extend_from_slice(&[b'k'; 300]);
        bytes
    }

    #[test]
    fn header_fields_are_validated() {
        let mut buf = Vec::new();
        encode(&Record::tombstone(9, b"gone"), &mut buf).unwrap();
        let d = decode(&buf).unwrap();
        assert!(d.record.is_tombstone());
        assert!(d.record.value.is_empty());

        let check = |bytes: &[u8]| decode_header(bytes, &Limits::default()).map(|h| h.key_len);
        assert_eq!(check(&header(0, &[4], &[0], &[])), Ok(4));
        assert_eq!(
            check(&header(0x04, &[4], &[0], &[])),
            Err(FormatError::UnknownFlags(0x04))
        );
        assert_eq!(
            check(&header(0, &[0], &[0], &[])),
            Err(FormatError::EmptyKey)
        );
        // Lengths in their shortest form only, and no longer than the field.
        assert_eq!(check(&header(0, &[0x81, 0x01], &[0], &[])), Ok(129));
        assert_eq!(
            check(&header(0, &[0x84, 0x00], &[0], &[])),
            Err(FormatError::MalformedLength("key"))
        );
        assert_eq!(
            check(&header(0, &[0x84, 0x80, 0x80, 0x01], &[0], &[])),
            Err(FormatError::MalformedLength("key"))
        );
        assert!(matches!(
            check(&header(0, &[0x80, 0x80, 0x04], &[0], &[])),
            Err(FormatError::KeyTooLarge { len: 65536, .. })
        ));
        assert_eq!(
            check(&header(0, &[4], &[0x80, 0x80, 0x80, 0x80, 0x01], &[])),
            Err(FormatError::MalformedLength("value"))
        );
        assert!(matches!(
            check(&header(0, &[4], &[0x81, 0x80, 0x80, 0x20], &[])),
            Err(FormatError::ValueTooLarge { .. })
        ));
        assert_eq!(
            check(&header(1, &[4], &[1], &[])),
            Err(FormatError::TombstoneWithValue(1))
        );
        // An expiry flag brings eight bytes more, which must not be 0.
        let expiring = header(2, &[4], &[0], &7u64.to_le_bytes());
        let h = decode_header(&expiring, &Limits::default()).unwrap();
        assert_eq!((h.expires_at, h.header_len), (7, 23));
        assert_eq!(
            check(&header(2, &[4], &[0], &0u64.to_le_bytes())),
            Err(FormatError::ZeroExpiry)
        );
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

    /// Golden bytes: a put with an expiry and a tombstone as this build
    /// writes them. Computed once by running the encoder, then checked by
    /// hand against the record table of docs/format.md: every field at the
    /// offset the table gives, little-endian, and the checksum (the low 32
    /// bits of xxh3-64) over bytes 4 to the end. Changing the format must
    /// change these bytes, docs/format.md and the version together.
    #[rustfmt::skip]
    const GOLDEN_PUT: [u8; 26] = [
        0xe6, 0x8c, 0x95, 0x30,                         // 0..4   checksum
        0x02,                                           // 4      flags: expires
        0x01,                                           // 5      key_len 1
        0x02,                                           // 6      value_len 2
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 7..15  seq
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // 15..23 expires_at
        b'k',                                           // 23     key
        b'v', b'v',                                     // 24..26 value
    ];

    /// See [`GOLDEN_PUT`].
    #[rustfmt::skip]
    const GOLDEN_TOMBSTONE: [u8; 16] = [
        0x8a, 0xc8, 0xf2, 0xa1,                         // 0..4   checksum
        0x01,                                           // 4      flags: tombstone
        0x01,                                           // 5      key_len 1
        0x00,                                           // 6      value_len 0
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 7..15  seq
        b'k',                                           // 15     key
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
            // The checksum covers bytes 4 to the end (docs/format.md).
            let sum = xxhash_rust::xxh3::xxh3_64(&golden[4..]) as u32;
            assert_eq!(golden[..4], sum.to_le_bytes());
        }
    }

    #[test]
    fn set_seq_gives_a_record_a_new_sequence_number_and_checksum() {
        for expires_at in [NO_EXPIRY, 77] {
            let mut buf = Vec::new();
            let record = Record {
                expires_at,
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
                set_seq(&mut buf[..10], 1),
                Err(FormatError::Truncated { .. })
            ));
            let short = fresh.len() - 1;
            assert!(matches!(
                set_seq(&mut fresh[..short], 1),
                Err(FormatError::Truncated { .. })
            ));
        }
    }
}
