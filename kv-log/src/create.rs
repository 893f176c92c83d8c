//! Creating a new, empty log segment atomically (`create_log_segment`),
//! and what a failure left behind (`CreateError`).

use std::fs::{self, File};
use std::path::Path;

use crate::fault::{Faults, FileOp};
use crate::format::{SegmentHeader, SegmentKind, TEMP_SUFFIX, encode_header, segment_file_name};
use crate::fs::{create_with_header, sync_dir};
use crate::{LogError, SEGMENT_HEADER_LEN, Segment};

/// Why [`create_log_segment`] failed, and what state it left.
pub(crate) enum CreateError {
    /// Nothing changed: the temporary file (if any) was removed.
    Unchanged(LogError),
    /// The segment was renamed into place but the directory sync failed.
    Unsynced(LogError),
}

impl CreateError {
    pub(crate) fn into_error(self) -> LogError {
        match self {
            CreateError::Unchanged(e) | CreateError::Unsynced(e) => e,
        }
    }
}

/// Creates log segment `id` atomically: header to a temporary file, sync,
/// rename, directory sync. A crash leaves either no segment or a whole one.
pub(crate) fn create_log_segment(
    dir: &Path,
    id: u32,
    capacity: u64,
    faults: &Faults,
) -> Result<(Segment, File), CreateError> {
    let path = dir.join(segment_file_name(id));
    let tmp = dir.join(format!("{id:010}{TEMP_SUFFIX}"));
    let header = encode_header(id, SegmentKind::Log, &[]);
    let file = (|| {
        let file = create_with_header(faults, &tmp, &header)?;
        faults.check(FileOp::Sync, &tmp)?;
        file.sync_all()?;
        faults.check(FileOp::Rename, &path)?;
        fs::rename(&tmp, &path)?;
        Ok(file)
    })()
    .map_err(|e| {
        // Best effort: a temporary file left behind is removed at open.
        let _ = fs::remove_file(&tmp);
        CreateError::Unchanged(LogError::io(&path, e))
    })?;
    sync_dir(dir, faults).map_err(|e| CreateError::Unsynced(LogError::io(dir, e)))?;
    let header = SegmentHeader {
        id,
        kind: SegmentKind::Log,
        supersedes: Vec::new(),
        data_start: SEGMENT_HEADER_LEN as u64,
    };
    let segment = Segment::map(
        path,
        header,
        &file,
        SEGMENT_HEADER_LEN as u64,
        capacity,
        false,
        faults.clone(),
    )
    .map_err(CreateError::Unchanged)?;
    Ok((segment, file))
}
