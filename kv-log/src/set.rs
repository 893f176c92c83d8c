//! The state the writer, readers and compaction share: the published
//! [`SegmentSet`], the segment id counter, and the poison a failure outside
//! the writer leaves (`Shared`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use kv_fs::Faults;

use crate::sync::{Arc, ArcSwap, AtomicBool, AtomicU32, Mutex};
use crate::{Location, LogError, Result, Segment};
// Named only by doc links.
#[cfg(doc)]
use crate::LogReader;

/// The segments that exist at one moment, in id order.
///
/// A reader loads the current set through [`LogReader::segments`]; the set
/// it holds stays valid (and its segments mapped) for as long as it holds
/// it, even if the writer or compaction moves on.
#[derive(Debug, Default)]
pub struct SegmentSet {
    pub(crate) segments: Vec<Arc<Segment>>,
}

impl SegmentSet {
    /// The ids of the set in order, less those another segment of the set
    /// supersedes: between a compaction output's `finish` and the
    /// retirement of its inputs the set holds both, and the output has
    /// every live record of them. These are the segments a copy needs and
    /// that must exist after a crash.
    pub fn live_ids(&self) -> Vec<u32> {
        let superseded: HashSet<u32> = self
            .segments
            .iter()
            .flat_map(|s| {
                s.supersedes()
                    .iter()
                    .copied()
                    .filter(move |&id| id != s.id())
            })
            .collect();
        self.segments
            .iter()
            .map(|s| s.id())
            .filter(|id| !superseded.contains(id))
            .collect()
    }

    /// The segment with this id, if it exists.
    pub fn get(&self, id: u32) -> Option<&Arc<Segment>> {
        self.segments
            .binary_search_by_key(&id, |s| s.id())
            .ok()
            .map(|i| &self.segments[i])
    }

    /// The bytes of the record at `loc`, borrowed from the segment's map.
    ///
    /// # Errors
    ///
    /// [`LogError::NoSuchSegment`] or [`LogError::OutOfBounds`] when `loc`
    /// does not name readable bytes.
    pub fn read(&self, loc: Location) -> Result<&[u8]> {
        self.get(loc.segment)
            .ok_or(LogError::NoSuchSegment {
                segment: loc.segment,
            })?
            .read(loc.offset, loc.len)
    }

    /// Every segment, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter()
    }

    /// The number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes in all segments, headers included.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len()).sum()
    }
}

/// State shared by the writer, readers and compaction.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) set: ArcSwap<SegmentSet>,
    /// The id the next new segment gets; ids only grow.
    pub(crate) next_id: AtomicU32,
    /// The test seam of the `fail-points` feature; a no-op without it.
    pub(crate) faults: Faults,
    /// Why the log refuses changes, when the cause was found outside the
    /// writer (a compaction output's directory sync failed): the writer's
    /// own cause is in `Log::poisoned`.
    pub(crate) poisoned: Mutex<Option<String>>,
    /// Whether `poisoned` is set: read on every append and flush, so that
    /// the writer's hot path takes no lock.
    pub(crate) is_poisoned: AtomicBool,
}

impl Shared {
    pub(crate) fn poison(&self, cause: String) {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(|p| p.into_inner());
        if poisoned.is_none() {
            log::error!("the segment log refuses further changes: {cause}");
            *poisoned = Some(cause);
            self.is_poisoned.store(true, Ordering::Release);
        }
    }

    pub(crate) fn poison_cause(&self) -> Option<String> {
        if !self.is_poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn allocate_id(&self) -> Result<u32> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == u32::MAX {
            return Err(LogError::SegmentIdsExhausted);
        }
        Ok(id)
    }

    pub(crate) fn add(&self, segment: &Arc<Segment>) {
        self.set.rcu(|set| {
            let mut segments = set.segments.clone();
            let at = segments.partition_point(|s| s.id() < segment.id());
            segments.insert(at, Arc::clone(segment));
            SegmentSet { segments }
        });
    }
}
