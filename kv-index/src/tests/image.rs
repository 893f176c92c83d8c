//! Shard images: an index saved and loaded answers as the original did,
//! and a damaged image is refused or harmless, never a panic.

use proptest::prelude::*;

use super::{constant_hash, entry, key, one_shard_hash, two_hashes};
use crate::{Entry, ImageError, Index, SHARDS, ShardImage};

/// The images of every shard of `index`.
fn images(index: &Index) -> Vec<Vec<u8>> {
    (0..SHARDS)
        .map(|shard| {
            let mut out = Vec::new();
            index.encode_shard_image(shard, &mut out);
            out
        })
        .collect()
}

/// `index` saved and loaded again, with the same hash function.
fn reloaded(index: &Index) -> Index {
    let decoded = images(index)
        .iter()
        .enumerate()
        .map(|(shard, bytes)| ShardImage::decode(shard, bytes).expect("a fresh image decodes"))
        .collect();
    let mut loaded = Index::from_shard_images(decoded).expect("one image per shard");
    loaded.hasher = index.hasher;
    loaded
}

/// An index of `n` keys after overwrites, removals and expiry moves, so
/// that its arenas hold garbage and entries of every shape.
fn churned(index: Index, n: u64) -> Index {
    for i in 0..n {
        index.insert(&key(i, 1 + (i % 40) as usize), entry(i));
    }
    for i in (0..n).step_by(3) {
        index.remove(&key(i, 1 + (i % 40) as usize));
    }
    for i in (1..n).step_by(5) {
        let with_expiry = Entry {
            expires_at: 1_700_000_000_000 + i,
            ..entry(i + n)
        };
        index.insert(&key(i, 1 + (i % 40) as usize), with_expiry);
    }
    index
}

#[test]
fn a_reloaded_index_answers_as_the_original() {
    type Make = fn() -> Index;
    let flavours: [(&str, Make); 4] = [
        ("xxh3", Index::new),
        ("constant", || Index::with_hasher(constant_hash)),
        ("one-shard", || Index::with_hasher(one_shard_hash)),
        ("two-hashes", || Index::with_hasher(two_hashes)),
    ];
    for (name, make) in flavours {
        let n = if name == "constant" { 300 } else { 5_000 };
        let index = churned(make(), n);
        let loaded = reloaded(&index);
        loaded.check();
        assert_eq!(loaded.len(), index.len(), "{name}");
        for i in 0..n + 10 {
            let k = key(i, 1 + (i % 40) as usize);
            assert_eq!(loaded.get(&k), index.get(&k), "{name}: key {i}");
        }
        // The same bytes again: nothing is lost or reordered.
        assert_eq!(images(&loaded), images(&index), "{name}");
        // And it keeps working as an index.
        for i in 0..n {
            let k = key(i, 1 + (i % 40) as usize);
            loaded.insert(&k, entry(i + 7));
            assert_eq!(loaded.get(&k), Some(entry(i + 7)), "{name}");
        }
        for i in (0..n).step_by(2) {
            loaded.remove(&key(i, 1 + (i % 40) as usize));
        }
        loaded.check();
    }
}

#[test]
fn an_empty_index_round_trips() {
    let loaded = reloaded(&Index::new());
    assert!(loaded.is_empty());
    loaded.check();
    loaded.insert(b"k", entry(1));
    assert_eq!(loaded.get(b"k"), Some(entry(1)));
}

#[test]
fn the_wrong_number_of_images_is_refused() {
    let images: Vec<ShardImage> = images(&Index::new())
        .iter()
        .take(SHARDS - 1)
        .enumerate()
        .map(|(shard, bytes)| ShardImage::decode(shard, bytes).unwrap())
        .collect();
    assert_eq!(
        Index::from_shard_images(images).unwrap_err(),
        ImageError::ShardCount {
            expected: SHARDS,
            got: SHARDS - 1
        }
    );
}

/// One shard's image of a small churned index, all in shard 0.
fn one_image() -> Vec<u8> {
    let index = churned(Index::with_hasher(one_shard_hash), 200);
    images(&index).swap_remove(0)
}

fn word(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap())
}

fn set_word(bytes: &mut [u8], i: usize, value: u64) {
    bytes[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
}

fn update(bytes: &mut [u8], i: usize, f: impl FnOnce(u64) -> u64) {
    let value = f(word(bytes, i));
    set_word(bytes, i, value);
}

#[test]
fn broken_invariants_are_refused() {
    let image = one_image();
    assert!(ShardImage::decode(0, &image).is_ok());
    let cap = word(&image, 1) as usize;
    let first_used = (0..cap).find(|&pos| word(&image, 4 + pos) != 0).unwrap();
    let first_empty = (0..cap).find(|&pos| word(&image, 4 + pos) == 0).unwrap();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("cut short", Box::new(|b| b.truncate(b.len() - 8))),
        ("not whole words", Box::new(|b| b.truncate(b.len() - 3))),
        ("no header", Box::new(|b| b.truncate(16))),
        ("one key more", Box::new(|b| update(b, 0, |w| w + 1))),
        ("more garbage", Box::new(|b| update(b, 3, |w| w + 1))),
        ("too few slots", Box::new(|b| set_word(b, 1, 4))),
        ("huge top", Box::new(|b| set_word(b, 2, u64::MAX))),
        (
            "a slot into an entry",
            Box::new(move |b| {
                let s = word(b, 4 + first_used);
                set_word(b, 4 + first_used, s + 1);
            }),
        ),
        (
            "two slots, one entry",
            Box::new(move |b| {
                let s = word(b, 4 + first_used);
                set_word(b, 4 + first_empty, s);
            }),
        ),
        (
            "unknown entry flags",
            Box::new(move |b| {
                let head = 4 + cap;
                update(b, head, |w| w | 1 << 20);
            }),
        ),
    ];
    for (name, damage) in cases {
        let mut bytes = image.clone();
        damage(&mut bytes);
        assert!(
            matches!(
                ShardImage::decode(0, &bytes),
                Err(ImageError::Malformed { shard: 0, .. })
            ),
            "{name} was not refused"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any damage is refused, or gives a shard that is still safe to use:
    /// lookups, inserts and removes neither panic nor loop.
    #[test]
    fn damaged_images_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..64), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = one_image();
        for (at, bit) in flips {
            let i = at.index(bytes.len() / 8);
            update(&mut bytes, i, |w| w ^ 1 << bit);
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(image) = ShardImage::decode(0, &bytes) {
            let mut all: Vec<ShardImage> = vec![image];
            all.extend(images(&Index::new()).iter().skip(1).enumerate()
                .map(|(i, b)| ShardImage::decode(i + 1, b).unwrap()));
            let mut index = Index::from_shard_images(all).unwrap();
            index.hasher = Some(one_shard_hash);
            for i in 0..250 {
                let k = key(i, 1 + (i % 40) as usize);
                let _ = index.get(&k);
                index.insert(&k, entry(i));
                prop_assert_eq!(index.get(&k), Some(entry(i)));
            }
            for i in 0..250 {
                index.remove(&key(i, 1 + (i % 40) as usize));
            }
        }
    }
}
