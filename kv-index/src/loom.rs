//! The seqlock protocol of a shard, checked with loom: every interleaving
//! of a reader with the writer (up to a bound on preemptions), and every
//! value each relaxed load may return under the C11 memory model. Built
//! only with `--cfg loom`; run with `cargo xtask loom`.
//!
//! Each model starts a shard in a known state, then runs one writer step
//! against one reader, and checks what the reader may see: the old entry
//! or the new one, whole; a key nobody touched, always.
//!
//! NOTE: the writer runs on the model's main thread and the reader on a
//! spawned one, on purpose. Loom's DPOR remembers only the last access to
//! each atomic: with the reader first, the writer's own loads of the
//! version and of the words it rewrites hide the race between the reader's
//! loads and the writer's stores, and loom explores a single interleaving
//! (we saw exactly that: 1 iteration). With the writer first, each of the
//! reader's loads races with the writer's last store to that word, and
//! loom backtracks through the writer's steps.

use std::sync::Arc;

use loom::thread;

use crate::entry::Entry;
use crate::index::TAG_SHIFT;
use crate::shard::{Copied, Hasher, Shard};

/// Runs `f` under loom, with a preemption bound of 3 unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise: every interleaving with up to
/// three preemptions, which is where loom finds ordering bugs in practice.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn entry(segment: u32) -> Entry {
    Entry {
        segment,
        offset: segment * 100,
        len: 40 + segment,
        expires_at: 0,
        tombstone: false,
    }
}

/// The hash of a key made by [`key`]: its number modulo 100 spread over
/// the table (so keys 1 and 101 collide, and others do not), with the
/// number's low bits as the control bits.
fn hash_of(key: &[u8]) -> u64 {
    let i = u32::from_le_bytes(key[..4].try_into().unwrap()) % 100;
    u64::from(i.wrapping_mul(0x9E37_79B9)) << TAG_SHIFT | u64::from(i)
}

/// [`hash_of`], as the shard's hash function.
const HASH: fn(&[u8]) -> u64 = hash_of;

fn hasher() -> Hasher<'static> {
    &HASH
}

/// Keys of `words` 8-byte words: with 2 meta words, an entry is
/// `2 + words` arena words.
fn key(i: u32, words: usize) -> Vec<u8> {
    let mut k = vec![b'k'; words * 8];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

fn insert(shard: &Shard, key: &[u8], e: Entry) {
    shard.upsert(key, (hash_of(key), hasher()), e, None, |_, _| true);
}

fn get(shard: &Shard, key: &[u8]) -> Option<Entry> {
    shard.get(key, hash_of(key))
}

/// An entry overwritten in place (its head and location words change
/// under the seqlock): a reader sees the old entry or the new one, never a
/// mix; and a reader that reads twice never goes back in time.
#[test]
fn an_overwrite_in_place_is_never_seen_torn() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        let k = key(1, 1);
        let (a, b, c) = (entry(1), entry(2), entry(3));
        insert(&shard, &k, a);
        let reader = {
            let (shard, k) = (Arc::clone(&shard), k.clone());
            thread::spawn(move || {
                let first = get(&shard, &k).expect("the key is always there");
                let second = get(&shard, &k).expect("the key is always there");
                (first, second)
            })
        };
        insert(&shard, &k, b);
        insert(&shard, &k, c);
        let (first, second) = reader.join().unwrap();
        shard.check(hasher());
        for seen in [first, second] {
            assert!(seen == a || seen == b || seen == c, "torn entry {seen:?}");
        }
        assert!(
            first.segment <= second.segment,
            "went back from {first:?} to {second:?}"
        );
        assert_eq!(get(&shard, &k), Some(c));
    });
}

/// An entry that gains an expiry moves within the arena: the new entry is
/// written where no slot points, then the slot switches under the
/// seqlock.
#[test]
fn a_relocated_entry_is_seen_old_or_new() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        let k = key(1, 1);
        let a = entry(1);
        let b = Entry {
            expires_at: 1_700_000_000_000,
            ..entry(2)
        };
        insert(&shard, &k, a);
        let reader = {
            let (shard, k) = (Arc::clone(&shard), k.clone());
            thread::spawn(move || get(&shard, &k).expect("the key is always there"))
        };
        insert(&shard, &k, b);
        let seen = reader.join().unwrap();
        shard.check(hasher());
        assert!(seen == a || seen == b, "torn entry {seen:?}");
        assert_eq!(get(&shard, &k), Some(b));
    });
}

/// An insert that grows the arena (the last chunk is copied into a larger
/// one and published through the storage swap): a key that was there all
/// along is always found, whole; the new key is absent or whole.
#[test]
fn an_insert_that_grows_the_arena_hides_no_key() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        // 7 entries of 9 words fill 63 of the first chunk's 64 words; the
        // 8th does not fit.
        for i in 0..7 {
            insert(&shard, &key(i, 7), entry(i));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || {
                let old = get(&shard, &key(0, 7));
                let new = get(&shard, &key(7, 7));
                (old, new)
            })
        };
        insert(&shard, &key(7, 7), entry(7));
        let (old, new) = reader.join().unwrap();
        shard.check(hasher());
        assert_eq!(old, Some(entry(0)));
        assert!(new.is_none() || new == Some(entry(7)), "{new:?}");
        assert_eq!(get(&shard, &key(7, 7)), Some(entry(7)));
    });
}

/// An insert that grows the slot table (rebuilt into a new table,
/// published through the storage swap): a key that was there all along is
/// always found.
#[test]
fn an_insert_that_grows_the_table_hides_no_key() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        // 10 keys fill the one group of 12 slots to its maximum load
        // (7/8); the 11th grows it. 11 entries of 3 words fit the first
        // chunk.
        for i in 0..10 {
            insert(&shard, &key(i, 1), entry(i));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || get(&shard, &key(5, 1)))
        };
        insert(&shard, &key(10, 1), entry(10));
        let old = reader.join().unwrap();
        shard.check(hasher());
        assert_eq!(old, Some(entry(5)));
    });
}

/// Two keys with the same hash (so the same group and control byte):
/// removing the first empties its slot under the seqlock. A reader of the
/// second never misses it, and a reader of the first sees it whole or
/// not at all.
#[test]
fn a_removal_never_hides_a_colliding_key() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        let (k1, k2) = (key(1, 1), key(101, 1));
        assert_eq!(hash_of(&k1), hash_of(&k2));
        insert(&shard, &k1, entry(1));
        insert(&shard, &k2, entry(2));
        let reader = {
            let (shard, k1, k2) = (Arc::clone(&shard), k1.clone(), k2.clone());
            thread::spawn(move || (get(&shard, &k2), get(&shard, &k1)))
        };
        assert_eq!(
            shard.remove(&k1, (hash_of(&k1), hasher()), None),
            Some(entry(1))
        );
        let (other, removed) = reader.join().unwrap();
        shard.check(hasher());
        assert_eq!(other, Some(entry(2)));
        assert!(removed.is_none() || removed == Some(entry(1)));
    });
}

/// A snapshot (what iteration copies, shard by shard) taken while a key
/// is inserted and another removed: every key untouched by the writer is
/// in it exactly once, with its entry; the others at most once.
#[test]
fn a_snapshot_during_writes_has_every_untouched_key_once() {
    model(|| {
        let shard = Arc::new(Shard::new(1));
        for i in 0..3 {
            insert(&shard, &key(i, 1), entry(i));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || {
                let (mut keys, mut copied) = (Vec::new(), Vec::<Copied>::new());
                shard.snapshot(&mut keys, &mut copied);
                (keys, copied)
            })
        };
        insert(&shard, &key(3, 1), entry(3));
        shard.remove(&key(0, 1), (hash_of(&key(0, 1)), hasher()), None);
        let (keys, copied) = reader.join().unwrap();
        shard.check(hasher());
        let seen: Vec<(Vec<u8>, Entry)> = copied
            .iter()
            .map(|c| (keys[c.key_start..c.key_start + c.key_len].to_vec(), c.entry))
            .collect();
        for i in 0..4 {
            let n = seen.iter().filter(|(k, _)| *k == key(i, 1)).count();
            if i == 1 || i == 2 {
                assert_eq!(n, 1, "untouched key {i} seen {n} times");
                let e = seen.iter().find(|(k, _)| *k == key(i, 1)).unwrap().1;
                assert_eq!(e, entry(i));
            } else {
                assert!(n <= 1, "key {i} seen {n} times");
            }
        }
        assert!(seen.len() <= 4);
    });
}

/// Serves one image, decoded, and counts how often it was asked.
struct OneImage {
    bytes: Vec<u8>,
    loads: loom::sync::atomic::AtomicUsize,
}

impl crate::ShardLoader for OneImage {
    fn load(&self, shard: usize) -> crate::ShardImage {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::ShardImage::decode(shard, &self.bytes).unwrap()
    }
}

/// A lazily loaded shard touched first by a reader and a writer at once:
/// it is loaded once, the reader sees the saved entry (or the writer's,
/// once that is in), and the writer's change lands on the loaded contents.
#[test]
fn a_first_read_racing_a_first_write_sees_the_loaded_shard() {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    model(|| {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let saved = Shard::new(1);
        insert(&saved, &key(0, 1), entry(1));
        insert(&saved, &key(1, 1), entry(2));
        let mut bytes = Vec::new();
        saved.encode_image(&mut bytes, hasher());
        let loader = Arc::new(OneImage {
            bytes,
            loads: loom::sync::atomic::AtomicUsize::new(0),
        });
        let shard = Arc::new(Shard::pending(2, loader.clone(), 0));
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || (get(&shard, &key(0, 1)), get(&shard, &key(1, 1))))
        };
        insert(&shard, &key(1, 1), entry(3));
        let (zero, one) = reader.join().unwrap();
        assert_eq!(zero, Some(entry(1)), "an untouched saved key");
        assert!(one == Some(entry(2)) || one == Some(entry(3)), "{one:?}");
        assert_eq!(loader.loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(shard.len(), 2);
        shard.check(hasher());
    });
    println!(
        "interleavings: {}",
        RUNS.load(std::sync::atomic::Ordering::Relaxed)
    );
}
