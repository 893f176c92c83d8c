//! Helpers shared by the kv fuzz targets (`fuzz_targets/`): scratch
//! directories on a RAM-backed file system where there is one, and copying
//! a database directory.
//!
//! Run the targets with `cargo xtask fuzz` from the repository root; see
//! `docs/testing.md`.

#![forbid(unsafe_code)]

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
