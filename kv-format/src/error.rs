//! [`FormatError`]: why a record could not be encoded or decoded.

use thiserror::Error;

/// Why a record could not be encoded or decoded.
///
/// Decoding errors describe the bytes only; the caller knows which file and
/// offset they came from and adds that when it reports corruption.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The slice ends before the record does.
    #[error("record is truncated: it needs {needed} bytes but only {available} are present")]
    Truncated {
        /// Bytes the record needs, as far as the header could tell.
        needed: u64,
        /// Bytes that were available.
        available: usize,
    },
    /// The stored checksum does not match the bytes it covers.
    #[error("record checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// The checksum read from the record.
        stored: u64,
        /// The checksum of the bytes as they are.
        computed: u64,
    },
    /// A version 1 record's version byte is not 1: the bytes are not a
    /// version 1 record.
    #[error("record version byte is {0}, not 1: not a version 1 record")]
    UnsupportedVersion(u8),
    /// A length in a version 2 header is not a varint in its shortest
    /// form, or is longer than the field allows.
    #[error("record header has a malformed {0} length")]
    MalformedLength(&'static str),
    /// A version 2 header says an expiry follows, and it is 0 (never),
    /// which is written without one.
    #[error("record header has an expiry flag with an expiry time of 0")]
    ZeroExpiry,
    /// The flags byte has bits set that no version of the format defines.
    #[error("record has unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// A key must be at least one byte long.
    #[error("key is empty; keys must be 1 to 65535 bytes")]
    EmptyKey,
    /// A key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("key is {len} bytes; the maximum is {max}")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The largest key allowed.
        max: usize,
    },
    /// A value longer than the configured maximum.
    #[error("value is {len} bytes; the maximum is {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// A tombstone must not carry a value.
    #[error("tombstone record carries a {0}-byte value")]
    TombstoneWithValue(usize),
    /// The caller's output buffer is smaller than the encoded record.
    #[error("output buffer holds {available} bytes but the record needs {needed}")]
    BufferTooSmall {
        /// Bytes the encoded record needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}
