//! Compaction for the kv storage engine.
//!
//! A compaction *run* takes some sealed segments (the inputs) and writes
//! one new segment (the output) holding what of them is still needed:
//!
//! - every put that the index still points at is copied, byte for byte
//!   (same sequence number, same checksum);
//! - a tombstone is copied only if the key is still absent and the caller's
//!   [`Policy`] says an older record of the key may still exist in a
//!   segment outside the run (the rule that keeps a deleted key from coming
//!   back);
//! - a put the index points at that [`Policy::is_expired`] says has expired
//!   is taken out of the index, and written as a tombstone (same key and
//!   sequence number) if the same rule says an older record may exist
//!   outside the run, so that expiry cannot uncover an older value;
//! - everything else is dropped.
//!
//! The output is made durable and visible before anything else changes,
//! and its header names the inputs it supersedes, so that from that moment
//! on, even across a crash, the inputs are deleted when found. Then each
//! copied key's index entry is switched to the output with a
//! compare-and-swap: only where the index still points at the input
//! record, so a concurrent write always wins. Finally the inputs are
//! retired: removed from the segment set, and deleted once the last reader
//! holding them lets go.
//!
//! # What this crate is not
//!
//! It picks no segments, keeps no statistics and spawns no threads: the
//! engine (`kv-engine`) decides what to compact and when, on a thread it
//! owns, and paces the run through [`Policy::pace`]. Dependencies point
//! down only: `kv-format`, `kv-log`, `kv-index`.
//!
//! ```
//! use std::sync::Arc;
//! use kv_compact::{Policy, compact};
//! use kv_format::Record;
//! use kv_index::{Entry, Index};
//! use kv_log::{Log, LogOptions};
//!
//! struct KeepAll;
//! impl Policy for KeepAll {
//!     fn keep_tombstone(&self, _key: &[u8], _seq: u64) -> bool { true }
//! }
//!
//! let dir = tempfile::tempdir()?;
//! let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {})?;
//! let index = Index::new();
//! for (seq, value) in [(1, "old"), (2, "new")] {
//!     let loc = log.append(&Record::put(seq, b"k", value.as_bytes()))?;
//!     index.insert(b"k", Entry { segment: loc.segment, offset: loc.offset, len: loc.len,
//!                                expires_at: 0, tombstone: false });
//! }
//! log.seal_active()?;
//! let reader = log.reader();
//! let inputs = vec![Arc::clone(reader.segments().get(1).unwrap())];
//! let outcome = compact(&reader, &index, &inputs, &mut KeepAll)?;
//! assert_eq!(outcome.counts.records_copied, 1); // "old" was dead
//! assert_eq!(index.get(b"k").unwrap().segment, outcome.output.id());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod run;

pub use run::{CompactError, Counts, Outcome, Policy, compact};

/// The result type of this crate.
pub type Result<T, E = CompactError> = std::result::Result<T, E>;
