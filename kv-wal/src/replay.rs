//! Reading frames back: a cursor over one file, the torn-tail test, and the
//! [`Replay`] iterator over a whole log.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::io_error;
use crate::format::{
    self, BadFrame, FILE_HEADER_LEN, FRAME_HEADER_LEN, FrameLayout, check_frame_checksum,
    check_frame_header,
};
use crate::tail::{Found, Search, next_valid_frame};
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
    /// How the file's frames are laid out (its header's version).
    pub(crate) layout: FrameLayout,
    /// The owner's encoding of the file's payloads.
    pub(crate) payload_version: u8,
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
    /// `held` is the file already open, if the caller opened it earlier
    /// (so that its removal since does not matter).
    pub(crate) fn open(
        path: PathBuf,
        number: u64,
        start: u64,
        bound: Option<u64>,
        held: Option<File>,
    ) -> Result<FileCursor> {
        let mut file = match held {
            Some(file) => file,
            None => File::open(&path).map_err(io_error(&path))?,
        };
        let len = file.metadata().map_err(io_error(&path))?.len();
        let header = crate::fs::read_file_header(&mut file, &path, number)?;
        let limit = bound.map_or(len, |bound| bound.min(len));
        let offset = start
            .max(FILE_HEADER_LEN as u64)
            .min(limit.max(FILE_HEADER_LEN as u64));
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error(&path))?;
        Ok(FileCursor {
            number,
            path,
            layout: header.layout,
            payload_version: header.payload_version,
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
        let header_len = self.layout.header_len();
        if remaining < header_len as u64 {
            return Err(bad(BadFrame::ShortHeader {
                remaining,
                header_len,
            }));
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        let header = &mut header[..header_len];
        self.reader.read_exact(header).map_err(FrameError::Io)?;
        // The length is checked against the maximum and the bytes left (and,
        // in version 2, against the header check) before anything is
        // allocated for it.
        let fields = check_frame_header(self.layout, header, offset, remaining - header_len as u64)
            .map_err(bad)?;
        buf.clear();
        buf.resize(fields.len as usize, 0);
        self.reader.read_exact(buf).map_err(FrameError::Io)?;
        check_frame_checksum(header, fields, buf).map_err(bad)?;
        self.offset += (header_len + buf.len()) as u64;
        Ok(Some(offset))
    }
}

/// What follows a bad frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte from the bad frame to the end of the file is zero: in the
    /// last file, the space allocated ahead of the frames (the clean end of
    /// the log); in any other file, damage (rotation cuts it off).
    Zeros,
    /// Nothing valid follows, and not only zeros: garbage or a cut-off
    /// frame (followed by zeros or not), as a crash in the middle of a
    /// write leaves behind.
    Torn,
    /// A valid frame starts at `next`: the bad frame is damage in the middle
    /// of the log, not an interrupted write.
    Corrupt { next: u64 },
    /// The search for a valid frame hit its bound (`hashed` bytes, the
    /// budget for the tail) before it could tell: treated as damage.
    Undecided { hashed: u64 },
}

impl Tail {
    /// Why an undecided tail is reported as damage, for an error message.
    pub(crate) fn undecided_reason(hashed: u64, tail_len: u64) -> String {
        format!(
            "cannot tell a torn tail from damage: the {tail_len} bytes after it hold so many \
             plausible frame headers that checking them hashed {hashed} bytes, the bound for \
             this tail, without deciding (a version 1 file has no header check). If the file's \
             end is an interrupted write, cut the file at this offset"
        )
    }
}

/// Classifies the bytes of `path` from the bad frame at `offset` to the end,
/// for a file whose frames are laid out as `layout` says, and returns the
/// classification with the tail's length.
///
/// Every later offset is tried as the start of a frame, but a candidate's
/// header is checked in O(1) before its payload is hashed, and the bytes
/// hashed are bounded by [`crate::tail::hash_budget`] of the tail (see
/// `tail.rs`): the work is linear in the tail, whatever its bytes.
///
/// NOTE: pages written back out of order by the operating system can leave
/// a valid frame after a torn one even when neither was synced. This is
/// reported as corruption, not truncated: refusing to open is recoverable,
/// silently dropping a good frame is not. For the same reason a search that
/// hits its bound is reported as corruption too.
pub(crate) fn classify_tail(path: &Path, offset: u64, layout: FrameLayout) -> Result<(Tail, u64)> {
    let mut file = File::open(path).map_err(io_error(path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io_error(path))?;
    // The length comes from the file system, not from the bytes, and is at
    // most one file: bounded by max_file_size plus one record, plus the
    // space allocated ahead at the end of the last file.
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io_error(path))?;
    let tail_len = tail.len() as u64;
    let Search { found, hashed, .. } = next_valid_frame(&tail, offset, layout);
    let tail = match found {
        Found::Zeros => Tail::Zeros,
        Found::Frame(next) => Tail::Corrupt { next },
        Found::Nothing => Tail::Torn,
        Found::GaveUp => Tail::Undecided { hashed },
    };
    Ok((tail, tail_len))
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
/// by a valid one (or one after which the bounded search for a valid frame
/// could not decide), a file missing from the middle of the log, or the file
/// of the starting position missing (for any start but
/// [`Position::START`]). Zeros from the end of the last frame to the end of
/// the last file are the space allocated ahead of the frames: the clean end
/// of the log, in both modes. An incomplete frame at the end of the last
/// file (followed by zeros or not) ends the iteration under
/// [`RecoveryMode::TolerateCorruptedTail`] (without changing the file; only
/// [`Wal::open`](crate::Wal::open) truncates) and is an error under
/// [`RecoveryMode::AbsoluteConsistency`].
///
/// A replay of a log that another process is writing
/// ([`Wal::replay_live`](crate::Wal::replay_live)) ends at the first bad
/// frame of the last file, whatever follows it.
#[derive(Debug)]
pub struct Replay {
    dir: PathBuf,
    /// The files to read, with each one's handle if it was opened when
    /// the replay was made.
    files: std::vec::IntoIter<(u64, PathBuf, Option<File>)>,
    /// Whether another process may be appending to the log as it is read
    /// (`Wal::replay_live`).
    live: bool,
    /// The highest-numbered file of the log: the only one whose end may be
    /// torn or zeros. `None` when the replay is bounded by an open `Wal`'s
    /// end, which has neither before it.
    last_file: Option<u64>,
    from: Position,
    end: Option<Position>,
    mode: RecoveryMode,
    cursor: Option<FileCursor>,
    previous: Option<u64>,
    done: bool,
    /// The payload version of the file of the last payload returned.
    payload_version: u8,
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
            .map(|(number, path)| (number, path, None))
            .collect();
        Replay {
            dir,
            files: files.into_iter(),
            live: false,
            last_file,
            from,
            end,
            mode,
            cursor: None,
            previous: None,
            done: false,
            payload_version: 0,
        }
    }

    /// A replay of a log that another process may be appending to: every
    /// file from `from.file` on is opened now, so that a file the writer
    /// deletes later (once a checkpoint of its own no longer needs it) is
    /// still read, and the first bad frame in the last of them ends the
    /// replay whatever follows it, since the writer may be copying frames
    /// into it as it is read. A file gone between the listing and its
    /// opening is [`Error::MissingFile`].
    pub(crate) fn live(dir: PathBuf, files: Vec<(u64, PathBuf)>, from: Position) -> Result<Replay> {
        let last_file = files.last().map(|&(number, _)| number);
        let mut held = Vec::new();
        for (number, path) in files.into_iter().filter(|&(number, _)| number >= from.file) {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::MissingFile { path });
                }
                Err(e) => return Err(io_error(&path)(e)),
            };
            held.push((number, path, Some(file)));
        }
        Ok(Replay {
            dir,
            files: held.into_iter(),
            live: true,
            last_file,
            from,
            end: None,
            mode: RecoveryMode::TolerateCorruptedTail,
            cursor: None,
            previous: None,
            done: false,
            payload_version: 0,
        })
    }

    /// The payload version of the file that the payload last returned by
    /// [`Replay::next_into`] came from: the
    /// [`WalOptions::payload_version`](crate::WalOptions::payload_version)
    /// it was written with, 0 for files of builds before the field (and
    /// before the first payload).
    pub fn payload_version(&self) -> u8 {
        self.payload_version
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
                    let Some((number, path, held)) = self.files.next() else {
                        if self.previous.is_none() && self.from != Position::START {
                            // Not even the file the replay starts in exists.
                            return Err(Error::MissingFile {
                                path: self.dir.join(format::file_name(self.from.file)),
                            });
                        }
                        return Ok(None);
                    };
                    let expected = match self.previous {
                        Some(previous) => Some(previous + 1),
                        // A replay from a frame's or a file's position starts in
                        // that file: if it is gone, its records are lost.
                        None if self.from != Position::START => Some(self.from.file),
                        None => None,
                    };
                    if let Some(expected) = expected
                        && number != expected
                    {
                        return Err(Error::MissingFile {
                            path: self.dir.join(format::file_name(expected)),
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
                        .insert(FileCursor::open(path, number, start, bound, held)?)
                }
            };
            match cursor.next_frame(buf) {
                Ok(Some(offset)) => {
                    self.payload_version = cursor.payload_version;
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
                    let layout = cursor.layout;
                    return self.bad_frame(number, path, layout, offset, bad);
                }
            }
        }
    }

    /// Decides whether a bad frame ends the log (a torn tail) or is an error.
    fn bad_frame(
        &self,
        number: u64,
        path: PathBuf,
        layout: FrameLayout,
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
        if self.live {
            // Frames the writer is copying in as they are read: the view
            // ends before them.
            return Ok(None);
        }
        tail_outcome(&path, offset, bad, layout, self.mode).map(|_| None)
    }
}

/// How the last file of a log ends, at its first bad frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Zeros to the end of the file: the space allocated ahead of the
    /// frames. The log ends cleanly; nothing was lost.
    Allocated,
    /// A torn write, which the mode tolerates: the log ends before it.
    Torn,
}

/// What a bad frame in the last file means under `mode`: the end of the log
/// (zeros to the end of the file in every mode, a torn tail if the mode
/// tolerates it), or an error.
pub(crate) fn tail_outcome(
    path: &Path,
    offset: u64,
    bad: BadFrame,
    layout: FrameLayout,
    mode: RecoveryMode,
) -> Result<End> {
    let (tail, tail_len) = classify_tail(path, offset, layout)?;
    match tail {
        Tail::Zeros => Ok(End::Allocated),
        Tail::Corrupt { next } => Err(Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: format!("{bad}, and a valid frame follows at offset {next}"),
        }),
        Tail::Undecided { hashed } => Err(Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: format!("{bad}, and {}", Tail::undecided_reason(hashed, tail_len)),
        }),
        Tail::Torn => match mode {
            RecoveryMode::TolerateCorruptedTail => Ok(End::Torn),
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
