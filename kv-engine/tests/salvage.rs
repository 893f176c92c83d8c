//! `kv_engine::salvage`: what an intact database holds is copied whole;
//! from a damaged one, every key comes out with a value that was written
//! for it, and every key copied whose latest version may be lost (a newer
//! value, or a delete, in the damage) is named in the report. A key whose
//! every record was in the damage may be missing from the copy only if the
//! report has a loss that nothing covers. The damaged
//! directory is never changed.
//!
//! The main test flips every byte (of the records and headers; four of the
//! zeros allocated ahead at the end of the WAL) of every file of a small
//! database, the corpus it shares with the corruption-at-every-byte test
//! (`tests/common/corpus.rs`):
//! sealed log segments with and without hint files, a compaction output, a
//! marker, a WAL tail of writes after it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{all_files, corpus, crash_image, scratch_dir};
use kv_engine::{Db, Error, SalvageReport, salvage};

/// Every value ever written per key (`None` for a delete), in order.
type History = BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>;

struct Built {
    _root: tempfile::TempDir,
    dir: PathBuf,
    history: History,
}

fn build() -> Built {
    let root = scratch_dir();
    let live = root.path().join("live");
    let mut history = History::new();
    let db = corpus::write(&live, |writes| {
        for (key, value) in writes {
            history.entry(key.clone()).or_default().push(value.clone());
        }
    });
    let dir = root.path().join("pristine");
    crash_image(&live, &dir);
    drop(db);
    Built {
        _root: root,
        dir,
        history,
    }
}

/// What a salvage of `dir` gave, checked against `history`: every key
/// holds a value written for it, and a key that does not hold its latest
/// state (its last value, or absent after a delete) is at risk. Returns
/// the keys not at their latest state.
fn check(salvaged: &Path, report: &SalvageReport, history: &History, context: &str) -> usize {
    let db =
        Db::open(salvaged).unwrap_or_else(|e| panic!("{context}: the copy does not open: {e}"));
    let at_risk: BTreeSet<&Vec<u8>> = report.keys_at_risk.iter().collect();
    let mut stale = 0;
    let mut present = 0u64;
    for (k, values) in history {
        let got = db
            .get(k)
            .unwrap_or_else(|e| panic!("{context}: reading {k:?} from the copy: {e}"));
        if let Some(v) = &got {
            present += 1;
            assert!(
                values.iter().any(|w| w.as_ref() == Some(v)),
                "{context}: {k:?} = {v:?}, a value never written for it"
            );
        }
        let latest = values.last().unwrap();
        if got.is_none() && latest.is_some() && !at_risk.contains(k) {
            // Every record of the key was in the damage, and no hint file
            // names it: the report must say that something was lost.
            stale += 1;
            assert!(
                !report.is_complete(),
                "{context}: {k:?} is missing from the copy, and the report says nothing was \
                 lost: {report:#?}"
            );
        } else if got != *latest {
            stale += 1;
            assert!(
                at_risk.contains(k),
                "{context}: {k:?} is {got:?} in the copy, its latest state is {latest:?}, and \
                 the report does not name it: {report:#?}"
            );
        }
    }
    assert_eq!(db.len() as u64, present, "{context}: keys never written");
    assert_eq!(report.keys_copied, present, "{context}");
    stale
}

#[test]
fn an_intact_database_is_copied_whole_with_its_ttls() {
    let built = build();
    let target = built.dir.with_extension("copy");
    let before = all_files(&built.dir);
    let report = salvage(&built.dir, &target).unwrap();
    assert!(report.is_complete(), "{report:#?}");
    assert!(report.keys_at_risk.is_empty(), "{report:#?}");
    assert_eq!(check(&target, &report, &built.history, "intact"), 0);
    assert!(
        all_files(&built.dir) == before,
        "salvage changed the damaged directory"
    );

    // TTLs: what is left of them.
    let dir = scratch_dir();
    let db = Db::open(dir.path()).unwrap();
    db.put_with_ttl(b"soon", b"v", Duration::from_secs(3600))
        .unwrap();
    db.put_with_ttl(b"gone", b"v", Duration::ZERO).unwrap();
    db.put(b"forever", b"v").unwrap();
    db.close().unwrap();
    let target = dir.path().with_extension("ttl");
    let report = salvage(dir.path(), &target).unwrap();
    assert_eq!((report.keys_copied, report.keys_expired), (2, 1));
    let copy = Db::open(&target).unwrap();
    let left = copy.ttl(b"soon").unwrap().flatten().unwrap();
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
    assert_eq!(copy.ttl(b"forever").unwrap(), Some(None));
    assert_eq!(copy.get(b"gone").unwrap(), None);
    drop(copy);
    std::fs::remove_dir_all(&target).unwrap();
}

#[test]
fn a_target_that_is_not_new_and_empty_is_refused() {
    let built = build();
    let full = scratch_dir();
    std::fs::write(full.path().join("x"), b"x").unwrap();
    for target in [full.path().to_path_buf(), built.dir.join("inside")] {
        let err = salvage(&built.dir, &target).unwrap_err();
        assert!(matches!(err, Error::SalvageTarget { .. }), "{err}");
    }
    let nothing = scratch_dir();
    let err = salvage(nothing.path(), full.path().join("new")).unwrap_err();
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
}

#[test]
fn every_flipped_byte_gives_written_values_and_names_every_key_it_may_have_cost() {
    let built = build();
    let pristine = all_files(&built.dir);
    // Two workers, each with one copy of its own, damaged one byte at a
    // time and mended after each salvage (which changes nothing in it: the
    // first test checks that).
    let files: Vec<(&PathBuf, &Vec<u8>)> = pristine.iter().collect();
    let worker = |part: usize| {
        let work = scratch_dir();
        let copy = work.path().join("damaged");
        for (p, b) in &pristine {
            let to = copy.join(p.strip_prefix(&built.dir).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(&to, b).unwrap();
        }
        let (mut flips, mut incomplete, mut stale_keys) = (0, 0, 0);
        for (n, (path, bytes)) in files.iter().enumerate() {
            let rel = path.strip_prefix(&built.dir).unwrap().to_path_buf();
            // The newest WAL file and log segment end in zeros allocated
            // ahead.
            let data_end = match rel.extension().and_then(|e| e.to_str()) {
                Some("wal") => common::wal_frames_end(path) as usize,
                Some("seg") => common::segment_records_end(path) as usize,
                _ => bytes.len(),
            };
            let damaged = copy.join(&rel);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&damaged)
                .unwrap();
            for (i, at) in corpus::flip_offsets(bytes.len(), data_end)
                .into_iter()
                .enumerate()
            {
                if (n + i) % 2 != part {
                    continue;
                }
                flips += 1;
                let write_at = |byte: u8| {
                    std::os::unix::fs::FileExt::write_all_at(&file, &[byte], at as u64).unwrap();
                };
                write_at(bytes[at] ^ 0xFF);
                let context = format!("{} byte {at}", rel.display());
                let target = work.path().join("salvaged");
                let report = salvage(&copy, &target)
                    .unwrap_or_else(|e| panic!("{context}: salvage failed: {e}"));
                incomplete += usize::from(!report.is_complete());
                stale_keys += check(&target, &report, &built.history, &context);
                std::fs::remove_dir_all(&target).unwrap();
                write_at(bytes[at]);
            }
        }
        (flips, incomplete, stale_keys)
    };
    let (mut flips, mut incomplete, mut stale_keys) = (0, 0, 0);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| worker(1));
        for (f, i, k) in [worker(0), other.join().unwrap()] {
            flips += f;
            incomplete += i;
            stale_keys += k;
        }
    });
    println!(
        "{flips} flips: {incomplete} with a loss not covered elsewhere, {stale_keys} keys short of \
         their latest state in all (each named in its report)"
    );
    assert!(
        flips > 1000,
        "{flips} flips: the database is smaller than meant"
    );
    assert!(
        incomplete > 0,
        "no flip lost anything: the test tests nothing"
    );
}

#[test]
fn a_damaged_record_named_by_a_hint_file_costs_exactly_its_key() {
    let built = build();
    // Segment 1 holds k40..k47, once each, and has a hint file.
    let seg = built.dir.join("0000000001.seg");
    assert!(seg.with_extension("hint").exists());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 3; // in the value of its last record, k47
    bytes[at] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    let target = built.dir.with_extension("copy");
    let report = salvage(&built.dir, &target).unwrap();
    assert!(!report.is_complete());
    assert_eq!(report.keys_at_risk, [corpus::key(47)], "{report:#?}");
    let loss = report.losses.iter().find(|l| l.path == seg).unwrap();
    assert_eq!(loss.hinted_records, Some(1));
    let copy = Db::open(&target).unwrap();
    assert_eq!(copy.get(&corpus::key(47)).unwrap(), None);
    assert_eq!(
        copy.get(&corpus::key(46)).unwrap().as_deref(),
        Some(&b"stable-46"[..])
    );
}
