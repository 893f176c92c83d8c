//! The database directory itself: the fixed names in it (`LOCK`, `wal/`),
//! creating it and locking it. What goes into the directory (segments, the
//! WAL, the marker) is written elsewhere: kv-log, kv-wal and `marker.rs`;
//! directories are synced through kv-fs.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::{Error, Result};

/// The name of the lock file in the database directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// The name of the write-ahead log's subdirectory.
pub const WAL_DIR_NAME: &str = "wal";

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
