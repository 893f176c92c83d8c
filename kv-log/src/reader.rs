//! The readers' side: [`LogReader`], which loads the current segment set
//! into a [`SegmentsGuard`], and retires segments a compaction output
//! replaced.

use std::collections::HashSet;
use std::ops::Deref;

use crate::set::{SegmentSet, Shared};
use crate::sync::{Arc, Guard};
// Named only by doc links.
#[cfg(doc)]
use crate::CompactionOutput;

/// A handle readers (and compaction) use to reach the segments, shared
/// with the writer.
///
/// Cloning it is cheap. Loading the segment set writes no shared memory on
/// the fast path (arc-swap keeps its bookkeeping thread-local), so readers
/// do not contend with one another.
#[derive(Debug, Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

/// The segment set as a reader loaded it; derefs to [`SegmentSet`].
#[derive(Debug)]
pub struct SegmentsGuard(Guard<SegmentSet>);

impl Deref for SegmentsGuard {
    type Target = SegmentSet;
    fn deref(&self) -> &SegmentSet {
        &self.0
    }
}

impl SegmentsGuard {
    /// Whether `other` is the very set this guard holds: no segment was
    /// added or removed between the two loads. (While this guard holds its
    /// set, no later set can be allocated at its address.)
    pub fn is_same_set(&self, other: &SegmentsGuard) -> bool {
        std::ptr::eq::<SegmentSet>(&**self, &**other)
    }

    /// The set as an `Arc`, to hold for longer than a read (an iterator
    /// does): its segments stay mapped, and their files on disk, while it
    /// is held.
    pub fn to_arc(&self) -> Arc<SegmentSet> {
        Arc::clone(&self.0)
    }
}

impl LogReader {
    /// The current segments. Hold the guard only for the duration of a
    /// read; to keep one segment alive longer, clone its `Arc`.
    pub fn segments(&self) -> SegmentsGuard {
        SegmentsGuard(self.shared.set.load())
    }

    /// Removes the segments `ids` from the set and unlinks their files
    /// (the new output that holds their live records is already durable).
    /// Readers that hold them keep reading from the map; nothing deletes a
    /// file later.
    pub fn retire(&self, ids: &[u32]) {
        let retired: HashSet<u32> = ids.iter().copied().collect();
        let old = self.shared.set.rcu(|set| SegmentSet {
            segments: set
                .segments
                .iter()
                .filter(|s| !retired.contains(&s.id()))
                .cloned()
                .collect(),
        });
        for segment in old.segments.iter().filter(|s| retired.contains(&s.id())) {
            segment.retire();
        }
    }
}
