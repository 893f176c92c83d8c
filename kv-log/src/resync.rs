//! The search for the next valid record after a bad one, with a bound on
//! its work.
//!
//! After a bad record at offset X, every later offset is a candidate record
//! start. The record header has no check of its own (its checksum covers the
//! whole record), so a candidate is first filtered by what
//! [`kv_format::RecordFormat::decode_header`] checks in O(1) (flags, the
//! length varints, key length, value length against the limits, a tombstone
//! without a value, and in version 1 the version byte) and by
//! whether the record it describes fits in the bytes left; only then is it
//! hashed. The first [`FREE_BYTES`] bytes a candidate hashes are free, and
//! the bytes hashed beyond them in one search are capped at [`hash_budget`]
//! of the bytes after X. So a search costs O(bytes after X) whatever they
//! are: at most one header parse and [`FREE_BYTES`] bytes hashed per
//! offset, plus at most `2 × tail + 1 MiB` bytes hashed.
//!
//! Why that budget: a genuine record after X costs at most the tail to hash,
//! so it is always found when the false candidates before it cost less than
//! `tail + 1 MiB`. Why the free bytes: a version 2 record can be as short
//! as 16 bytes, so a repeating pattern (`[0, 0, 1, 0]` over and over, say)
//! can hold a plausible short record at every fourth offset; charging
//! those would give up on ordinary data, and leaving them free still
//! bounds the work by a constant per offset. A false candidate of version 2 needs a flags byte of 0
//! to 3 (one offset in 64 of random bytes), then lengths whose record fits
//! in what is left, so most candidates of random bytes cost no hashing and
//! the rest cost their own length; version 1 also needs a version byte of
//! 1 (one in 32,768). In ordinary data the budget is far from reached; a
//! value made of many plausible record
//! headers can exhaust it, and then the search gives up
//! ([`Next::GaveUp`]): opening treats that as "a valid record may follow"
//! (corruption, the tail is never cut), and checking reports the rest of
//! the segment as one bad region.

use kv_format::{Limits, RecordFormat};

/// The constant part of [`hash_budget`]: room for small tails.
const BUDGET_SLACK: u64 = 1 << 20;

/// The bytes each candidate may hash without being charged to the budget.
pub(crate) const FREE_BYTES: u64 = 64;

/// The most bytes one search over `tail_len` bytes after a bad record may
/// hash: `2 × tail_len + 1 MiB`.
pub(crate) const fn hash_budget(tail_len: u64) -> u64 {
    tail_len.saturating_mul(2).saturating_add(BUDGET_SLACK)
}

/// What a search after a bad record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A valid record starts at this offset.
    Record(usize),
    /// No valid record starts at any later offset.
    Nothing,
    /// The hash budget ran out before every candidate was tried.
    GaveUp,
}

/// The outcome of a search, with the bytes it hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resync {
    /// What was found.
    pub(crate) next: Next,
    /// Bytes hashed to verify candidates (at most [`hash_budget`] of the
    /// bytes after the bad record, plus [`FREE_BYTES`] per candidate).
    pub(crate) hashed: u64,
}

/// Looks for the first valid record that starts after the bad one at `bad`
/// in `bytes` (a segment's readable bytes, records laid out as `format`).
pub(crate) fn next_valid_record(
    bytes: &[u8],
    bad: usize,
    format: RecordFormat,
    limits: &Limits,
) -> Resync {
    let tail_len = bytes.len().saturating_sub(bad) as u64;
    let budget = hash_budget(tail_len);
    let mut hashed = 0u64;
    let mut charged = 0u64;
    // Zeros to the end (the space a writer allocated ahead) hold no record:
    // a record's key length is never 0 (nor, in version 1, its version
    // byte). Said at once, not searched.
    if bytes
        .get(bad.saturating_add(1)..)
        .is_none_or(|rest| rest.iter().all(|&b| b == 0))
    {
        return Resync {
            next: Next::Nothing,
            hashed,
        };
    }
    for at in bad.saturating_add(1)..bytes.len() {
        let candidate = &bytes[at..];
        let Ok(header) = format.decode_header(candidate, limits) else {
            continue;
        };
        let record_len = header.record_len();
        if record_len > candidate.len() as u64 {
            continue;
        }
        // The checksum covers everything after itself.
        let bytes_hashed = record_len - format.checksum_len() as u64;
        let cost = bytes_hashed.saturating_sub(FREE_BYTES);
        if charged + cost > budget {
            return Resync {
                next: Next::GaveUp,
                hashed,
            };
        }
        charged += cost;
        hashed += bytes_hashed;
        if format.decode_with_limits(candidate, limits).is_ok() {
            return Resync {
                next: Next::Record(at),
                hashed,
            };
        }
    }
    Resync {
        next: Next::Nothing,
        hashed,
    }
}

#[cfg(test)]
mod tests {
    use kv_format::{Record, RecordKind, encode};

    use super::*;

    fn record(key: &[u8], value: &[u8], seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Record {
                seq,
                expires_at: 0,
                kind: RecordKind::Put,
                key,
                value,
            },
            &mut out,
        )
        .unwrap();
        out
    }

    /// A value whose every 32 bytes in its first `reach` bytes hold a
    /// plausible record header claiming most of what follows up to `reach`:
    /// what a value of stored records, or an adversary, can look like.
    fn plausible_headers(len: usize, reach: usize) -> Vec<u8> {
        let mut value = vec![0u8; len];
        for at in (0..reach - 64).step_by(32) {
            // { checksum u32 | flags 0 | key_len 1 | value_len varint | seq }
            value[at + 5] = 1;
            let mut claimed = (reach - at - 64) as u32;
            let mut i = at + 6;
            while claimed >= 0x80 {
                value[i] = (claimed as u8) | 0x80;
                claimed >>= 7;
                i += 1;
            }
            value[i] = claimed as u8;
        }
        value
    }

    #[test]
    fn a_torn_record_of_plausible_headers_gives_up_within_the_budget() {
        let whole = record(b"key", &plausible_headers(4 << 20, 2 << 20), 1);
        let torn = &whole[..whole.len() / 2];
        let search = next_valid_record(torn, 0, RecordFormat::CURRENT, &Limits::default());
        assert_eq!(search.next, Next::GaveUp);
        assert!(search.hashed <= hash_budget(torn.len() as u64) + FREE_BYTES * torn.len() as u64);
    }

    #[test]
    fn a_torn_record_of_patterns_is_searched_to_the_end_in_linear_work() {
        for pattern in [&[0u8, 0, 1, 0][..], &[1, 0, 0, 0], &[0xff; 4]] {
            let value: Vec<u8> = pattern.iter().copied().cycle().take(4 << 20).collect();
            let whole = record(b"key", &value, 1);
            let torn = &whole[..whole.len() / 2];
            let search = next_valid_record(torn, 0, RecordFormat::CURRENT, &Limits::default());
            assert_eq!(search.next, Next::Nothing, "{pattern:?}");
            assert!(
                search.hashed <= hash_budget(torn.len() as u64) + FREE_BYTES * torn.len() as u64
            );
        }
    }

    #[test]
    fn a_valid_record_after_damage_is_found() {
        let mut bytes = record(b"first", &[0u8, 0, 1, 0].repeat(1000), 1);
        bytes[40] ^= 1;
        let next = bytes.len();
        bytes.extend_from_slice(&record(b"second", b"value", 2));
        let search = next_valid_record(&bytes, 0, RecordFormat::CURRENT, &Limits::default());
        assert_eq!(search.next, Next::Record(next));
        assert!(search.hashed <= hash_budget(bytes.len() as u64) + FREE_BYTES * bytes.len() as u64);
    }
}
