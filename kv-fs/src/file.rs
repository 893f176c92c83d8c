//! Atomic file creation ([`create_atomically`], or [`create_temp`] and
//! [`rename_into_place`] for a file written over time), and the fault-checked
//! steps it is made of.

use std::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use crate::fault::{Faults, FileOp};

/// Why creating a file atomically failed, and what it left on disk: the
/// two cases the owner of the file must treat differently (see the crate
/// docs).
#[derive(Debug)]
pub enum CreateError<E = io::Error> {
    /// A step before the rename failed. Nothing changed under the final
    /// name (an old file there is still in place) and the temporary file
    /// was removed: the owner may go on, and try again later.
    Unchanged(E),
    /// The file was renamed into place, but the directory sync after it
    /// failed: whether the new name survives a crash is unknown, and a
    /// later sync that succeeds would not prove it. The owner must poison
    /// itself, as after any failed sync.
    Unsynced(E),
}

impl<E> CreateError<E> {
    /// The error, whichever the case.
    pub fn into_inner(self) -> E {
        match self {
            CreateError::Unchanged(e) | CreateError::Unsynced(e) => e,
        }
    }

    /// The same case, with the error mapped by `f` (to add a path, say).
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> CreateError<F> {
        match self {
            CreateError::Unchanged(e) => CreateError::Unchanged(f(e)),
            CreateError::Unsynced(e) => CreateError::Unsynced(f(e)),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CreateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Unchanged(e) => write!(f, "{e} (nothing changed)"),
            CreateError::Unsynced(e) => write!(
                f,
                "{e} (the directory sync after the rename failed: the new name may not be durable)"
            ),
        }
    }
}

impl<E: Error + 'static> Error for CreateError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CreateError::Unchanged(e) | CreateError::Unsynced(e) => Some(e),
        }
    }
}

/// Creates the file `path` whole or not at all: creates (or truncates) the
/// temporary file `tmp`, which must be in the same directory, lets `write`
/// fill it, syncs it (`fsync`), renames it to `path` and syncs the
/// directory. Returns the file, open for reading and writing, positioned
/// where `write` left it.
///
/// Each step is checked against `faults` first: a [`FileOp::Create`], the
/// writes `write` makes (it should make them through [`write_or_tear`] with
/// `tmp` as the path), a [`FileOp::Sync`] of the file, a
/// [`FileOp::Rename`] on `path`, and a [`FileOp::Sync`] of the directory.
///
/// # Errors
///
/// [`CreateError::Unchanged`] if any step up to the rename fails, after
/// removing `tmp` (best effort: a file left behind is the caller's to
/// remove at its next open); [`CreateError::Unsynced`] if the directory
/// sync after the rename fails.
pub fn create_atomically(
    tmp: &Path,
    path: &Path,
    faults: &Faults,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<File, CreateError> {
    let mut file = create_temp(tmp, faults).map_err(|e| unchanged(tmp, e))?;
    write(&mut file).map_err(|e| unchanged(tmp, e))?;
    rename_into_place(&file, tmp, path, faults)?;
    Ok(file)
}

/// Creates (or truncates) the temporary file `tmp`, open for reading and
/// writing, after a [`FileOp::Create`] check: the first step of
/// [`create_atomically`], for a file that is written over time and then
/// finished with [`rename_into_place`].
///
/// # Errors
///
/// The injected error, or the error of the open.
pub fn create_temp(tmp: &Path, faults: &Faults) -> io::Result<File> {
    faults.check(FileOp::Create, tmp)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
}

/// The last steps of [`create_atomically`]: syncs `file` (the temporary
/// file `tmp`, written in full), renames `tmp` to `path` and syncs the
/// directory, each after its fault check.
///
/// # Errors
///
/// As [`create_atomically`]: `tmp` is removed on a failure before the
/// rename.
pub fn rename_into_place(
    file: &File,
    tmp: &Path,
    path: &Path,
    faults: &Faults,
) -> Result<(), CreateError> {
    debug_assert_eq!(tmp.parent(), path.parent(), "a rename across directories");
    faults
        .check(FileOp::Sync, tmp)
        .and_then(|()| file.sync_all())
        .map_err(|e| unchanged(tmp, e))?;
    rename(tmp, path, faults).map_err(|e| unchanged(tmp, e))?;
    sync_dir(parent(path), faults).map_err(CreateError::Unsynced)
}

/// Removes `tmp` after a failure before the rename.
fn unchanged(tmp: &Path, error: io::Error) -> CreateError {
    // Best effort: the caller removes leftover temporary files at open.
    let _ = fs::remove_file(tmp);
    CreateError::Unchanged(error)
}

/// The directory `path` is in.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` with `write`, after a [`FileOp::Write`] check.
/// If the check fails, only the first half of `bytes` is written (a write
/// cut short, as by a full disk or a crash) and the injected error is
/// returned.
///
/// # Errors
///
/// The injected error, or the error of `write`.
pub fn write_or_tear(
    faults: &Faults,
    path: &Path,
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if let Err(e) = faults.check(FileOp::Write, path) {
        write(&bytes[..bytes.len() / 2])?;
        return Err(e);
    }
    write(bytes)
}

/// Renames `from` to `to` (a file or a directory) after a
/// [`FileOp::Rename`] check. The rename is not durable until the directory
/// is synced ([`sync_dir`]).
///
/// # Errors
///
/// The injected error, or the error of the rename.
pub fn rename(from: &Path, to: &Path, faults: &Faults) -> io::Result<()> {
    faults.check(FileOp::Rename, to)?;
    fs::rename(from, to)
}

/// Makes the entries of `dir` (files created, renamed or removed in it)
/// durable, after a [`FileOp::Sync`] check.
///
/// # Errors
///
/// The injected error, or the error of the open or the sync. A failed
/// directory sync is a failed sync: its owner poisons itself.
pub fn sync_dir(dir: &Path, faults: &Faults) -> io::Result<()> {
    faults.check(FileOp::Sync, dir)?;
    // NOTE: only Unix can open and fsync a directory; elsewhere the file
    // system orders directory updates itself (NTFS journals its metadata).
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::{FaultError, FaultInjector, FaultMode};

    struct Setup {
        dir: tempfile::TempDir,
        tmp: PathBuf,
        path: PathBuf,
        injector: Arc<FaultInjector>,
        faults: Faults,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let injector = Arc::new(FaultInjector::new());
        Setup {
            tmp: dir.path().join("MARKER.tmp"),
            path: dir.path().join("MARKER"),
            faults: Faults::from(Arc::clone(&injector)),
            injector,
            dir,
        }
    }

    fn create(s: &Setup, bytes: &[u8]) -> Result<File, CreateError> {
        create_atomically(&s.tmp, &s.path, &s.faults, |file| {
            write_or_tear(&s.faults, &s.tmp, bytes, |b| file.write_all(b))
        })
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn creates_the_file_whole_and_leaves_no_temporary_file() {
        let s = setup();
        let mut file = create(&s, b"new contents").unwrap();
        assert_eq!(fs::read(&s.path).unwrap(), b"new contents");
        assert_eq!(names(s.dir.path()), ["MARKER"]);
        // Open for reading and writing, as the WAL and the segments need.
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"new contents");
        file.write_all(b"!").unwrap();
        // One of each step was checked: the file sync and the directory sync.
        for (op, n) in [
            (FileOp::Create, 1),
            (FileOp::Write, 1),
            (FileOp::Sync, 2),
            (FileOp::Rename, 1),
        ] {
            assert_eq!(s.injector.count(op), n, "{op}");
        }
    }

    /// A failure at any step before the rename changes nothing: the old
    /// file is intact, no temporary file is left (even a half-written one),
    /// and the case is `Unchanged`.
    #[test]
    fn a_failure_before_the_rename_changes_nothing() {
        for (op, n) in [
            (FileOp::Create, 1),
            (FileOp::Write, 1),
            (FileOp::Sync, 1),
            (FileOp::Rename, 1),
        ] {
            let s = setup();
            fs::write(&s.path, b"old").unwrap();
            s.injector
                .fail_nth(op, n, FaultError::NoSpace, FaultMode::Once);
            let e = create(&s, b"new contents").unwrap_err();
            assert!(matches!(e, CreateError::Unchanged(_)), "{op}: {e}");
            assert_eq!(e.into_inner().kind(), io::ErrorKind::StorageFull, "{op}");
            assert_eq!(s.injector.first_hit().unwrap().0, op);
            assert_eq!(fs::read(&s.path).unwrap(), b"old", "{op}");
            assert_eq!(names(s.dir.path()), ["MARKER"], "{op}");
            // Nothing after the failed step was attempted: no rename
            // before the file sync, no directory sync after a failed rename.
            let synced = matches!(op, FileOp::Sync | FileOp::Rename);
            assert_eq!(s.injector.syncs(), u64::from(synced), "{op}");
            let renamed = op == FileOp::Rename;
            assert_eq!(s.injector.count(FileOp::Rename), u64::from(renamed), "{op}");
        }
    }

    /// A failure of the code that fills the file is `Unchanged` too.
    #[test]
    fn a_failed_write_of_the_caller_changes_nothing() {
        let s = setup();
        let e = create_atomically(&s.tmp, &s.path, &s.faults, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("the caller's write failed"))
        })
        .unwrap_err();
        assert!(matches!(e, CreateError::Unchanged(_)), "{e}");
        assert!(names(s.dir.path()).is_empty());
    }

    /// The directory sync after the rename failing is `Unsynced`: the new
    /// file is in place (it was renamed) and no temporary file is left.
    #[test]
    fn a_failed_directory_sync_after_the_rename_is_unsynced() {
        let s = setup();
        fs::write(&s.path, b"old").unwrap();
        // The first sync is the file's, the second the directory's.
        s.injector.fail_nth_sync(2);
        let e = create(&s, b"new contents").unwrap_err();
        assert!(matches!(e, CreateError::Unsynced(_)), "{e}");
        assert_eq!(
            s.injector.first_hit(),
            Some((FileOp::Sync, s.dir.path().to_path_buf()))
        );
        assert_eq!(fs::read(&s.path).unwrap(), b"new contents");
        assert_eq!(names(s.dir.path()), ["MARKER"]);
    }

    #[test]
    fn a_torn_write_writes_half_the_bytes() {
        let s = setup();
        let mut written = Vec::new();
        s.injector.fail_next_write();
        let e = write_or_tear(&s.faults, &s.path, b"abcdef", |b| {
            written.extend_from_slice(b);
            Ok(())
        });
        assert!(e.is_err());
        assert_eq!(written, b"abc");
        write_or_tear(&s.faults, &s.path, b"gh", |b| {
            written.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(written, b"abcgh");
    }

    #[test]
    fn rename_and_directory_sync_are_checked() {
        let s = setup();
        fs::write(&s.tmp, b"x").unwrap();
        s.injector
            .fail_next(FileOp::Rename, FaultError::Eio, FaultMode::Once);
        assert!(rename(&s.tmp, &s.path, &s.faults).is_err());
        assert!(s.tmp.exists() && !s.path.exists());
        rename(&s.tmp, &s.path, &s.faults).unwrap();
        assert!(!s.tmp.exists() && s.path.exists());
        s.injector.fail_next_sync();
        assert!(sync_dir(s.dir.path(), &s.faults).is_err());
        sync_dir(s.dir.path(), &s.faults).unwrap();
    }

    #[test]
    fn a_relative_path_is_synced_in_the_current_directory() {
        assert_eq!(parent(Path::new("CHECKPOINT")), Path::new("."));
        assert_eq!(parent(Path::new("db/CHECKPOINT")), Path::new("db"));
    }
}
