//! The search for a valid frame after a bad one, with a bound on its work.
//!
//! After a bad frame at offset X, every later offset is a candidate frame
//! start. Rejecting a candidate by its header costs O(1): the length must be
//! nonzero, at most [`MAX_RECORD_LEN`](crate::MAX_RECORD_LEN) and within the
//! bytes left, and in a version 2 file the 32-bit header check (salted with
//! the file number and the candidate's offset) must match. Only a candidate
//! that passes all of them has its payload hashed, and the bytes hashed in
//! one search are capped at [`hash_budget`] of the tail's length. So the
//! work of a search is O(tail): at most one header check per offset plus at
//! most `2 × tail + 1 MiB` bytes hashed, whatever the bytes are.
//!
//! Why that budget: a genuine frame after X costs at most the tail to hash
//! (it fits in it), so it is always found when the false candidates before
//! it cost less than `tail + 1 MiB`. In a version 2 file a false candidate
//! must pass a 32-bit check tied to its position: about one offset in 2^32
//! does, so even if each claimed the maximum length the expected false cost
//! is at most `tail / 16`, and the budget runs out only for bytes crafted
//! for this file's number and offsets. A version 1 file has no header check:
//! a tail of user data where many offsets hold a plausible length (the
//! pattern `00 00 01 00`, arrays of small u32s) can exhaust the budget.
//! Then the search gives up ([`Found::GaveUp`]) and the caller reports
//! corruption: refusing to open is recoverable, dropping a good frame is not.
//!
//! A tail that is zeros from the bad frame to the end is told apart first
//! ([`Found::Zeros`]), in one pass over its bytes: nothing was ever written
//! there (or nothing written there reached the disk). At the end of the last
//! file that is the space a [`kv_fs::AppendMap`] allocated ahead, in steps of
//! [`kv_fs::ALLOCATION_CHUNK`]: the clean end of the log. A zero hole with
//! anything after it is searched as any other tail, so a valid frame after
//! it is still found.

use crate::format::{self, FrameLayout};

/// The constant part of [`hash_budget`]: room for small tails, where a few
/// false candidates of a few hundred KiB each would otherwise exhaust a
/// budget proportional to a tail of a few bytes.
const BUDGET_SLACK: u64 = 1 << 20;

/// The most payload (and header) bytes one search over a tail of `tail_len`
/// bytes may hash: `2 × tail_len + 1 MiB`.
pub(crate) const fn hash_budget(tail_len: u64) -> u64 {
    tail_len.saturating_mul(2).saturating_add(BUDGET_SLACK)
}

/// What a search after a bad frame found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Every byte of the tail is zero: no frame was ever written there.
    Zeros,
    /// A valid frame starts at this offset of the file.
    Frame(u64),
    /// No valid frame starts at any later offset.
    Nothing,
    /// The hash budget ran out before every candidate was tried: whether a
    /// valid frame follows is not known.
    GaveUp,
}

/// The outcome of a search, with the work it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Search {
    /// What was found.
    pub(crate) found: Found,
    /// Bytes hashed to verify candidates' checksums (at most
    /// [`hash_budget`] of the tail's length).
    pub(crate) hashed: u64,
    /// The budget the search had.
    pub(crate) budget: u64,
}

/// Looks for the first valid frame that starts after the bad frame at the
/// front of `tail`: `tail` holds the bytes of the file from offset `base`
/// (the bad frame's) to its end, and frames are laid out as `layout` says.
pub(crate) fn next_valid_frame(tail: &[u8], base: u64, layout: FrameLayout) -> Search {
    let budget = hash_budget(tail.len() as u64);
    if tail.iter().all(|&b| b == 0) {
        return Search {
            found: Found::Zeros,
            hashed: 0,
            budget,
        };
    }
    let header_len = layout.header_len();
    let mut hashed = 0u64;
    for start in 1..tail.len() {
        let candidate = &tail[start..];
        let Some(remaining) = candidate.len().checked_sub(header_len) else {
            // No room for a header here, nor at any later offset.
            break;
        };
        let offset = base + start as u64;
        let Ok(fields) = format::check_frame_header(layout, candidate, offset, remaining as u64)
        else {
            continue;
        };
        // The checksum covers the header after the checksum field and the
        // payload.
        let cost = (header_len - size_of::<u64>()) as u64 + u64::from(fields.len);
        if hashed + cost > budget {
            return Search {
                found: Found::GaveUp,
                hashed,
                budget,
            };
        }
        hashed += cost;
        let (header, rest) = candidate.split_at(header_len);
        let payload = &rest[..fields.len as usize];
        if format::check_frame_checksum(header, fields, payload).is_ok() {
            return Search {
                found: Found::Frame(offset),
                hashed,
                budget,
            };
        }
    }
    Search {
        found: Found::Nothing,
        hashed,
        budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_frame, encode_frame_v1, frame_len};

    const BASE: u64 = 4096;
    const FILE: u64 = 9;

    fn v2() -> FrameLayout {
        FrameLayout::current(FILE)
    }

    /// A torn tail: the first half of one frame whose payload is `pattern`
    /// repeated to `payload_len` bytes, at `BASE`.
    fn torn(layout: FrameLayout, pattern: &[u8], payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = pattern.iter().copied().cycle().take(payload_len).collect();
        let mut frame = Vec::new();
        match layout {
            FrameLayout::V1 => encode_frame_v1(&payload, &mut frame),
            FrameLayout::V2 { file } => encode_frame(file, BASE, &payload, &mut frame),
        }
        frame.truncate(frame.len() / 2);
        frame
    }

    const PATTERNS: [&[u8]; 5] = [
        &[0, 0, 1, 0],
        &[1, 0, 0, 0],
        &[0, 1, 0, 0],
        &[0x10, 0, 0, 0, 0, 0, 0, 0],
        &[0xff, 0xff, 0, 0],
    ];

    #[test]
    fn patterned_torn_tails_of_2_mib_are_torn_in_linear_work() {
        for pattern in PATTERNS {
            let tail = torn(v2(), pattern, 4 << 20);
            let search = next_valid_frame(&tail, BASE, v2());
            assert_eq!(search.found, Found::Nothing, "{pattern:?}");
            assert!(search.hashed <= hash_budget(tail.len() as u64));
            // Nothing passes the header check by chance here.
            assert_eq!(search.hashed, 0, "{pattern:?}");
        }
    }

    #[test]
    #[ignore = "32 MiB tails: slow in a debug build; run with --ignored in release"]
    fn patterned_torn_tails_of_32_mib_are_torn_in_linear_work() {
        for pattern in PATTERNS {
            let tail = torn(v2(), pattern, 64 << 20);
            let search = next_valid_frame(&tail, BASE, v2());
            assert_eq!(search.found, Found::Nothing, "{pattern:?}");
            assert!(search.hashed <= hash_budget(tail.len() as u64));
        }
    }

    #[test]
    fn version_1_gives_up_within_the_budget_instead_of_hashing_for_hours() {
        let tail = torn(FrameLayout::V1, &[0, 0, 1, 0], 4 << 20);
        let search = next_valid_frame(&tail, BASE, FrameLayout::V1);
        assert_eq!(search.found, Found::GaveUp);
        assert!(search.hashed <= hash_budget(tail.len() as u64));
        assert_eq!(search.budget, hash_budget(tail.len() as u64));
        // A pattern with no plausible length is searched to the end.
        let tail = torn(FrameLayout::V1, &[0xff, 0xff, 0xff, 0xff], 4 << 20);
        let search = next_valid_frame(&tail, BASE, FrameLayout::V1);
        assert_eq!(search.found, Found::Nothing);
        assert_eq!(search.hashed, 0);
    }

    #[test]
    fn a_valid_frame_after_damage_is_found_in_both_versions() {
        for layout in [v2(), FrameLayout::V1] {
            for pattern in PATTERNS {
                // A damaged frame of 64 KiB of the pattern, then a valid one.
                let payload: Vec<u8> = pattern.iter().copied().cycle().take(64 << 10).collect();
                let mut bytes = Vec::new();
                let encode = |offset: u64, payload: &[u8], bytes: &mut Vec<u8>| match layout {
                    FrameLayout::V1 => encode_frame_v1(payload, bytes),
                    FrameLayout::V2 { file } => encode_frame(file, offset, payload, bytes),
                };
                encode(BASE, &payload, &mut bytes);
                bytes[20] ^= 1;
                let next = BASE + bytes.len() as u64;
                encode(next, b"the next frame", &mut bytes);
                let search = next_valid_frame(&bytes, BASE, layout);
                assert!(search.hashed <= hash_budget(bytes.len() as u64));
                match layout {
                    FrameLayout::V2 { .. } => {
                        assert_eq!(search.found, Found::Frame(next), "{pattern:?}");
                    }
                    // Without a header check, the dense plausible lengths of
                    // these patterns can exhaust the budget first; that is
                    // reported as damage too, never as a torn tail.
                    FrameLayout::V1 => assert!(
                        matches!(search.found, Found::Frame(n) if n == next)
                            || search.found == Found::GaveUp,
                        "{pattern:?}: {search:?}"
                    ),
                }
            }
        }
        // Text has few plausible lengths: version 1 resynchronises too.
        let mut bytes = Vec::new();
        encode_frame_v1(&b"a value of text, ".repeat(4000), &mut bytes);
        bytes[20] ^= 1;
        let next = BASE + bytes.len() as u64;
        encode_frame_v1(b"the next frame", &mut bytes);
        let search = next_valid_frame(&bytes, BASE, FrameLayout::V1);
        assert_eq!(search.found, Found::Frame(next));
    }

    #[test]
    fn a_frame_copied_from_elsewhere_is_not_a_frame_here() {
        // A whole version 2 frame inside a payload: valid where it was made,
        // not where it now lies.
        let mut inner = Vec::new();
        encode_frame(FILE, 32, b"a frame from another log", &mut inner);
        let mut bytes = vec![0xAB; 100];
        bytes.extend_from_slice(&inner);
        let search = next_valid_frame(&bytes, BASE, v2());
        assert_eq!(search.found, Found::Nothing);
        // In version 1 the copy verifies anywhere.
        let mut inner = Vec::new();
        encode_frame_v1(b"a frame from another log", &mut inner);
        let mut bytes = vec![0xAB; 100];
        bytes.extend_from_slice(&inner);
        let search = next_valid_frame(&bytes, BASE, FrameLayout::V1);
        assert_eq!(search.found, Found::Frame(BASE + 100));
    }

    #[test]
    fn crafted_candidates_exhaust_the_budget_and_the_search_gives_up() {
        // Forged headers that pass the header check at every 16th offset,
        // each claiming all the bytes after it: only bytes crafted for this
        // file and these offsets can do this.
        let len = 1 << 20;
        let mut tail = vec![0u8; len];
        for start in (16..len - 16).step_by(16) {
            let claimed = (len - start - 16) as u32;
            let check = format::header_check(FILE, BASE + start as u64, claimed);
            tail[start + 8..start + 12].copy_from_slice(&claimed.to_le_bytes());
            tail[start + 12..start + 16].copy_from_slice(&check.to_le_bytes());
        }
        let search = next_valid_frame(&tail, BASE, v2());
        assert_eq!(search.found, Found::GaveUp);
        assert!(search.hashed <= hash_budget(len as u64));
    }

    #[test]
    fn zeros_to_the_end_are_told_apart_from_a_torn_frame_and_a_hole() {
        for layout in [v2(), FrameLayout::V1] {
            // The allocated tail: zeros only, short or long.
            for len in [1, 5, 16, 4096, 1 << 20] {
                let search = next_valid_frame(&vec![0; len], BASE, layout);
                assert_eq!(search.found, Found::Zeros, "{len} zeros");
                assert_eq!(search.hashed, 0);
            }
            // A torn frame followed by zeros is torn, not the clean end.
            let mut bytes = torn(layout, &[1, 2, 3], 300);
            bytes.resize(bytes.len() + 4096, 0);
            let search = next_valid_frame(&bytes, BASE, layout);
            assert_eq!(search.found, Found::Nothing);
            // A zero hole with a valid frame after it is damage: the frame
            // is found.
            let mut bytes = vec![0; 4096];
            let next = BASE + bytes.len() as u64;
            match layout {
                FrameLayout::V1 => encode_frame_v1(b"after the hole", &mut bytes),
                FrameLayout::V2 { file } => encode_frame(file, next, b"after the hole", &mut bytes),
            }
            bytes.resize(bytes.len() + 100, 0);
            let search = next_valid_frame(&bytes, BASE, layout);
            assert_eq!(search.found, Found::Frame(next));
        }
    }

    #[test]
    fn every_cut_of_a_frame_is_nothing() {
        let mut frame = Vec::new();
        encode_frame(FILE, BASE, &[0, 0, 1, 0].repeat(100), &mut frame);
        assert_eq!(frame.len(), frame_len(400));
        for cut in 1..frame.len() {
            let search = next_valid_frame(&frame[..cut], BASE, v2());
            assert_eq!(search.found, Found::Nothing, "cut at {cut}");
        }
    }
}
