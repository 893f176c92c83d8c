//! Directory and file-creation helpers. Every change to a directory's entries
//! (create, rename, delete) is followed by a sync of the directory, so the
//! change survives a crash; kv-fs does the syncing and the atomic creation.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kv_fs::{CreateError, Faults};

use crate::error::io_error;
use crate::format::{self, BadHeader, FILE_HEADER_LEN, FileHeader};
use crate::{Error, Result};

/// The WAL files in `dir`, sorted by number. Files with other names are
/// ignored.
pub(crate) fn list_wal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        if let Some(number) = name.to_str().and_then(format::parse_file_name) {
            files.push((number, entry.path()));
        }
    }
    files.sort_unstable_by_key(|&(number, _)| number);
    Ok(files)
}

/// Deletes temporary files left by a file creation that a crash interrupted.
/// Their headers were never made durable under their final name, so no
/// record lives in them.
pub(crate) fn remove_temp_files(dir: &Path, faults: &Faults) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(format::is_temp_file_name)
        {
            let path = entry.path();
            log::warn!(
                "removing {}, left by an interrupted WAL file creation",
                path.display()
            );
            fs::remove_file(&path).map_err(io_error(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir, faults)?;
    }
    Ok(())
}

/// Creates `dir` and any missing ancestors, and makes each new entry durable
/// in its parent.
pub(crate) fn create_dir(dir: &Path, faults: &Faults) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent, faults)?;
        }
    }
    Ok(())
}

/// Makes the entries of `dir` (created, renamed and deleted files) durable.
pub(crate) fn sync_dir(dir: &Path, faults: &Faults) -> Result<()> {
    kv_fs::sync_dir(dir, faults).map_err(io_error(dir))
}

/// Creates WAL file `number` in `dir` with its header durable, and returns it
/// open for writing, positioned after the header.
///
/// The header is written to a temporary file, synced, and renamed into
/// place, then the directory is synced (`kv_fs::create_atomically`): a file
/// with a WAL name always has a whole header. A temporary file left behind
/// is removed at the next open.
pub(crate) fn create_wal_file(
    dir: &Path,
    number: u64,
    payload_version: u8,
    faults: &Faults,
) -> std::result::Result<(File, PathBuf), CreateError<Error>> {
    let temp = dir.join(format::temp_file_name(number));
    let path = dir.join(format::file_name(number));
    let header = format::encode_file_header(number, payload_version);
    let created = kv_fs::create_atomically(&temp, &path, faults, |file| {
        kv_fs::write_or_tear(faults, &temp, &header, |b| file.write_all(b))
    });
    match created {
        Ok(file) => Ok((file, path)),
        Err(CreateError::Unchanged(e)) => Err(CreateError::Unchanged(io_error(path)(e))),
        Err(CreateError::Unsynced(e)) => Err(CreateError::Unsynced(io_error(dir)(e))),
    }
}

/// Reads and checks the header of WAL file `number`, leaving `file`
/// positioned after it, and returns what it says: how the file's frames
/// are laid out (its format version) and its payload version.
pub(crate) fn read_file_header(file: &mut File, path: &Path, number: u64) -> Result<FileHeader> {
    let mut header = Vec::with_capacity(FILE_HEADER_LEN);
    Read::by_ref(file)
        .take(FILE_HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(io_error(path))?;
    format::check_file_header(&header, number).map_err(|bad| {
        let path = path.to_path_buf();
        match bad {
            BadHeader::NoMagic => Error::NotAWalFile {
                path,
                reason: format!("it is only {} bytes long", header.len()),
            },
            BadHeader::WrongMagic => Error::NotAWalFile {
                path,
                reason: "its first bytes are not the WAL magic".to_owned(),
            },
            BadHeader::Truncated(len) => Error::Corruption {
                path,
                offset: 0,
                reason: format!("the file header is cut short at {len} of {FILE_HEADER_LEN} bytes"),
            },
            BadHeader::Version(version) => Error::UnsupportedVersion { path, version },
            BadHeader::Checksum => Error::Corruption {
                path,
                offset: 0,
                reason: "the file header checksum does not match".to_owned(),
            },
            BadHeader::WrongNumber(stored) => Error::Corruption {
                path,
                offset: 0,
                reason: format!(
                    "the header says this is file {stored}, but its name says {number}; \
                     was it renamed?"
                ),
            },
        }
    })
}
