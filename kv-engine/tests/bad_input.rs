//! Bad input at the API: each case gets its typed error and leaves the
//! database as it was.
//!
//! - keys: empty, 65,536 bytes (one over the maximum), through every call
//!   that takes a key and through a batch;
//! - values: over the format's 64 MiB maximum and over a configured lower
//!   one, alone and inside a batch (nothing of the batch is applied);
//! - the database path is a regular file, or lies under one;
//! - a read-only directory (skipped, with a note, when the test runs with
//!   permissions that ignore modes, as root does);
//! - a database directory holding a file of a future format version (a
//!   segment, the CHECKPOINT marker, a WAL file: `Error::UnsupportedFile`;
//!   a hint file, which is a cache: ignored);
//! - a second open of the same directory, from this process and from a
//!   child process: `Error::Locked`.
//!
//! "As it was" is checked two ways: a failed open changes no byte of any
//! file, and the database, reopened, equals the model.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{all_files, contents, files_with_suffix};
use kv_engine::{Db, Error, Options, WriteBatch};
use xxhash_rust::xxh3::xxh3_64;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Set in the child process of `second_open_from_another_process_is_locked`.
const CHILD_DIR_VAR: &str = "KV_BAD_INPUT_CHILD_DIR";

fn options() -> Options {
    Options::default()
        .segment_size(1024)
        .background_compaction(false)
}

/// A database with a few keys over several segments, hint files and a
/// compaction output, closed cleanly; and its model.
fn populated(dir: &Path) -> Model {
    let db = Db::open_with(dir, options()).unwrap();
    let mut model = Model::new();
    for i in 0..40u32 {
        let k = format!("key-{i:02}").into_bytes();
        let v = format!("value-{i}-")
            .repeat(1 + i as usize % 4)
            .into_bytes();
        db.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    for i in (0..40u32).step_by(3) {
        let k = format!("key-{i:02}").into_bytes();
        db.delete(&k).unwrap();
        model.remove(&k);
    }
    db.compact().unwrap();
    db.put(b"after-compaction", b"yes").unwrap();
    model.insert(b"after-compaction".to_vec(), b"yes".to_vec());
    db.close().unwrap();
    model
}

fn assert_equals_model(db: &Db, model: &Model, when: &str) {
    assert_eq!(&contents(db, when), model, "{when}");
}

fn reopen_equals_model(dir: &Path, model: &Model, when: &str) {
    let db = Db::open_with(dir, options()).unwrap();
    assert_equals_model(&db, model, when);
    db.close().unwrap();
}

#[test]
fn bad_keys_are_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = populated(dir.path());
    let db = Db::open_with(dir.path(), options()).unwrap();
    let too_long = vec![b'k'; 65_536];
    let longest = vec![b'k'; 65_535];

    for key in [&b""[..], &too_long[..]] {
        let empty = key.is_empty();
        let is_typed = |e: &Error| {
            if empty {
                matches!(e, Error::EmptyKey)
            } else {
                matches!(
                    e,
                    Error::KeyTooLarge {
                        len: 65_536,
                        max: 65_535
                    }
                )
            }
        };
        let what = if empty {
            "empty key"
        } else {
            "65,536-byte key"
        };
        assert!(is_typed(&db.put(key, b"v").unwrap_err()), "put, {what}");
        assert!(is_typed(&db.delete(key).unwrap_err()), "delete, {what}");
        assert!(is_typed(&db.get(key).unwrap_err()), "get, {what}");
        assert!(
            is_typed(&db.get_pinned(key).unwrap_err()),
            "get_pinned, {what}"
        );
        assert!(
            is_typed(&db.contains_key(key).unwrap_err()),
            "contains_key, {what}"
        );
        // In a batch, the bad key fails the whole batch: the good puts
        // before and after it are not applied.
        let mut batch = WriteBatch::new();
        batch
            .put(b"key-01", b"changed")
            .put(key, b"v")
            .delete(b"key-02");
        assert!(is_typed(&db.write(batch).unwrap_err()), "batch put, {what}");
        let mut batch = WriteBatch::new();
        batch.put(b"key-01", b"changed").delete(key);
        assert!(
            is_typed(&db.write(batch).unwrap_err()),
            "batch delete, {what}"
        );
    }
    // The longest key is accepted, so the limit is exactly 65,535.
    db.put(&longest, b"longest").unwrap();
    db.delete(&longest).unwrap();
    assert_equals_model(&db, &model, "after bad keys");
    db.close().unwrap();
    reopen_equals_model(dir.path(), &model, "after bad keys, reopened");
}

#[test]
fn values_over_the_maximum_are_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = populated(dir.path());

    // The format's maximum, 64 MiB.
    let db = Db::open_with(dir.path(), options()).unwrap();
    let huge = vec![7u8; (64 << 20) + 1];
    assert!(matches!(
        db.put(b"key-01", &huge),
        Err(Error::ValueTooLarge { len, max }) if len == (64 << 20) + 1 && max == 64 << 20
    ));
    let mut batch = WriteBatch::new();
    batch.put(b"key-01", b"changed").put(b"new-key", &huge);
    assert!(matches!(db.write(batch), Err(Error::ValueTooLarge { .. })));
    drop(huge);
    assert_equals_model(&db, &model, "after a value over 64 MiB");
    db.close().unwrap();

    // A configured lower maximum.
    let db = Db::open_with(dir.path(), options().max_value_len(100)).unwrap();
    assert!(matches!(
        db.put(b"key-01", &[1u8; 101]),
        Err(Error::ValueTooLarge { len: 101, max: 100 })
    ));
    let mut batch = WriteBatch::new();
    batch
        .put(b"key-01", b"changed")
        .put(b"new-key", &[1u8; 101])
        .delete(b"key-02");
    assert!(matches!(
        db.write(batch),
        Err(Error::ValueTooLarge { len: 101, max: 100 })
    ));
    // Exactly the maximum is accepted; values already stored that are
    // longer than a newly lowered maximum still read.
    db.put(b"at-max", &[2u8; 100]).unwrap();
    db.delete(b"at-max").unwrap();
    assert_equals_model(&db, &model, "after values over a configured maximum");
    db.close().unwrap();
    reopen_equals_model(dir.path(), &model, "after bad values, reopened");
}

#[test]
fn a_path_that_is_a_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"precious").unwrap();
    for path in [file.clone(), file.join("db")] {
        match Db::open(&path) {
            Err(Error::Io { path: p, source }) => {
                assert!(
                    p == path || p == file,
                    "the error names {}, not {}",
                    p.display(),
                    path.display()
                );
                assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory, "{source}");
            }
            other => panic!("{}: expected Io, got {other:?}", path.display()),
        }
    }
    let err = Db::open(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    // The file is untouched.
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

/// Whether this process can create files in a directory it made read-only
/// (root can: permissions do not bind it).
fn permissions_bind(scratch: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = scratch.join("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o555)).unwrap();
    let bound = std::fs::write(probe.join("x"), b"x").is_err();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    bound
}

/// Sets the mode of `path` and everything under it: directories `dir_mode`,
/// files `file_mode`.
fn chmod_tree(path: &Path, dir_mode: u32, file_mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if path.is_dir() {
        // Make it listable before descending, restrict it after.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(path).unwrap() {
            chmod_tree(&entry.unwrap().path(), dir_mode, file_mode);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode)).unwrap();
    }
}

#[test]
fn a_read_only_directory_is_an_io_error_and_changes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    if !permissions_bind(scratch.path()) {
        println!(
            "NOTE: skipping the read-only directory case: this process can write to a \
             read-only directory (running as root?), so the case cannot be made"
        );
        return;
    }
    // A new database in an empty read-only directory: nothing is created.
    let empty = scratch.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    chmod_tree(&empty, 0o555, 0o444);
    match Db::open(&empty) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
    chmod_tree(&empty, 0o755, 0o644);
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // An existing database whose directory and files are read-only.
    let dir = scratch.path().join("db");
    let model = populated(&dir);
    let before = all_files(&dir);
    chmod_tree(&dir, 0o555, 0o444);
    match Db::open_with(&dir, options()) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
    chmod_tree(&dir, 0o755, 0o644);
    assert_eq!(all_files(&dir), before, "a failed open changed the files");
    reopen_equals_model(&dir, &model, "after a read-only open");
}

/// Where a file's header keeps its version and checksum (docs/format.md).
struct Layout {
    /// The file's offset of the version field.
    version_at: usize,
    /// Whether the version is a u16 (else a u8).
    wide: bool,
    /// The offset of the xxh3-64 checksum, which covers every byte before it.
    checksum_at: usize,
    /// A version a later build would write: one above this build's.
    future: u16,
}

/// `bytes` with the version set to `layout.future` and the checksum
/// recomputed, as a later build would write them.
fn as_future_version(mut bytes: Vec<u8>, layout: &Layout) -> Vec<u8> {
    let at = layout.version_at;
    if layout.wide {
        bytes[at..at + 2].copy_from_slice(&layout.future.to_le_bytes());
    } else {
        bytes[at] = layout.future as u8;
    }
    // `usize::MAX`: the checksum is the last 8 bytes.
    let end = if layout.checksum_at == usize::MAX {
        bytes.len() - 8
    } else {
        layout.checksum_at
    };
    let sum = xxh3_64(&bytes[..end]);
    bytes[end..end + 8].copy_from_slice(&sum.to_le_bytes());
    bytes
}

/// Finds a file in a database directory.
type FindFile = fn(&Path) -> PathBuf;

fn first_segment(dir: &Path) -> PathBuf {
    files_with_suffix(dir, ".seg").remove(0)
}

fn checkpoint_marker(dir: &Path) -> PathBuf {
    dir.join("CHECKPOINT")
}

fn wal_file(dir: &Path) -> PathBuf {
    files_with_suffix(&dir.join(kv_engine::WAL_DIR_NAME), ".wal").remove(0)
}

#[test]
fn files_of_a_future_format_version_are_unsupported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let model = populated(dir.path());
    // Each reopen rotates the WAL, so the files are found afresh for each
    // case.
    let cases: [(FindFile, Layout, &str); 4] = [
        // Segment header: version u16 at 8, checksum at 24.
        (
            first_segment,
            Layout {
                version_at: 8,
                wide: true,
                checksum_at: 24,
                future: kv_log::SEGMENT_VERSION + 1,
            },
            "segment",
        ),
        // CHECKPOINT: version u16 at 8, checksum in the last 8 bytes.
        (
            checkpoint_marker,
            Layout {
                version_at: 8,
                wide: true,
                checksum_at: usize::MAX,
                future: 3,
            },
            "checkpoint",
        ),
        // WAL file header: version u8 at 8, checksum at 24.
        (
            wal_file,
            Layout {
                version_at: 8,
                wide: false,
                checksum_at: 24,
                future: u16::from(kv_wal::FORMAT_VERSION) + 1,
            },
            "WAL",
        ),
        // WAL file header: payload version u8 at 9 (the record format of
        // its payloads), checksum at 24.
        (
            wal_file,
            Layout {
                version_at: 9,
                wide: false,
                checksum_at: 24,
                future: u16::from(kv_format::FORMAT_VERSION) + 1,
            },
            "WAL payload",
        ),
    ];
    for (find, layout, what) in cases {
        let path = find(dir.path());
        let original = std::fs::read(&path).unwrap();
        let later = as_future_version(original.clone(), &layout);
        std::fs::write(&path, &later).unwrap();
        let before = all_files(dir.path());
        match Db::open_with(dir.path(), options()) {
            Err(Error::UnsupportedFile { path: p, reason }) => {
                assert_eq!(p, path, "{what}: the error names the file");
                let version = format!("version {}", layout.future);
                assert!(reason.contains(&version), "{what}: {reason}");
            }
            other => panic!("{what} of a later version: expected UnsupportedFile, got {other:?}"),
        }
        assert_eq!(
            all_files(dir.path()),
            before,
            "{what}: a failed open changed the files"
        );
        std::fs::write(&path, &original).unwrap();
        reopen_equals_model(dir.path(), &model, what);
    }

    // A hint file is a cache: one of a later version is ignored (its
    // segment is scanned), and the database opens and reads right.
    // Hint: version u16 at 8, checksum in the last 8 bytes.
    let hint = files_with_suffix(dir.path(), ".hint").remove(0);
    let original = std::fs::read(&hint).unwrap();
    let layout = Layout {
        version_at: 8,
        wide: true,
        checksum_at: original.len() - 8,
        future: 2,
    };
    std::fs::write(&hint, as_future_version(original, &layout)).unwrap();
    reopen_equals_model(dir.path(), &model, "with a hint file of version 2");
}

#[test]
fn second_open_in_this_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let model = populated(dir.path());
    let db = Db::open_with(dir.path(), options()).unwrap();
    for _ in 0..2 {
        match Db::open_with(dir.path(), options()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
    // The first handle is unaffected.
    db.put(b"still-writable", b"yes").unwrap();
    db.delete(b"still-writable").unwrap();
    assert_equals_model(&db, &model, "after a refused second open");
    db.close().unwrap();
    reopen_equals_model(dir.path(), &model, "after a refused second open, reopened");
}

/// The child of `second_open_from_another_process_is_locked`: tries to open
/// the directory and reports what happened on stdout.
#[test]
#[ignore = "run by second_open_from_another_process_is_locked as a child process"]
fn second_open_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    match Db::open_with(&dir, options()) {
        Err(Error::Locked { path }) => println!("CHILD: Locked {}", path.display()),
        Err(other) => println!("CHILD: other error {other:?}"),
        Ok(_) => println!("CHILD: opened"),
    }
}

#[test]
fn second_open_from_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let model = populated(dir.path());
    let db = Db::open_with(dir.path(), options()).unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "second_open_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The test harness prints "test second_open_child ... " before it.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD: ").map(|(_, report)| report))
        .unwrap_or_else(|| panic!("the child reported nothing: {stdout}"));
    assert_eq!(
        line,
        format!("Locked {}", dir.path().display()),
        "the child's open"
    );
    assert_equals_model(&db, &model, "after the child's refused open");
    db.close().unwrap();
    reopen_equals_model(
        dir.path(),
        &model,
        "after the child's refused open, reopened",
    );
}
