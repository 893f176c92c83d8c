//! The search for the next valid record after a bad one, with a bound on
//! its work.
//!
//! After a bad record at offset X, every later offset is a candidate record
//! start. The record header has no check of its own (its checksum covers the
//! whole record), so a candidate is first filtered by what
//! [`kv_format::decode_header`] checks in O(1) (version, flags, key length,
//! value length against the limits, a tombstone without a value) and by
//! whether the record it describes fits in the bytes left; only then is it
//! hashed, and the bytes hashed in one search are capped at
//! [`hash_budget`] of the bytes after X. So a search costs O(bytes after X)
//! whatever they are: at most one header parse per offset, plus at most
//! `2 × tail + 1 MiB` bytes hashed.
//!
//! Why that budget: a genuine record after X costs at most the tail to hash,
//! so it is always found when the false candidates before it cost less than
//! `tail + 1 MiB`. A false candidate needs a version byte of 1 and flags of
//! 0 or 1 (about one offset in 32,768 of random bytes), so in ordinary data
//! the budget is far from reached; a value made of many plausible record
//! headers can exhaust it, and then the search gives up
//! ([`Next::GaveUp`]): opening treats that as "a valid record may follow"
//! (corruption, the tail is never cut), and checking reports the rest of
//! the segment as one bad region.

use kv_format::{Limits, decode_header, decode_with_limits};

/// The constant part of [`hash_budget`]: room for small tails.
const BUDGET_SLACK: u64 = 1 << 20;

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
    /// bytes after the bad record).
    pub(crate) hashed: u64,
}

/// Looks for the first valid record that starts after the bad one at `bad`
/// in `bytes` (a segment's readable bytes).
pub(crate) fn next_valid_record(bytes: &[u8], bad: usize, limits: &Limits) -> Resync {
    let tail_len = bytes.len().saturating_sub(bad) as u64;
    let budget = hash_budget(tail_len);
    let mut hashed = 0u64;
    // Zeros to the end (the space a writer allocated ahead) hold no record:
    // a record's version byte is never 0. Said at once, not searched.
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
        let Ok(header) = decode_header(candidate, limits) else {
            continue;
        };
        let record_len = header.record_len();
        if record_len > candidate.len() as u64 {
            continue;
        }
        // The checksum covers everything after itself.
        let cost = record_len - kv_format::VERSION_OFFSET as u64;
        if hashed + cost > budget {
            return Resync {
                next: Next::GaveUp,
                hashed,
            };
        }
        hashed += cost;
        if decode_with_limits(candidate, limits).is_ok() {
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

    /// A value whose every 32 bytes hold a plausible record header claiming
    /// most of what follows: what a value of stored records, or an
    /// adversary, can look like.
    fn plausible_headers(len: usize) -> Vec<u8> {
        let mut value = vec![0u8; len];
        for at in (0..len - 32).step_by(32) {
            value[at + kv_format::VERSION_OFFSET] = kv_format::FORMAT_VERSION;
            value[at + kv_format::KEY_LEN_OFFSET..at + kv_format::KEY_LEN_OFFSET + 2]
                .copy_from_slice(&1u16.to_le_bytes());
            let claimed = (len - at - 40) as u32;
            value[at + kv_format::VALUE_LEN_OFFSET..at + kv_format::VALUE_LEN_OFFSET + 4]
                .copy_from_slice(&claimed.to_le_bytes());
        }
        value
    }

    #[test]
    fn a_torn_record_of_plausible_headers_gives_up_within_the_budget() {
        let whole = record(b"key", &plausible_headers(4 << 20), 1);
        let torn = &whole[..whole.len() / 2];
        let search = next_valid_record(torn, 0, &Limits::default());
        assert_eq!(search.next, Next::GaveUp);
        assert!(search.hashed <= hash_budget(torn.len() as u64));
    }

    #[test]
    fn a_torn_record_of_patterns_is_searched_to_the_end_in_linear_work() {
        for pattern in [&[0u8, 0, 1, 0][..], &[1, 0, 0, 0], &[0xff; 4]] {
            let value: Vec<u8> = pattern.iter().copied().cycle().take(4 << 20).collect();
            let whole = record(b"key", &value, 1);
            let torn = &whole[..whole.len() / 2];
            let search = next_valid_record(torn, 0, &Limits::default());
            assert_eq!(search.next, Next::Nothing, "{pattern:?}");
            assert!(search.hashed <= hash_budget(torn.len() as u64));
        }
    }

    #[test]
    fn a_valid_record_after_damage_is_found() {
        let mut bytes = record(b"first", &[0u8, 0, 1, 0].repeat(1000), 1);
        bytes[40] ^= 1;
        let next = bytes.len();
        bytes.extend_from_slice(&record(b"second", b"value", 2));
        let search = next_valid_record(&bytes, 0, &Limits::default());
        assert_eq!(search.next, Next::Record(next));
        assert!(search.hashed <= hash_budget(bytes.len() as u64));
    }
}
