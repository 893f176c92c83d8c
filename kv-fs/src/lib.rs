//! File durability for the kv storage engine, written once: creating a file
//! atomically, syncing a directory, and the fault-injection seam that every
//! file operation of kv is checked against in tests.
//!
//! [`create_atomically`] makes a file appear whole or not at all: it writes
//! a temporary file, syncs it, renames it into place and syncs the
//! directory. kv-wal creates its WAL files this way, kv-log its segments,
//! compaction outputs (through [`create_temp`] and [`rename_into_place`])
//! and hint files, kv-engine its marker and on-disk copies.
//!
//! [`AppendMap`] appends to a file through a writable shared mapping of
//! space allocated ahead ([`allocate`]): a copy into memory per short
//! append, no system call (one `pwrite` for a long one:
//! [`WRITE_THROUGH_MIN`]), and a full disk is an error, never a `SIGBUS`. kv-wal
//! writes its files this way, and kv-log its log segments.
//!
//! # The rule for failures
//!
//! - A failure **before the rename** changes nothing: the temporary file is
//!   removed, and whatever was under the final name is still there
//!   ([`CreateError::Unchanged`]). The owner goes on, and may try again.
//! - A failed **sync** of a file in use, or of its directory after a
//!   rename ([`CreateError::Unsynced`]), **poisons the owner**: the state
//!   on disk is unknown, and it stays unknown, because a later sync that
//!   succeeds proves nothing (the kernel may have dropped the pages or the
//!   directory entry it failed to write back). So nothing is retried and
//!   then acknowledged; the owner refuses further changes until reopened.
//!   The one exception is a file whose presence after a crash does not
//!   matter either way (kv-log's hint files, a cache).
//!
//! This crate reports which case a failure is; it poisons nothing itself,
//! since it has no owner to poison.
//!
//! # The fault seam
//!
//! Every operation is checked against a [`Faults`] just before it is made:
//! a [`FileOp::Write`], [`FileOp::Sync`] (of a file or a directory),
//! [`FileOp::Rename`] or [`FileOp::Create`]. Without the `fail-points`
//! feature a `Faults` is empty and [`Faults::check`] an empty inline
//! function, so call sites need no `cfg`. With it, a `Faults` made from a
//! `FaultInjector` counts every operation of everything it is attached to
//! and makes the chosen one fail with `EIO` or `ENOSPC`, once or from then
//! on; a failing write made through [`write_or_tear`] first writes half its
//! bytes, as a write cut short does.
//!
//! # What this crate is not
//!
//! It knows no format: no file names, suffixes, headers or checksums; its
//! callers name the files and fill them. It keeps no state but an
//! [`AppendMap`]'s, spawns no threads, and depends on no other kv crate;
//! kv-wal, kv-log and kv-engine depend on it. Outside it, no kv code renames a file or syncs a
//! directory.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use kv_fs::{CreateError, Faults};
//!
//! let dir = tempfile::tempdir()?;
//! let (tmp, path) = (dir.path().join("MARKER.tmp"), dir.path().join("MARKER"));
//! let faults = Faults::default();
//! let created = kv_fs::create_atomically(&tmp, &path, &faults, |file| {
//!     kv_fs::write_or_tear(&faults, &tmp, b"durable", |bytes| file.write_all(bytes))
//! });
//! match created {
//!     Ok(_file) => {}
//!     Err(CreateError::Unchanged(e)) => return Err(e.into()), // nothing changed: go on
//!     Err(CreateError::Unsynced(e)) => return Err(e.into()),  // poison the owner
//! }
//! assert_eq!(std::fs::read(&path)?, b"durable");
//! assert!(!tmp.exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]

mod append;
mod fault;
mod file;

pub use append::{ALLOCATION_CHUNK, AppendMap, WRITE_THROUGH_MIN, allocate};
#[cfg(feature = "fail-points")]
pub use fault::{FaultError, FaultInjector, FaultMode};
pub use fault::{Faults, FileOp};
pub use file::{
    CreateError, create_atomically, create_temp, rename, rename_into_place, sync_dir, write_or_tear,
};
