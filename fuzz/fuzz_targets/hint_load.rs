//! Hint files: whatever bytes a hint file holds, opening the database never
//! panics and never fails because of it, and a hint file whose checksum
//! does not match is ignored (its segment is scanned), so every key reads
//! back exactly.
//!
//! A database is built once (sealed segments with hint files, written by
//! `Db::compact`); each input copies it, replaces or creates the hint file
//! of one segment, opens the copy and reads every key. A hint file whose
//! checksum the input made valid (a forged hint, outside the threat model
//! of accidental damage) need not give the right answers, but must still
//! give no panic and only typed errors: every read is checked against the
//! record's own checksum, key and sequence number.

#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kv_engine::{Db, Error, Options};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which segment's hint file to replace (modulo the segment count).
    segment: u8,
    hint: Hint,
}

#[derive(Arbitrary, Debug)]
enum Hint {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// The real hint file (or, for a segment without one, the first one),
    /// with bytes changed and perhaps cut short; with `fix_checksum` its
    /// checksum is recomputed, forging a hint.
    Damaged {
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
        fix_checksum: bool,
    },
    /// A hint file made from parts: a valid magic and version, header
    /// fields either right or the input's, entries from the input, and a
    /// valid checksum.
    Forged {
        id: Option<u32>,
        segment_len: Option<u64>,
        count: Option<u64>,
        entries: Vec<u8>,
    },
}

struct Pristine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every key ever written, deleted ones included.
    keys: Vec<Vec<u8>>,
}

fn options() -> Options {
    Options::default()
        .segment_size(512)
        .background_compaction(false)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(|| {
        let dir = kv_fuzz::scratch_dir();
        let path = dir.path().join("db");
        let db = Db::open_with(&path, options()).unwrap();
        let mut model = BTreeMap::new();
        let mut keys = Vec::new();
        for i in 0..24u32 {
            let k = format!("key-{i:02}").into_bytes();
            let v = format!("value-{i}-")
                .repeat(1 + i as usize % 3)
                .into_bytes();
            db.put(&k, &v).unwrap();
            model.insert(k.clone(), v);
            keys.push(k);
        }
        for i in (0..24u32).step_by(5) {
            let k = format!("key-{i:02}").into_bytes();
            db.delete(&k).unwrap();
            model.remove(&k);
        }
        db.compact().unwrap();
        for i in (1..24u32).step_by(4) {
            let k = format!("key-{i:02}").into_bytes();
            let v = format!("second-{i}").into_bytes();
            db.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        db.compact().unwrap();
        db.close().unwrap();
        assert!(
            std::fs::read_dir(&path).unwrap().any(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hint")),
            "the pristine database has no hint file"
        );
        Pristine {
            _dir: dir,
            path,
            model,
            keys,
        }
    })
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && {
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        sum == xxhash_rust::xxh3::xxh3_64(body).to_le_bytes()
    }
}

fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
    let sum = xxhash_rust::xxh3::xxh3_64(&body);
    body.extend_from_slice(&sum.to_le_bytes());
    body
}

fuzz_target!(|input: Input| {
    let pristine = pristine();
    let scratch = kv_fuzz::scratch_dir();
    let dir = scratch.path().join("db");
    kv_fuzz::copy_dir(&pristine.path, &dir);

    let segs = segments(&dir);
    let seg = &segs[usize::from(input.segment) % segs.len()];
    let hint_path = seg.with_extension("hint");
    let id: u32 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let seg_len = std::fs::metadata(seg).unwrap().len();
    let original = std::fs::read(&hint_path).ok();
    let base = original.clone().unwrap_or_else(|| {
        let any = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "hint"))
            .unwrap();
        std::fs::read(any).unwrap()
    });
    let bytes = match input.hint {
        Hint::Raw(bytes) => bytes,
        Hint::Damaged {
            edits,
            cut,
            fix_checksum,
        } => {
            let mut b = base;
            for (at, x) in edits.into_iter().take(16) {
                let i = usize::from(at) % b.len().max(1);
                if let Some(byte) = b.get_mut(i) {
                    *byte ^= x;
                }
            }
            if let Some(cut) = cut {
                b.truncate(usize::from(cut) % (b.len() + 1));
            }
            if fix_checksum && b.len() >= 8 {
                b.truncate(b.len() - 8);
                b = with_checksum(b);
            }
            b
        }
        Hint::Forged {
            id: fid,
            segment_len,
            count,
            entries,
        } => {
            let mut b = Vec::new();
            b.extend_from_slice(b"KVHINTS\0");
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&fid.unwrap_or(id).to_le_bytes());
            b.extend_from_slice(&segment_len.unwrap_or(seg_len).to_le_bytes());
            // Without a count, the number of 24-byte entries with 1-byte keys.
            let n = count.unwrap_or(entries.len() as u64 / 25);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&entries);
            with_checksum(b)
        }
    };
    std::fs::write(&hint_path, &bytes).unwrap();
    // A hint that fails its checksum (or is the real one) must be ignored
    // or used with the same result; a forged one only must not do harm.
    let trusted = !checksum_ok(&bytes) || original.as_deref() == Some(&bytes[..]);

    let db = match Db::open_with(&dir, options()) {
        Ok(db) => db,
        Err(e) => {
            assert!(!trusted, "a damaged hint file failed the open: {e}");
            assert!(
                e.is_corruption() || matches!(e, Error::UnsupportedFile { .. }),
                "untyped error: {e:?}"
            );
            return;
        }
    };
    for key in &pristine.keys {
        match db.get(key) {
            Ok(got) => {
                if trusted {
                    assert_eq!(
                        got.as_ref(),
                        pristine.model.get(key),
                        "wrong value for {key:?}"
                    );
                }
            }
            Err(e) => {
                assert!(!trusted, "a damaged hint file made a read fail: {e}");
                assert!(e.is_corruption(), "untyped read error: {e:?}");
            }
        }
    }
    if trusted {
        let keys: Vec<Vec<u8>> = {
            let mut k: Vec<_> = db.keys().collect();
            k.sort();
            k
        };
        let expected: Vec<Vec<u8>> = pristine.model.keys().cloned().collect();
        assert_eq!(keys, expected);
    }
    let _ = db.close();
});
