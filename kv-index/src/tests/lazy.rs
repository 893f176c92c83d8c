//! Lazily loaded indexes: every shard is loaded once, by whatever touches
//! it first, and from then on the index answers as the one it was saved
//! from, under concurrent readers and writers too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{entry, key};
use crate::{Entry, Index, SHARDS, ShardImage, ShardLoader};

/// Serves the saved images of an index and counts the loads per shard.
struct Saved {
    images: Vec<Vec<u8>>,
    loads: Vec<AtomicUsize>,
}

impl ShardLoader for Saved {
    fn load(&self, shard: usize) -> ShardImage {
        self.loads[shard].fetch_add(1, Ordering::SeqCst);
        ShardImage::decode(shard, &self.images[shard]).expect("a fresh image decodes")
    }
}

/// `n` keys, every third removed, saved; and a lazy index over the images.
fn saved(n: u64) -> (Index, Arc<Saved>, Index) {
    let original = Index::new();
    for i in 0..n {
        original.insert(&key(i, 16), entry(i));
    }
    for i in (0..n).step_by(3) {
        original.remove(&key(i, 16));
    }
    let images: Vec<Vec<u8>> = (0..SHARDS)
        .map(|shard| {
            let mut out = Vec::new();
            original.encode_shard_image(shard, &mut out);
            out
        })
        .collect();
    let keys: Vec<usize> = images
        .iter()
        .enumerate()
        .map(|(shard, bytes)| ShardImage::decode(shard, bytes).unwrap().len)
        .collect();
    let loader = Arc::new(Saved {
        images,
        loads: (0..SHARDS).map(|_| AtomicUsize::new(0)).collect(),
    });
    let lazy = Index::lazy(&keys, Arc::clone(&loader) as Arc<dyn ShardLoader>).unwrap();
    (original, loader, lazy)
}

fn loads(loader: &Saved) -> Vec<usize> {
    loader
        .loads
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect()
}

#[test]
fn a_lazy_index_loads_only_the_shards_it_is_asked_about() {
    let (original, loader, lazy) = saved(10_000);
    assert_eq!(lazy.pending_shards(), SHARDS);
    assert_eq!(lazy.len(), original.len(), "the counts given stand in");
    assert!(
        loads(&loader).iter().all(|&n| n == 0),
        "opening loads nothing"
    );

    let k = key(1, 16);
    let shard = lazy.shard_of(&k);
    assert_eq!(lazy.get(&k), original.get(&k));
    assert_eq!(lazy.pending_shards(), SHARDS - 1);
    let after_one = loads(&loader);
    assert_eq!(after_one[shard], 1);
    assert_eq!(after_one.iter().sum::<usize>(), 1);

    for i in 0..10_000 {
        assert_eq!(lazy.get(&key(i, 16)), original.get(&key(i, 16)), "key {i}");
    }
    assert_eq!(lazy.pending_shards(), 0);
    assert!(loads(&loader).iter().all(|&n| n == 1), "each shard once");
    assert_eq!(lazy.len(), original.len());
    lazy.check();
}

#[test]
fn writes_and_iteration_load_the_shards_they_touch() {
    let (original, loader, lazy) = saved(5_000);
    // An insert returns the entry the saved shard held.
    let k = key(2, 16);
    let newer = Entry {
        segment: 1 << 30,
        ..entry(2)
    };
    assert_eq!(lazy.insert(&k, newer), original.get(&k));
    assert_eq!(loads(&loader)[lazy.shard_of(&k)], 1);
    // A removal of a key that only the saved shard knows.
    let gone = (0..5_000u64)
        .map(|i| key(i, 16))
        .find(|k| lazy.shard_of(k) != lazy.shard_of(&key(2, 16)) && original.get(k).is_some())
        .unwrap();
    assert_eq!(lazy.remove(&gone), original.get(&gone));
    // Iteration sees every key of the saved index but the one removed, and
    // the overwrite.
    let mut seen = 0;
    lazy.for_each(|key, e| {
        seen += 1;
        if key == k.as_slice() {
            assert_eq!(e, newer);
        } else {
            assert_eq!(Some(e), original.get(key));
        }
    });
    assert_eq!(seen, original.len() - 1);
    assert!(loads(&loader).iter().all(|&n| n == 1));
    assert_eq!(lazy.len(), original.len() - 1);
}

#[test]
fn the_count_of_a_loaded_shard_is_its_image_s() {
    let (original, loader, _) = saved(2_000);
    // Claimed counts that are wrong give way to the images' at the load.
    let lazy = Index::lazy(&[7; SHARDS], loader as Arc<dyn ShardLoader>).unwrap();
    assert_eq!(lazy.len(), 7 * SHARDS);
    lazy.for_each(|_, _| {});
    assert_eq!(lazy.len(), original.len());
}

#[test]
fn racing_first_touches_load_each_shard_once() {
    for _round in 0..20 {
        let (original, loader, lazy) = saved(4_000);
        let lazy = &lazy;
        let original = &original;
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                scope.spawn(move || {
                    for i in 0..4_000u64 {
                        let i = (i * 7 + t * 1_009) % 4_000;
                        let k = key(i, 16);
                        if t == 0 && i % 2 == 0 {
                            // A writer too: its change lands on the loaded shard.
                            let e = entry(i + 100_000);
                            lazy.insert(&k, e);
                            assert_eq!(lazy.get(&k), Some(e));
                        } else if t != 0 && i % 2 == 1 {
                            assert_eq!(lazy.get(&k), original.get(&k), "key {i}");
                        }
                    }
                });
            }
        });
        assert!(loads(&loader).iter().all(|&n| n == 1));
        lazy.check();
    }
}

#[test]
fn a_lazy_index_needs_one_count_per_shard() {
    let (_, loader, _) = saved(10);
    assert!(Index::lazy(&[0; 3], loader as Arc<dyn ShardLoader>).is_err());
}

/// Panics on its first load of each shard, then serves the image.
struct Flaky {
    saved: Arc<Saved>,
    tried: Vec<std::sync::atomic::AtomicBool>,
}

impl ShardLoader for Flaky {
    fn load(&self, shard: usize) -> ShardImage {
        if !self.tried[shard].swap(true, Ordering::SeqCst) {
            panic!("a loader that fails once");
        }
        self.saved.load(shard)
    }
}

#[test]
fn a_loader_that_panics_leaves_the_shard_to_load_again() {
    let (original, loader, _) = saved(1_000);
    let keys: Vec<usize> = (0..SHARDS)
        .map(|shard| {
            ShardImage::decode(shard, &loader.images[shard])
                .unwrap()
                .len()
        })
        .collect();
    let flaky = Arc::new(Flaky {
        saved: loader,
        tried: (0..SHARDS)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    });
    let lazy = Index::lazy(&keys, flaky as Arc<dyn ShardLoader>).unwrap();
    let k = key(1, 16);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lazy.get(&k)));
    assert!(panicked.is_err());
    assert_eq!(lazy.pending_shards(), SHARDS, "not loaded, not empty");
    assert_eq!(lazy.get(&k), original.get(&k), "the next touch loads it");
    assert_eq!(lazy.pending_shards(), SHARDS - 1);
}
