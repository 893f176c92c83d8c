//! Bad input gets a typed error; a second open of a directory is refused.

use std::sync::Arc;

use kv_engine::{Db, Error, Options};

#[test]
fn second_open_of_the_same_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    match Db::open(dir.path()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    db.close().unwrap();
    // Closing releases the lock.
    let db = Db::open(dir.path()).unwrap();
    drop(db);
    Db::open(dir.path()).unwrap();
}

#[test]
fn bad_keys_and_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_with(dir.path(), Options::default().max_value_len(1000)).unwrap();
    assert!(matches!(db.put(b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(db.get(b""), Err(Error::EmptyKey)));
    assert!(matches!(db.delete(b""), Err(Error::EmptyKey)));
    let long = vec![1u8; 65_536];
    assert!(matches!(
        db.put(&long, b"v"),
        Err(Error::KeyTooLarge {
            len: 65_536,
            max: 65_535
        })
    ));
    assert!(matches!(db.get(&long), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(
        db.contains_key(&long),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        db.put(b"k", &[0u8; 1001]),
        Err(Error::ValueTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    // The largest key and value are accepted and read back.
    let max_key = vec![2u8; 65_535];
    db.put(&max_key, &[3u8; 1000]).unwrap();
    assert_eq!(db.get(&max_key).unwrap().unwrap(), vec![3u8; 1000]);
    // An empty value is a value, not an absence.
    db.put(b"empty", b"").unwrap();
    assert_eq!(db.get(b"empty").unwrap(), Some(Vec::new()));
    assert_eq!(db.len(), 2);
}

#[test]
fn a_file_where_the_directory_should_be_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(Db::open(&file), Err(Error::Io { .. })));
}

#[test]
fn concurrent_writers_and_readers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Arc::new(Db::open_with(dir.path(), Options::default().segment_size(64 << 10)).unwrap());
    let writers: Vec<_> = (0..4u32)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let k = format!("t{t}-k{}", i % 500);
                    db.put(k.as_bytes(), format!("{t}:{i}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u32)
        .map(|_| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let t = i % 4;
                    let k = format!("t{t}-k{}", i % 500);
                    if let Some(v) = db.get(k.as_bytes()).unwrap() {
                        // Whatever a reader sees was written for that key.
                        let v = String::from_utf8(v).unwrap();
                        let (vt, vi) = v.split_once(':').unwrap();
                        assert_eq!(vt, t.to_string());
                        assert_eq!(vi.parse::<u32>().unwrap() % 500, i % 500);
                    }
                }
            })
        })
        .collect();
    for h in writers.into_iter().chain(readers) {
        h.join().unwrap();
    }
    assert_eq!(db.len(), 2_000);
    for t in 0..4 {
        for k in 0..500 {
            let v = db.get(format!("t{t}-k{k}").as_bytes()).unwrap().unwrap();
            assert_eq!(v, format!("{t}:{}", 1500 + k).into_bytes());
        }
    }
}
