//! A whole database against a `HashMap` model: an arbitrary sequence of
//! puts, deletes, gets, batches, reopens, crashes (a copy of the directory
//! taken while the database is open, as kill -9 leaves it) and
//! compactions, on a small database (tiny segments, frequent checkpoints).
//! Every read equals the model; bad input gets its typed error and changes
//! nothing; after every reopen the whole database equals the model.

#![no_main]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use kv_engine::{Db, Error, Options, SyncPolicy, WriteBatch};
use libfuzzer_sys::fuzz_target;

/// The configured value maximum, so that `ValueTooLarge` is reachable.
const MAX_VALUE: usize = 600;

#[derive(Arbitrary, Debug)]
struct Input {
    sync_always: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Key {
    /// One of 16 short keys, so that keys are overwritten and deleted.
    Small(u8),
    /// Any bytes (possibly empty, which is an error).
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Val {
    Bytes(Vec<u8>),
    /// `len` copies of `byte`: values larger than a segment, or than the
    /// maximum.
    Long {
        byte: u8,
        len: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Put(Key, Val),
    Delete(Key),
    Get(Key),
    Batch(Vec<(Key, Option<Val>)>),
    Reopen,
    Crash,
    Compact,
    Sync,
}

impl Key {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Small(n) => format!("k{}", n % 16).into_bytes(),
            Key::Raw(b) => b.clone(),
        }
    }
}

impl Val {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b.clone(),
            Val::Long { byte, len } => vec![*byte; usize::from(*len) % 2048],
        }
    }
}

/// The error the engine must give for this key and value, if any.
fn invalid(key: &[u8], value_len: usize) -> Option<&'static str> {
    if key.is_empty() {
        Some("EmptyKey")
    } else if key.len() > 65_535 {
        Some("KeyTooLarge")
    } else if value_len > MAX_VALUE {
        Some("ValueTooLarge")
    } else {
        None
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::EmptyKey => "EmptyKey",
        Error::KeyTooLarge { .. } => "KeyTooLarge",
        Error::ValueTooLarge { .. } => "ValueTooLarge",
        _ => "other",
    }
}

fn options(sync_always: bool) -> Options {
    Options::default()
        .segment_size(256)
        .max_wal_size(1024)
        .max_value_len(MAX_VALUE)
        .background_compaction(false)
        .sync(if sync_always {
            SyncPolicy::Always
        } else {
            SyncPolicy::Never
        })
}

/// The whole database equals the model.
fn check_all(db: &Db, model: &HashMap<Vec<u8>, Vec<u8>>, when: &str) {
    assert_eq!(db.len(), model.len(), "{when}: key count");
    let mut keys: Vec<Vec<u8>> = db.keys().collect();
    keys.sort();
    let mut expected: Vec<Vec<u8>> = model.keys().cloned().collect();
    expected.sort();
    assert_eq!(keys, expected, "{when}: the set of keys");
    for (k, v) in model {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            Some(v),
            "{when}: value of {k:?}"
        );
    }
}

fn next_dir(root: &Path, n: &mut u32) -> PathBuf {
    *n += 1;
    root.join(format!("db{n}"))
}

fuzz_target!(|input: Input| {
    let scratch = kv_fuzz::scratch_dir();
    let mut generation = 0;
    let mut dir = next_dir(scratch.path(), &mut generation);
    let opts = options(input.sync_always);
    let mut db = Some(Db::open_with(&dir, opts.clone()).unwrap());
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();

    for op in input.ops.iter().take(64) {
        let d = db.as_ref().unwrap();
        match op {
            Op::Put(k, v) => {
                let (k, v) = (k.bytes(), v.bytes());
                match (d.put(&k, &v), invalid(&k, v.len())) {
                    (Ok(()), None) => {
                        model.insert(k, v);
                    }
                    (Err(e), Some(want)) => assert_eq!(kind(&e), want, "{e}"),
                    (got, want) => panic!("put {k:?}: got {got:?}, expected {want:?}"),
                }
            }
            Op::Delete(k) => {
                let k = k.bytes();
                match (d.delete(&k), invalid(&k, 0)) {
                    (Ok(()), None) => {
                        model.remove(&k);
                    }
                    (Err(e), Some(want)) => assert_eq!(kind(&e), want, "{e}"),
                    (got, want) => panic!("delete {k:?}: got {got:?}, expected {want:?}"),
                }
            }
            Op::Get(k) => {
                let k = k.bytes();
                match (d.get(&k), invalid(&k, 0)) {
                    (Ok(v), None) => assert_eq!(v.as_ref(), model.get(&k), "get {k:?}"),
                    (Err(e), Some(want)) => assert_eq!(kind(&e), want, "{e}"),
                    (got, want) => panic!("get {k:?}: got {got:?}, expected {want:?}"),
                }
                if invalid(&k, 0).is_none() {
                    assert_eq!(d.contains_key(&k).unwrap(), model.contains_key(&k));
                    let pinned = d.get_pinned(&k).unwrap();
                    assert_eq!(pinned.as_deref(), model.get(&k).map(Vec::as_slice));
                }
            }
            Op::Batch(ops) => {
                let mut batch = WriteBatch::new();
                let mut after = model.clone();
                let mut want = None;
                for (k, v) in ops.iter().take(16) {
                    let k = k.bytes();
                    match v {
                        Some(v) => {
                            let v = v.bytes();
                            want = want.or(invalid(&k, v.len()));
                            batch.put(&k, &v);
                            after.insert(k, v);
                        }
                        None => {
                            want = want.or(invalid(&k, 0));
                            batch.delete(&k);
                            after.remove(&k);
                        }
                    }
                }
                match (d.write(batch), want) {
                    (Ok(()), None) => model = after,
                    (Err(e), Some(want)) => assert_eq!(kind(&e), want, "{e}"),
                    (got, want) => panic!("batch: got {got:?}, expected {want:?}"),
                }
            }
            Op::Reopen => {
                db.take().unwrap().close().unwrap();
                let d = Db::open_with(&dir, opts.clone()).unwrap();
                check_all(&d, &model, "after reopen");
                db = Some(d);
            }
            Op::Crash => {
                // Every acknowledged write has reached the operating system:
                // a copy taken now is what kill -9 leaves.
                let image = next_dir(scratch.path(), &mut generation);
                kv_fuzz::crash_image(&dir, &image);
                drop(db.take());
                dir = image;
                let d = Db::open_with(&dir, opts.clone()).unwrap();
                check_all(&d, &model, "after a crash");
                db = Some(d);
            }
            Op::Compact => {
                d.compact().unwrap();
                check_all(d, &model, "after compaction");
            }
            Op::Sync => d.sync().unwrap(),
        }
    }
    let d = db.take().unwrap();
    check_all(&d, &model, "at the end");
    d.close().unwrap();
    let d = Db::open_with(&dir, opts).unwrap();
    check_all(&d, &model, "after the last reopen");
});
