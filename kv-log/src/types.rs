//! Where things are in the log: a record's [`Location`], a point in the
//! log's own segments ([`LogPosition`]), and what a caller recorded as
//! durable ([`Durable`]). Plain values; no I/O.

// Named only by doc links.
#[cfg(doc)]
use crate::{Log, LogError};

/// Where a record lives: its segment, its byte offset there, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The segment id.
    pub segment: u32,
    /// Byte offset of the record in the segment file.
    pub offset: u32,
    /// The record's encoded length.
    pub len: u32,
}

/// A point in the log's own segments: everything before `offset` in
/// segment `segment`, and everything in lower log segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    /// The segment id.
    pub segment: u32,
    /// Byte offset in the segment file (at least the header length).
    pub offset: u64,
}

/// What a caller with a write-ahead log of its own recorded about the
/// segment log when it last made it durable (the engine's marker): [`Log::recover`] discards what lies beyond it and checks that
/// nothing before it went missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// The end of the durable segment data: log segments with a higher id
    /// are removed, and segment `end.segment` is cut to `end.offset`.
    pub end: LogPosition,
    /// The segments that existed then (none superseded by another of
    /// them). Each must still exist, or be superseded by a compaction
    /// output that exists; otherwise opening fails with
    /// [`LogError::Corruption`] naming it. `None` when not recorded.
    pub segments: Option<Vec<u32>>,
    /// The id the next new segment was to get ([`Log::next_segment_id`]):
    /// no new segment gets a lower one, even if the segments with the
    /// highest ids are gone. 0 when not recorded.
    pub next_id: u32,
}

impl Durable {
    /// Only an end position: no list of segments, no id floor.
    pub fn at(end: LogPosition) -> Durable {
        Durable {
            end,
            segments: None,
            next_id: 0,
        }
    }
}
