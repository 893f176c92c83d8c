//! Model-based test: random put, get, delete and close-and-reopen against a
//! `HashMap`, agreeing at every step.

use std::collections::HashMap;

use kv_engine::{Db, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Contains(u8),
    Reopen,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    // A small key space so that overwrites and deletes of present keys are
    // common.
    prop_oneof![
        4 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Op::Put(k % 32, v)),
        3 => any::<u8>().prop_map(|k| Op::Get(k % 32)),
        2 => any::<u8>().prop_map(|k| Op::Delete(k % 32)),
        1 => any::<u8>().prop_map(|k| Op::Contains(k % 32)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
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

fn options() -> Options {
    // Tiny segments, so that a few hundred bytes of writes roll over, and
    // eager background compaction, so that it interleaves with everything.
    Options::default()
        .segment_size(1024)
        .sync(kv_engine::SyncPolicy::Never)
        .compaction_threshold(0.3)
        .compaction_interval(std::time::Duration::from_millis(1))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_a_hashmap(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open_with(dir.path(), options()).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    db.put(&key(k), &v).unwrap();
                    model.insert(key(k), v);
                }
                Op::Get(k) => {
                    prop_assert_eq!(db.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
                    let pinned = db.get_pinned(&key(k)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(pinned, model.get(&key(k)).cloned());
                }
                Op::Delete(k) => {
                    db.delete(&key(k)).unwrap();
                    model.remove(&key(k));
                }
                Op::Contains(k) => {
                    prop_assert_eq!(db.contains_key(&key(k)).unwrap(), model.contains_key(&key(k)));
                }
                Op::Reopen => {
                    db.close().unwrap();
                    db = Db::open_with(dir.path(), options()).unwrap();
                }
                Op::Compact => {
                    db.compact().unwrap();
                }
            }
            prop_assert_eq!(db.len(), model.len());
        }
        // Everything agrees after a final reopen too.
        db.close().unwrap();
        let db = Db::open_with(dir.path(), options()).unwrap();
        prop_assert_eq!(db.len(), model.len());
        for k in 0..32u8 {
            prop_assert_eq!(db.get(&key(k)).unwrap(), model.get(&key(k)).cloned());
        }
    }
}
