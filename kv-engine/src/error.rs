use std::io;
use std::path::PathBuf;

use kv_log::LogError;
use thiserror::Error;

/// An error from the database.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Keys must be at least one byte long.
    #[error("key is empty; keys must be 1 to 65535 bytes")]
    EmptyKey,
    /// The key is longer than 65,535 bytes.
    #[error("key is {len} bytes; the maximum is {max}")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The largest key allowed.
        max: usize,
    },
    /// The value is longer than the configured maximum.
    #[error("value is {len} bytes; the maximum is {max} (Options::max_value_len)")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// Stored data failed a check: a bad checksum, a record that is not
    /// where the index says, or a damaged file. No wrong data is returned.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file in the database directory is not one this build can read: a
    /// newer format version, or not a kv file at all.
    #[error("{path} cannot be read by this build: {reason}")]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`Db::checkpoint`](crate::Db::checkpoint) was given a target it
    /// must not write to.
    #[error("cannot write a checkpoint to {path}: {reason}; give a new or empty directory")]
    CheckpointTarget {
        /// The target.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Another `Db`, in this process or another, has the directory open.
    #[error("database {path} is locked: another process (or another Db in this one) has it open")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The database was closed, or its writer thread has stopped.
    #[error("the database is closed")]
    Closed,
    /// An earlier write or sync failed, so the database refuses writes
    /// rather than risk acknowledging data that may not be durable. Reads go
    /// on; reopen the database to recover.
    #[error("the database refuses writes after an earlier failure: {reason}; reopen it to recover")]
    Poisoned {
        /// The failure that poisoned it.
        reason: String,
    },
    /// A batch too large to be one write-ahead log record.
    #[error("the batch encodes to {len} bytes; the maximum is {max}; split it")]
    BatchTooLarge {
        /// The batch's encoded size.
        len: usize,
        /// The largest batch allowed.
        max: usize,
    },
    /// An error from the segment log that has no more specific kind.
    #[error(transparent)]
    Log(LogError),
    /// An error from the write-ahead log that has no more specific kind.
    #[error(transparent)]
    Wal(kv_wal::Error),
}

impl From<kv_wal::Error> for Error {
    fn from(err: kv_wal::Error) -> Error {
        use kv_wal::Error as W;
        match err {
            W::Io { path, source } => Error::Io { path, source },
            W::Corruption {
                path,
                offset,
                reason,
            } => Error::Corruption {
                path,
                offset,
                reason,
            },
            W::MissingFile { path } => Error::Corruption {
                path,
                offset: 0,
                reason: "the WAL file is missing, but later ones exist".into(),
            },
            W::NotAWalFile { path, reason } => Error::UnsupportedFile { path, reason },
            W::UnsupportedVersion { path, version } => Error::UnsupportedFile {
                path,
                reason: format!("WAL format version {version} is not supported"),
            },
            W::Poisoned { cause } => Error::Poisoned { reason: cause },
            other => Error::Wal(other),
        }
    }
}

impl From<LogError> for Error {
    fn from(err: LogError) -> Error {
        match err {
            LogError::Io { path, source } => Error::Io { path, source },
            LogError::Corruption {
                path,
                offset,
                reason,
            } => Error::Corruption {
                path,
                offset,
                reason,
            },
            LogError::BadSegmentHeader { path, reason } => Error::UnsupportedFile { path, reason },
            LogError::Format(e) => Error::from(e),
            other => Error::Log(other),
        }
    }
}

impl From<kv_format::FormatError> for Error {
    fn from(err: kv_format::FormatError) -> Error {
        use kv_format::FormatError as F;
        match err {
            F::EmptyKey => Error::EmptyKey,
            F::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            F::ValueTooLarge { len, max } => Error::ValueTooLarge { len, max },
            other => Error::Log(LogError::Format(other)),
        }
    }
}

impl Error {
    /// Whether this error reports damaged data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// A copy of the error to hand to each caller of a failed group; I/O
    /// errors are not `Clone`, so the copy keeps their kind and message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Poisoned { reason } => Error::Poisoned {
                reason: reason.clone(),
            },
            other => Error::Poisoned {
                reason: other.to_string(),
            },
        }
    }
}
