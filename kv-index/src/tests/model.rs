//! A model test: random operations against the index and a `HashMap`,
//! which must agree after every step.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::key;
use crate::{Entry, Index};

/// Key lengths the model draws from; a key id picks one.
const LENGTHS: [usize; 10] = [1, 7, 8, 9, 15, 16, 17, 24, 255, 1000];
/// Distinct key ids in most runs: few, so operations hit present keys.
const KEYS: u64 = 24;
/// Distinct key ids in the wide run: enough to grow and compact a shard.
const WIDE_KEYS: u64 = 600;

/// A fixed seed keeps the test deterministic; `PROPTEST_RNG_SEED` does
/// not override a seed set in code, so change it here to explore.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x6b76_2d69_6e64_6578),
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, Entry),
    /// Insert-if-newer, with this sequence number.
    InsertIfNewer(u64, Entry, u64),
    ForgetSeqs,
    Remove(u64),
    /// Compare-and-swap; `true` uses the current entry as the expectation.
    Cas(u64, bool, Entry, Entry),
    /// Remove-if; `true` uses the current entry as the expectation.
    RemoveIf(u64, bool, Entry),
    Get(u64),
    /// Retain entries whose offset is not divisible by the modulus.
    Retain(u32),
}

fn model_key(id: u64) -> Vec<u8> {
    key(id, LENGTHS[id as usize % LENGTHS.len()])
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        0u32..4,
        any::<u32>(),
        any::<u32>(),
        prop_oneof![Just(0u64), Just(0), 1u64..4, any::<u64>()],
        any::<bool>(),
    )
        .prop_map(|(segment, offset, len, expires_at, tombstone)| Entry {
            segment,
            offset,
            len,
            expires_at,
            tombstone,
        })
}

fn arb_op(keys: u64) -> impl Strategy<Value = Op> {
    let id = 0..keys;
    prop_oneof![
        5 => (id.clone(), arb_entry()).prop_map(|(k, e)| Op::Insert(k, e)),
        3 => (id.clone(), arb_entry(), prop_oneof![0u64..8, any::<u64>()])
            .prop_map(|(k, e, seq)| Op::InsertIfNewer(k, e, seq)),
        1 => Just(Op::ForgetSeqs),
        2 => id.clone().prop_map(Op::Remove),
        2 => (id.clone(), any::<bool>(), arb_entry(), arb_entry())
            .prop_map(|(k, cur, exp, new)| Op::Cas(k, cur, exp, new)),
        2 => (id.clone(), any::<bool>(), arb_entry())
            .prop_map(|(k, cur, exp)| Op::RemoveIf(k, cur, exp)),
        2 => id.prop_map(Op::Get),
        1 => (2u32..5).prop_map(Op::Retain),
    ]
}

fn run(index: &Index, keys: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model: HashMap<Vec<u8>, Entry> = HashMap::new();
    // The sequence number each key's entry counts as: 0 unless
    // `insert_if_newer` set it and `forget_seqs` did not run since.
    let mut seqs: HashMap<Vec<u8>, u64> = HashMap::new();
    for op in ops {
        match op {
            Op::Insert(id, e) => {
                let k = model_key(*id);
                seqs.remove(&k);
                prop_assert_eq!(index.insert(&k, *e), model.insert(k, *e));
            }
            Op::InsertIfNewer(id, e, seq) => {
                let k = model_key(*id);
                let expected = match model.get(&k) {
                    Some(current) if seqs.get(&k).copied().unwrap_or(0) >= *seq => Err(*current),
                    current => Ok(current.copied()),
                };
                if expected.is_ok() {
                    model.insert(k.clone(), *e);
                    seqs.insert(k.clone(), *seq);
                }
                prop_assert_eq!(index.insert_if_newer(&k, *e, *seq), expected);
            }
            Op::ForgetSeqs => {
                seqs.clear();
                index.forget_seqs();
            }
            Op::Remove(id) => {
                let k = model_key(*id);
                seqs.remove(&k);
                prop_assert_eq!(index.remove(&k), model.remove(&k));
            }
            Op::Cas(id, use_current, expected, new) => {
                let k = model_key(*id);
                let expected = match model.get(&k) {
                    Some(current) if *use_current => *current,
                    _ => *expected,
                };
                let swapped = model.get(&k) == Some(&expected);
                if swapped {
                    model.insert(k.clone(), *new);
                    seqs.remove(&k);
                }
                prop_assert_eq!(index.compare_and_swap(&k, &expected, *new), swapped);
            }
            Op::RemoveIf(id, use_current, expected) => {
                let k = model_key(*id);
                let expected = match model.get(&k) {
                    Some(current) if *use_current => *current,
                    _ => *expected,
                };
                let removed = model.get(&k) == Some(&expected);
                if removed {
                    model.remove(&k);
                    seqs.remove(&k);
                }
                prop_assert_eq!(index.remove_if(&k, &expected), removed);
            }
            Op::Get(id) => {
                let k = model_key(*id);
                prop_assert_eq!(index.get(&k), model.get(&k).copied());
            }
            Op::Retain(modulus) => {
                index.retain(|_, e| !e.offset.is_multiple_of(*modulus));
                model.retain(|_, e| !e.offset.is_multiple_of(*modulus));
                seqs.retain(|k, _| model.contains_key(k));
            }
        }
        prop_assert_eq!(index.len(), model.len());
        for id in 0..keys.min(KEYS) {
            let k = model_key(id);
            prop_assert_eq!(index.get(&k), model.get(&k).copied());
        }
    }
    index.check();
    let mut seen = HashMap::new();
    index.for_each(|k, e| {
        seen.insert(k.to_vec(), e);
    });
    prop_assert_eq!(seen, model);
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn agrees_with_a_hashmap(ops in prop::collection::vec(arb_op(KEYS), 1..400)) {
        run(&Index::new(), KEYS, &ops)?;
    }

    #[test]
    fn agrees_with_a_hashmap_when_every_hash_collides(
        ops in prop::collection::vec(arb_op(KEYS), 1..400)
    ) {
        run(&Index::with_hasher(super::constant_hash), KEYS, &ops)?;
    }

    #[test]
    fn agrees_with_a_hashmap_with_two_hashes(
        ops in prop::collection::vec(arb_op(KEYS), 1..400)
    ) {
        run(&Index::with_hasher(super::two_hashes), KEYS, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn agrees_with_a_hashmap_in_one_busy_shard(
        ops in prop::collection::vec(arb_op(WIDE_KEYS), 1..3000)
    ) {
        run(&Index::with_hasher(super::one_shard_hash), WIDE_KEYS, &ops)?;
    }
}
