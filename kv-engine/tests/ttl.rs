//! Time to live, with a clock the test moves: before and after expiry,
//! across reopen, across compaction, and with the clock going backwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_engine::{Clock, Db, ManualClock, Options, SyncPolicy, WriteBatch};

const START: u64 = 1_700_000_000_000;

fn options(clock: &Arc<ManualClock>) -> Options {
    Options::default()
        .sync(SyncPolicy::Never)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .background_compaction(false)
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn sorted_keys(db: &Db) -> Vec<Vec<u8>> {
    let mut keys: Vec<_> = db.keys().collect();
    keys.sort();
    keys
}

#[test]
fn a_key_is_there_until_its_expiry_and_absent_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.put(b"forever", b"1").unwrap();
    db.put_with_ttl(b"short", b"2", Duration::from_secs(30))
        .unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put_with_ttl(b"batched", b"3", Duration::from_secs(60))
        .put(b"plain", b"4");
    db.write(batch).unwrap();

    clock.advance(Duration::from_millis(29_999));
    assert_eq!(db.get(b"short").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(db.len(), 4);

    clock.advance(Duration::from_millis(1));
    assert_eq!(db.get(b"short").unwrap(), None);
    assert!(db.get_pinned(b"short").unwrap().is_none());
    assert!(!db.contains_key(b"short").unwrap());
    assert_eq!(db.len(), 3);
    assert_eq!(
        sorted_keys(&db),
        vec![b"batched".to_vec(), b"forever".to_vec(), b"plain".to_vec()]
    );
    assert_eq!(db.iter().count(), 3);

    clock.advance(Duration::from_secs(30));
    assert_eq!(db.get(b"batched").unwrap(), None);
    assert_eq!(db.len(), 2);

    // Writing the key again without a time to live makes it permanent.
    db.put(b"short", b"again").unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(db.get(b"short").unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn a_zero_ttl_writes_a_key_that_has_already_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.put(b"k", b"old").unwrap();
    db.put_with_ttl(b"k", b"new", Duration::ZERO).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None);
    assert!(db.is_empty());
}

#[test]
fn expiry_holds_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    for i in 0..100 {
        db.put_with_ttl(&key(i), b"v", Duration::from_secs(u64::from(i) + 1))
            .unwrap();
    }
    db.close().unwrap();

    clock.advance(Duration::from_millis(50_500));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert_eq!(db.len(), 50);
    for i in 0..100 {
        assert_eq!(db.get(&key(i)).unwrap().is_some(), i >= 50, "key {i}");
    }
    db.close().unwrap();

    // Replayed from the WAL rather than loaded from segments: the same.
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.put_with_ttl(b"from-wal", b"v", Duration::from_secs(1))
        .unwrap();
    drop(db);
    clock.advance(Duration::from_secs(1));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert_eq!(db.get(b"from-wal").unwrap(), None);
}

#[test]
fn compaction_drops_expired_keys_and_they_stay_absent() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let options = options(&clock).segment_size(16 << 10);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    let value = vec![7u8; 200];
    for i in 0..400 {
        if i % 4 == 0 {
            db.put(&key(i), &value).unwrap();
        } else {
            db.put_with_ttl(&key(i), &value, Duration::from_secs(10))
                .unwrap();
        }
    }
    let before = db.stats();
    clock.advance(Duration::from_secs(10));
    let report = db.compact().unwrap();
    assert_eq!(report.records_expired, 300);
    let after = db.stats();
    assert_eq!(after.keys, 100);
    assert!(
        after.segment_bytes * 2 < before.segment_bytes,
        "{before:?} -> {after:?}"
    );
    // The clock going back cannot bring them back: they are gone.
    clock.set(START);
    for i in 0..400 {
        assert_eq!(db.get(&key(i)).unwrap().is_some(), i % 4 == 0, "key {i}");
    }
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.len(), 100);
    for i in 0..400 {
        assert_eq!(db.get(&key(i)).unwrap().is_some(), i % 4 == 0, "key {i}");
    }
}

/// Waits (bounded) until background compaction has completed a run.
fn wait_for_compaction(db: &Db, runs: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.stats().compactions < runs {
        assert!(
            Instant::now() < deadline,
            "background compaction did not run"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An expired put compacted away while an older record of its key stays
/// in a segment the run did not take: compaction leaves a tombstone, so
/// the old value does not come back at reopen, even with the clock set
/// back.
#[test]
fn an_expired_key_does_not_uncover_an_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let options = options(&clock)
        .segment_size(8 << 10)
        .background_compaction(true)
        .compaction_threshold(0.5)
        .compaction_interval(Duration::from_millis(2));
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    let filler = vec![1u8; 500];
    // The first segment: the old value and a lot of live data, so that
    // it stays below the compaction threshold.
    db.put(b"k", b"old value").unwrap();
    for i in 0..10 {
        db.put(&key(i), &filler).unwrap();
    }
    // A checkpoint seals the segment; then a segment of nothing but keys
    // that will expire, the newer value of `k` among them.
    db.checkpoint(copies.path().join("1")).unwrap();
    db.put_with_ttl(b"k", b"new value", Duration::from_secs(5))
        .unwrap();
    for i in 100..110 {
        db.put_with_ttl(&key(i), &filler, Duration::from_secs(5))
            .unwrap();
    }
    db.checkpoint(copies.path().join("2")).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"new value"[..]));

    clock.advance(Duration::from_secs(5));
    assert_eq!(db.get(b"k").unwrap(), None);
    wait_for_compaction(&db, 1);
    assert_eq!(db.get(b"k").unwrap(), None);
    assert_eq!(db.len(), 10);
    db.close().unwrap();

    clock.set(START);
    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None);
    assert_eq!(db.len(), 10);
}

#[test]
fn a_deleted_key_stays_deleted_whatever_the_clock_does() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let options = options(&clock).segment_size(4 << 10);
    let db = Db::open_with(dir.path(), options.clone()).unwrap();
    db.put(b"k", b"permanent").unwrap();
    db.put_with_ttl(b"k", b"expiring", Duration::from_secs(5))
        .unwrap();
    db.delete(b"k").unwrap();
    for i in 0..50 {
        db.put(&key(i), &[0u8; 200]).unwrap();
    }
    for (step, at) in [START + 10_000, START, START + 1_000_000, START - 1]
        .into_iter()
        .enumerate()
    {
        clock.set(at);
        db.compact().unwrap();
        assert_eq!(db.get(b"k").unwrap(), None, "step {step}");
    }
    db.close().unwrap();
    clock.set(START);
    let db = Db::open_with(dir.path(), options).unwrap();
    assert_eq!(db.get(b"k").unwrap(), None);
    assert_eq!(db.len(), 50);
}

#[test]
fn the_time_the_engine_uses_never_goes_backwards_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.put_with_ttl(b"k", b"v", Duration::from_secs(1)).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(db.get(b"k").unwrap(), None);
    clock.set(START);
    assert_eq!(db.get(b"k").unwrap(), None, "an expired key came back");
    assert!(db.is_empty());
}

#[test]
fn ttl_says_how_long_a_key_has_left() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.put_with_ttl(b"session", b"v", Duration::from_secs(30))
        .unwrap();
    db.put(b"user", b"v").unwrap();
    assert_eq!(
        db.ttl(b"session").unwrap(),
        Some(Some(Duration::from_secs(30)))
    );
    assert_eq!(db.ttl(b"user").unwrap(), Some(None));
    assert_eq!(db.ttl(b"absent").unwrap(), None);
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(
        db.ttl(b"session").unwrap(),
        Some(Some(Duration::from_millis(1)))
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(db.ttl(b"session").unwrap(), None, "expired: absent");
    // An overwrite without a TTL clears it; a delete makes it absent.
    db.put_with_ttl(b"user", b"v", Duration::from_secs(5))
        .unwrap();
    assert_eq!(db.ttl(b"user").unwrap(), Some(Some(Duration::from_secs(5))));
    db.put(b"user", b"v").unwrap();
    assert_eq!(db.ttl(b"user").unwrap(), Some(None));
    db.delete(b"user").unwrap();
    assert_eq!(db.ttl(b"user").unwrap(), None);
    assert!(matches!(db.ttl(b""), Err(kv_engine::Error::EmptyKey)));
}
