//! Helpers shared by the kv fuzz targets (`fuzz_targets/`): scratch
//! directories on a RAM-backed file system where there is one, and copying
//! a database directory (closed, or live as a crash would leave it).
//!
//! Run the targets with `cargo xtask fuzz` from the repository root; see
//! `docs/testing.md`.

#![forbid(unsafe_code)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A fresh temporary directory for one fuzz input.
///
/// It is made under `$KV_FUZZ_TMPDIR` if set, else under `/dev/shm` where
/// that exists (syncs there cost nothing, so the targets that open a
/// database run many times faster), else under the system's temporary
/// directory.
pub fn scratch_dir() -> tempfile::TempDir {
    let base = std::env::var_os("KV_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("kv-fuzz-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("cannot make a scratch directory in {}: {e}", base.display()))
}

/// Copies the directory `from` (and its subdirectories) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the directory") {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy a file");
        }
    }
}

/// Copies the directory of an open database to `to` (absent or empty) as a
/// crash at one instant would leave it. A file that vanishes during the
/// copy (the writer trimmed the WAL, a compaction retired a segment) means
/// the directory changed under it, and the files copied before are older:
/// together they could be a directory no crash leaves. So the copy is
/// taken again until the names and lengths are the same before and after
/// it (the same rule as kv-engine's `tests/common`, `crash_image`).
pub fn crash_image(live: &Path, to: &Path) {
    for _ in 0..200 {
        match std::fs::remove_dir_all(to) {
            Err(e) if e.kind() != ErrorKind::NotFound => panic!("{}: {e}", to.display()),
            _ => {}
        }
        let Some(before) = listing(live) else {
            continue;
        };
        if copy_listed(live, to, &before) && listing(live).is_some_and(|after| after == before) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("{} changed during each of 200 copies", live.display());
}

/// Every path under `dir` (relative), with its length (`None` for a
/// directory), sorted; `None` if something vanished while listing.
fn listing(dir: &Path) -> Option<Vec<(PathBuf, Option<u64>)>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).ok()? {
            let entry = entry.ok()?;
            let path = rel.join(entry.file_name());
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                found.push((path.clone(), None));
                stack.push(path);
            } else {
                found.push((path, Some(meta.len())));
            }
        }
    }
    found.sort();
    Some(found)
}

/// Copies what `listing` found; false if a file vanished meanwhile.
fn copy_listed(from: &Path, to: &Path, listed: &[(PathBuf, Option<u64>)]) -> bool {
    std::fs::create_dir_all(to).expect("create the copy");
    for (rel, len) in listed {
        let target = to.join(rel);
        match len {
            None => std::fs::create_dir_all(&target).expect("create a directory"),
            Some(_) => match std::fs::copy(from.join(rel), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return false,
                Err(e) => panic!("copying {}: {e}", rel.display()),
            },
        }
    }
    true
}
