//! Opening the log ([`Log::recover`]): listing the segment files and
//! checking their headers, checking that none the caller recorded is
//! missing, deleting superseded segments and orphan hint files, discarding
//! what lies after the caller's durable position, and mapping the rest.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kv_format::RecordFormat;
use kv_fs::{AppendMap, CreateError, Faults, FileOp};

use crate::create::create_log_segment;
use crate::format::{
    HeaderError, SegmentHeader, SegmentKind, TEMP_SUFFIX, claimed_header_len, decode_header,
    hint_file_name, parse_hint_file_name, parse_segment_file_name, segment_file_name,
};
use crate::set::{SegmentSet, Shared};
use crate::sync::{Arc, ArcSwap, AtomicBool, AtomicU32, Mutex};
use crate::{
    Durable, Log, LogError, LogOptions, LogPosition, MAX_SEGMENT_SIZE, Result, SEGMENT_HEADER_LEN,
    Segment,
};

/// A segment file found at open, before it is mapped.
pub(crate) struct Found {
    pub(crate) id: u32,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) len: u64,
    pub(crate) header: SegmentHeader,
}

/// How [`list_segments`] treats the directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The log's owner: leftover temporary files are removed, segment
    /// files opened for writing.
    Owner,
    /// A reader that changes nothing: temporary files are skipped (another
    /// process may be writing them), segment files opened read-only.
    ReadOnly,
}

impl Log {
    /// Opens the log without reading its records (the caller loads them,
    /// for example with [`Segment::load`]).
    ///
    /// Compaction outputs delete the segments they supersede. When `end` is
    /// given (the position a caller with a write-ahead log last made
    /// durable), log segments with a higher id are removed and segment
    /// `end.segment` is cut to `end.offset`: the caller replays its own log
    /// for everything after it. Without `end`, the newest log segment is
    /// scanned for a torn tail, which is cut off.
    ///
    /// # File ownership
    ///
    /// As for [`Log::open`]: the caller keeps other processes from
    /// truncating or rewriting the directory's files while the log is open
    /// (crate docs, "Platform and file ownership").
    ///
    /// # Errors
    ///
    /// [`LogError::BadSegmentHeader`], [`LogError::Io`], and
    /// [`LogError::Corruption`] for a damaged segment header, when segment
    /// `end.segment` is missing or
    /// shorter than `end.offset`, or (without `end`) for a bad record in
    /// the newest log segment that is followed by a valid one.
    pub fn recover(dir: &Path, options: LogOptions, durable: Option<&Durable>) -> Result<Log> {
        let end = durable.map(|d| d.end);
        let mut options = options;
        options.segment_size = options
            .segment_size
            .clamp(SEGMENT_HEADER_LEN as u64 + 1, MAX_SEGMENT_SIZE);
        #[cfg(feature = "fail-points")]
        let faults = options.faults.clone();
        #[cfg(not(feature = "fail-points"))]
        let faults = Faults::default();
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut found = list_segments(dir, Access::Owner)?;
        let max_id = found.iter().map(|f| f.id).max().unwrap_or(0);
        if let Some(expected) = durable.and_then(|d| d.segments.as_deref()) {
            check_present(dir, &found, expected)?;
        }
        let mut changed = remove_superseded(&mut found)?;
        if let Some(end) = end {
            changed |= discard_after(dir, &mut found, end, &faults)?;
        }
        changed |= remove_orphan_hints(dir, &found)?;
        let newest_log = found
            .iter()
            .filter(|f| f.header.kind == SegmentKind::Log)
            .map(|f| f.id)
            .max();
        // The newest log segment is appended to again, unless its records
        // are of an older layout than this build writes (a segment holds
        // records of one layout): then it is sealed as it is, and a new
        // active segment is created below.
        let active_id = newest_log.filter(|&id| {
            found
                .iter()
                .any(|f| f.id == id && f.header.records == RecordFormat::CURRENT)
        });
        if let Some(id) = active_id {
            // The newest log segment is appended to again: a hint file of
            // it (written while it was sealed at the same length, before a
            // crash) would describe a segment that grew.
            changed |= remove_if_present(&dir.join(hint_file_name(id)))?;
        }
        if changed {
            kv_fs::sync_dir(dir, &faults).map_err(|e| LogError::io(dir, e))?;
        }

        let next_id = (max_id + 1).max(durable.map_or(0, |d| d.next_id));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            set: ArcSwap::from_pointee(SegmentSet::default()),
            next_id: AtomicU32::new(next_id),
            faults: faults.clone(),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
        });
        let mut segments = Vec::with_capacity(found.len() + 1);
        let mut active = None;
        for mut f in found {
            let is_newest = Some(f.id) == newest_log;
            let is_active = Some(f.id) == active_id;
            let capacity = if is_active {
                options.segment_size.max(f.len)
            } else {
                f.len
            };
            let segment = Segment::map(
                f.path.clone(),
                f.header,
                &f.file,
                f.len,
                capacity,
                !is_active,
                faults.clone(),
            )?;
            if is_newest && end.is_none() {
                let valid = segment.scan(true, &mut |_, _| {})?;
                if valid < f.len {
                    if segment.is_zero_from(valid) {
                        // Space allocated ahead of the appends (a crash
                        // left it), not a torn write.
                        log::debug!(
                            "cutting {} bytes of allocated space off the end of {}",
                            f.len - valid,
                            segment.path().display()
                        );
                    } else {
                        log::warn!(
                            "cutting a torn write off the end of {}: {} bytes at offset {valid}",
                            segment.path().display(),
                            f.len - valid
                        );
                    }
                    f.file
                        .set_len(valid)
                        .and_then(|()| faults.check(FileOp::Sync, segment.path()))
                        .and_then(|()| f.file.sync_all())
                        .map_err(|e| LogError::io(segment.path(), e))?;
                    segment.publish(valid);
                    f.len = valid;
                }
            }
            let segment = Arc::new(segment);
            if is_active {
                let out = AppendMap::new(f.file, f.path, f.len, capacity)
                    .map_err(|e| LogError::io(segment.path(), e))?;
                active = Some((Arc::clone(&segment), out));
            }
            segments.push(segment);
        }
        shared.set.store(Arc::new(SegmentSet { segments }));
        let (active, out) = match active {
            Some(active) => active,
            None => {
                let id = shared.allocate_id()?;
                let (segment, out) = create_log_segment(dir, id, options.segment_size, &faults)
                    .map_err(CreateError::into_inner)?;
                let segment = Arc::new(segment);
                shared.add(&segment);
                (segment, out)
            }
        };
        Ok(Log {
            options,
            shared,
            active,
            out,
            scratch: Vec::new(),
            poisoned: None,
        })
    }
}

/// The segment files in `dir`, by id, with their headers checked. As the
/// owner, removes leftover temporary files of segments whose creation was
/// cut short.
pub(crate) fn list_segments(dir: &Path, access: Access) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let temporary = name.ends_with(TEMP_SUFFIX) || name.ends_with(".hint.tmp");
        if temporary && access == Access::ReadOnly {
            continue;
        }
        if temporary {
            let path = entry.path();
            log::warn!(
                "removing {}, a file whose creation did not finish",
                path.display()
            );
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            continue;
        }
        let Some(id) = parse_segment_file_name(name) else {
            continue;
        };
        let path = entry.path();
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::Owner)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let (len, header) = read_segment_header(&file, &path, id)?;
        found.push(Found {
            id,
            path,
            file,
            len,
            header,
        });
    }
    found.sort_unstable_by_key(|f| f.id);
    Ok(found)
}

/// Reads and checks the header of segment file `path`, which must be
/// segment `id`; returns the file's length and the header.
pub(crate) fn read_segment_header(
    file: &File,
    path: &Path,
    id: u32,
) -> Result<(u64, SegmentHeader)> {
    let len = file.metadata().map_err(|e| LogError::io(path, e))?.len();
    if len > MAX_SEGMENT_SIZE {
        return Err(LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason: format!("the file is {len} bytes, more than a segment can be"),
        });
    }
    // The fixed header says how long the whole header is; read that much
    // (bounded by the file and by MAX_SUPERSEDES) and check it all.
    let mut fixed = vec![0u8; (len as usize).min(SEGMENT_HEADER_LEN)];
    file.read_exact_at(&mut fixed, 0)
        .map_err(|e| LogError::io(path, e))?;
    let mut head = vec![0u8; claimed_header_len(&fixed).min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| LogError::io(path, e))?;
    let header = decode_header(&head).map_err(|e| match e {
        HeaderError::Damaged(reason) => LogError::Corruption {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("the segment header is damaged: {reason}"),
        },
        HeaderError::Unsupported(reason) => LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason,
        },
    })?;
    if header.id != id {
        return Err(LogError::BadSegmentHeader {
            path: path.to_path_buf(),
            reason: format!("its header names segment {}, not {id}", header.id),
        });
    }
    Ok((len, header))
}

/// The ids that the compaction outputs in `found` supersede.
pub(crate) fn superseded_ids(found: &[Found]) -> HashSet<u32> {
    found
        .iter()
        .flat_map(|f| {
            f.header
                .supersedes
                .iter()
                .copied()
                .filter(move |&s| s != f.id)
        })
        .collect()
}

/// Checks that every segment in `expected` exists, or is superseded by a
/// compaction output that exists (which then holds its live records).
///
/// This is enough because a compaction output takes as inputs only
/// segments that existed at the caller's last record (they are below its
/// position), and is itself taken as an input only after a later record
/// lists it: so a segment of the record that is gone is named by a header
/// that exists.
pub(crate) fn check_present(dir: &Path, found: &[Found], expected: &[u32]) -> Result<()> {
    let present: HashSet<u32> = found.iter().map(|f| f.id).collect();
    let superseded = superseded_ids(found);
    let mut missing = expected
        .iter()
        .filter(|id| !present.contains(id) && !superseded.contains(id));
    if let Some(&id) = missing.next() {
        let others = missing.count();
        return Err(LogError::Corruption {
            path: dir.join(segment_file_name(id)),
            offset: 0,
            reason: format!(
                "the segment is missing{}: the last marker lists it and no compaction output supersedes it",
                if others > 0 {
                    format!(" (and {others} more segments)")
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(())
}

/// Removes `path`; whether it existed.
fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LogError::io(path, e)),
    }
}

/// Deletes every segment that a compaction output supersedes: the output
/// holds all of their live records. Returns whether it deleted any.
fn remove_superseded(found: &mut Vec<Found>) -> Result<bool> {
    let superseded = superseded_ids(found);
    let mut removed = false;
    for f in found.iter().filter(|f| superseded.contains(&f.id)) {
        log::info!(
            "removing {}: a compaction output supersedes it",
            f.path.display()
        );
        fs::remove_file(&f.path).map_err(|e| LogError::io(&f.path, e))?;
        let hint = f.path.with_file_name(hint_file_name(f.id));
        if let Err(e) = fs::remove_file(&hint)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LogError::io(&hint, e));
        }
        removed = true;
    }
    found.retain(|f| !superseded.contains(&f.id));
    Ok(removed)
}

/// Removes hint files whose segment is gone.
fn remove_orphan_hints(dir: &Path, found: &[Found]) -> Result<bool> {
    let ids: HashSet<u32> = found.iter().map(|f| f.id).collect();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_hint_file_name)
            && !ids.contains(&id)
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Removes every log segment after `end` and cuts segment `end.segment` to
/// `end.offset`, syncing what it changed. Compaction outputs are kept: they
/// only ever hold records from before the caller's last record. Returns whether it
/// removed a file.
fn discard_after(
    dir: &Path,
    found: &mut Vec<Found>,
    end: LogPosition,
    faults: &Faults,
) -> Result<bool> {
    let mut removed = false;
    for f in found
        .iter()
        .filter(|f| f.header.kind == SegmentKind::Log && f.id > end.segment)
    {
        log::info!(
            "removing {}: it begins after the last marker",
            f.path.display()
        );
        fs::remove_file(&f.path).map_err(|e| LogError::io(&f.path, e))?;
        let hint = dir.join(hint_file_name(f.id));
        if let Err(e) = fs::remove_file(&hint)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(LogError::io(&hint, e));
        }
        removed = true;
    }
    found.retain(|f| !(f.header.kind == SegmentKind::Log && f.id > end.segment));

    let Some(f) = found
        .iter_mut()
        .find(|f| f.id == end.segment && f.header.kind == SegmentKind::Log)
    else {
        if !found.iter().any(|f| f.header.kind == SegmentKind::Log)
            && end.offset == SEGMENT_HEADER_LEN as u64
        {
            // A record of an empty log, made before its first segment
            // existed on disk: nothing is missing.
            return Ok(removed);
        }
        return Err(LogError::Corruption {
            path: dir.join(segment_file_name(end.segment)),
            offset: 0,
            reason: format!(
                "the segment is missing, but the last marker says {} bytes of it are durable",
                end.offset
            ),
        });
    };
    if f.len < end.offset {
        return Err(LogError::Corruption {
            path: f.path.clone(),
            offset: f.len,
            reason: format!(
                "the file ends at {}, but the last marker says {} bytes are durable",
                f.len, end.offset
            ),
        });
    }
    if f.len > end.offset {
        log::info!(
            "cutting {} to the last marker at offset {}: the {} bytes after it are records \
             replayed from the write-ahead log, or space allocated ahead",
            f.path.display(),
            end.offset,
            f.len - end.offset
        );
        f.file
            .set_len(end.offset)
            .and_then(|()| faults.check(FileOp::Sync, &f.path))
            .and_then(|()| f.file.sync_all())
            .map_err(|e| LogError::io(&f.path, e))?;
        f.len = end.offset;
        // A hint file describes the old length; it is stale now.
        let _ = fs::remove_file(dir.join(hint_file_name(f.id)));
    }
    Ok(removed)
}
