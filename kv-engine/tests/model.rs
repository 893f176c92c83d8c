//! Model-based test: random put (with and without a time to live), get,
//! delete, batch, the clock moving on, close-and-reopen, compaction,
//! iteration, checkpoints opened as databases, pinned values and partly
//! consumed iterators held across all of it, and crash images copied while
//! they are held, against a `HashMap`, agreeing at every step.
//!
//! `KV_MODEL_CASES` sets the number of cases (default 64).

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use common::crash_image;
use kv_engine::{Clock, Db, Iter, ManualClock, Options, Value, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Contains(u8),
    Reopen,
    Compact,
    /// Put with a time to live in milliseconds.
    PutTtl(u8, Vec<u8>, u64),
    /// A batch of puts (some with a time to live) and deletes.
    Batch(Vec<(u8, Option<Vec<u8>>, Option<u64>)>),
    /// The clock moves on by this many milliseconds.
    Advance(u64),
    Iterate,
    Checkpoint,
    /// Pin the value of a key and hold it.
    Pin(u8),
    /// Drop the oldest pinned value held (checking it still reads as it did).
    Unpin,
    /// Start an iterator, take this many items, and hold it.
    IterHold(u8),
    /// Drop the oldest iterator held, after taking one more item.
    IterDrop,
    /// Copy the directory as a crash would leave it, open the copy, and
    /// compare it with the model.
    CrashImage,
}

fn op() -> impl Strategy<Value = Op> {
    // A small key space so that overwrites and deletes of present keys are
    // common.
    prop_oneof![
        4 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Op::Put(k % 32, v)),
        3 => any::<u8>().prop_map(|k| Op::Get(k % 32)),
        2 => any::<u8>().prop_map(|k| Op::Delete(k % 32)),
        1 => any::<u8>().prop_map(|k| Op::Contains(k % 32)),
        2 => Just(Op::Reopen),
        3 => Just(Op::Compact),
        2 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..100), 0..50u64)
            .prop_map(|(k, v, ttl)| Op::PutTtl(k % 32, v, ttl)),
        1 => proptest::collection::vec(
            (any::<u8>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)), proptest::option::of(1..50u64)),
            1..6,
        )
        .prop_map(|ops| Op::Batch(ops.into_iter().map(|(k, v, t)| (k % 32, v, t)).collect())),
        2 => (0..40u64).prop_map(Op::Advance),
        1 => Just(Op::Iterate),
        1 => Just(Op::Checkpoint),
        3 => any::<u8>().prop_map(|k| Op::Pin(k % 32)),
        1 => Just(Op::Unpin),
        1 => (0..8u8).prop_map(Op::IterHold),
        1 => Just(Op::IterDrop),
        1 => Just(Op::CrashImage),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Varied key lengths, including a one-byte key.
    if k == 0 {
        vec![0]
    } else {
        format!("key/{k}/").repeat(k as usize % 4 + 1).into_bytes()
    }
}

fn options(clock: &Arc<ManualClock>) -> Options {
    // Tiny segments, so that a few hundred bytes of writes roll over, and
    // eager background compaction, so that it interleaves with everything.
    Options::default()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .segment_size(1024)
        .sync(kv_engine::SyncPolicy::Never)
        .compaction_threshold(0.3)
        .compaction_interval(Duration::from_millis(1))
}

fn cases() -> u32 {
    std::env::var("KV_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_a_hashmap(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let copies = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut db = Db::open_with(dir.path(), options(&clock)).unwrap();
        let mut model = Model::default();
        let mut checkpoints = 0;
        let mut images = 0;
        // What the holders hold: each pinned value with the bytes it read.
        let mut pinned: VecDeque<(Value, Vec<u8>)> = VecDeque::new();
        let mut iters: VecDeque<Iter> = VecDeque::new();
        for op in ops {
            let now = clock.now_millis();
            match op {
                Op::Put(k, v) => {
                    db.put(&key(k), &v).unwrap();
                    model.put(k, v, None);
                }
                Op::PutTtl(k, v, ttl) => {
                    db.put_with_ttl(&key(k), &v, Duration::from_millis(ttl)).unwrap();
                    model.put(k, v, Some(now + ttl));
                }
                Op::Batch(ops) => {
                    let mut batch = WriteBatch::new();
                    for (k, v, ttl) in &ops {
                        match (v, ttl) {
                            (Some(v), None) => batch.put(&key(*k), v),
                            (Some(v), Some(ttl)) => batch.put_with_ttl(&key(*k), v, Duration::from_millis(*ttl)),
                            (None, _) => batch.delete(&key(*k)),
                        };
                    }
                    db.write(batch).unwrap();
                    for (k, v, ttl) in ops {
                        match v {
                            Some(v) => model.put(k, v, ttl.map(|t| now + t)),
                            None => model.delete(k),
                        }
                    }
                }
                Op::Get(k) => {
                    prop_assert_eq!(db.get(&key(k)).unwrap(), model.get(k, now));
                    let pinned = db.get_pinned(&key(k)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(pinned, model.get(k, now));
                }
                Op::Delete(k) => {
                    db.delete(&key(k)).unwrap();
                    model.delete(k);
                }
                Op::Contains(k) => {
                    prop_assert_eq!(db.contains_key(&key(k)).unwrap(), model.get(k, now).is_some());
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Reopen => {
                    db.close().unwrap();
                    db = Db::open_with(dir.path(), options(&clock)).unwrap();
                }
                Op::Compact => {
                    db.compact().unwrap();
                }
                Op::Iterate => {
                    let mut seen = HashMap::new();
                    for item in db.iter() {
                        let (k, v) = item.unwrap();
                        prop_assert!(seen.insert(k, v.to_vec()).is_none(), "a key seen twice");
                    }
                    prop_assert_eq!(&seen, &model.live(now));
                    let mut keys: Vec<Vec<u8>> = db.keys().collect();
                    keys.sort();
                    let mut expected: Vec<Vec<u8>> = seen.into_keys().collect();
                    expected.sort();
                    prop_assert_eq!(keys, expected);
                }
                Op::Checkpoint => {
                    checkpoints += 1;
                    let target = copies.path().join(format!("copy-{checkpoints}"));
                    db.checkpoint(&target).unwrap();
                    let copy = Db::open_with(&target, options(&clock)).unwrap();
                    let mut seen = HashMap::new();
                    for item in copy.iter() {
                        let (k, v) = item.unwrap();
                        seen.insert(k, v.to_vec());
                    }
                    prop_assert_eq!(seen, model.live(now));
                    // The copy is a database of its own: writing to it
                    // leaves the source alone.
                    copy.put(&key(1), b"written to the copy").unwrap();
                    copy.compact().unwrap();
                    copy.close().unwrap();
                    prop_assert_eq!(db.get(&key(1)).unwrap(), model.get(1, now));
                }
                Op::Pin(k) => {
                    let value = db.get_pinned(&key(k)).unwrap();
                    prop_assert_eq!(value.as_ref().map(|v| v.to_vec()), model.get(k, now));
                    if let Some(value) = value {
                        let bytes = value.to_vec();
                        pinned.push_back((value, bytes));
                    }
                }
                Op::Unpin => {
                    if let Some((value, bytes)) = pinned.pop_front() {
                        prop_assert_eq!(&*value, &bytes[..], "a held value changed");
                    }
                }
                Op::IterHold(n) => {
                    let mut iter = db.iter();
                    for _ in 0..n {
                        if let Some(item) = iter.next() {
                            let (k, v) = item.unwrap();
                            // Nothing was written since it began.
                            prop_assert_eq!(Some(v.to_vec()), model.live(now).get(&k).cloned());
                        }
                    }
                    iters.push_back(iter);
                }
                Op::IterDrop => {
                    if let Some(mut iter) = iters.pop_front() {
                        // Writes happened since it began: an item is a value
                        // once written for its key; only a read error is
                        // wrong here.
                        if let Some(item) = iter.next() {
                            item.unwrap();
                        }
                    }
                }
                Op::CrashImage => {
                    images += 1;
                    let image = copies.path().join(format!("image-{images}"));
                    crash_image(dir.path(), &image);
                    let copy = Db::open_with(&image, options(&clock)).unwrap();
                    for k in 0..32u8 {
                        prop_assert_eq!(copy.get(&key(k)).unwrap(), model.get(k, now), "crash image, key {}", k);
                    }
                    copy.close().unwrap();
                }
            }
            prop_assert_eq!(db.len(), model.live(clock.now_millis()).len());
        }
        // Everything agrees after a final reopen too, while the holders are
        // still held, and again after they are dropped.
        db.close().unwrap();
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        let now = clock.now_millis();
        for k in 0..32u8 {
            prop_assert_eq!(db.get(&key(k)).unwrap(), model.get(k, now));
        }
        for (value, bytes) in pinned.drain(..) {
            prop_assert_eq!(&*value, &bytes[..], "a held value changed");
        }
        drop(iters);
        db.close().unwrap();
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        let now = clock.now_millis();
        prop_assert_eq!(db.len(), model.live(now).len());
        for k in 0..32u8 {
            prop_assert_eq!(db.get(&key(k)).unwrap(), model.get(k, now));
        }
    }
}

/// The expected state: each key's value and expiry.
#[derive(Default)]
struct Model {
    entries: HashMap<u8, (Vec<u8>, Option<u64>)>,
}

impl Model {
    fn put(&mut self, k: u8, v: Vec<u8>, expires_at: Option<u64>) {
        self.entries.insert(k, (v, expires_at));
    }

    fn delete(&mut self, k: u8) {
        self.entries.remove(&k);
    }

    fn get(&self, k: u8, now: u64) -> Option<Vec<u8>> {
        self.entries
            .get(&k)
            .filter(|(_, e)| e.is_none_or(|e| now < e))
            .map(|(v, _)| v.clone())
    }

    fn live(&self, now: u64) -> HashMap<Vec<u8>, Vec<u8>> {
        self.entries
            .keys()
            .filter_map(|&k| Some((key(k), self.get(k, now)?)))
            .collect()
    }
}
