//! Single-threaded scenarios.

use std::collections::HashMap;

use super::{entry, flavours, key};
use crate::{Entry, Index, MAX_KEY_LEN, SHARDS, ShardSnapshot};

#[test]
fn index_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
}

#[test]
fn insert_get_overwrite_remove() {
    for (name, index) in flavours() {
        assert!(index.is_empty(), "{name}");
        assert_eq!(index.get(b"a"), None, "{name}");
        assert_eq!(index.insert(b"a", entry(1)), None, "{name}");
        assert_eq!(index.insert(b"b", entry(2)), None, "{name}");
        assert_eq!(index.get(b"a"), Some(entry(1)), "{name}");
        assert_eq!(index.get(b"b"), Some(entry(2)), "{name}");
        assert_eq!(index.len(), 2, "{name}");
        assert_eq!(index.insert(b"a", entry(3)), Some(entry(1)), "{name}");
        assert_eq!(index.get(b"a"), Some(entry(3)), "{name}");
        assert_eq!(index.len(), 2, "{name}");
        assert_eq!(index.remove(b"a"), Some(entry(3)), "{name}");
        assert_eq!(index.remove(b"a"), None, "{name}");
        assert_eq!(index.get(b"a"), None, "{name}");
        assert_eq!(index.get(b"b"), Some(entry(2)), "{name}");
        assert_eq!(index.len(), 1, "{name}");
        assert_eq!(index.remove(b"b"), Some(entry(2)), "{name}");
        assert!(index.is_empty(), "{name}");
        index.check();
    }
}

#[test]
fn every_field_round_trips_in_full() {
    let index = Index::new();
    let extremes = [
        Entry {
            segment: u32::MAX,
            offset: u32::MAX,
            len: u32::MAX,
            expires_at: u64::MAX,
            tombstone: true,
        },
        Entry {
            segment: 0,
            offset: 0,
            len: 0,
            expires_at: 0,
            tombstone: false,
        },
        Entry {
            expires_at: 1_700_000_000_000,
            ..entry(5)
        },
    ];
    for (i, e) in extremes.iter().enumerate() {
        index.insert(&key(i as u64, 12), *e);
        assert_eq!(index.get(&key(i as u64, 12)), Some(*e));
    }
    // Overwrite each with each, so every in-place and moving path runs.
    for a in &extremes {
        for b in &extremes {
            index.insert(b"k", *a);
            assert_eq!(index.insert(b"k", *b), Some(*a));
            assert_eq!(index.get(b"k"), Some(*b));
        }
    }
    index.check();
}

#[test]
fn key_lengths_from_1_to_65535() {
    let lengths = [
        1,
        7,
        8,
        9,
        15,
        16,
        17,
        255,
        256,
        4095,
        32_768,
        65_534,
        MAX_KEY_LEN,
    ];
    for (name, index) in flavours() {
        for (id, &len) in lengths.iter().enumerate() {
            let mut e = entry(id as u64);
            e.expires_at = if id.is_multiple_of(2) {
                0
            } else {
                1_000 + id as u64
            };
            assert_eq!(index.insert(&key(id as u64, len), e), None, "{name} {len}");
        }
        // Keys that share a prefix with a stored key but differ in length
        // or in their last byte are different keys.
        let long = key(lengths.len() as u64 - 1, MAX_KEY_LEN);
        assert_eq!(index.get(&long[..MAX_KEY_LEN - 1]), None, "{name}");
        let mut changed = long.clone();
        changed[MAX_KEY_LEN - 1] ^= 1;
        assert_eq!(index.get(&changed), None, "{name}");
        for (id, &len) in lengths.iter().enumerate() {
            let found = index.get(&key(id as u64, len)).expect("present");
            assert_eq!(found.offset, id as u32, "{name} {len}");
        }
        let mut seen = HashMap::new();
        index.for_each(|k, e| {
            seen.insert(k.to_vec(), e);
        });
        assert_eq!(seen.len(), lengths.len(), "{name}");
        for (id, &len) in lengths.iter().enumerate() {
            assert_eq!(seen[&key(id as u64, len)].offset, id as u32, "{name} {len}");
            assert!(index.remove(&key(id as u64, len)).is_some(), "{name} {len}");
        }
        assert!(index.is_empty(), "{name}");
        index.check();
    }
}

#[test]
fn longer_keys_are_absent_and_empty_keys_work() {
    let index = Index::new();
    let too_long = vec![7u8; MAX_KEY_LEN + 1];
    assert_eq!(index.get(&too_long), None);
    assert_eq!(index.remove(&too_long), None);
    assert!(!index.remove_if(&too_long, &entry(1)));
    assert_eq!(index.insert(b"", entry(1)), None);
    assert_eq!(index.get(b""), Some(entry(1)));
    assert_eq!(index.remove(b""), Some(entry(1)));
}

#[test]
#[should_panic(expected = "longer than 65535")]
fn inserting_a_too_long_key_panics() {
    Index::new().insert(&vec![1u8; MAX_KEY_LEN + 1], entry(1));
}

#[test]
fn compare_and_swap_and_remove_if() {
    for (name, index) in flavours() {
        // Absent keys: nothing matches.
        assert!(!index.compare_and_swap(b"k", &entry(1), entry(2)), "{name}");
        assert!(!index.remove_if(b"k", &entry(1)), "{name}");
        assert_eq!(index.get(b"k"), None, "{name}");

        index.insert(b"k", entry(1));
        assert!(!index.compare_and_swap(b"k", &entry(9), entry(2)), "{name}");
        assert_eq!(index.get(b"k"), Some(entry(1)), "{name}");
        assert!(index.compare_and_swap(b"k", &entry(1), entry(2)), "{name}");
        assert_eq!(index.get(b"k"), Some(entry(2)), "{name}");

        // An expiry that differs is a different entry.
        let expiring = Entry {
            expires_at: 42,
            ..entry(2)
        };
        assert!(!index.remove_if(b"k", &expiring), "{name}");
        assert!(index.compare_and_swap(b"k", &entry(2), expiring), "{name}");
        assert!(!index.remove_if(b"k", &entry(2)), "{name}");
        assert_eq!(index.len(), 1, "{name}");
        assert!(index.remove_if(b"k", &expiring), "{name}");
        assert_eq!(index.get(b"k"), None, "{name}");
        assert!(index.is_empty(), "{name}");
        index.check();
    }
}

#[test]
fn for_each_and_retain() {
    for (name, index) in flavours() {
        let n = 3_000u64;
        for i in 0..n {
            let e = Entry {
                tombstone: i.is_multiple_of(3),
                ..entry(i)
            };
            index.insert(&key(i, 8 + (i % 40) as usize), e);
        }
        let mut seen = HashMap::new();
        index.for_each(|k, e| {
            assert!(seen.insert(k.to_vec(), e).is_none(), "visited twice");
        });
        assert_eq!(seen.len() as u64, n, "{name}");
        for i in 0..n {
            assert_eq!(
                u64::from(seen[&key(i, 8 + (i % 40) as usize)].offset),
                i,
                "{name}"
            );
        }

        index.retain(|_, e| !e.tombstone);
        assert_eq!(index.len() as u64, n - n.div_ceil(3), "{name}");
        for i in 0..n {
            let found = index.get(&key(i, 8 + (i % 40) as usize));
            assert_eq!(found.is_some(), !i.is_multiple_of(3), "{name} {i}");
        }
        index.retain(|_, _| false);
        assert!(index.is_empty(), "{name}");
        index.check();
    }
}

#[test]
fn snapshots_of_every_shard_cover_each_key_once() {
    for (name, index) in flavours() {
        let n = 2_000u64;
        for i in 0..n {
            index.insert(&key(i, 4 + (i % 30) as usize), entry(i));
        }
        let mut seen = HashMap::new();
        let mut snapshot = ShardSnapshot::new();
        for shard in 0..SHARDS {
            index.snapshot_shard(shard, &mut snapshot);
            assert_eq!(snapshot.iter().count(), snapshot.len());
            for (k, e) in snapshot.iter() {
                assert!(seen.insert(k.to_vec(), e).is_none(), "{name}: seen twice");
            }
        }
        assert_eq!(seen.len() as u64, n, "{name}");
        for i in 0..n {
            assert_eq!(
                u64::from(seen[&key(i, 4 + (i % 30) as usize)].offset),
                i,
                "{name}"
            );
        }
        // A reused snapshot holds only the last shard copied.
        index.retain(|_, _| false);
        index.snapshot_shard(0, &mut snapshot);
        assert!(snapshot.is_empty() && snapshot.get(0).is_none(), "{name}");
    }
}

#[test]
fn for_each_callback_may_use_the_index() {
    let index = Index::new();
    for i in 0..500 {
        index.insert(&key(i, 16), entry(i));
    }
    // Not holding any lock during the callback, so this does not deadlock.
    index.for_each(|k, e| {
        index.insert(
            k,
            Entry {
                offset: e.offset + 1,
                ..e
            },
        );
    });
    for i in 0..500 {
        assert_eq!(
            index.get(&key(i, 16)).map(|e| u64::from(e.offset)),
            Some(i + 1)
        );
    }
    index.retain(|k, _| index.get(k).is_some_and(|e| e.offset.is_multiple_of(2)));
    assert_eq!(index.len(), 250);
}

#[test]
fn grows_across_many_rehashes() {
    let index = Index::new();
    let initial_slots = index.check();
    let n = 200_000u64;
    for i in 0..n {
        assert_eq!(index.insert(&key(i, 16), entry(i)), None);
    }
    assert_eq!(index.len() as u64, n);
    let slots = index.check();
    assert!(slots as u64 >= n, "slots {slots}");
    assert!(slots > 20 * initial_slots);
    for i in 0..n {
        assert_eq!(index.get(&key(i, 16)), Some(entry(i)), "{i}");
    }
    assert_eq!(index.get(&key(n, 16)), None);
}

#[test]
fn with_capacity_does_not_rehash_during_bulk_load() {
    let n = 100_000u64;
    let index = Index::with_capacity(n as usize);
    let slots = index.check();
    for i in 0..n {
        index.insert(&key(i, 16), entry(i));
    }
    assert_eq!(index.check(), slots);
    // Pre-sized tables stay reasonably full: under 1.5 slots per key.
    assert!(slots < n as usize * 3 / 2, "{slots}");
}

#[test]
fn overwrite_in_place_uses_no_arena_space() {
    let index = Index::new();
    for i in 0..10_000 {
        index.insert(&key(i, 16), entry(i));
    }
    let before = index.memory_usage();
    for round in 1..5u64 {
        for i in 0..10_000 {
            let e = Entry {
                tombstone: round.is_multiple_of(2),
                ..entry(i + round)
            };
            index.insert(&key(i, 16), e);
        }
    }
    assert_eq!(index.memory_usage(), before);
    index.check();
}

#[test]
fn gaining_an_expiry_moves_the_entry_once() {
    let index = Index::with_hasher(super::one_shard_hash);
    for i in 0..2_000 {
        index.insert(&key(i, 9), entry(i));
    }
    for round in 0..6u64 {
        for i in 0..2_000 {
            let expires_at = if (i + round).is_multiple_of(2) {
                0
            } else {
                77 + round
            };
            let e = Entry {
                expires_at,
                ..entry(i + round)
            };
            index.insert(&key(i, 9), e);
            assert_eq!(index.get(&key(i, 9)), Some(e));
        }
        index.check();
    }
}

#[test]
fn compaction_reclaims_removed_entries() {
    for (name, index) in flavours() {
        // Colliding flavours make every operation linear in the shard.
        let n = if matches!(name, "constant" | "two-hashes") {
            1_000
        } else {
            60_000
        };
        let len = |i: u64| 8 + (i % 64) as usize;
        let empty = index.memory_usage();
        for i in 0..n {
            index.insert(&key(i, len(i)), entry(i));
        }
        let full = index.memory_usage();
        // Remove 95%.
        for i in 0..n {
            if !i.is_multiple_of(20) {
                assert_eq!(index.remove(&key(i, len(i))), Some(entry(i)), "{name}");
            }
        }
        index.check();
        let after = index.memory_usage();
        assert!(
            (after - empty) * 5 < full - empty,
            "{name}: {empty} -> {full} -> {after}"
        );
        for i in 0..n {
            let expected = i.is_multiple_of(20).then(|| entry(i));
            assert_eq!(index.get(&key(i, len(i))), expected, "{name} {i}");
        }
        // Churn on the survivors must not grow memory without bound.
        for round in 0..20 {
            for i in (0..n).step_by(20) {
                index.remove(&key(i, len(i)));
                index.insert(&key(i, len(i)), entry(i + round));
            }
        }
        index.check();
        assert!(index.memory_usage() - empty < (after - empty) * 2, "{name}");
        index.retain(|_, _| false);
        index.check();
        assert!(
            index.memory_usage() <= empty + 64 * 1024,
            "{name}: {empty} vs {}",
            index.memory_usage()
        );
    }
}

#[test]
fn long_keys_span_arena_chunks_and_compact() {
    let index = Index::with_hasher(super::one_shard_hash);
    let lengths = [MAX_KEY_LEN, 40_000, 33_000, 100, 1];
    for i in 0..60u64 {
        let len = lengths[i as usize % lengths.len()];
        index.insert(&key(i, len), entry(i));
    }
    for i in (0..60u64).filter(|i| !i.is_multiple_of(3)) {
        let len = lengths[i as usize % lengths.len()];
        assert_eq!(index.remove(&key(i, len)), Some(entry(i)));
    }
    index.check();
    for i in 0..60u64 {
        let len = lengths[i as usize % lengths.len()];
        let expected = i.is_multiple_of(3).then(|| entry(i));
        assert_eq!(index.get(&key(i, len)), expected, "{i}");
    }
}

#[test]
fn hash_collisions_are_resolved_by_key() {
    // Every key has hash 0: one shard, one tag, one probe cluster.
    let index = Index::with_hasher(super::constant_hash);
    let n = 1_500u64;
    for i in 0..n {
        assert_eq!(index.insert(&key(i, 8), entry(i)), None);
    }
    index.check();
    for i in 0..n {
        assert_eq!(index.get(&key(i, 8)), Some(entry(i)));
    }
    assert_eq!(index.get(&key(n, 8)), None);
    for i in (0..n).step_by(2) {
        assert_eq!(index.remove(&key(i, 8)), Some(entry(i)));
    }
    index.check();
    for i in 0..n {
        let expected = (i % 2 == 1).then(|| entry(i));
        assert_eq!(index.get(&key(i, 8)), expected);
    }
}

#[test]
fn memory_usage_counts_what_is_allocated() {
    let index = Index::new();
    let empty = index.memory_usage();
    // 64 shards of at least a 128-byte struct and a 16-slot table.
    assert!(empty >= 64 * (128 + 16 * 8), "{empty}");
    assert!(empty < 64 * 1024, "{empty}");
    let n = 50_000u64;
    for i in 0..n {
        index.insert(&key(i, 16), entry(i));
    }
    let per_key = (index.memory_usage() - empty) as f64 / n as f64;
    // At least the 32 packed bytes and a slot; at most a loose bound.
    assert!(per_key > 32.0 + 8.0, "{per_key}");
    assert!(per_key < 80.0, "{per_key}");
}

#[test]
fn insert_if_newer_keeps_the_highest_sequence_number() {
    let index = Index::new();
    let at = |seq: u64| Entry {
        segment: seq as u32,
        offset: 64,
        len: 40,
        expires_at: 0,
        tombstone: false,
    };
    assert_eq!(index.insert_if_newer(b"k", at(5), 5), Ok(None));
    assert_eq!(index.insert_if_newer(b"k", at(3), 3), Err(at(5)));
    assert_eq!(
        index.insert_if_newer(b"k", at(5), 5),
        Err(at(5)),
        "an equal sequence number keeps the first"
    );
    assert_eq!(index.get(b"k"), Some(at(5)));
    assert_eq!(index.insert_if_newer(b"k", at(9), 9), Ok(Some(at(5))));
    assert_eq!(index.get(b"k"), Some(at(9)));
    assert_eq!(index.len(), 1);
    // An overwrite without a sequence number counts as 0 from then on.
    index.insert(b"k", at(7));
    assert_eq!(index.insert_if_newer(b"k", at(1), 1), Ok(Some(at(7))));
    index.check();
}

#[test]
fn forget_seqs_gives_back_their_words_and_keeps_every_entry() {
    for (name, index) in flavours() {
        // Colliding hashes make every insert probe the whole shard.
        let n = if name == "xxh3" { 20_000u64 } else { 2_000 };
        let empty = index.memory_usage();
        for i in 0..n {
            let e = Entry {
                expires_at: if i % 5 == 0 { 1_000 + i } else { 0 },
                tombstone: i % 7 == 0,
                ..entry(i)
            };
            assert_eq!(index.insert_if_newer(&key(i, 16), e, i + 1), Ok(None));
        }
        let with_seqs = index.memory_usage() - empty;
        index.forget_seqs();
        index.check();
        let without = index.memory_usage() - empty;
        // A 16-byte key's entry is 5 words with its sequence number, 4
        // without (6 and 5 with an expiry).
        let saved = with_seqs.saturating_sub(without) as f64 / n as f64;
        assert!(saved > 4.0, "{name}: {with_seqs} -> {without} bytes");
        assert_eq!(index.len() as u64, n, "{name}");
        for i in 0..n {
            let e = index.get(&key(i, 16)).expect("present");
            assert_eq!(u64::from(e.offset), i, "{name}");
            assert_eq!(e.expires_at, if i % 5 == 0 { 1_000 + i } else { 0 });
            assert_eq!(e.tombstone, i % 7 == 0);
        }
        // Later loads compare against 0: any sequence number wins.
        assert!(index.insert_if_newer(&key(3, 16), entry(9), 1).is_ok());
        index.forget_seqs();
        index.check();
    }
}

#[test]
fn insert_if_newer_from_two_threads_in_opposite_orders() {
    // Two loaders see the records of the same keys in opposite orders; the
    // highest sequence number of every key must win whatever the timing.
    let index = std::sync::Arc::new(Index::new());
    let entry = |key: u64, seq: u64| Entry {
        segment: seq as u32,
        offset: key as u32,
        len: 32,
        expires_at: 0,
        tombstone: seq.is_multiple_of(2),
    };
    let loaders: Vec<_> = [false, true]
        .into_iter()
        .map(|reverse| {
            let index = std::sync::Arc::clone(&index);
            std::thread::spawn(move || {
                let mut seqs: Vec<u64> = (1..=20).collect();
                if reverse {
                    seqs.reverse();
                }
                for seq in seqs {
                    for key in 0..2_000u64 {
                        let seq = seq * 10 + key % 3;
                        let _ = index.insert_if_newer(&key.to_le_bytes(), entry(key, seq), seq);
                    }
                }
            })
        })
        .collect();
    for l in loaders {
        l.join().unwrap();
    }
    for key in 0..2_000u64 {
        assert_eq!(
            index.get(&key.to_le_bytes()),
            Some(entry(key, 200 + key % 3))
        );
    }
}

#[test]
fn forget_seqs_shrinks_a_table_sized_far_ahead() {
    // A loader sizes the index by an upper bound (records, not keys).
    let index = Index::with_capacity(200_000);
    let slots_before = index.check();
    for i in 0..20_000u64 {
        let _ = index.insert_if_newer(&key(i, 16), entry(i), i + 1);
    }
    index.forget_seqs();
    let slots_after = index.check();
    assert!(
        slots_after * 4 < slots_before,
        "{slots_before} -> {slots_after} slots"
    );
    for i in 0..20_000u64 {
        assert_eq!(index.get(&key(i, 16)), Some(entry(i)));
    }
}
