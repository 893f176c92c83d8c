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
use crate::shard::{Copied, Shard};

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

fn entry(segment: u32, seq: u64) -> Entry {
    Entry {
        segment,
        offset: segment * 100,
        len: 40 + segment,
        seq,
        expires_at: 0,
        tombstone: false,
    }
}

/// A tag spread over the table, so that keys do not collide.
fn tag(i: u32) -> u32 {
    i.wrapping_mul(0x9E37_79B9)
}

/// Keys of `words` 8-byte words: with 3 meta words, an entry is
/// `3 + words` arena words.
fn key(i: u32, words: usize) -> Vec<u8> {
    let mut k = vec![b'k'; words * 8];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

fn insert(shard: &Shard, key: &[u8], tag: u32, e: Entry) {
    shard.upsert(key, tag, e, |_| true);
}

/// An entry overwritten in place (its location and sequence words change
/// under the seqlock): a reader sees the old entry or the new one, never a
/// mix; and a reader that reads twice never goes back in time.
#[test]
fn an_overwrite_in_place_is_never_seen_torn() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        let k = key(1, 1);
        let (a, b, c) = (entry(1, 1), entry(2, 2), entry(3, 3));
        insert(&shard, &k, tag(1), a);
        let reader = {
            let (shard, k) = (Arc::clone(&shard), k.clone());
            thread::spawn(move || {
                let first = shard.get(&k, tag(1)).expect("the key is always there");
                let second = shard.get(&k, tag(1)).expect("the key is always there");
                (first, second)
            })
        };
        insert(&shard, &k, tag(1), b);
        insert(&shard, &k, tag(1), c);
        let (first, second) = reader.join().unwrap();
        shard.check();
        for seen in [first, second] {
            assert!(seen == a || seen == b || seen == c, "torn entry {seen:?}");
        }
        assert!(
            first.seq <= second.seq,
            "went back from {first:?} to {second:?}"
        );
        assert_eq!(shard.get(&k, tag(1)), Some(c));
    });
}

/// An entry that gains an expiry moves within the arena: the new entry is
/// written where no slot points, then the slot switches under the
/// seqlock.
#[test]
fn a_relocated_entry_is_seen_old_or_new() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        let k = key(1, 1);
        let a = entry(1, 1);
        let b = Entry {
            expires_at: 1_700_000_000_000,
            ..entry(2, 2)
        };
        insert(&shard, &k, tag(1), a);
        let reader = {
            let (shard, k) = (Arc::clone(&shard), k.clone());
            thread::spawn(move || shard.get(&k, tag(1)).expect("the key is always there"))
        };
        insert(&shard, &k, tag(1), b);
        let seen = reader.join().unwrap();
        shard.check();
        assert!(seen == a || seen == b, "torn entry {seen:?}");
        assert_eq!(shard.get(&k, tag(1)), Some(b));
    });
}

/// An insert that grows the arena (the last chunk is copied into a larger
/// one and published through the storage swap): a key that was there all
/// along is always found, whole; the new key is absent or whole.
#[test]
fn an_insert_that_grows_the_arena_hides_no_key() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        // 10 entries of 6 words fill 60 of the first chunk's 64 words; the
        // 11th does not fit.
        for i in 0..10 {
            insert(&shard, &key(i, 3), tag(i), entry(i, u64::from(i) + 1));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || {
                let old = shard.get(&key(0, 3), tag(0));
                let new = shard.get(&key(10, 3), tag(10));
                (old, new)
            })
        };
        insert(&shard, &key(10, 3), tag(10), entry(10, 11));
        let (old, new) = reader.join().unwrap();
        shard.check();
        assert_eq!(old, Some(entry(0, 1)));
        assert!(new.is_none() || new == Some(entry(10, 11)), "{new:?}");
        assert_eq!(shard.get(&key(10, 3), tag(10)), Some(entry(10, 11)));
    });
}

/// An insert that grows the slot table (rehashed into a new table,
/// published through the storage swap): a key that was there all along is
/// always found.
#[test]
fn an_insert_that_grows_the_table_hides_no_key() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        // 14 keys fill the 16-slot table to its maximum load (7/8); the
        // 15th grows it. 15 entries of 4 words fit the first chunk.
        for i in 0..14 {
            insert(&shard, &key(i, 1), tag(i), entry(i, u64::from(i) + 1));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || shard.get(&key(5, 1), tag(5)))
        };
        insert(&shard, &key(14, 1), tag(14), entry(14, 15));
        let old = reader.join().unwrap();
        shard.check();
        assert_eq!(old, Some(entry(5, 6)));
    });
}

/// Two keys on the same tag (so the same home slot): removing the first
/// shifts the second back one slot under the seqlock. A reader of the
/// second never misses it.
#[test]
fn a_backward_shift_never_hides_the_shifted_key() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        let (k1, k2) = (key(1, 1), key(2, 1));
        let same = tag(7);
        insert(&shard, &k1, same, entry(1, 1));
        insert(&shard, &k2, same, entry(2, 2));
        let reader = {
            let (shard, k1, k2) = (Arc::clone(&shard), k1.clone(), k2.clone());
            thread::spawn(move || (shard.get(&k2, same), shard.get(&k1, same)))
        };
        assert_eq!(shard.remove(&k1, same, None), Some(entry(1, 1)));
        let (shifted, removed) = reader.join().unwrap();
        shard.check();
        assert_eq!(shifted, Some(entry(2, 2)));
        assert!(removed.is_none() || removed == Some(entry(1, 1)));
    });
}

/// A snapshot (what iteration copies, shard by shard) taken while a key
/// is inserted and another removed: every key untouched by the writer is
/// in it exactly once, with its entry; the others at most once.
#[test]
fn a_snapshot_during_writes_has_every_untouched_key_once() {
    model(|| {
        let shard = Arc::new(Shard::new(0));
        for i in 0..3 {
            insert(&shard, &key(i, 1), tag(i), entry(i, u64::from(i) + 1));
        }
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || {
                let (mut keys, mut copied) = (Vec::new(), Vec::<Copied>::new());
                shard.snapshot(&mut keys, &mut copied);
                (keys, copied)
            })
        };
        insert(&shard, &key(3, 1), tag(3), entry(3, 4));
        shard.remove(&key(0, 1), tag(0), None);
        let (keys, copied) = reader.join().unwrap();
        shard.check();
        let seen: Vec<(Vec<u8>, Entry)> = copied
            .iter()
            .map(|c| (keys[c.key_start..c.key_start + c.key_len].to_vec(), c.entry))
            .collect();
        for i in 0..4 {
            let n = seen.iter().filter(|(k, _)| *k == key(i, 1)).count();
            if i == 1 || i == 2 {
                assert_eq!(n, 1, "untouched key {i} seen {n} times");
                let e = seen.iter().find(|(k, _)| *k == key(i, 1)).unwrap().1;
                assert_eq!(e, entry(i, u64::from(i) + 1));
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
        let saved = Shard::new(0);
        insert(&saved, &key(0, 1), tag(0), entry(1, 1));
        insert(&saved, &key(1, 1), tag(1), entry(2, 2));
        let mut bytes = Vec::new();
        saved.encode_image(&mut bytes);
        let loader = Arc::new(OneImage {
            bytes,
            loads: loom::sync::atomic::AtomicUsize::new(0),
        });
        let shard = Arc::new(Shard::pending(2, loader.clone(), 0));
        let reader = {
            let shard = Arc::clone(&shard);
            thread::spawn(move || (shard.get(&key(0, 1), tag(0)), shard.get(&key(1, 1), tag(1))))
        };
        insert(&shard, &key(1, 1), tag(1), entry(3, 3));
        let (zero, one) = reader.join().unwrap();
        assert_eq!(zero, Some(entry(1, 1)), "an untouched saved key");
        assert!(
            one == Some(entry(2, 2)) || one == Some(entry(3, 3)),
            "{one:?}"
        );
        assert_eq!(loader.loads.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(shard.len(), 2);
        shard.check();
    });
    println!(
        "interleavings: {}",
        RUNS.load(std::sync::atomic::Ordering::Relaxed)
    );
}
