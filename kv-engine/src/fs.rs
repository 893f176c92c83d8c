//! The database directory itself: the fixed names in it (`LOCK`, `wal/`),
//! telling a database from any other directory, creating it and locking
//! it. What goes into the directory (segments, the
//! WAL, the marker) is written elsewhere: kv-log, kv-wal and `marker.rs`;
//! directories are synced through kv-fs.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::marker::MARKER_FILE_NAME;
use crate::{Error, Result};

/// The name of the lock file in the database directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// The name of the write-ahead log's subdirectory.
pub const WAL_DIR_NAME: &str = "wal";

/// Whether `dir` holds a kv database: a `CHECKPOINT` marker, a `wal/`
/// directory or a segment file. A directory that does not exist holds
/// none. Files of other programs, a `LOCK` or an `INDEX` alone do not
/// make one.
///
/// # Errors
///
/// [`Error::Io`] if `dir` exists but cannot be listed.
pub fn holds_database(dir: impl AsRef<Path>) -> Result<bool> {
    let dir = dir.as_ref();
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if name == MARKER_FILE_NAME
            || name == WAL_DIR_NAME
            || kv_log::parse_segment_file_name(&name).is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Refuses to open `dir` when it holds no database and the options say
/// not to create one ([`Options::create_if_missing`](crate::Options::create_if_missing)).
pub(crate) fn check_exists(dir: &Path, create_if_missing: bool) -> Result<()> {
    if create_if_missing || holds_database(dir)? {
        return Ok(());
    }
    let reason = if dir.exists() {
        "the directory holds no CHECKPOINT, wal/ or segment file"
    } else {
        "the directory does not exist"
    };
    Err(Error::NotADatabase {
        path: dir.to_path_buf(),
        reason: reason.into(),
    })
}

/// Creates the database directory if it is missing. A path that is a file
/// gets an error that says so, rather than the OS's "File exists".
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| {
        let source = if dir.exists() && !dir.is_dir() {
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the database path is a file, not a directory",
            )
        } else {
            source
        };
        Error::Io {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// Takes the directory's lock file with an OS lock (flock), released when
/// the process dies. A second open, from any process, fails at once.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

/// Whether a writer holds `dir` open now: another `Db`, in this process or
/// another, holds the lock on its `LOCK` file. Changes nothing: a missing
/// `LOCK` means no writer, and the lock is only tried (shared, at once)
/// and let go.
pub(crate) fn writer_holds(dir: &Path) -> Result<bool> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(Error::Io { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}
