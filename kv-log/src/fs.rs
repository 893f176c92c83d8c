//! File helpers: writing a new segment file's header, a write the fault
//! hook can cut short, and the directory sync that makes a change to a
//! directory's entries durable. Depends on nothing in the crate but the
//! fault seam.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::fault::{Faults, FileOp};

/// Writes `bytes` with `write`, unless the fault hook fails the write: then
/// only the first half is written (a write cut short, as by a full disk)
/// and the injected error returned.
pub(crate) fn checked_write(
    faults: &Faults,
    path: &Path,
    bytes: &[u8],
    mut write: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Err(e) = faults.check(FileOp::Write, path) {
        write(&bytes[..bytes.len() / 2])?;
        return Err(e);
    }
    write(bytes)
}

/// Creates (or truncates) the temporary file `tmp` and writes a segment
/// `header` to it, unsynced: the first step of making a segment.
pub(crate) fn create_with_header(
    faults: &Faults,
    tmp: &Path,
    header: &[u8],
) -> std::io::Result<File> {
    faults.check(FileOp::Create, tmp)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    checked_write(faults, tmp, header, |b| file.write_all(b))?;
    Ok(file)
}

/// Makes the creation, renaming or removal of files in `dir` durable.
pub(crate) fn sync_dir(dir: &Path, faults: &Faults) -> std::io::Result<()> {
    faults.check(FileOp::Sync, dir)?;
    File::open(dir)?.sync_all()
}
