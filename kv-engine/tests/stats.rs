//! `Db::stats`: what it counts, checked against known activity.

use kv_engine::{Db, Options, SyncPolicy, WriteBatch};

#[test]
fn stats_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .sync(SyncPolicy::Never)
        .segment_size(16 << 10)
        .background_compaction(false);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    let empty = db.stats();
    assert_eq!(
        (empty.keys, empty.puts, empty.gets, empty.deletes),
        (0, 0, 0, 0)
    );
    assert_eq!(empty.live_bytes, 0);

    for i in 0..1000u32 {
        db.put(&i.to_le_bytes(), &[1u8; 100]).unwrap();
    }
    let mut batch = WriteBatch::new();
    batch
        .put(b"a", b"1")
        .delete(b"b")
        .delete(&0u32.to_le_bytes());
    db.write(batch).unwrap();
    for i in 0..100u32 {
        db.delete(&i.to_le_bytes()).unwrap();
    }
    for i in 0..50u32 {
        let _ = db.get(&i.to_le_bytes()).unwrap();
    }
    let _ = db.contains_key(b"a").unwrap();
    let _ = db.get_pinned(b"a").unwrap();

    let s = db.stats();
    assert_eq!(s.keys, 901);
    assert_eq!(s.puts, 1001);
    assert_eq!(s.deletes, 102);
    assert_eq!(s.gets, 52);
    assert!(s.segments >= 2, "{s:?}");
    assert!(s.segment_bytes >= s.live_bytes + s.dead_bytes, "{s:?}");
    // 100 puts deleted, one deleted twice, and the tombstones themselves.
    let record = kv_format::Record::put(0, &[0; 4], &[1; 100]).encoded_len() as u64;
    assert!(s.dead_bytes >= 100 * record, "{s:?}");
    assert!(s.live_bytes >= 900 * record, "{s:?}");
    assert!(s.wal_bytes > 0, "{s:?}");
    assert!(s.index_memory > 0);
    assert_eq!((s.compactions, s.bytes_reclaimed), (0, 0));

    let report = db.compact().unwrap();
    let after = db.stats();
    assert_eq!(after.compactions, report.runs);
    assert!(report.runs > 0);
    assert_eq!(after.bytes_reclaimed, report.bytes_reclaimed());
    assert!(after.bytes_reclaimed >= 100 * record, "{after:?}");
    assert!(after.dead_bytes < s.dead_bytes, "{after:?}");
    assert_eq!(after.keys, 901);
    db.close().unwrap();

    // Operation counts start again at open; sizes are recomputed.
    let db = Db::open_with(dir.path(), options).unwrap();
    let reopened = db.stats();
    assert_eq!(
        (reopened.puts, reopened.gets, reopened.compactions),
        (0, 0, 0)
    );
    assert_eq!(reopened.keys, 901);
    assert_eq!(reopened.live_bytes, after.live_bytes);
}
