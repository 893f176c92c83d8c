//! One writer against three readers (and a `for_each` scanner).
//!
//! Every entry the writer stores is derived from the key's id and a
//! per-key version, so a reader can tell a real entry of THAT key from a
//! torn mix of two writes or an entry of another key. Keys below
//! `STABLE` are never removed: once the writer has announced one, every
//! lookup must find it, and a reader must never see its version go back.
//! The run is bounded by operation counts, not time.

use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread;

use super::key;
use crate::{Entry, Index};

/// Keys that are inserted once and then only overwritten.
const STABLE: u64 = 6_000;
/// Keys that are also removed and reinserted.
const CHURN: u64 = 3_000;
/// Writer operations after the stable keys are in.
const WRITER_OPS: u64 = 120_000;
/// Lookups per reader, at least; readers go on until the writer is done.
const READER_LOOKUPS: u64 = 100_000;
/// Full scans by the scanner thread.
const SCANS: u64 = 6;

/// Keys of many lengths, including some long ones.
fn concurrent_key(id: u64) -> Vec<u8> {
    let len = if id.is_multiple_of(97) {
        300
    } else {
        3 + (id % 40) as usize
    };
    key(id, len)
}

/// The entry of key `id` at version `v`. Every field depends on both.
fn versioned(id: u64, v: u32) -> Entry {
    let mix = (id as u32).wrapping_mul(0x9e37_79b9) ^ v.wrapping_mul(0x85eb_ca6b);
    Entry {
        segment: id as u32,
        offset: v,
        len: mix,
        expires_at: if v.is_multiple_of(3) {
            0
        } else {
            u64::from(mix) << 8 | 1
        },
        tombstone: v.is_multiple_of(5),
    }
}

/// The version of `e` if it is an entry the writer could have written for
/// key `id`.
fn version_of(id: u64, e: &Entry) -> Option<u32> {
    (*e == versioned(id, e.offset)).then_some(e.offset)
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn writer(index: &Index, announced: &AtomicU64) {
    let mut versions = vec![0u32; (STABLE + CHURN) as usize];
    let mut present = vec![false; (STABLE + CHURN) as usize];
    for id in 0..STABLE {
        assert_eq!(index.insert(&concurrent_key(id), versioned(id, 0)), None);
        present[id as usize] = true;
        announced.store(id + 1, Release);
    }
    let mut rng = Rng(7);
    for _ in 0..WRITER_OPS {
        let id = rng.below(STABLE + CHURN);
        let k = concurrent_key(id);
        let current = present[id as usize].then(|| versioned(id, versions[id as usize]));
        let v = versions[id as usize] + 1;
        match rng.below(10) {
            // Remove a churn key (plain or conditional).
            0..=2 if id >= STABLE => {
                let removed = if rng.below(2) == 0 {
                    index.remove(&k)
                } else {
                    current.filter(|e| index.remove_if(&k, e))
                };
                assert_eq!(removed, current);
                present[id as usize] = false;
                continue;
            }
            // Compare-and-swap against the current entry.
            3 | 4 => {
                if let Some(e) = current {
                    assert!(index.compare_and_swap(&k, &e, versioned(id, v)));
                    assert!(!index.compare_and_swap(&k, &e, versioned(id, v + 1)));
                } else {
                    assert!(!index.compare_and_swap(&k, &versioned(id, v), versioned(id, v)));
                    continue;
                }
            }
            _ => assert_eq!(index.insert(&k, versioned(id, v)), current),
        }
        versions[id as usize] = v;
        present[id as usize] = true;
    }
}

fn reader(index: &Index, announced: &AtomicU64, done: &AtomicBool, seed: u64) {
    let mut rng = Rng(seed);
    let mut last_seen = vec![0u32; STABLE as usize];
    let mut lookups = 0u64;
    while lookups < READER_LOOKUPS || !done.load(Acquire) {
        lookups += 1;
        let id = rng.below(STABLE + CHURN);
        let upto = announced.load(Acquire);
        let found = index.get(&concurrent_key(id));
        if id < STABLE && id < upto {
            let e = found.unwrap_or_else(|| panic!("stable key {id} missing"));
            let v = version_of(id, &e).unwrap_or_else(|| panic!("key {id}: bad {e:?}"));
            assert!(v >= last_seen[id as usize], "key {id} went back");
            last_seen[id as usize] = v;
        } else if let Some(e) = found {
            assert!(version_of(id, &e).is_some(), "key {id}: bad {e:?}");
        }
    }
}

fn scanner(index: &Index, announced: &AtomicU64) {
    for _ in 0..SCANS {
        let upto = announced.load(Acquire);
        let mut stable_seen = vec![false; STABLE as usize];
        index.for_each(|k, e| {
            let id = u64::from(e.segment);
            assert_eq!(k, concurrent_key(id), "entry under another key");
            assert!(version_of(id, &e).is_some(), "key {id}: bad {e:?}");
            if id < STABLE {
                assert!(!stable_seen[id as usize], "key {id} seen twice");
                stable_seen[id as usize] = true;
            }
        });
        assert!(stable_seen[..upto as usize].iter().all(|&seen| seen));
    }
}

fn race(index: &Index) {
    let announced = &AtomicU64::new(0);
    let done = &AtomicBool::new(false);
    thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|seed| s.spawn(move || reader(index, announced, done, seed)))
            .collect();
        let scan = s.spawn(|| scanner(index, announced));
        writer(index, announced);
        done.store(true, Release);
        for r in readers {
            r.join().expect("reader");
        }
        scan.join().expect("scanner");
    });
    index.check();
}

#[test]
fn readers_never_see_torn_or_foreign_entries() {
    race(&Index::new());
}

#[test]
fn readers_never_see_torn_entries_in_one_busy_shard() {
    // Every key in shard 0: it grows, rehashes and compacts under the
    // readers' feet.
    race(&Index::with_hasher(super::one_shard_hash));
}
