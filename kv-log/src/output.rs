//! Compaction outputs: [`LogReader::create_output`] begins one, and a
//! [`CompactionOutput`] is written to a temporary file and becomes a
//! segment, durable and visible, at [`CompactionOutput::finish`].

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kv_fs::CreateError;

use crate::format::{
    MAX_SUPERSEDES, SegmentHeader, SegmentKind, TEMP_SUFFIX, encode_header, segment_file_name,
};
use crate::set::Shared;
use crate::sync::Arc;
use crate::{Location, LogError, LogReader, MAX_SEGMENT_SIZE, Result, Segment};

impl LogReader {
    /// Begins a compaction output that will supersede the segments
    /// `supersedes`: records appended to it are not readable until
    /// [`CompactionOutput::finish`].
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] creating the file.
    pub fn create_output(&self, supersedes: &[u32]) -> Result<CompactionOutput> {
        if let Some(cause) = self.shared.poison_cause() {
            return Err(LogError::Poisoned { cause });
        }
        let supersedes = self.with_lingering(supersedes);
        let supersedes = &supersedes[..];
        if supersedes.is_empty() || supersedes.len() > MAX_SUPERSEDES {
            return Err(LogError::io(
                &self.shared.dir,
                std::io::Error::other("a compaction output supersedes 1 to 65536 segments"),
            ));
        }
        let id = self.shared.allocate_id()?;
        let tmp = self.shared.dir.join(format!("{id:010}{TEMP_SUFFIX}"));
        let header = encode_header(id, SegmentKind::Compacted, supersedes);
        let faults = &self.shared.faults;
        let file = kv_fs::create_temp(&tmp, faults)
            .and_then(|mut file| {
                kv_fs::write_or_tear(faults, &tmp, &header, |b| file.write_all(b))?;
                Ok(file)
            })
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                LogError::io(&tmp, e)
            })?;
        Ok(CompactionOutput {
            shared: Arc::clone(&self.shared),
            id,
            tmp: Some(tmp),
            file,
            supersedes: supersedes.to_vec(),
            data_start: header.len() as u64,
            written: header.len() as u64,
            buf: Vec::new(),
        })
    }

    /// `inputs`, and every segment that an input supersedes whose file is
    /// still on disk (its unlink at retirement failed, or a crash came
    /// before open removed it): the new output names them too, so that
    /// supersession stays transitive. Without this, compacting an output
    /// would delete the only header naming such a file, and its old
    /// records would come back at the next open.
    ///
    /// An id a header names is always below that header's own id, and new
    /// ids are above every existing one, so a carried id never names a
    /// later segment.
    fn with_lingering(&self, inputs: &[u32]) -> Vec<u32> {
        let mut ids = inputs.to_vec();
        let set = self.shared.set.load();
        for id in inputs {
            let Some(input) = set.get(*id) else { continue };
            for &old in input.supersedes() {
                if old != *id
                    && !ids.contains(&old)
                    && self.shared.dir.join(segment_file_name(old)).exists()
                {
                    log::warn!(
                        "segment {old} is still on disk though segment {id} superseded it; the new output names it too"
                    );
                    ids.push(old);
                }
            }
        }
        ids
    }
}

/// A segment being written by compaction. Dropped without
/// [`finish`](CompactionOutput::finish), it deletes its temporary file.
#[derive(Debug)]
pub struct CompactionOutput {
    shared: Arc<Shared>,
    id: u32,
    tmp: Option<PathBuf>,
    file: File,
    supersedes: Vec<u32>,
    data_start: u64,
    written: u64,
    buf: Vec<u8>,
}

impl CompactionOutput {
    /// The id the output will have.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes of records appended so far.
    pub fn data_len(&self) -> u64 {
        self.written + self.buf.len() as u64 - self.data_start
    }

    /// Appends one encoded record (already checked by the caller, who read
    /// it from a segment) and returns where it will be.
    ///
    /// # Errors
    ///
    /// [`LogError::RecordTooLarge`] if the output would pass 4 GiB;
    /// [`LogError::Io`].
    pub fn append_encoded(&mut self, encoded: &[u8]) -> Result<Location> {
        let offset = self.written + self.buf.len() as u64;
        let end = offset + encoded.len() as u64;
        if end > MAX_SEGMENT_SIZE {
            return Err(LogError::RecordTooLarge {
                len: encoded.len() as u64,
                max: MAX_SEGMENT_SIZE - offset,
            });
        }
        self.buf.extend_from_slice(encoded);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(Location {
            segment: self.id,
            offset: offset as u32,
            len: encoded.len() as u32,
        })
    }

    fn flush(&mut self) -> Result<()> {
        let path = self.tmp.as_deref().unwrap_or(Path::new(""));
        let (file, at) = (&self.file, self.written);
        kv_fs::write_or_tear(&self.shared.faults, path, &self.buf, |b| {
            file.write_all_at(b, at)
        })
        .map_err(|e| LogError::io(path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes the output durable and visible: flush, sync, rename into
    /// place, sync the directory, map it and add it to the segment set.
    /// From here on it supersedes its inputs, even across a crash.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`]; the temporary file is then removed.
    pub fn finish(mut self) -> Result<Arc<Segment>> {
        self.flush()?;
        let path = self.shared.dir.join(segment_file_name(self.id));
        // From here on the temporary file is `rename_into_place`'s to
        // remove if a step before the rename fails, not `Drop`'s.
        let tmp = self.tmp.take().unwrap_or_default();
        match kv_fs::rename_into_place(&self.file, &tmp, &path, &self.shared.faults) {
            Ok(()) => {}
            Err(CreateError::Unchanged(e)) => return Err(LogError::io(&path, e)),
            Err(CreateError::Unsynced(e)) => {
                // After a failed sync the directory's state on disk is
                // unknown, and a later sync that succeeds proves nothing:
                // the log refuses every further change, as after any failed
                // sync. Take the output away again (best effort): an output
                // on disk that is not in the segment set would be invisible
                // to the tombstone rule of later runs. If it survives a
                // crash anyway, it supersedes its inputs as a crash right
                // after the rename would, and holds all their live records.
                let _ = fs::remove_file(&path);
                self.shared.poison(format!(
                    "the directory sync after creating compaction output {} failed: {e}",
                    self.id
                ));
                return Err(LogError::io(&self.shared.dir, e));
            }
        }
        let header = SegmentHeader {
            id: self.id,
            kind: SegmentKind::Compacted,
            supersedes: std::mem::take(&mut self.supersedes),
            data_start: self.data_start,
            records: kv_format::RecordFormat::CURRENT,
        };
        let segment = Arc::new(Segment::map(
            path,
            header,
            &self.file,
            self.written,
            self.written,
            true,
            self.shared.faults.clone(),
        )?);
        self.shared.add(&segment);
        Ok(segment)
    }
}

impl Drop for CompactionOutput {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp
            && let Err(e) = fs::remove_file(tmp)
        {
            log::warn!("could not remove unfinished {}: {e}", tmp.display());
        }
    }
}
