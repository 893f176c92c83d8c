//! The on-disk side of [`Db::checkpoint`](crate::Db::checkpoint): the
//! target's rules, a temporary directory of the call's own, and the atomic
//! rename into place.
//!
//! Each call builds its copy in a directory no other call uses,
//! `.{name}.kv-checkpoint-tmp.{pid}.{counter}` next to the target, and holds
//! an OS lock (`flock`, through `File::try_lock`) on the `LOCK` file in it
//! for the whole build. The lock file is created as `LOCK.tmp`, locked, and
//! only then renamed to `LOCK`: a temporary directory with a `LOCK` whose
//! lock can be taken belongs to no running call (its call crashed, and the
//! OS released the lock with the process), so the next checkpoint to the
//! same target removes it; one without a `LOCK` may be a call between its
//! `mkdir` and its lock, and is never removed.
//!
//! The last step is `rename(temp, target)`, which is atomic and replaces
//! only an empty directory: of several calls to one target, the first to
//! rename wins, and the others find the target full and fail with
//! [`Error::CheckpointTarget`] (removing their own temporary directories).
//! The `LOCK` file goes into place with the copy, where it is the lock file
//! of the database the copy is (`Db::open` locks the same file), so the
//! copy cannot be opened before the call that wrote it has returned.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use kv_fs::{CreateError, Faults};
use kv_wal::Position;

use crate::fs::{LOCK_FILE_NAME, WAL_DIR_NAME};
use crate::marker::Marker;
use crate::writer::Command;
use crate::{Error, Result};

/// What a temporary directory's name adds to the target's name, after a
/// leading dot; the process id and a counter follow.
const TEMP_INFIX: &str = ".kv-checkpoint-tmp";
/// The lock file's name before it is locked.
const LOCK_TEMP_NAME: &str = "LOCK.tmp";

/// Makes temporary directory names unique within the process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Writes a checkpoint of the database whose writer `commands` reaches into
/// the new or empty directory `target`. See [`Db::checkpoint`](crate::Db::checkpoint).
pub(crate) fn checkpoint(
    target: &Path,
    db_dir: &Path,
    commands: &Sender<Command>,
    faults: &Faults,
) -> Result<()> {
    let refuse = |reason: &str| Error::CheckpointTarget {
        path: target.to_path_buf(),
        reason: reason.into(),
    };
    if is_inside(target, db_dir) {
        // The copy would be a stray directory among the database's own
        // files (or in its wal/), which no part of the engine owns.
        return Err(refuse(&format!(
            "it is inside the database directory {}",
            db_dir.display()
        )));
    }
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(refuse("it exists and is not empty"));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) if e.kind() == ErrorKind::NotADirectory => {
            return Err(refuse("it exists and is not a directory"));
        }
        Err(source) => return Err(io(target, source)),
    }
    let name = target
        .file_name()
        .ok_or_else(|| refuse("it names no directory"))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    remove_leftovers(&parent, name);

    let mut temp = TempDir::create(&parent, name, faults)?;
    build(&temp.path, commands, faults)?;
    // The last step: `target` appears whole or not at all. Renaming over
    // an empty directory is allowed, over a full one it fails.
    match kv_fs::rename(&temp.path, target, faults) {
        Ok(()) => temp.renamed = true,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists
            ) =>
        {
            return Err(refuse(
                "it became non-empty meanwhile (another checkpoint was written to it)",
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotADirectory => {
            return Err(refuse(
                "it became something other than a directory meanwhile",
            ));
        }
        Err(source) => return Err(io(target, source)),
    }
    sync_dir(&parent, faults)
}

/// Whether `path`, which need not exist, is `dir` or below it, once both
/// are resolved (symbolic links, `.` and `..`): the deepest part of `path`
/// that exists is canonicalized and the rest appended.
fn is_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new(".").join(path)
    };
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(real) = fs::canonicalize(existing) {
            break real;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return false,
        }
    };
    let mut full = resolved;
    for part in rest.into_iter().rev() {
        match part {
            std::path::Component::ParentDir => {
                full.pop();
            }
            std::path::Component::CurDir => {}
            other => full.push(other),
        }
    }
    full.starts_with(&dir)
}

/// Fills `temp` with a checkpoint: the sealed segments, a marker, an empty
/// WAL directory; everything synced.
fn build(temp: &Path, commands: &Sender<Command>, faults: &Faults) -> Result<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if commands.send(Command::PrepareCopy { reply: tx }).is_err() {
        return Err(Error::Closed);
    }
    let snapshot = rx.recv().map_err(|_| Error::Closed)??;
    let segments_end = kv_log::copy_segments(&snapshot.segments, temp)?;
    let wal = temp.join(WAL_DIR_NAME);
    fs::create_dir(&wal).map_err(|e| io(&wal, e))?;
    sync_dir(&wal, faults)?;
    let mut segments: Vec<u32> = snapshot.segments.iter().map(|s| s.id()).collect();
    segments.push(segments_end.segment);
    Marker {
        seq: snapshot.seq,
        segments_end,
        wal_from: Position::START,
        next_segment_id: segments_end.segment + 1,
        segments: Some(segments),
    }
    .write(temp, faults)
    .map_err(CreateError::into_inner)?;
    sync_dir(temp, faults)
}

/// A call's own temporary directory, locked while it lives; removed when
/// dropped unless it was renamed into place.
struct TempDir {
    path: PathBuf,
    renamed: bool,
    /// The locked `LOCK` file; dropped (unlocked) after the directory is
    /// removed, so no other call ever sees it unlocked before then.
    _lock: File,
}

impl TempDir {
    /// Makes a directory of a new name next to the target, and takes the
    /// lock on its `LOCK` file.
    fn create(parent: &Path, name: &OsStr, faults: &Faults) -> Result<TempDir> {
        let path = loop {
            let mut temp = temp_prefix(name);
            temp.push(format!(
                ".{}.{}",
                std::process::id(),
                NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
            ));
            let path = parent.join(temp);
            match fs::create_dir(&path) {
                Ok(()) => break path,
                // Left by a crashed process that had the same id.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(io(&path, source)),
            }
        };
        let locked = (|| {
            let lock_tmp = path.join(LOCK_TEMP_NAME);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_tmp)
                .map_err(|e| io(&lock_tmp, e))?;
            // Nobody else knows of this file yet: the lock cannot be held.
            file.try_lock().map_err(|e| match e {
                TryLockError::Error(source) => io(&lock_tmp, source),
                TryLockError::WouldBlock => io(&lock_tmp, ErrorKind::WouldBlock.into()),
            })?;
            let lock = path.join(LOCK_FILE_NAME);
            kv_fs::rename(&lock_tmp, &lock, faults).map_err(|e| io(&lock, e))?;
            Ok(file)
        })();
        match locked {
            Ok(file) => Ok(TempDir {
                path,
                renamed: false,
                _lock: file,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!(
                "could not remove the temporary checkpoint directory {}: {e}",
                self.path.display()
            );
        }
    }
}

/// `.{name}.kv-checkpoint-tmp`: the start of every temporary directory's
/// name for the target `name` (and the whole name an older version used).
fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(TEMP_INFIX);
    prefix
}

/// Removes the temporary directories of checkpoints to `name` that were
/// cut short: those whose `LOCK` can be locked (no live call holds it), and
/// the one of the name an older version used, which no call uses now.
/// Directories without a `LOCK` are left alone: their call may be between
/// its `mkdir` and its lock. Failures only log: a leftover costs space, and
/// must not stop a checkpoint.
fn remove_leftovers(parent: &Path, name: &OsStr) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())
        else {
            continue;
        };
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let removed = if rest.is_empty() {
            // An older version's name, which it removed itself before each
            // checkpoint; no call of this version uses it.
            fs::remove_dir_all(&path)
        } else if is_call_suffix(rest) {
            let Ok(lock) = File::open(path.join(LOCK_FILE_NAME)) else {
                // No lock file yet (or any more): maybe in progress.
                continue;
            };
            match lock.try_lock() {
                // Holding the lock while removing: another call cleaning up
                // at the same time skips it.
                Ok(()) => fs::remove_dir_all(&path),
                Err(_) => continue,
            }
        } else {
            // Another target's, whose name starts with this one's; or not
            // a checkpoint's at all.
            continue;
        };
        match removed {
            Ok(()) => log::warn!("removed {}, left by a checkpoint cut short", path.display()),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "could not remove {}, left by a checkpoint cut short: {e}",
                path.display()
            ),
        }
    }
}

/// Whether `rest` is what a call adds to the prefix: `.{pid}.{counter}`.
fn is_call_suffix(rest: &[u8]) -> bool {
    let Some(rest) = rest.strip_prefix(b".") else {
        return false;
    };
    let mut parts = rest.split(|&b| b == b'.');
    let number = |part: Option<&[u8]>| {
        part.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
    };
    number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

/// Syncs the directory `dir` (`kv_fs::sync_dir`).
fn sync_dir(dir: &Path, faults: &Faults) -> Result<()> {
    kv_fs::sync_dir(dir, faults).map_err(|e| io(dir, e))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
