//! [`Error`], the one error type of the engine's API, and how the errors of
//! the lower crates map into it.

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
    /// [`salvage`](crate::salvage) was given a target it must not write to.
    #[error("cannot salvage into {path}: {reason}; give a new or empty directory")]
    SalvageTarget {
        /// The target.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The directory holds no database, and
    /// [`Options::create_if_missing`](crate::Options::create_if_missing) is
    /// off: nothing was created or changed.
    #[error("no kv database at {path}: {reason}")]
    NotADatabase {
        /// The directory.
        path: PathBuf,
        /// What is missing.
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
    /// A write, sync, compaction or checkpoint was asked of a database
    /// opened read-only ([`Db::open_read_only`](crate::Db::open_read_only)).
    #[error(
        "the database is open read-only: it takes no writes; open it without read_only to write"
    )]
    ReadOnly,
    /// The function given to [`Db::update`](crate::Db::update) panicked:
    /// nothing of it was written, and the database goes on.
    #[error("the update function panicked ({reason}); nothing of it was written")]
    UpdatePanicked {
        /// The panic's message.
        reason: String,
    },
    /// A read-only open ([`Db::open_read_only`](crate::Db::open_read_only))
    /// or a [`verify`](crate::verify) beside a writer could not find one
    /// consistent state of the directory: the writer changed the files
    /// under every attempt (`attempts` of them). Nothing was changed; try
    /// again.
    #[error(
        "could not read {path} beside its writer: it changed the files under each of \
         {attempts} attempts (last: {last}); try again"
    )]
    Unsettled {
        /// The database directory.
        path: PathBuf,
        /// How many attempts were made.
        attempts: u32,
        /// What went wrong in the last one.
        last: String,
    },
    /// An earlier sync failed (or a failed write could not be discarded
    /// from the files), so the database refuses writes rather than risk
    /// acknowledging data that may not be durable. Reads go on; reopen the
    /// database to recover.
    #[error("the database refuses writes after an earlier failure: {cause}; reopen it to recover")]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
    /// A batch too large to be one write-ahead log record.
    #[error("the batch encodes to {len} bytes; the maximum is {max}; split it")]
    BatchTooLarge {
        /// The batch's encoded size.
        len: usize,
        /// The largest batch allowed.
        max: usize,
    },
    /// An [`Options`](crate::Options) field is out of range:
    /// [`Db::open_with`](crate::Db::open_with) refuses it before touching
    /// any file.
    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        /// The field of `Options`.
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
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
            W::UnsupportedPayloadVersion { path, version, .. } => Error::UnsupportedFile {
                path,
                reason: format!(
                    "its records are of payload version {version}, which this build does not \
                     read (it reads 0 and {})",
                    kv_format::FORMAT_VERSION
                ),
            },
            W::Poisoned { cause } => Error::Poisoned { cause },
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
            LogError::Poisoned { cause } => Error::Poisoned { cause },
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

    /// A copy of the error to hand to each caller of a failed group: the
    /// same variant with the same fields. I/O errors are not `Clone`, so the
    /// copy keeps their kind and message but not their inner source. Never
    /// `Poisoned` unless it was: whether the database is poisoned is the
    /// writer's to say. kv-log and kv-wal duplicate their own errors.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::EmptyKey => Error::EmptyKey,
            Error::KeyTooLarge { len, max } => Error::KeyTooLarge {
                len: *len,
                max: *max,
            },
            Error::ValueTooLarge { len, max } => Error::ValueTooLarge {
                len: *len,
                max: *max,
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
            Error::UnsupportedFile { path, reason } => Error::UnsupportedFile {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Io { path, source } => Error::Io {
                path: path.clone(),
                source: duplicate_io(source),
            },
            Error::CheckpointTarget { path, reason } => Error::CheckpointTarget {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::SalvageTarget { path, reason } => Error::SalvageTarget {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::NotADatabase { path, reason } => Error::NotADatabase {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::Closed => Error::Closed,
            Error::ReadOnly => Error::ReadOnly,
            Error::UpdatePanicked { reason } => Error::UpdatePanicked {
                reason: reason.clone(),
            },
            Error::Unsettled {
                path,
                attempts,
                last,
            } => Error::Unsettled {
                path: path.clone(),
                attempts: *attempts,
                last: last.clone(),
            },
            Error::Poisoned { cause } => Error::Poisoned {
                cause: cause.clone(),
            },
            Error::BatchTooLarge { len, max } => Error::BatchTooLarge {
                len: *len,
                max: *max,
            },
            Error::InvalidOptions { option, reason } => Error::InvalidOptions {
                option,
                reason: reason.clone(),
            },
            Error::Log(e) => Error::Log(e.duplicate()),
            Error::Wal(e) => Error::Wal(e.duplicate()),
        }
    }
}

fn duplicate_io(source: &io::Error) -> io::Error {
    io::Error::new(source.kind(), source.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every kind a failed group can hand its callers.
    fn every_kind() -> Vec<Error> {
        let path = PathBuf::from("/db/0000000001.seg");
        vec![
            Error::EmptyKey,
            Error::KeyTooLarge {
                len: 70_000,
                max: 65_535,
            },
            Error::ValueTooLarge { len: 10, max: 5 },
            Error::Corruption {
                path: path.clone(),
                offset: 7,
                reason: "bad checksum".into(),
            },
            Error::UnsupportedFile {
                path: path.clone(),
                reason: "version 9".into(),
            },
            Error::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::StorageFull, "no space left"),
            },
            Error::CheckpointTarget {
                path: path.clone(),
                reason: "it exists and is not empty".into(),
            },
            Error::SalvageTarget {
                path: path.clone(),
                reason: "it exists and is not empty".into(),
            },
            Error::NotADatabase {
                path: path.clone(),
                reason: "the directory does not exist".into(),
            },
            Error::Locked { path: path.clone() },
            Error::Closed,
            Error::ReadOnly,
            Error::UpdatePanicked {
                reason: "overflow".into(),
            },
            Error::Unsettled {
                path: path.clone(),
                attempts: 5,
                last: "a WAL file is missing".into(),
            },
            Error::Poisoned {
                cause: "a sync failed".into(),
            },
            Error::BatchTooLarge { len: 300, max: 256 },
            Error::Log(LogError::SegmentIdsExhausted),
            Error::Log(LogError::RecordTooLarge { len: 9, max: 8 }),
            Error::Log(LogError::NoSuchSegment { segment: 4 }),
            Error::Log(LogError::OutOfBounds {
                segment: 4,
                offset: 1,
                len: 2,
                end: 3,
            }),
            Error::Log(LogError::Format(kv_format::FormatError::UnknownFlags(4))),
            Error::InvalidOptions {
                option: "max_group_size",
                reason: "0 is below the minimum 1".into(),
            },
            Error::Log(LogError::NotSealed { segment: 4 }),
            Error::Wal(kv_wal::Error::RecordTooLarge { len: 9, max: 8 }),
            Error::Wal(kv_wal::Error::EmptyRecord),
            Error::Wal(kv_wal::Error::InvalidOptions("max_file_size is 0".into())),
        ]
    }

    #[test]
    fn duplicate_keeps_the_kind_and_the_message() {
        for err in every_kind() {
            let copy = err.duplicate();
            assert_eq!(
                std::mem::discriminant(&copy),
                std::mem::discriminant(&err),
                "{err:?} was duplicated as {copy:?}"
            );
            assert_eq!(copy.to_string(), err.to_string());
            if !matches!(err, Error::Poisoned { .. }) {
                assert!(
                    !matches!(copy, Error::Poisoned { .. }),
                    "{err:?} was duplicated as Poisoned"
                );
            }
        }
    }
}
