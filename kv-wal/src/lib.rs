//! A write-ahead log: an append-only sequence of checksummed records in a
//! directory of numbered files, with group commit, sync policies, and
//! replay that tells a torn tail from corruption.
//!
//! Payloads are opaque bytes. The kv engine puts one encoded put, delete or
//! atomic batch in each, so a record is its unit of atomicity: replay yields
//! a record whole or not at all.
//!
//! # What this crate is not
//!
//! It knows nothing of keys, values or the engine's record format, spawns no
//! threads, and keeps no index: it appends, syncs, replays and deletes old
//! files. It depends on no other kv crate except `kv-fs` (atomic file
//! creation, directory syncs, appends through a mapping of space allocated
//! ahead, the fault seam); `kv-engine` depends on it,
//! never the reverse. It does not lock its directory: one process owns a log.
//!
//! # Format
//!
//! Files are named `NNNNNNNNNNNNNNNNNNNN.wal`, the file number in 20 digits.
//! Each starts with a 32-byte header, then holds frames back to back. All
//! integers are little-endian; checksums are xxh3-64. `docs/format.md` in the
//! repository draws the layouts.
//!
//! ```text
//! file header: { magic [u8; 8] = "KVWAL\0\r\n" | version u8 = 2 | reserved [u8; 7]
//!              | file_number u64 | checksum u64 }   checksum over the 24 bytes before it
//! frame:       { checksum u64 | len u32 | header_check u32 | payload [len] }
//!              header_check: low 32 bits of xxh3-64 (seed: file number) of len and the
//!              frame's offset; checksum over len, header_check and payload
//! ```
//!
//! Files of version 1 (12-byte frames `{ checksum u64 | len u32 | payload }`,
//! no header check), written by older builds, are still read; a log whose
//! last file is version 1 goes on in a new version 2 file when opened.
//!
//! A [`Position`] (file number, byte offset) names a frame.
//!
//! # Limits
//!
//! - A payload is 1 to [`MAX_RECORD_LEN`] (256 MiB) bytes;
//!   [`WalOptions::max_record_len`] lowers that for writing.
//! - A file is closed when the next frame would take it past
//!   [`WalOptions::max_file_size`] (64 MiB by default); a larger record gets
//!   a file of its own.
//!
//! # Durability
//!
//! [`Wal::append`] buffers; [`Wal::commit`] copies the buffer into the
//! active file, which is mapped (`kv_fs::AppendMap`: no system call, except
//! one `fallocate` per mebibyte appended and one `pwrite` for a commit of
//! 16 KiB or more or one synced at once), syncs (`fdatasync`) if the
//! [`SyncPolicy`] says so, and then the records are acknowledged. Under
//! every policy an acknowledged record has been handed to the operating
//! system (it is in the page cache), so a crash of the process loses
//! nothing acknowledged. Against a crash of the machine:
//!
//! - [`SyncPolicy::Always`]: nothing acknowledged is lost; every commit
//!   syncs, and group commit shares one sync among many records.
//! - [`SyncPolicy::Interval`]: nothing acknowledged stays unsynced longer
//!   than the interval, provided the owner calls [`Wal::sync_if_due`] at
//!   [`Wal::sync_deadline`] (this crate has no timer thread).
//! - [`SyncPolicy::Never`]: the operating system writes back when it
//!   chooses.
//!
//! The space ahead of the frames is allocated in steps of a mebibyte
//! (`kv_fs::ALLOCATION_CHUNK`), so that a full disk is an error of the
//! write, never a `SIGBUS`, and a sync does not have to grow the file; the
//! last file may then end in zeros, up to a mebibyte past its last frame.
//! Rotating to a new file always cuts those zeros off the old one and syncs
//! it, and so does [`Wal::close`], so only the last file can end with a
//! torn write or with zeros. Creating, renaming and deleting files syncs
//! the directory. A failed sync poisons the [`Wal`]: it is never retried (a
//! retried `fsync` can report success for pages the kernel has already
//! dropped), and every later write returns [`Error::Poisoned`]. A failed
//! write (`ENOSPC`, say) is discarded instead: the file is cut back to
//! the end of the last frame written before it and synced, the records of
//! that write are dropped unacknowledged, and later writes go on once the
//! cause clears. If discarding it fails, the `Wal` is poisoned.
//!
//! # Recovery
//!
//! [`Wal::open`] reads the last file to its end. Zeros from the end of its
//! last frame to the end of the file are the space allocated ahead (a crash,
//! or a `Wal` dropped without [`Wal::close`], leaves them): the clean end of
//! the log in both modes, cut off without a warning and not reported as a
//! torn tail. A bad frame that nothing valid follows and that is not only
//! zeros (garbage, a frame cut off, with zeros after it or not) is the torn
//! tail of an interrupted write: under
//! [`RecoveryMode::TolerateCorruptedTail`] (the default) the file is
//! truncated there and synced before the next append; under
//! [`RecoveryMode::AbsoluteConsistency`] it is an error. A bad frame
//! with a valid frame after it, or a bad frame in any file but the last, is
//! [`Error::Corruption`] in both modes, naming the file and offset: damage
//! is reported, never skipped. The search for a valid frame after a bad one
//! costs time linear in the bytes after it: each candidate offset is
//! rejected by its header in O(1) (in version 2 by the position-salted
//! header check), and at most `2 × tail + 1 MiB` bytes are hashed; if that
//! bound is reached before the search decides, the bad frame is
//! [`Error::Corruption`] too (only crafted bytes can do that in a version 2
//! file; in a version 1 file a tail dense with plausible lengths can). [`Wal::replay`] iterates the records from a
//! position with the same rules. [`check`] reads a whole log without
//! changing it and reports every damaged place, not only the first.
//!
//! # Example
//!
//! ```
//! use kv_wal::{Position, RecoveryMode, SyncPolicy, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let options = WalOptions::default().with_sync(SyncPolicy::Always);
//!
//! let mut wal = Wal::open(dir.path(), options.clone())?;
//! let first = wal.append(b"put apple red")?;
//! wal.append(b"delete pear")?;
//! wal.commit()?; // one copy into the mapped file, one fdatasync: both are durable
//! drop(wal);
//!
//! let records = Wal::replay(dir.path(), Position::START, RecoveryMode::default())?
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(records.len(), 2);
//! assert_eq!(records[0], (first, b"put apple red".to_vec()));
//! assert_eq!(records[1].1, b"delete pear");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod check;
mod error;
mod format;
mod fs;
mod options;
mod replay;
mod shared;
mod tail;
mod wal;

pub use check::{Damage, WalCheck, check};
pub use error::Error;
pub use format::{
    FILE_HEADER_LEN, FILE_SUFFIX, FIRST_FILE_NUMBER, FORMAT_VERSION, FRAME_HEADER_LEN, MAGIC,
    MAX_RECORD_LEN, OLDEST_FORMAT_VERSION, TEMP_SUFFIX, file_name, parse_file_name,
};
#[cfg(feature = "fail-points")]
pub use kv_fs::{FaultError, FaultInjector, FaultMode, FileOp};
pub use options::{DEFAULT_MAX_FILE_SIZE, RecoveryMode, SyncPolicy, WalOptions};
pub use replay::Replay;
pub use shared::SharedWal;
pub use wal::{Position, TruncatedTail, Wal, WalStats};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
