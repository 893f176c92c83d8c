//! The saved index (`INDEX`): a clean close saves it, the next open loads
//! it instead of rebuilding, and any open that cannot trust it (stale,
//! damaged, cut short) rebuilds the index and serves exactly what a
//! rebuild serves.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{contents, crash_image, scratch_dir};
use kv_engine::{Db, ManualClock, Options, WriteBatch};

const INDEX: &str = "INDEX";

fn options(clock: &Arc<ManualClock>) -> Options {
    // Background compaction off: the tests compare directories and copy
    // files by hand.
    Options::default()
        .segment_size(4096)
        .background_compaction(false)
        .clock(clock.clone())
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// Puts, overwrites, deletes, keys with an expiry (some expired by the
/// clock) and a compaction, so the saved index holds entries of every
/// shape and the usage every kind of byte.
fn fill(dir: &Path, clock: &Arc<ManualClock>) {
    let db = Db::open_with(dir, options(clock)).unwrap();
    for i in 0..400 {
        db.put(
            &key(i),
            format!("value-{i}-").repeat(1 + i as usize % 5).as_bytes(),
        )
        .unwrap();
    }
    for i in (0..400).step_by(3) {
        db.put(&key(i), format!("second-{i}").as_bytes()).unwrap();
    }
    db.compact().unwrap();
    for i in (0..400).step_by(7) {
        db.delete(&key(i)).unwrap();
    }
    for i in 400..450 {
        let ttl = Duration::from_secs(if i % 2 == 0 { 10 } else { 1_000 });
        db.put_with_ttl(&key(i), b"expiring", ttl).unwrap();
    }
    let mut batch = WriteBatch::new();
    batch.put(&key(1), b"batched").delete(&key(2));
    db.write(batch).unwrap();
    clock.advance(Duration::from_secs(60));
    db.close().unwrap();
}

/// What a database serves, with its key count and byte accounting.
fn observe(db: &Db, context: &str) -> (BTreeMap<Vec<u8>, Vec<u8>>, u64, u64, u64) {
    let stats = db.stats();
    (
        contents(db, context),
        stats.keys,
        stats.live_bytes,
        stats.dead_bytes,
    )
}

#[test]
fn a_clean_close_saves_the_index_and_the_next_open_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill(dir.path(), &clock);
    assert!(
        dir.path().join(INDEX).exists(),
        "a clean close saves the index"
    );

    // The same directory, with the saved index removed: what a rebuild serves.
    let rebuilt_dir = tempfile::tempdir().unwrap();
    common::copy_dir(dir.path(), rebuilt_dir.path());
    std::fs::remove_file(rebuilt_dir.path().join(INDEX)).unwrap();
    let rebuilt = Db::open_with(rebuilt_dir.path(), options(&clock)).unwrap();
    assert!(!rebuilt.stats().index_loaded);
    let expected = observe(&rebuilt, "rebuilt");

    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded, "the saved index was loaded");
    assert_eq!(observe(&db, "loaded"), expected);
    assert!(
        dir.path().join(INDEX).exists(),
        "reads leave the saved index in place: it still describes the database"
    );
    assert_eq!(
        db.get(&key(7)).unwrap(),
        None,
        "a deleted key stays deleted"
    );
    assert_eq!(db.get(&key(2)).unwrap(), None);
    assert_eq!(db.get(&key(1)).unwrap().as_deref(), Some(&b"batched"[..]));
    assert_eq!(db.get(&key(400)).unwrap(), None, "expired");
    assert_eq!(
        db.get(&key(401)).unwrap().as_deref(),
        Some(&b"expiring"[..])
    );

    // It goes on as any open database: writes, compaction, another close
    // and load.
    for i in 0..100 {
        db.put(&key(i), b"third").unwrap();
        rebuilt.put(&key(i), b"third").unwrap();
    }
    assert!(
        !dir.path().join(INDEX).exists(),
        "the first write makes the saved index stale, and removes it"
    );
    db.delete(&key(401)).unwrap();
    rebuilt.delete(&key(401)).unwrap();
    db.compact().unwrap();
    rebuilt.compact().unwrap();
    assert_eq!(
        observe(&db, "after writes"),
        observe(&rebuilt, "rebuilt after writes")
    );
    db.close().unwrap();
    rebuilt.close().unwrap();
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded);
    let rebuilt = Db::open_with(rebuilt_dir.path(), options(&clock).save_index(false)).unwrap();
    assert_eq!(observe(&db, "reloaded"), observe(&rebuilt, "rebuilt again"));
}

#[test]
fn save_index_off_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let db = Db::open_with(dir.path(), options(&clock).save_index(false)).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    assert!(!dir.path().join(INDEX).exists());
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(!db.stats().index_loaded);
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// A saved index from an earlier close, put back after the database moved
/// on (as a power loss can bring back a removed file), is stale: the
/// marker changed. It must not resurrect a deleted key or an old value.
#[test]
fn a_saved_index_from_an_earlier_close_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill(dir.path(), &clock);
    let old = std::fs::read(dir.path().join(INDEX)).unwrap();

    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.delete(&key(1)).unwrap();
    db.put(&key(3), b"newer").unwrap();
    db.close().unwrap();
    std::fs::write(dir.path().join(INDEX), &old).unwrap();

    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(
        !db.stats().index_loaded,
        "a stale saved index is not loaded"
    );
    assert_eq!(db.get(&key(1)).unwrap(), None);
    assert_eq!(db.get(&key(3)).unwrap().as_deref(), Some(&b"newer"[..]));
}

/// After a crash, the saved index of the clean close before it (brought
/// back) still matches the marker if no marker was written since: it is
/// loaded, and the WAL replayed on top gives every acknowledged write.
#[test]
fn a_crash_after_open_replays_the_wal_on_top_of_a_matching_saved_index() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill(dir.path(), &clock);
    let saved = std::fs::read(dir.path().join(INDEX)).unwrap();

    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.delete(&key(1)).unwrap();
    db.put(&key(3), b"after the crash").unwrap();
    db.put(b"a new key", b"too").unwrap();
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    let expected = contents(&db, "live");
    drop(db);
    std::fs::write(image.path().join(INDEX), &saved).unwrap();

    let db = Db::open_with(image.path(), options(&clock)).unwrap();
    assert!(
        db.stats().index_loaded,
        "the marker is the one the index was saved with"
    );
    assert_eq!(contents(&db, "after the crash"), expected);
    assert_eq!(db.get(&key(1)).unwrap(), None);
}

/// Every change to the saved index is caught (its header and each shard's
/// image are checksummed, and decoding checks the structure): the index is
/// rebuilt, and the database serves exactly what it did.
#[test]
fn a_damaged_or_cut_saved_index_is_rebuilt() {
    let pristine = scratch_dir();
    let clock = clock();
    fill(pristine.path(), &clock);
    let saved = std::fs::read(pristine.path().join(INDEX)).unwrap();

    // Every byte of the fixed header, the marker and the segment table (the
    // first 40 + marker + segments bytes: take 600), then a stride through
    // the shard table and the images; and cuts.
    let mut cases: Vec<(String, Vec<u8>)> = vec![("none".into(), saved.clone())];
    let offsets = (0..600.min(saved.len())).chain((600..saved.len()).step_by(97));
    for at in offsets.chain([saved.len() - 1]) {
        let mut bytes = saved.clone();
        bytes[at] ^= 0xFF;
        cases.push((format!("byte {at} flipped"), bytes));
    }
    for len in [
        0,
        7,
        39,
        40,
        200,
        saved.len() / 2,
        saved.len() - 8,
        saved.len() - 1,
    ] {
        cases.push((format!("cut to {len} bytes"), saved[..len].to_vec()));
    }
    let mut longer = saved.clone();
    longer.extend_from_slice(&[0; 8]);
    cases.push(("8 bytes longer".into(), longer));

    let mut expected = None;
    for (what, bytes) in cases {
        // Each case on a copy of the same closed database, so that only
        // the damage tells it from the saved index's own state.
        let dir = scratch_dir();
        common::copy_dir(pristine.path(), dir.path());
        std::fs::write(dir.path().join(INDEX), &bytes).unwrap();
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        let seen = observe(&db, &what);
        if what == "none" {
            assert!(
                db.stats().index_loaded,
                "the undamaged saved index is loaded"
            );
            expected = Some(seen);
            continue;
        }
        // A damaged header is refused at the open; a damaged image when
        // its shard is first touched (and that shard rebuilt from the
        // segments). Either way the close replaces the file, though the
        // session changed nothing, and the next open loads the new one.
        assert_eq!(Some(seen), expected, "{what}");
        db.close().unwrap();
        assert_ne!(
            std::fs::read(dir.path().join(INDEX)).ok(),
            Some(bytes),
            "{what}: the damaged file was kept"
        );
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        assert!(db.stats().index_loaded, "{what}: the new file is loaded");
        assert_eq!(Some(observe(&db, &what)), expected, "{what}, reopened");
    }
}

/// Where the image of `shard` lies in a saved index (see docs/format.md,
/// "Saved index").
fn image_range(saved: &[u8], shard: usize) -> std::ops::Range<usize> {
    let u32_at = |at: usize| u32::from_le_bytes(saved[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(saved[at..at + 8].try_into().unwrap()) as usize;
    let table = 40 + u32_at(16) + 56 * u32_at(20);
    let mut at = table + kv_index::SHARDS * 24 + 8;
    for s in 0..shard {
        at += u64_at(table + 24 * s);
    }
    at..at + u64_at(table + 24 * shard)
}

/// The shard of a key, and a key of every other shard.
fn shard_of(key: &[u8]) -> usize {
    kv_index::Index::new().shard_of(key)
}

/// Puts and deletes, no expiry: with an expiry, `stats()` counts keys by
/// walking the index, which decodes every shard, so the tests that watch
/// `index_shards_pending` use this.
fn fill_without_expiry(dir: &Path, clock: &Arc<ManualClock>) {
    let db = Db::open_with(dir, options(clock)).unwrap();
    for i in 0..400 {
        db.put(&key(i), format!("value-{i}").as_bytes()).unwrap();
    }
    for i in (0..400).step_by(7) {
        db.delete(&key(i)).unwrap();
    }
    db.put(&key(1), b"batched").unwrap();
    db.close().unwrap();
}

/// An open decodes no shard of a saved index; each is decoded when first
/// touched, and a session that only reads some keys leaves the rest as
/// they were saved.
#[test]
fn a_saved_index_is_decoded_shard_by_shard_as_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill_without_expiry(dir.path(), &clock);
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    let stats = db.stats();
    assert!(stats.index_loaded);
    assert_eq!(stats.index_shards_pending, kv_index::SHARDS as u64);

    assert_eq!(db.get(&key(1)).unwrap().as_deref(), Some(&b"batched"[..]));
    assert_eq!(db.stats().index_shards_pending, kv_index::SHARDS as u64 - 1);
    let same_shard = (3..400)
        .find(|&i| i % 7 != 0 && shard_of(&key(i)) == shard_of(&key(1)))
        .unwrap();
    assert!(db.get(&key(same_shard)).unwrap().is_some());
    assert_eq!(
        db.stats().index_shards_pending,
        kv_index::SHARDS as u64 - 1,
        "a shard is decoded once"
    );
    let expected = observe(&db, "every shard decoded");
    assert_eq!(db.stats().index_shards_pending, 0);
    assert_eq!(stats.keys, expected.1, "the saved counts stood in");
    db.close().unwrap();

    // The next open serves the same from the same, untouched file.
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded);
    assert_eq!(observe(&db, "reopened"), expected);
}

/// With background compaction on, the compactor thread decodes every
/// shard nobody touched, and a close in the middle of that is clean.
#[test]
fn the_background_thread_decodes_the_untouched_shards() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill_without_expiry(dir.path(), &clock);
    let expected = {
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        let seen = observe(&db, "decoded on demand");
        db.close().unwrap();
        seen
    };
    // Closed at once: the thread stops between shards.
    Db::open_with(dir.path(), options(&clock).background_compaction(true))
        .unwrap()
        .close()
        .unwrap();
    // No compaction pass comes within the test (one would load every
    // shard too): only the thread's decoding ahead of use can.
    let db = Db::open_with(
        dir.path(),
        options(&clock)
            .background_compaction(true)
            .compaction_interval(Duration::from_secs(3_600)),
    )
    .unwrap();
    // Bounded: 64 small shards take milliseconds; give it 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.stats().index_shards_pending > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread left shards undecoded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(observe(&db, "decoded in the background"), expected);
}

/// A shard image that fails its checksum is rebuilt from the segments when
/// it is first touched; if the segments cannot be read either, a miss in
/// that shard is an error, never a wrong answer, compaction stops, and the
/// close saves no index that would hide the loss.
#[test]
fn a_shard_that_can_be_neither_loaded_nor_rebuilt_is_an_error() {
    let pristine = scratch_dir();
    let clock = clock();
    fill(pristine.path(), &clock);
    let expected = {
        let dir = scratch_dir();
        common::copy_dir(pristine.path(), dir.path());
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        observe(&db, "pristine")
    };
    let saved = std::fs::read(pristine.path().join(INDEX)).unwrap();
    let damaged_shard = shard_of(&key(5));
    let mut bytes = saved.clone();
    bytes[image_range(&saved, damaged_shard).end - 1] ^= 0x01;

    // The image alone is damaged: the shard is rebuilt, nothing is lost.
    let dir = scratch_dir();
    common::copy_dir(pristine.path(), dir.path());
    std::fs::write(dir.path().join(INDEX), &bytes).unwrap();
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded);
    assert_eq!(
        db.get(&key(5)).unwrap().as_deref(),
        expected.0.get(&key(5)).map(|v| &v[..])
    );
    assert_eq!(observe(&db, "rebuilt shard"), expected);
    drop(db);

    // The writer's put is the first touch of the damaged shard: the
    // rebuild must not see the put's own record (which the writer appends
    // before it updates the index), or the byte accounting goes wrong.
    let written = (0..400)
        .find(|&i| i % 7 != 0 && i != 2 && shard_of(&key(i)) == damaged_shard)
        .unwrap();
    let after_put = |damaged: bool| {
        let dir = scratch_dir();
        common::copy_dir(pristine.path(), dir.path());
        if damaged {
            std::fs::write(dir.path().join(INDEX), &bytes).unwrap();
        }
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        db.put(&key(written), b"first touch").unwrap();
        observe(&db, "after a put")
    };
    assert_eq!(after_put(true), after_put(false));

    // The image and a segment without its hint file: no way to the shard.
    let dir = scratch_dir();
    common::copy_dir(pristine.path(), dir.path());
    std::fs::write(dir.path().join(INDEX), &bytes).unwrap();
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let victim = &segments[0];
    std::fs::remove_file(victim.with_extension("hint")).unwrap();
    let mut seg = std::fs::read(victim).unwrap();
    let last = seg.len() - 1;
    seg[last] ^= 0x01;
    std::fs::write(victim, &seg).unwrap();

    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded);
    let missing = (0..400)
        .filter(|&i| i % 7 != 0 && i != 2 && shard_of(&key(i)) == damaged_shard)
        .collect::<Vec<_>>();
    let other = (0..400)
        .find(|&i| i % 7 != 0 && i != 2 && shard_of(&key(i)) != damaged_shard)
        .unwrap();
    // Whatever the damaged shard was asked, it answers an error or the
    // truth (a key just written is found in the emptied shard).
    for &i in &missing {
        match db.get(&key(i)) {
            Err(kv_engine::Error::Corruption { .. }) => {}
            other => panic!("key {i} of the lost shard: {other:?}"),
        }
    }
    db.put(&key(missing[0]), b"written after the loss").unwrap();
    assert_eq!(
        db.get(&key(missing[0])).unwrap().as_deref(),
        Some(&b"written after the loss"[..])
    );
    let absent = (10_000..)
        .map(key)
        .find(|k| shard_of(k) == damaged_shard)
        .unwrap();
    assert!(matches!(
        db.get(&absent),
        Err(kv_engine::Error::Corruption { .. })
    ));
    assert!(matches!(
        db.contains_key(&absent),
        Err(kv_engine::Error::Corruption { .. })
    ));
    // Other shards answer: the truth, or an error if their key's record is
    // the damaged one.
    match db.get(&key(other)) {
        Ok(v) => assert_eq!(v.as_deref(), expected.0.get(&key(other)).map(|v| &v[..])),
        Err(e) => assert!(matches!(e, kv_engine::Error::Corruption { .. }), "{e}"),
    }
    assert!(
        db.keys()
            .all(|k| shard_of(&k) != damaged_shard || k == key(missing[0])),
        "keys leaves the lost shard out"
    );
    assert!(matches!(
        db.compact(),
        Err(kv_engine::Error::Corruption { .. })
    ));
    assert!(db.iter().any(|item| item.is_err()), "iteration reports it");
    db.close().unwrap();
    assert!(
        !dir.path().join(INDEX).exists(),
        "no index is saved without the lost shard"
    );
}

/// A session that only reads closes without rewriting anything: the
/// marker, the segments and the saved index stay as they were, and the
/// next open loads the index again. One that compacts, or writes, does not.
#[test]
fn a_read_only_session_keeps_the_saved_index_and_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    fill(dir.path(), &clock);
    let before = common::all_files(dir.path());
    for _ in 0..3 {
        let db = Db::open_with(dir.path(), options(&clock)).unwrap();
        assert!(db.stats().index_loaded);
        assert_eq!(db.get(&key(1)).unwrap().as_deref(), Some(&b"batched"[..]));
        db.close().unwrap();
        assert_eq!(
            common::all_files(dir.path()),
            before,
            "nothing was rewritten"
        );
    }
    // A compaction changes the segments: the close saves afresh.
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    db.compact().unwrap();
    let expected = observe(&db, "compacted");
    db.close().unwrap();
    assert_ne!(common::all_files(dir.path()), before);
    let db = Db::open_with(dir.path(), options(&clock)).unwrap();
    assert!(db.stats().index_loaded);
    assert_eq!(observe(&db, "after the compaction"), expected);
    // With saving off, a close removes the file rather than keep it.
    db.close().unwrap();
    let db = Db::open_with(dir.path(), options(&clock).save_index(false)).unwrap();
    assert!(db.stats().index_loaded);
    db.close().unwrap();
    assert!(!dir.path().join(INDEX).exists());
}
