//! On-disk record encoding for the kv storage engine.
//!
//! A *record* is one put or one tombstone: a fixed 32-byte header, then the
//! key, then the value. Segment files are sequences of records, and the
//! write-ahead log carries the same records inside its frames. The full byte
//! layout is drawn in `docs/format.md`.
//!
//! ```text
//! Format: { checksum u64 | version u8 | flags u8 | key_len u16 | value_len u32
//!         | seq u64 | expires_at u64 | key [key_len] | value [value_len] }
//! ```
//!
//! All integers are little-endian. The checksum is xxh3-64 over every byte
//! after the checksum field (the rest of the header, the key and the value).
//!
//! # What this crate is not
//!
//! It does no I/O, spawns no threads and keeps no state: it turns a record
//! into bytes and bytes back into a record. Files, offsets and recovery
//! policies belong to the crates above it (`kv-log`, `kv-wal`,
//! `kv-engine`); dependencies point down to this crate, never up from it.
//!
//! # Limits
//!
//! - Keys are 1 to [`MAX_KEY_LEN`] (65,535) bytes.
//! - Values are 0 to [`MAX_VALUE_LEN`] (64 MiB) bytes; [`Limits`] lowers that.
//! - A tombstone carries no value.
//!
//! # Decoding untrusted bytes
//!
//! [`decode`] takes any byte slice. It never panics, never reads past the
//! slice, never allocates, and checks every length it reads against the
//! slice and the [`Limits`] before using it. Key and value are borrowed from
//! the input, not copied.
//!
//! ```
//! use kv_format::{decode, encode, Record};
//!
//! let mut buf = Vec::new();
//! let record = Record::put(7, b"apple", b"red");
//! let len = encode(&record, &mut buf)?;
//! assert_eq!(len, buf.len());
//!
//! let decoded = decode(&buf)?;
//! assert_eq!(decoded.record, record);
//! assert_eq!(decoded.len, len);
//! # Ok::<(), kv_format::FormatError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod record;

pub use error::FormatError;
pub use record::{
    CHECKSUM_OFFSET, Decoded, EXPIRES_AT_OFFSET, FLAGS_OFFSET, FORMAT_VERSION, Flags, HEADER_LEN,
    KEY_LEN_OFFSET, Limits, MAX_KEY_LEN, MAX_VALUE_LEN, NO_EXPIRY, Record, RecordHeader,
    RecordKind, SEQ_OFFSET, VALUE_LEN_OFFSET, VERSION_OFFSET, checksum, decode, decode_header,
    decode_with_limits, encode, encode_into, encoded_len, set_seq,
};

/// The result type of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
