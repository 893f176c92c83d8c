//! A read-only view of a log directory ([`LogView`]), which another
//! process may be writing, compacting and trimming meanwhile: the segments
//! as of one durable position, and records the caller adds in memory.
//!
//! It changes nothing on disk: no file is created, removed, cut or opened
//! for writing. It maps only bytes that no writer truncates or rewrites
//! while they exist: sealed segments and finished compaction outputs whole,
//! and the segment of the durable position up to that position (a writer
//! cuts only what lies after its own last durable position, which is never
//! before an earlier one). Files the writer deletes after they are mapped
//! stay readable through the map.

use std::path::{Path, PathBuf};

use kv_fs::Faults;
use memmap2::MmapOptions;

use crate::format::{SegmentKind, decode_header, encode_header, segment_file_name};
use crate::recover::{Access, check_present, list_segments, superseded_ids};
use crate::set::{SegmentSet, Shared};
use crate::sync::{Arc, ArcSwap, AtomicBool, AtomicU32, Mutex};
use crate::{
    Durable, Location, LogError, LogReader, MAX_SEGMENT_SIZE, Result, SEGMENT_HEADER_LEN, Segment,
};

/// The segments of a log directory as of one durable position, mapped
/// read-only, and segments in memory that the caller fills with records of
/// its own (the records a write-ahead log holds after that position).
///
/// Readers reach both through [`LogView::reader`], as they reach a
/// writer's segments. Nothing is ever appended to a segment on disk, and
/// nothing is retired.
#[derive(Debug)]
pub struct LogView {
    shared: Arc<Shared>,
    /// The memory segment being filled: its header and records so far.
    tail: Vec<u8>,
    tail_id: u32,
    max_len: usize,
}

impl LogView {
    /// Maps the segments of `dir` that hold the log up to `durable.end`:
    /// every compaction output and log segment below it, and segment
    /// `durable.end.segment` up to `durable.end.offset`. Log segments
    /// after it, segments a compaction output supersedes, and temporary
    /// files are left alone. Hint files are read as by a writer, except
    /// for the segment that is cut short (it is scanned).
    ///
    /// # File ownership
    ///
    /// A writer of the same directory may go on while the view is held:
    /// it never truncates or rewrites the bytes mapped here (module docs).
    /// Any other program doing so is outside the contract, as for every
    /// mapped segment (crate docs, "Platform and file ownership").
    ///
    /// # Errors
    ///
    /// [`LogError::Corruption`] when a segment `durable.segments` lists is
    /// missing and superseded by none that exists, or segment
    /// `durable.end.segment` is missing or shorter than `durable.end`;
    /// [`LogError::BadSegmentHeader`]; [`LogError::Io`] (`NotFound` when a
    /// file was deleted between the listing and its opening: a writer
    /// moved on, and a caller retries from a newer position).
    pub fn open(dir: &Path, durable: &Durable) -> Result<LogView> {
        let found = list_segments(dir, Access::ReadOnly)?;
        if let Some(expected) = durable.segments.as_deref() {
            check_present(dir, &found, expected)?;
        }
        let superseded = superseded_ids(&found);
        let end = durable.end;
        let max_id = found.iter().map(|f| f.id).max().unwrap_or(0);
        let any_log = found.iter().any(|f| {
            f.header.kind == SegmentKind::Log && f.id <= end.segment && !superseded.contains(&f.id)
        });
        let mut end_found = false;
        let mut segments = Vec::with_capacity(found.len() + 1);
        for f in found {
            if superseded.contains(&f.id) {
                continue;
            }
            let mut readable = f.len;
            let mut cut = false;
            if f.header.kind == SegmentKind::Log {
                if f.id > end.segment {
                    continue;
                }
                if f.id == end.segment {
                    end_found = true;
                    if f.len < end.offset {
                        return Err(LogError::Corruption {
                            path: f.path,
                            offset: f.len,
                            reason: format!(
                                "the file ends at {}, but the last marker says {} bytes are durable",
                                f.len, end.offset
                            ),
                        });
                    }
                    readable = end.offset;
                    cut = true;
                }
            }
            let segment = Segment::map(
                f.path,
                f.header,
                &f.file,
                readable,
                readable,
                true,
                Faults::default(),
            )?;
            segments.push(Arc::new(if cut { segment.without_hint() } else { segment }));
        }
        if !end_found && (any_log || end.offset != SEGMENT_HEADER_LEN as u64) {
            return Err(LogError::Corruption {
                path: dir.join(segment_file_name(end.segment)),
                offset: 0,
                reason: format!(
                    "the segment is missing, but the last marker says {} bytes of it are durable",
                    end.offset
                ),
            });
        }
        let tail_id = (max_id + 1).max(durable.next_id).max(1);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            set: ArcSwap::from_pointee(SegmentSet { segments }),
            next_id: AtomicU32::new(tail_id),
            faults: Faults::default(),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
        });
        Ok(LogView {
            shared,
            tail: encode_header(tail_id, SegmentKind::Log, &[]),
            tail_id,
            max_len: MAX_SEGMENT_SIZE as usize,
        })
    }

    /// The reader of the view's segments: those mapped at open, and each
    /// memory segment once it is finished ([`LogView::finish`]).
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Appends one encoded record (of [`kv_format::RecordFormat::CURRENT`])
    /// to the view's memory segment, starting a new one when it would pass
    /// the segment size limit, and returns where it lies. It is readable
    /// once [`LogView::finish`] has run.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] if memory for a full segment cannot be mapped;
    /// [`LogError::SegmentIdsExhausted`].
    pub fn append_encoded(&mut self, encoded: &[u8]) -> Result<Location> {
        if self.tail.len() + encoded.len() > self.max_len && self.tail.len() > SEGMENT_HEADER_LEN {
            self.seal_tail()?;
        }
        let offset = self.tail.len();
        self.tail.extend_from_slice(encoded);
        Ok(Location {
            segment: self.tail_id,
            offset: offset as u32,
            len: encoded.len() as u32,
        })
    }

    /// Makes the memory segments readable and returns the reader of the
    /// whole view.
    ///
    /// # Errors
    ///
    /// As [`LogView::append_encoded`].
    pub fn finish(mut self) -> Result<LogReader> {
        if self.tail.len() > SEGMENT_HEADER_LEN {
            self.seal_tail()?;
        }
        Ok(self.reader())
    }

    /// Copies the memory segment being filled into an anonymous map, adds
    /// it to the set, and starts the next one.
    fn seal_tail(&mut self) -> Result<()> {
        let path = self.memory_path();
        let io = |e| LogError::io(&path, e);
        let header = decode_header(&self.tail).map_err(|e| {
            io(std::io::Error::other(format!(
                "the header of a memory segment does not decode: {e:?}"
            )))
        })?;
        let mut map = MmapOptions::new()
            .len(self.tail.len())
            .map_anon()
            .map_err(io)?;
        map.copy_from_slice(&self.tail);
        let map = map.make_read_only().map_err(io)?;
        let len = self.tail.len() as u64;
        let segment = Segment::from_map(path.clone(), header, map, len, true, Faults::default())
            .without_hint();
        self.shared.add(&Arc::new(segment));
        if self.tail_id == u32::MAX {
            return Err(LogError::SegmentIdsExhausted);
        }
        self.tail_id += 1;
        self.tail = encode_header(self.tail_id, SegmentKind::Log, &[]);
        Ok(())
    }

    /// The name a memory segment goes by in messages.
    fn memory_path(&self) -> PathBuf {
        self.shared
            .dir
            .join(format!("(memory segment {})", self.tail_id))
    }
}
