//! [`LogError`], the one error type of the segment log.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// An error from the segment log.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// An operating-system call on a segment file or the directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment holds bytes that are not a valid record where one must be.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the bad record in the file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A segment file's header is not one this build writes: another magic
    /// number, or a later format version. (A header that fails its
    /// checksum is [`LogError::Corruption`] at offset 0.)
    #[error("{path} is not a kv segment file this build can read: {reason}")]
    BadSegmentHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with its header.
        reason: String,
    },
    /// A record does not fit in a segment at all.
    #[error("record of {len} bytes cannot be stored: segments hold at most {max} bytes")]
    RecordTooLarge {
        /// The record's encoded length.
        len: u64,
        /// The largest record a segment can hold.
        max: u64,
    },
    /// The record could not be encoded.
    #[error(transparent)]
    Format(#[from] kv_format::FormatError),
    /// A read asked for a segment that does not exist (any more).
    #[error("segment {segment} does not exist")]
    NoSuchSegment {
        /// The segment id asked for.
        segment: u32,
    },
    /// A read asked for bytes beyond what the segment holds.
    #[error(
        "read of {len} bytes at offset {offset} is past the end of segment {segment} ({end} bytes)"
    )]
    OutOfBounds {
        /// The segment id.
        segment: u32,
        /// Requested offset.
        offset: u32,
        /// Requested length.
        len: u32,
        /// Readable length of the segment.
        end: u64,
    },
    /// An earlier sync failed (or a failed write could not be cut off), so
    /// the log refuses writes: retrying could report data durable that the
    /// operating system has dropped.
    #[error("the segment log refuses writes after an earlier failure: {cause}")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
    /// The segment id space is exhausted.
    #[error("segment ids are exhausted")]
    SegmentIdsExhausted,
    /// A hint file was asked for a segment that can still grow.
    #[error("segment {segment} is not sealed, so it cannot have a hint file yet")]
    NotSealed {
        /// The segment.
        segment: u32,
    },
}

impl LogError {
    /// The same error again, for every caller that shared one failure.
    /// `io::Error` is not `Clone`, so an I/O error keeps its kind and
    /// message but not its inner source.
    pub fn duplicate(&self) -> LogError {
        match self {
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            LogError::Corruption {
                path,
                offset,
                reason,
            } => LogError::Corruption {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            LogError::BadSegmentHeader { path, reason } => LogError::BadSegmentHeader {
                path: path.clone(),
                reason: reason.clone(),
            },
            LogError::RecordTooLarge { len, max } => LogError::RecordTooLarge {
                len: *len,
                max: *max,
            },
            LogError::Format(f) => LogError::Format(f.clone()),
            LogError::NoSuchSegment { segment } => LogError::NoSuchSegment { segment: *segment },
            LogError::OutOfBounds {
                segment,
                offset,
                len,
                end,
            } => LogError::OutOfBounds {
                segment: *segment,
                offset: *offset,
                len: *len,
                end: *end,
            },
            LogError::Poisoned { cause } => LogError::Poisoned {
                cause: cause.clone(),
            },
            LogError::SegmentIdsExhausted => LogError::SegmentIdsExhausted,
            LogError::NotSealed { segment } => LogError::NotSealed { segment: *segment },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
