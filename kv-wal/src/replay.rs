//! Reading frames back: a cursor over one file, the torn-tail test, and the
//! [`Replay`] iterator over a whole log.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::io_error;
use crate::format::{
    self, BadFrame, FILE_HEADER_LEN, FRAME_HEADER_LEN, check_frame_len, frame_checksum,
    frame_len_bytes, parse_frame_header,
};
use crate::{Error, Position, RecoveryMode, Result};

const READ_BUFFER_LEN: usize = 64 << 10;

/// A frame could not be read.
pub(crate) enum FrameError {
    /// The bytes at `offset` are not a valid frame.
    Bad { offset: u64, bad: BadFrame },
    /// The file could not be read.
    Io(io::Error),
}

/// Reads the frames of one file in order, up to a limit.
pub(crate) struct FileCursor {
    pub(crate) number: u64,
    pub(crate) path: PathBuf,
    reader: BufReader<File>,
    /// The offset of the next frame.
    pub(crate) offset: u64,
    /// Frames are read up to this offset: the file's length, or a lower
    /// bound.
    limit: u64,
}

impl FileCursor {
    /// Opens WAL file `number`, checks its header, and positions the cursor
    /// at `start` (or after the header, if `start` is inside it). Frames are
    /// read up to `bound` or the end of the file, whichever is first.
    pub(crate) fn open(
        path: PathBuf,
        number: u64,
        start: u64,
        bound: Option<u64>,
    ) -> Result<FileCursor> {
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        crate::fs::read_file_header(&mut file, &path, number)?;
        let limit = bound.map_or(len, |bound| bound.min(len));
        let offset = start
            .max(FILE_HEADER_LEN as u64)
            .min(limit.max(FILE_HEADER_LEN as u64));
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error(&path))?;
        Ok(FileCursor {
            number,
            path,
            reader: BufReader::with_capacity(READ_BUFFER_LEN, file),
            offset,
            limit,
        })
    }

    /// Reads the next frame's payload into `buf` and returns the frame's
    /// offset, or `None` at the limit.
    pub(crate) fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, FrameError> {
        let offset = self.offset;
        let remaining = self.limit.saturating_sub(offset);
        if remaining == 0 {
            return Ok(None);
        }
        let bad = |bad| FrameError::Bad { offset, bad };
        if remaining < FRAME_HEADER_LEN as u64 {
            return Err(bad(BadFrame::ShortHeader { remaining }));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        self.reader
            .read_exact(&mut header)
            .map_err(FrameError::Io)?;
        let (stored, len) = parse_frame_header(&header);
        // The length is checked against the maximum and the bytes left
        // before anything is allocated for it.
        check_frame_len(len, remaining - FRAME_HEADER_LEN as u64).map_err(bad)?;
        buf.clear();
        buf.resize(len as usize, 0);
        self.reader.read_exact(buf).map_err(FrameError::Io)?;
        let computed = frame_checksum(frame_len_bytes(&header), buf);
        if computed != stored {
            return Err(bad(BadFrame::Checksum { stored, computed }));
        }
        self.offset += (FRAME_HEADER_LEN + buf.len()) as u64;
        Ok(Some(offset))
    }
}

/// What follows a bad frame in the last file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing valid follows: zeros, garbage or a cut-off frame, as a crash
    /// in the middle of a write leaves behind.
    Torn,
    /// A valid frame starts at `next`: the bad frame is damage in the middle
    /// of the log, not an interrupted write.
    Corrupt { next: u64 },
}

/// Classifies the bytes of `path` from the bad frame at `offset` to the end.
///
/// Every later offset is tried as the start of a frame, so the cost grows
/// with the square of the tail's length in the worst case; a tail is
/// usually at most the data of the last unsynced writes.
///
/// NOTE: pages written back out of order by the operating system can leave
/// a valid frame after a torn one even when neither was synced. This is
/// reported as corruption, not truncated: refusing to open is recoverable,
/// silently dropping a good frame is not.
pub(crate) fn classify_tail(path: &Path, offset: u64) -> Result<Tail> {
    let mut file = File::open(path).map_err(io_error(path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
    // The length comes from the file system, not from the bytes, and is at
    // most one file: bounded by max_file_size plus one record.
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io_error(path))?;
    if tail.iter().all(|&b| b == 0) {
        return Ok(Tail::Torn);
    }
    for start in 1..tail.len() {
        if format::decode_frame(&tail[start..]).is_ok() {
            return Ok(Tail::Corrupt {
                next: offset + start as u64,
            });
        }
    }
    Ok(Tail::Torn)
}

/// An iterator over the records of a log, in order, from a position.
///
/// Created by [`Wal::replay`](crate::Wal::replay) (a log on disk) or
/// [`Wal::read_from`](crate::Wal::read_from) (the frames an open `Wal` has
/// written). Each item is a record's [`Position`] and payload;
/// [`Replay::next_into`] reads into a caller's buffer instead of allocating
/// one per record.
///
/// After the first error the iterator ends. Damage is always reported,
/// never skipped: a bad frame in any file but the last, a bad frame followed
/// by a valid one, or a file missing from the middle of the log. An
/// incomplete frame at the end of the last file ends the iteration under
/// [`RecoveryMode::TolerateCorruptedTail`] (without changing the file; only
/// [`Wal::open`](crate::Wal::open) truncates) and is an error under
/// [`RecoveryMode::AbsoluteConsistency`].
#[derive(Debug)]
pub struct Replay {
    dir: PathBuf,
    files: std::vec::IntoIter<(u64, PathBuf)>,
    /// The highest-numbered file of the log: the only one whose end may be
    /// torn. `None` when the replay is bounded by an open `Wal`'s end, which
    /// has no torn tail before it.
    last_file: Option<u64>,
    from: Position,
    end: Option<Position>,
    mode: RecoveryMode,
    cursor: Option<FileCursor>,
    previous: Option<u64>,
    done: bool,
}

impl std::fmt::Debug for FileCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCursor")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// A replay of `files` (sorted by number) from `from`, up to `end` if
    /// given.
    pub(crate) fn new(
        dir: PathBuf,
        files: Vec<(u64, PathBuf)>,
        from: Position,
        end: Option<Position>,
        mode: RecoveryMode,
    ) -> Replay {
        let last_file = match end {
            Some(_) => None,
            None => files.last().map(|&(number, _)| number),
        };
        let files: Vec<_> = files
            .into_iter()
            .filter(|&(number, _)| number >= from.file && end.is_none_or(|end| number <= end.file))
            .collect();
        Replay {
            dir,
            files: files.into_iter(),
            last_file,
            from,
            end,
            mode,
            cursor: None,
            previous: None,
            done: false,
        }
    }

    /// Reads the next record's payload into `buf`, replacing its contents,
    /// and returns the record's position; `None` at the end of the log.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`], [`Error::MissingFile`], [`Error::NotAWalFile`],
    /// [`Error::UnsupportedVersion`] or [`Error::Io`]. The iteration ends
    /// after an error.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Option<Result<Position>> {
        if self.done {
            return None;
        }
        match self.step(buf) {
            Ok(Some(position)) => Some(Ok(position)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }

    fn step(&mut self, buf: &mut Vec<u8>) -> Result<Option<Position>> {
        loop {
            let cursor = match &mut self.cursor {
                Some(cursor) => cursor,
                None => {
                    let Some((number, path)) = self.files.next() else {
                        return Ok(None);
                    };
                    if let Some(previous) = self.previous
                        && number != previous + 1
                    {
                        return Err(Error::MissingFile {
                            path: self.dir.join(format::file_name(previous + 1)),
                        });
                    }
                    self.previous = Some(number);
                    let start = if number == self.from.file {
                        self.from.offset
                    } else {
                        0
                    };
                    let bound = self
                        .end
                        .filter(|end| end.file == number)
                        .map(|end| end.offset);
                    self.cursor
                        .insert(FileCursor::open(path, number, start, bound)?)
                }
            };
            match cursor.next_frame(buf) {
                Ok(Some(offset)) => {
                    return Ok(Some(Position {
                        file: cursor.number,
                        offset,
                    }));
                }
                Ok(None) => self.cursor = None,
                Err(FrameError::Io(source)) => {
                    return Err(Error::Io {
                        path: cursor.path.clone(),
                        source,
                    });
                }
                Err(FrameError::Bad { offset, bad }) => {
                    let number = cursor.number;
                    let path = cursor.path.clone();
                    return self.bad_frame(number, path, offset, bad);
                }
            }
        }
    }

    /// Decides whether a bad frame ends the log (a torn tail) or is an error.
    fn bad_frame(
        &self,
        number: u64,
        path: PathBuf,
        offset: u64,
        bad: BadFrame,
    ) -> Result<Option<Position>> {
        if self.last_file != Some(number) {
            let reason = if self.end.is_some() {
                format!("{bad}, before the end this WAL has written")
            } else {
                format!("{bad}; only the last WAL file may end with an incomplete frame")
            };
            return Err(Error::Corruption {
                path,
                offset,
                reason,
            });
        }
        tail_outcome(&path, offset, bad, self.mode).map(|_| None)
    }
}

/// What a bad frame in the last file means under `mode`: `Ok(())` for a torn
/// tail the mode tolerates, an error otherwise.
pub(crate) fn tail_outcome(
    path: &Path,
    offset: u64,
    bad: BadFrame,
    mode: RecoveryMode,
) -> Result<()> {
    match classify_tail(path, offset)? {
        Tail::Corrupt { next } => Err(Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: format!("{bad}, and a valid frame follows at offset {next}"),
        }),
        Tail::Torn => match mode {
            RecoveryMode::TolerateCorruptedTail => Ok(()),
            RecoveryMode::AbsoluteConsistency => Err(Error::Corruption {
                path: path.to_path_buf(),
                offset,
                reason: format!(
                    "{bad} at the end of the log (an interrupted write); \
                     RecoveryMode::AbsoluteConsistency does not drop it"
                ),
            }),
        },
    }
}

impl Iterator for Replay {
    type Item = Result<(Position, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut payload = Vec::new();
        self.next_into(&mut payload)
            .map(|result| result.map(|position| (position, payload)))
    }
}

impl std::iter::FusedIterator for Replay {}
