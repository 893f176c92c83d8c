//! [`Error`], the one error type of the write-ahead log.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a WAL operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a WAL file or directory failed. A failed sync
    /// also poisons the [`Wal`](crate::Wal) (later writes return
    /// [`Error::Poisoned`]); a failed write is discarded and does not.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A WAL file holds bytes that are not what was written: a damaged frame
    /// with valid frames after it, a damaged frame in a file that is not the
    /// last, or (under [`RecoveryMode::AbsoluteConsistency`]) an incomplete
    /// frame at the end of the log.
    ///
    /// [`RecoveryMode::AbsoluteConsistency`]: crate::RecoveryMode::AbsoluteConsistency
    #[error(
        "WAL file {path} is corrupt at byte offset {offset}: {reason}. \
         Restore the file from a backup, or move it aside to give up its records"
    )]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the first bad frame, or 0 for a bad header.
        offset: u64,
        /// What is wrong with the bytes there.
        reason: String,
    },
    /// A file named like a WAL file does not start with the WAL magic.
    #[error(
        "{path} is not a kv WAL file ({reason}); move it out of the WAL directory \
         or point the WAL at another directory"
    )]
    NotAWalFile {
        /// The foreign file.
        path: PathBuf,
        /// What was found instead of a WAL header.
        reason: String,
    },
    /// A WAL file was written by a format version this build does not read.
    #[error(
        "WAL file {path} has format version {version}, but this build reads versions \
         {OLDEST} to {FORMAT_VERSION}; open it with the build that wrote it",
        OLDEST = crate::OLDEST_FORMAT_VERSION,
        FORMAT_VERSION = crate::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in its header.
        version: u8,
    },
    /// A WAL file holds payloads of a later payload version than the
    /// owner's ([`WalOptions::payload_version`](crate::WalOptions::payload_version)):
    /// a newer build of the owner wrote it. [`Wal::open`](crate::Wal::open)
    /// refuses it without changing any file.
    #[error(
        "WAL file {path} holds payloads of payload version {version}, later than the \
         {supported} this build writes; open it with the build that wrote it"
    )]
    UnsupportedPayloadVersion {
        /// The file.
        path: PathBuf,
        /// The payload version in its header.
        version: u8,
        /// The payload version the log was opened with.
        supported: u8,
    },
    /// A WAL file the log needs is missing: a file in the middle of the log
    /// (file numbers must be consecutive from the replay position on), or
    /// the file a replay was asked to start in.
    #[error(
        "WAL file {path} is missing, but the log needs it; the records it held are lost. \
         Restore it from a backup"
    )]
    MissingFile {
        /// The path the missing file should have.
        path: PathBuf,
    },
    /// An earlier sync failed (or a failed write could not be discarded),
    /// so the WAL refuses to write or sync again: retrying could acknowledge
    /// records the operating system has already dropped ("fsyncgate").
    #[error(
        "the WAL refuses writes because an earlier sync or write failed ({cause}); \
         records not yet acknowledged may be lost. Reopen the WAL to recover what is durable"
    )]
    Poisoned {
        /// The failure that poisoned the WAL.
        cause: String,
    },
    /// A payload longer than the configured maximum.
    #[error("record is {len} bytes, but the maximum is {max}; split it or raise max_record_len")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload allowed.
        max: u32,
    },
    /// An empty payload; every record carries at least one byte.
    #[error("record is empty; a WAL record must carry at least one byte")]
    EmptyRecord,
    /// The [`WalOptions`](crate::WalOptions) are out of range.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

impl Error {
    /// The same error again, for every caller of a group commit that shared
    /// one failure. `io::Error` is not `Clone`, so an I/O error keeps its
    /// kind and message but not its inner source.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Corruption {
                path,
                offset,
                reason,
            } => Error::Corruption {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::NotAWalFile { path, reason } => Error::NotAWalFile {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::UnsupportedVersion { path, version } => Error::UnsupportedVersion {
                path: path.clone(),
                version: *version,
            },
            Error::UnsupportedPayloadVersion {
                path,
                version,
                supported,
            } => Error::UnsupportedPayloadVersion {
                path: path.clone(),
                version: *version,
                supported: *supported,
            },
            Error::MissingFile { path } => Error::MissingFile { path: path.clone() },
            Error::Poisoned { cause } => Error::Poisoned {
                cause: cause.clone(),
            },
            Error::RecordTooLarge { len, max } => Error::RecordTooLarge {
                len: *len,
                max: *max,
            },
            Error::EmptyRecord => Error::EmptyRecord,
            Error::InvalidOptions(reason) => Error::InvalidOptions(reason.clone()),
        }
    }

    /// Whether this is an [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// Whether this is an [`Error::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        matches!(self, Error::Poisoned { .. })
    }
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
