//! The small damaged-database corpus shared by the corruption-at-every-byte
//! and salvage tests: one deterministic sequence of writes that leaves
//! sealed log segments with and without hint files, a compaction output
//! that supersedes its inputs, a checkpoint marker, and a WAL tail of
//! writes after the last checkpoint, ending with a batch.

use std::path::Path;

use kv_engine::{Db, Options, WriteBatch};

use super::files_with_suffix;

/// One write: a key and its new value, `None` for a delete.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// Background compaction off, so that the build is deterministic; a big
/// WAL limit, so that the last writes stay in the WAL.
pub fn options() -> Options {
    Options::default()
        .segment_size(512)
        .max_wal_size(1 << 20)
        .background_compaction(false)
}

/// The corpus's key number `i`.
pub fn key(i: u32) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

/// Every key the corpus writes, deleted ones included.
pub fn keys() -> Vec<Vec<u8>> {
    (0..34).chain(40..48).map(key).collect()
}

/// Writes the corpus into a new database in `live`, calling `acked` after
/// each acknowledged write call with what it wrote (a batch's writes in one
/// call; the last call is that batch). Returns the database still open, its
/// last writes only in the WAL: a copy of `live` taken now is what kill -9
/// would leave.
pub fn write(live: &Path, mut acked: impl FnMut(&[Write])) -> Db {
    let put = |db: &Db, i: u32, v: String, acked: &mut dyn FnMut(&[Write])| {
        db.put(&key(i), v.as_bytes()).unwrap();
        acked(&[(key(i), Some(v.into_bytes()))]);
    };
    let del = |db: &Db, i: u32, acked: &mut dyn FnMut(&[Write])| {
        db.delete(&key(i)).unwrap();
        acked(&[(key(i), None)]);
    };
    let db = Db::open_with(live, options()).unwrap();
    // A segment that is never overwritten: compaction leaves it alone and
    // gives it a hint file.
    for i in 40..48 {
        put(&db, i, format!("stable-{i}"), &mut acked);
    }
    db.compact().unwrap();
    // Segments of first values, then overwrites and deletes, so that
    // compaction has dead bytes to drop and a tombstone to keep or drop.
    for i in 0..20 {
        put(&db, i, format!("first-{i}-").repeat(2), &mut acked);
    }
    for i in 0..8 {
        put(&db, i, format!("second-{i}"), &mut acked);
    }
    for i in 10..13 {
        del(&db, i, &mut acked);
    }
    // Seals, checkpoints, compacts (one output superseding its inputs,
    // with a hint file), checkpoints again, and writes the missing hints.
    db.compact().unwrap();
    // More segments after the compaction, sealed without hint files.
    for i in 20..32 {
        put(&db, i, format!("third-{i}-").repeat(4), &mut acked);
    }
    put(&db, 1, "third-1".into(), &mut acked);
    del(&db, 2, &mut acked);
    db.close().unwrap(); // a checkpoint at the end of the segments
    let segments = files_with_suffix(live, ".seg");
    let newest = segments.last().cloned();
    assert!(
        segments
            .iter()
            .any(|s| Some(s) != newest.as_ref() && !s.with_extension("hint").exists()),
        "no sealed segment without a hint file: the scan at open is not covered: {segments:?}"
    );

    // The WAL tail: writes after the last checkpoint.
    let db = Db::open_with(live, options()).unwrap();
    put(&db, 32, "tail-32".into(), &mut acked);
    del(&db, 3, &mut acked);
    put(&db, 4, "tail-4".into(), &mut acked);
    // The last write is a batch: dropped, it goes all at once.
    let mut batch = WriteBatch::new();
    batch
        .put(&key(6), b"tail-6")
        .delete(&key(7))
        .put(&key(33), b"tail-33");
    db.write(batch).unwrap();
    acked(&[
        (key(6), Some(b"tail-6".to_vec())),
        (key(7), None),
        (key(33), Some(b"tail-33".to_vec())),
    ]);
    db
}

/// The offsets to flip in a file of `len` bytes whose data ends at
/// `data_end`: every byte of the data, and four of the zeros allocated
/// after it (the WAL's last file and the active log segment, in a crash
/// image, end with up to 1 MiB of them; flipping each would only repeat
/// one case).
pub fn flip_offsets(len: usize, data_end: usize) -> Vec<usize> {
    let mut offsets: Vec<usize> = (0..len.min(data_end)).collect();
    if len > data_end {
        offsets.extend([data_end, data_end + 1, (data_end + len) / 2, len - 1]);
        offsets.retain(|&o| o < len);
        offsets.dedup();
    }
    offsets
}
