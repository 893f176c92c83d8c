//! Append-only segment files for the kv storage engine.
//!
//! A [`Log`] is a directory of numbered segment files (`0000000001.seg`,
//! `0000000002.seg`, ...). Each starts with a 32-byte segment header and
//! then holds `kv-format` records back to back, of the layout the header's
//! version says ([`Segment::record_format`]; this build creates only
//! [`kv_format::RecordFormat::CURRENT`] segments). Appends go to the *active*
//! (newest) segment; when it would grow past
//! [`LogOptions::segment_size`] it is synced and *sealed*, and a new active
//! segment is created. Sealed segments are never written again.
//!
//! # Reading
//!
//! Every segment is mapped with memmap2, and a read hands out a borrowed
//! slice of the map: no copy, no syscall, no lock. Readers reach the
//! segments through a [`LogReader`], which any number of threads share with
//! the single writer. The active segment is mapped once at its full
//! capacity (past the end of the file, as LMDB does) and grows underneath
//! the map: the writer appends (through a writable mapping of the same
//! file, or with `pwrite` for a long run of records) and then publishes the new
//! readable length with a release store, so a reader only ever touches bytes
//! that were completely written before it looked. A reader never waits for
//! the writer.
//!
//! # Recovery
//!
//! [`Log::open`] scans every segment in order and hands each valid record
//! to the caller, which rebuilds its index from them. A record that fails
//! to decode at the tail of the newest segment, with no valid record after
//! it, is a torn write: it is cut off and the cut is logged. The same
//! failure anywhere else is [`LogError::Corruption`], naming the file and
//! the offset; nothing is skipped.
//!
//! # Checking
//!
//! [`Segment::open_read_only`], [`Segment::check_records`] and
//! [`Segment::read_hint_file`] read a segment and its hint file without
//! changing anything (no torn tail is cut), and report every damaged place
//! rather than stopping at the first: the engine's `verify` uses them.
//!
//! # What this crate is not
//!
//! It keeps no index, assigns no sequence numbers and spawns no threads;
//! `kv-engine` does those. It depends only on `kv-format` and `kv-fs`
//! (atomic file creation, directory syncs, the fault seam).
//!
//! # Platform and file ownership
//!
//! Unix only: it relies on positioned writes, on mapping a file past its
//! end, and on an unlinked file keeping its pages while it is mapped.
//!
//! Segments are memory-mapped. A mapped file that another process
//! truncates or rewrites can make a read raise `SIGBUS` and kill the
//! process, and no safe Rust code can prevent that. So this crate's
//! contract is that **its caller keeps everyone else out of the
//! directory** while a [`Log`] or a read-only [`Segment`] is open: kv-log
//! takes no lock itself. kv-engine holds an exclusive `flock` on the
//! directory's `LOCK` file for the life of its `Db`, and `verify` takes
//! the same lock when the file exists; a program that ignores the lock is
//! outside the contract (docs/format.md, "Files are only ours").
//!
//! The one reader that may run beside another process's writer is a
//! [`LogView`]: it maps only bytes that writer never truncates or rewrites
//! (sealed segments, finished compaction outputs, and the segment of a
//! durable position up to that position), and changes nothing on disk.
//!
//! ```
//! use kv_format::Record;
//! use kv_log::{Log, LogOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {})?;
//! let loc = log.append(&Record::put(1, b"key", b"value"))?;
//! log.flush()?;
//!
//! let reader = log.reader();
//! let segments = reader.segments();
//! let bytes = segments.read(loc)?;
//! let segment = segments.get(loc.segment).expect("the segment holds it");
//! let record = segment.record_format().decode(bytes)?.record;
//! assert_eq!(record.value, b"value");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]

mod check;
mod copy;
mod create;
mod error;
mod format;
mod hint;
mod log;
mod options;
mod output;
mod reader;
mod recover;
mod resync;
mod segment;
mod set;
mod sync;
mod types;
mod view;

#[cfg(all(test, loom))]
mod loom;

pub use check::{BadRegion, HintDamage, HintEntry, HintFile};
pub use copy::copy_segments;
pub use error::LogError;
pub use format::{
    DEFAULT_SEGMENT_SIZE, HINT_MAGIC, HINT_MIN_VERSION, HINT_VERSION, MAX_SEGMENT_SIZE,
    MAX_SUPERSEDES, SEGMENT_EXTENSION, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_MIN_VERSION,
    SEGMENT_VERSION, SegmentKind, hint_file_name, parse_hint_file_name, parse_segment_file_name,
    segment_file_name,
};
pub use log::Log;
pub use options::LogOptions;
pub use output::CompactionOutput;
pub use reader::{LogReader, SegmentsGuard};
pub use segment::{LoadSource, RecordMeta, Segment};
pub use set::SegmentSet;
pub use types::{Durable, Location, LogPosition};
pub use view::LogView;

/// The result type of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
