//! Data written before a close is all there after reopening.

mod common;

use kv_engine::{Db, Options};

fn key(i: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[4..].copy_from_slice(b"-fixed-tail!");
    k
}

fn value(i: u32) -> Vec<u8> {
    let mut v = i.to_le_bytes().repeat(25);
    v.truncate((i % 100) as usize + 1);
    v
}

#[test]
fn hundred_thousand_keys_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB segments: the data spans several of them.
    let options = Options::default()
        .segment_size(8 << 20)
        .sync(kv_engine::SyncPolicy::Never);
    let db = std::sync::Arc::new(Db::open_with(dir.path(), options.clone()).unwrap());
    // Four writer threads, so that the writer thread forms real groups.
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let db = std::sync::Arc::clone(&db);
            std::thread::spawn(move || {
                for i in (t..100_000).step_by(4) {
                    db.put(&key(i), &value(i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(db.len(), 100_000);
    let db = std::sync::Arc::into_inner(db).unwrap();
    db.close().unwrap();

    let segments = common::files_with_suffix(dir.path(), ".seg").len();
    assert!(segments >= 2, "expected several segments, found {segments}");

    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.len(), 100_000);
    for i in 0..100_000 {
        assert_eq!(
            db.get(&key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    assert_eq!(db.get(&key(100_000)).unwrap(), None);
}

#[test]
fn overwrites_and_deletes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size(4096);
    {
        let db = Db::open_with(dir.path(), options.clone()).unwrap();
        for round in 0..5u32 {
            for i in 0..200 {
                db.put(&key(i), &value(i + round)).unwrap();
            }
        }
        for i in (0..200).step_by(2) {
            db.delete(&key(i)).unwrap();
        }
        // Delete, then put again: the put must win after reopen.
        db.delete(&key(1)).unwrap();
        db.put(&key(1), b"back").unwrap();
        // Deleting an absent key is not an error.
        db.delete(b"never-written").unwrap();
        // Dropping closes cleanly.
    }
    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.len(), 100);
    for i in 0..200 {
        let expected = if i == 1 {
            Some(b"back".to_vec())
        } else if i % 2 == 0 {
            None
        } else {
            Some(value(i + 4))
        };
        assert_eq!(db.get(&key(i)).unwrap(), expected, "key {i}");
    }
}
