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
    /// Bytes of live puts that have an expiry: dead too once
    /// `latest_expiry` has passed.
    pub(crate) expiring: u64,
    /// The latest expiry of any put with an expiry the segment has held.
    pub(crate) latest_expiry: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            total: 0,
            dead: 0,
            min_seq: u64::MAX,
            expiring: 0,
            latest_expiry: 0,
        }
    }
}

impl Usage {
    /// Bytes still serving reads.
    pub(crate) fn live(&self) -> u64 {
        self.total.saturating_sub(self.dead)
    }

    /// Dead bytes as of `now` (milliseconds since the Unix epoch): the
    /// expiring bytes count once all of them have expired.
    pub(crate) fn dead_at(&self, now: u64) -> u64 {
        let expired = if self.expiring > 0 && now >= self.latest_expiry {
            self.expiring
        } else {
            0
        };
        (self.dead + expired).min(self.total)
    }

    /// The share of the segment that is dead as of `now`, 0 to 1.
    pub(crate) fn dead_ratio(&self, now: u64) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.dead_at(now) as f64 / self.total as f64
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
    /// (segment, bytes, seq, expires_at) of each record appended.
    added: Vec<(u32, u64, u64, u64)>,
    /// (segment, bytes, had an expiry) of each record that died.
    died: Vec<(u32, u64, bool)>,
}

impl UsageDelta {
    pub(crate) fn appended(&mut self, segment: u32, bytes: u32, seq: u64, expires_at: u64) {
        self.added
            .push((segment, u64::from(bytes), seq, expires_at));
    }

    pub(crate) fn superseded(&mut self, old: Option<Entry>) {
        if let Some(old) = old {
            self.died
                .push((old.segment, u64::from(old.len), old.expires_at != 0));
        }
    }

    pub(crate) fn dead_on_arrival(&mut self, segment: u32, bytes: u32) {
        self.died.push((segment, u64::from(bytes), false));
    }
}

impl SegmentUsage {
    pub(crate) fn apply(&self, delta: &mut UsageDelta) {
        if delta.added.is_empty() && delta.died.is_empty() {
            return;
        }
        let mut segments = self.segments.lock();
        for (segment, bytes, seq, expires_at) in delta.added.drain(..) {
            let u = segments.entry(segment).or_default();
            u.total += bytes;
            u.min_seq = u.min_seq.min(seq);
            if expires_at != 0 {
                u.expiring += bytes;
                u.latest_expiry = u.latest_expiry.max(expires_at);
            }
        }
        for (segment, bytes, expiring) in delta.died.drain(..) {
            let u = segments.entry(segment).or_default();
            u.dead += bytes;
            if expiring {
                u.expiring = u.expiring.saturating_sub(bytes);
            }
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
        u.expiring += added.expiring;
        u.latest_expiry = u.latest_expiry.max(added.latest_expiry);
    }

    /// Live bytes of every segment together, as of `now`.
    pub(crate) fn live_at(&self, now: u64) -> u64 {
        let segments = self.segments.lock();
        segments.values().map(|u| u.total - u.dead_at(now)).sum()
    }

    /// A copy of the usage of every segment in `present`. Reads only: a
    /// caller's `present` may be older than the usage (a compaction output
    /// registered since), and must never make it forget anything. Entries
    /// go only when `replace` retires them.
    pub(crate) fn snapshot(&self, present: &[u32]) -> BTreeMap<u32, Usage> {
        let segments = self.segments.lock();
        present
            .iter()
            .map(|id| (*id, segments.get(id).copied().unwrap_or_default()))
            .collect()
    }

    pub(crate) fn set(&self, all: BTreeMap<u32, Usage>) {
        *self.segments.lock() = all;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot taken with a list of segments loaded before a compaction
    /// output was registered must not erase the output's usage (a `stats()`
    /// call racing compaction did, and a lost `min_seq` lowers the
    /// tombstone floor's guard).
    #[test]
    fn a_snapshot_with_a_stale_list_keeps_a_newer_outputs_usage() {
        let usage = SegmentUsage::default();
        let mut delta = UsageDelta::default();
        delta.appended(1, 100, 5, 0);
        usage.apply(&mut delta);
        let stale = [1];
        let _ = usage.snapshot(&stale);
        let output = Usage {
            total: 60,
            dead: 0,
            min_seq: 5,
            expiring: 0,
            latest_expiry: 0,
        };
        usage.replace(&[1], 2, output);
        let _ = usage.snapshot(&stale);
        assert_eq!(usage.snapshot(&[2])[&2], output);
    }
}
