//! On-disk record encoding for the kv storage engine.
//!
//! A *record* is one put or one tombstone: a short header, then the key,
//! then the value. Segment files are sequences of records, and the
//! write-ahead log carries the same records inside its frames. The full byte
//! layout is drawn in `docs/format.md`.
//!
//! ```text
//! Format (version 2): { checksum u32 | flags u8 | key_len varint | value_len varint
//!                     | seq u64 | [ expires_at u64 ] | key [key_len] | value [value_len] }
//! ```
//!
//! All integers are little-endian. The checksum is the low 32 bits of
//! xxh3-64 over every byte after it (the rest of the header, the key and
//! the value). The header of a 16-byte key with a 100-byte value is 15
//! bytes; version 1, which this build still reads ([`RecordFormat::V1`]),
//! spent a fixed 32.
//!
//! # Versions
//!
//! A record does not say which version it is in: the file that holds it
//! does (a segment's header, a WAL file's payload version). The free
//! functions ([`encode`], [`decode`], ...) use the version this build
//! writes, [`RecordFormat::CURRENT`]; [`RecordFormat`]'s methods take any.
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
mod v1;
mod v2;

pub use error::FormatError;
pub use record::{
    Decoded, FORMAT_VERSION, Flags, Limits, MAX_HEADER_LEN, MAX_KEY_LEN, MAX_VALUE_LEN,
    MIN_HEADER_LEN, MIN_RECORD_LEN, NO_EXPIRY, Record, RecordFormat, RecordHeader, RecordKind,
    decode, decode_header, decode_with_limits, encode, encode_into, set_seq,
};

/// The result type of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
