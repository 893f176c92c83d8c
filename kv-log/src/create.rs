//! Creating a new, empty log segment atomically (`create_log_segment`).

use std::io::Write;
use std::path::Path;

use kv_fs::{AppendMap, CreateError, Faults};

use crate::format::{SegmentHeader, SegmentKind, TEMP_SUFFIX, encode_header, segment_file_name};
use crate::{LogError, SEGMENT_HEADER_LEN, Segment};

/// Creates log segment `id` atomically: header to a temporary file, sync,
/// rename, directory sync (`kv_fs::create_atomically`). A crash leaves
/// either no segment or a whole one. Returns it with the writer's
/// [`AppendMap`] of the file, mapped for `capacity` bytes.
pub(crate) fn create_log_segment(
    dir: &Path,
    id: u32,
    capacity: u64,
    faults: &Faults,
) -> Result<(Segment, AppendMap), CreateError<LogError>> {
    let path = dir.join(segment_file_name(id));
    let tmp = dir.join(format!("{id:010}{TEMP_SUFFIX}"));
    let header = encode_header(id, SegmentKind::Log, &[]);
    // A temporary file left behind is removed at open.
    let file = kv_fs::create_atomically(&tmp, &path, faults, |file| {
        kv_fs::write_or_tear(faults, &tmp, &header, |b| file.write_all(b))
    })
    .map_err(|e| match e {
        CreateError::Unchanged(e) => CreateError::Unchanged(LogError::io(&path, e)),
        CreateError::Unsynced(e) => CreateError::Unsynced(LogError::io(dir, e)),
    })?;
    let header = SegmentHeader {
        id,
        kind: SegmentKind::Log,
        supersedes: Vec::new(),
        data_start: SEGMENT_HEADER_LEN as u64,
        records: kv_format::RecordFormat::CURRENT,
    };
    let segment = Segment::map(
        path.clone(),
        header,
        &file,
        SEGMENT_HEADER_LEN as u64,
        capacity,
        false,
        faults.clone(),
    )
    .map_err(CreateError::Unchanged)?;
    let out = AppendMap::new(file, path.clone(), SEGMENT_HEADER_LEN as u64, capacity)
        .map_err(|e| CreateError::Unchanged(LogError::io(&path, e)))?;
    Ok((segment, out))
}
