//! Live and dead bytes per segment: what compaction picks by.

use std::collections::BTreeMap;

use kv_index::Entry;
use parking_lot::Mutex;

/// What one segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes of records in the segment.
    pub(crate) total: u64,
    /// Bytes of records that no longer serve a read: overwritten or
    /// deleted puts, tombstones, copies that lost a race to a write.
    pub(crate) dead: u64,
    /// The lowest sequence number of any record in the segment.
    pub(crate) min_seq: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            total: 0,
            dead: 0,
            min_seq: u64::MAX,
        }
    }
}

impl Usage {
    /// Bytes still serving reads.
    pub(crate) fn live(&self) -> u64 {
        self.total.saturating_sub(self.dead)
    }

    /// The share of the segment that is dead, 0 to 1.
    pub(crate) fn dead_ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.dead.min(self.total) as f64 / self.total as f64
        }
    }
}

/// Usage of every segment, shared by the writer and compaction. Updates
/// are additive, so they may arrive in any order: a write that supersedes
/// a record of a compaction output before the output is registered still
/// counts.
#[derive(Debug, Default)]
pub(crate) struct SegmentUsage {
    segments: Mutex<BTreeMap<u32, Usage>>,
}

/// Changes gathered while applying a group, made under one lock.
#[derive(Debug, Default)]
pub(crate) struct UsageDelta {
    /// (segment, bytes, seq) of each record appended.
    added: Vec<(u32, u64, u64)>,
    /// (segment, bytes) of each record that died.
    died: Vec<(u32, u64)>,
}

impl UsageDelta {
    pub(crate) fn appended(&mut self, segment: u32, bytes: u32, seq: u64) {
        self.added.push((segment, u64::from(bytes), seq));
    }

    pub(crate) fn superseded(&mut self, old: Option<Entry>) {
        if let Some(old) = old {
            self.died.push((old.segment, u64::from(old.len)));
        }
    }

    pub(crate) fn dead_on_arrival(&mut self, segment: u32, bytes: u32) {
        self.died.push((segment, u64::from(bytes)));
    }
}

impl SegmentUsage {
    pub(crate) fn apply(&self, delta: &mut UsageDelta) {
        if delta.added.is_empty() && delta.died.is_empty() {
            return;
        }
        let mut segments = self.segments.lock();
        for (segment, bytes, seq) in delta.added.drain(..) {
            let u = segments.entry(segment).or_default();
            u.total += bytes;
            u.min_seq = u.min_seq.min(seq);
        }
        for (segment, bytes) in delta.died.drain(..) {
            segments.entry(segment).or_default().dead += bytes;
        }
    }

    /// Registers a compaction output and forgets its inputs.
    pub(crate) fn replace(&self, inputs: &[u32], output: u32, added: Usage) {
        let mut segments = self.segments.lock();
        for id in inputs {
            segments.remove(id);
        }
        let u = segments.entry(output).or_default();
        u.total += added.total;
        u.dead += added.dead;
        u.min_seq = u.min_seq.min(added.min_seq);
    }

    /// A copy of the usage of every segment in `present`; entries of
    /// segments that are gone are dropped.
    pub(crate) fn snapshot(&self, present: &[u32]) -> BTreeMap<u32, Usage> {
        let mut segments = self.segments.lock();
        segments.retain(|id, _| present.binary_search(id).is_ok());
        present
            .iter()
            .map(|id| (*id, segments.get(id).copied().unwrap_or_default()))
            .collect()
    }

    pub(crate) fn set(&self, all: BTreeMap<u32, Usage>) {
        *self.segments.lock() = all;
    }
}
