//! Tests of the whole index: unit scenarios, a model test against a
//! `HashMap`, and readers racing a writer. They live inside the crate so
//! they can force hash collisions with [`Index::with_hasher`].

mod basic;
mod concurrent;
mod image;
mod lazy;
mod model;

use xxhash_rust::xxh3::xxh3_64;

use crate::{Entry, Index};

/// Every key hashes to 0: one shard, one tag, one home slot.
fn constant_hash(_: &[u8]) -> u64 {
    0
}

/// Real hashes with the shard bits cleared: every key lands in shard 0, so
/// one shard grows, compacts and rehashes under all the traffic.
fn one_shard_hash(key: &[u8]) -> u64 {
    xxh3_64(key) >> crate::index::SHARD_BITS
}

/// Only two distinct hashes, by key length parity: long runs of equal tags
/// interleaved in one cluster.
fn two_hashes(key: &[u8]) -> u64 {
    if key.len().is_multiple_of(2) {
        0
    } else {
        1 << 40
    }
}

/// The index flavours every scenario runs against.
fn flavours() -> Vec<(&'static str, Index)> {
    vec![
        ("xxh3", Index::new()),
        ("constant", Index::with_hasher(constant_hash)),
        ("one-shard", Index::with_hasher(one_shard_hash)),
        ("two-hashes", Index::with_hasher(two_hashes)),
    ]
}

/// A key of `len` bytes (at least 1) that embeds `id` as far as it fits,
/// then a pattern derived from `id`.
fn key(id: u64, len: usize) -> Vec<u8> {
    let mut key: Vec<u8> = id.to_le_bytes().iter().copied().cycle().take(len).collect();
    for (i, byte) in key.iter_mut().enumerate().skip(8) {
        *byte = byte.wrapping_add(i as u8);
    }
    key
}

/// A realistic entry derived from `n`.
fn entry(n: u64) -> Entry {
    Entry {
        segment: (n % 1000) as u32,
        offset: n as u32,
        len: 32 + (n % 200) as u32,
        expires_at: 0,
        tombstone: false,
    }
}
