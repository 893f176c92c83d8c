//! The concurrent in-memory hash index of the kv storage engine: from key
//! bytes to the [`Entry`] that says where the key's latest record lives
//! (segment, offset, length) and what the engine needs without reading it
//! (expiry, tombstone).
//!
//! ```
//! use kv_index::{Entry, Index};
//!
//! let index = Index::new();
//! let entry = Entry { segment: 3, offset: 4096, len: 57, expires_at: 0, tombstone: false };
//! assert_eq!(index.insert(b"apple", entry), None);
//! assert_eq!(index.get(b"apple"), Some(entry));
//!
//! // Compaction moves the record, unless a write got there first.
//! let moved = Entry { segment: 9, offset: 0, ..entry };
//! assert!(index.compare_and_swap(b"apple", &entry, moved));
//! assert!(!index.compare_and_swap(b"apple", &entry, moved));
//! assert_eq!(index.remove(b"apple"), Some(moved));
//! assert!(index.is_empty());
//! ```
//!
//! # What this crate is not
//!
//! It never touches disk and spawns no threads: it does not know what a
//! segment is, does not expire keys (it stores `expires_at` for the engine
//! to compare) and keeps nothing across restarts by itself: the engine
//! rebuilds it from hint files and segments, or stores the shards' images
//! ([`Index::encode_shard_image`], [`Index::from_shard_images`]) at a clean
//! close and loads them back, all at once or each shard when first
//! touched ([`Index::lazy`] with a [`ShardLoader`]). It depends on no other kv crate;
//! `kv-engine` and `kv-compact` depend on it.
//!
//! # Limits
//!
//! - Keys are 0 to [`MAX_KEY_LEN`] (65,535) bytes; the engine already
//!   rejects empty keys. Inserting a longer key panics.
//! - Every field of [`Entry`] is stored in full: no field is truncated.
//! - One shard's arena addresses 2^32 words (32 GiB), so the index holds up
//!   to about 2 TiB of packed entries.
//!
//! # Concurrency protocol
//!
//! The index is [`SHARDS`] (64) shards, chosen by the top six bits of the
//! key's xxh3-64 hash. Each shard has a writer [`parking_lot::Mutex`], a
//! seqlock version (`AtomicU64`) and its storage (slot table and arena)
//! published through an [`arc_swap::ArcSwap`]. Slot table and arena are
//! made of `AtomicU64`, so optimistic reads that race in-place writes are
//! data-race free without `unsafe`.
//!
//! - **Readers** ([`Index::get`]) never touch the mutex and write no shared
//!   memory: `v1 = version.load(Acquire)` (spin while odd); `load()` the
//!   storage (arc-swap's fast path writes only thread-local state); read
//!   slots and arena words with `Relaxed` loads; `fence(Acquire)`;
//!   `v2 = version.load(Relaxed)`; retry unless `v1 == v2`. A read that
//!   races a writer may see any mix of words, so every index is
//!   bounds-checked, the probe is bounded by the table length and each key
//!   comparison by the key length: a torn read never panics, never loops
//!   forever and never allocates; it just retries.
//! - **Lazy shards** ([`Index::lazy`]) start empty with a loader, and an
//!   `AtomicBool` `loaded` false. Every operation checks it first
//!   (`Acquire`); while it is false, it takes the shard mutex, and whoever
//!   holds the mutex first runs the loader, publishes the loaded storage
//!   as growth does (below), then stores `loaded` true (`Release`), so a
//!   reader that sees it true sees that storage. This first touch is the
//!   only time a reader takes the mutex. The loader is dropped only once
//!   it has returned: one that panics leaves the shard to load again.
//! - **Writers** hold the shard mutex. New arena words above the arena's
//!   bump pointer are written first (no slot reaches them yet); then every
//!   change to reachable words happens between `version.store(v + 1,
//!   Relaxed); fence(Release)` and `version.store(v + 2, Release)`.
//! - **Growth, shrinking and compaction** build a new slot table or arena
//!   off to the side, then publish it with `ArcSwap::swap` inside a version
//!   bump. A reader that loaded the old storage keeps it alive through its
//!   guard and then fails its version check; the writer never changes
//!   memory that only an old storage reaches.
//!
//! At most a couple of writer threads are expected (the engine's writer and
//! compaction); any number of readers.
//!
//! # Memory layout
//!
//! Each shard has one slot table, an array of 64-byte groups, and one
//! arena, an array of `u64` words.
//!
//! ```text
//! Format: group { ctrl [u8; 12] | zero [u8; 4] } { arena_offset + 1 u32 [12] }, 0 = no offset
//! Format: entry { head = key_len u16 | flags u16 | len u32 } { segment u32 | offset u32 }
//!               [ expires_at u64, if flags has HAS_EXPIRY ] [ seq u64, if flags has HAS_SEQ ]
//!               { key, 8 bytes a word, zero-padded }
//! ```
//!
//! Fields in a word are listed from the least significant bit; key bytes are
//! packed little-endian. Of the key's xxh3-64 hash, the top 6 bits choose
//! the shard, the 32 below them the home group (`h32 * groups >> 32`, so
//! table sizes need not be powers of two), and the low 7 the control byte
//! of a full slot (`0x80 | bits`; 0 is empty, 1 deleted).
//!
//! - **Slot table**: a slot is a control byte and an offset, 5 bytes. A
//!   lookup compares the 12 control bytes of its home group at once
//!   (SWAR), compares keys in the arena only where they match (about 1 in
//!   128 full slots matches by chance), and goes on to the next group only
//!   if this one has no empty slot. Removal leaves a deleted mark where a
//!   probe may have passed (a group with no empty slot). The table grows
//!   by 1.25x before full and deleted slots pass 7/8 (or only clears the
//!   deleted ones, if the keys leave a quarter free), and shrinks to a
//!   load of 1/2 when below 1/8. A rebuild hashes every live key again,
//!   walking the arena in order.
//! - **Arena**: a bump allocator over 32 KiB chunks; the last chunk starts
//!   at 512 bytes and doubles (by copy) until full, so a small shard holds
//!   little. A key of 16 bytes without expiry packs into 4 words (32
//!   bytes). Overwriting a key rewrites its meta words in place; only an
//!   entry that gets an expiry (or a sequence number) its words have no
//!   room for moves. Removed and moved entries are garbage, marked dead;
//!   when garbage passes a quarter of the arena (and 4 KiB), the shard
//!   copies its live entries, in arena order, into a fresh arena and a
//!   table rebuilt by their hashes (which clears deleted slots).
//! - **Sequence numbers** are not kept: a record's location names it. A
//!   loader that offers records out of order ([`Index::insert_if_newer`])
//!   needs them to let the newest win, so those entries carry one more
//!   word until [`Index::forget_seqs`] copies the shard's live entries,
//!   in arena order and without it, into a fresh arena and table.
//!
//! [`Index::memory_usage`] adds up the real allocation sizes; the
//! `memory` example prints it per key next to the process's RSS. With
//! 1M to 10M keys of 16 bytes that is about 39 bytes per key: 32 packed in
//! the arena, about 6.8 of slot table at the average load of 0.78 (less
//! when pre-sized with [`Index::with_capacity`]).

#![forbid(unsafe_code)]

mod entry;
mod image;
mod index;
mod shard;
mod sync;
mod table;

#[cfg(all(test, loom))]
mod loom;
#[cfg(all(test, not(loom)))]
mod tests;

pub use entry::Entry;
pub use image::{ImageError, ShardImage, ShardLoader};
pub use index::{Index, MAX_KEY_LEN, SHARDS, ShardSnapshot};
