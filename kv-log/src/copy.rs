//! The checkpoint copy of a log ([`copy_segments`]): sealed segments and
//! their hint files hard-linked (or copied) into another directory, plus a
//! fresh segment to append to.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use kv_fs::CreateError;

use crate::create::create_log_segment;
use crate::format::{hint_file_name, segment_file_name};
use crate::sync::Arc;
use crate::{LogError, LogPosition, Result, SEGMENT_HEADER_LEN, Segment};
// Named only by doc links.
#[cfg(doc)]
use crate::Log;

/// Puts copies of the sealed `segments` and their hint files into the
/// directory `to` (which must exist), for a checkpoint of the log: each
/// file is hard-linked, or copied where a link cannot be made (another file
/// system). Then creates an empty log segment numbered after all of them,
/// so that a [`Log`] opened in `to` appends there and never to a linked
/// file, and syncs everything. Returns the position of that new segment's
/// start: the end of the copied log.
///
/// Sealed segments and hint files are never changed in place (a hint file
/// is written once, by a rename), which is what makes sharing them by link
/// safe. A segment retired meanwhile has lost its file but stays readable
/// while the caller holds it: it is copied from the map; a hint file that
/// disappears meanwhile is skipped (loading scans instead).
///
/// # Errors
///
/// [`LogError::Io`] for a file that cannot be linked, copied or synced.
pub fn copy_segments(segments: &[Arc<Segment>], to: &Path) -> Result<LogPosition> {
    let mut max_id = 0;
    for segment in segments {
        max_id = max_id.max(segment.id());
        let target = to.join(segment_file_name(segment.id()));
        if link_or_copy(segment.path(), &target)?.is_none() {
            // Retired meanwhile: its file is unlinked, but the held map
            // still has every byte.
            write_synced(&target, segment.bytes()).map_err(|e| LogError::io(&target, e))?;
        }
        let hint = segment.path().with_file_name(hint_file_name(segment.id()));
        link_or_copy(&hint, &to.join(hint_file_name(segment.id())))?;
    }
    let id = max_id
        .checked_add(1)
        .ok_or_else(|| LogError::io(to, std::io::Error::other("segment ids are exhausted")))?;
    // Creating the segment syncs the directory, which makes the links
    // durable too.
    // The segments share their log's fault seam.
    let faults = segments
        .first()
        .map(|s| s.faults().clone())
        .unwrap_or_default();
    create_log_segment(to, id, SEGMENT_HEADER_LEN as u64 + 1, &faults)
        .map_err(CreateError::into_inner)?;
    Ok(LogPosition {
        segment: id,
        offset: SEGMENT_HEADER_LEN as u64,
    })
}

/// Creates `path` holding `bytes`, synced.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Hard-links `from` to `to`, or copies and syncs it if the link fails.
/// `Ok(None)` if `from` does not exist.
fn link_or_copy(from: &Path, to: &Path) -> Result<Option<()>> {
    match fs::hard_link(from, to) {
        Ok(()) => return Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => return Ok(None),
        Err(e) => log::debug!(
            "cannot link {} to {} ({e}); copying it",
            from.display(),
            to.display()
        ),
    }
    let copied = (|| {
        fs::copy(from, to)?;
        File::open(to)?.sync_all()
    })();
    match copied {
        Ok(()) => Ok(Some(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
            let _ = fs::remove_file(to);
            Ok(None)
        }
        Err(e) => Err(LogError::io(to, e)),
    }
}
