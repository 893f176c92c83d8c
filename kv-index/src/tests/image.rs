//! Shard images: an index saved and loaded answers as the original did,
//! and a damaged image is refused or harmless, never a panic.

use proptest::prelude::*;

use super::{constant_hash, entry, key, one_shard_hash, two_hashes};
use crate::image::Encoder;
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

/// An image of `groups` groups holding (position, control byte, entry,
/// key) as given.
fn crafted(len: usize, groups: usize, entries: &[(usize, u8, Entry, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, len, groups);
    for (pos, ctrl, entry, key) in entries {
        encoder.push(*pos, *ctrl, entry, key);
    }
    out
}

fn set_u64(bytes: &mut [u8], at: usize, x: u64) {
    bytes[at..at + 8].copy_from_slice(&x.to_le_bytes());
}

#[rustfmt::skip]
const GOLDEN_IMAGE: [u8; 25] = [
    0x01, 0, 0, 0, 0, 0, 0, 0,  // len 1
    0x01, 0, 0, 0, 0, 0, 0, 0,  // group_count 1
    0x03,                       // position_delta: slot 3
    0x85,                       // ctrl: full, hash bits 0x05
    0x01,                       // key_len 1
    0x00,                       // flags: a put, no expiry
    0x39,                       // record_len 57
    0x07,                       // segment 7
    0x80, 0x20,                 // offset 4096
    0x6b,                       // key "k"
];

#[test]
fn the_image_encoding_is_frozen() {
    let e = Entry {
        segment: 7,
        offset: 4096,
        len: 57,
        expires_at: 0,
        tombstone: false,
    };
    assert_eq!(crafted(1, 1, &[(3, 0x85, e, b"k")]), GOLDEN_IMAGE);
    let image = ShardImage::decode(0, &GOLDEN_IMAGE).unwrap();
    assert_eq!((image.len, image.groups.len(), image.top), (1, 1, 3));
    // Loaded into shard 0 of an index whose hash sends "k" there, with
    // those hash bits, it is found.
    let mut all = vec![image];
    all.extend(
        images(&Index::new())
            .iter()
            .skip(1)
            .enumerate()
            .map(|(i, b)| ShardImage::decode(i + 1, b).unwrap()),
    );
    let mut index = Index::from_shard_images(all).unwrap();
    index.hasher = Some(|_| 0x05);
    assert_eq!(index.get(b"k"), Some(e));
    index.check();
}

#[test]
fn broken_invariants_are_refused() {
    assert!(ShardImage::decode(0, &one_image()).is_ok());
    let e = entry(3);
    let expiring = Entry {
        expires_at: 5,
        ..entry(4)
    };
    // Two keys in two groups: slot 0 of each.
    let good = crafted(2, 2, &[(0, 0x80, e, b"a"), (12, 0x81, expiring, b"b")]);
    assert!(ShardImage::decode(0, &good).is_ok());
    // The second entry's position, and its expiry: header 16, then the
    // first entry (delta, ctrl, key_len, flags, three varints, key), then
    // the second's fields before it.
    let first_len = crafted(1, 2, &[(0, 0x80, e, b"a")]).len() - 16;
    let second = 16 + first_len;
    let expiry_at = crafted(2, 2, &[(0, 0x80, e, b"a"), (12, 0x81, expiring, b"")]).len() - 8;

    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("cut short", Box::new(|b| b.truncate(b.len() - 1))),
        ("a byte more", Box::new(|b| b.push(0))),
        ("no header", Box::new(|b| b.truncate(12))),
        ("one key more", Box::new(|b| set_u64(b, 0, 3))),
        ("no group", Box::new(|b| set_u64(b, 8, 0))),
        ("far too many groups", Box::new(|b| set_u64(b, 8, 1 << 40))),
        (
            "a position past the table",
            Box::new(move |b| b[second] = 100),
        ),
        ("a deleted slot", Box::new(|b| b[17] = 0x01)),
        ("an empty slot", Box::new(|b| b[17] = 0x00)),
        ("unknown flags", Box::new(|b| b[16 + 3] |= 0x80)),
        (
            "an expiry of 0 with its flag",
            Box::new(move |b| set_u64(b, expiry_at, 0)),
        ),
        (
            "an overlong varint",
            Box::new(|b| {
                b.splice(16..17, [0xFF; 11]);
            }),
        ),
    ];
    for (name, damage) in cases {
        let mut bytes = good.clone();
        damage(&mut bytes);
        assert!(
            matches!(
                ShardImage::decode(0, &bytes),
                Err(ImageError::Malformed { shard: 0, .. })
            ),
            "{name} was not refused"
        );
    }
    // More keys than one group may hold (7/8 of 12 slots).
    let keys: Vec<[u8; 1]> = (0..11u8).map(|i| [i]).collect();
    let entries: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i, 0x80, e, &k[..]))
        .collect();
    assert!(ShardImage::decode(0, &crafted(10, 1, &entries[..10])).is_ok());
    assert!(matches!(
        ShardImage::decode(0, &crafted(11, 1, &entries)),
        Err(ImageError::Malformed { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any damage is refused, or gives a shard that is still safe to use:
    /// lookups, inserts and removes neither panic nor loop.
    #[test]
    fn damaged_images_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = one_image();
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
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
