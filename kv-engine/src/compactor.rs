//! Compaction, driven by the engine: which segments, when, how fast.
//!
//! A background thread (`kv-compactor`) wakes every
//! [`Options::compaction_interval`](crate::Options::compaction_interval) or
//! when the writer trims the WAL. It writes the hint files that sealed
//! segments lack, then compacts the sealed segments whose dead share is at
//! least [`Options::compaction_threshold`](crate::Options::compaction_threshold).
//! [`Db::compact`](crate::Db::compact) runs a full compaction on the
//! caller's thread. One compaction runs at a time.
//!
//! Only segments wholly before the last marker are compacted: their
//! records are durable and the WAL no longer holds them. Compacting newer
//! ones could let a copy outlive, across a power loss, the WAL records
//! before it: a hole in the history.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kv_compact::{CompactError, Policy};
use kv_log::Segment;

use crate::shared::{Control, Shared};
use crate::usage::Usage;
use crate::{Error, Result};

/// What a compaction did, returned by [`Db::compact`](crate::Db::compact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Compaction runs: each wrote one new segment.
    pub runs: u64,
    /// Segments compacted (and retired).
    pub segments_compacted: u64,
    /// Bytes of records in the compacted segments.
    pub bytes_before: u64,
    /// Bytes of records written to the new segments.
    pub bytes_after: u64,
    /// Puts copied.
    pub records_copied: u64,
    /// Overwritten, deleted or expired puts dropped.
    pub records_dropped: u64,
    /// Of those, puts dropped because they had expired.
    pub records_expired: u64,
    /// Tombstones kept because an older record of their key may still
    /// exist.
    pub tombstones_kept: u64,
    /// Tombstones dropped.
    pub tombstones_dropped: u64,
    /// Damaged segments left out: a record in each failed its checks, so
    /// compaction does not take it (now or later) and the others go on.
    /// `Db::stats().damaged_segments` counts them; the log names them.
    pub segments_skipped: u64,
}

impl CompactionReport {
    /// Bytes of records reclaimed.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Settings of a pass.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassOptions {
    /// Compact segments whose dead share is at least this.
    pub(crate) min_dead_ratio: f64,
    /// Beyond those, compact the segments with the most dead bytes while
    /// the dead share of all the segments' bytes is above this.
    pub(crate) space_target: f64,
    /// Bytes per second, or unlimited.
    pub(crate) rate: Option<u64>,
    /// Whether pausing holds this pass up (the background's do; an explicit
    /// `Db::compact` does not).
    pub(crate) pausable: bool,
    /// The most bytes of live records one run merges.
    pub(crate) run_bytes: u64,
}

/// Runs one compaction pass over the eligible segments.
pub(crate) fn pass(shared: &Shared, options: PassOptions) -> Result<CompactionReport> {
    // Compaction drops what the index does not point at, so it needs every
    // shard of the index: load them all (once) and stop if one is missing.
    shared.index_health.check_whole(&shared.index)?;
    let mut report = CompactionReport::default();
    let set = shared.reader.segments();
    let present: Vec<u32> = set.iter().map(|s| s.id()).collect();
    let usage = shared.usage.snapshot(&present);
    let limit = shared.marker_segment.load(Ordering::Acquire);
    let listed = shared.listed.lock().clone();
    let damaged = shared.damaged.lock().clone();
    let now = shared.time.now();
    let eligible: Vec<&Arc<Segment>> = set
        .iter()
        // Only segments a durable marker lists (see `Writer::trim_wal`),
        // wholly before its position, and not known to be damaged.
        .filter(|s| {
            s.is_sealed()
                && s.id() < limit
                && listed.binary_search(&s.id()).is_ok()
                && !damaged.contains(&s.id())
        })
        .collect();
    let sizes: Vec<(u32, Usage)> = eligible
        .iter()
        .map(|s| (s.id(), usage.get(&s.id()).copied().unwrap_or_default()))
        .collect();
    let chosen = choose(&sizes, &usage, now, &options);
    let candidates: Vec<Arc<Segment>> = eligible
        .into_iter()
        .filter(|s| chosen.binary_search(&s.id()).is_ok())
        .cloned()
        .collect();
    drop(set);

    let mut runs = group_runs(&candidates, &usage, options.run_bytes);
    runs.reverse();
    while let Some(run) = runs.pop() {
        let ids: Vec<u32> = run.iter().map(|s| s.id()).collect();
        // The oldest record outside the run: a tombstone newer than it may
        // still hide an older record of its key there.
        let floor = usage
            .iter()
            .filter(|(id, _)| !ids.contains(id))
            .map(|(_, u)| u.min_seq)
            .min()
            .unwrap_or(u64::MAX);
        let mut policy = EnginePolicy {
            floor,
            shared,
            pacer: Pacer::new(&shared.control, options),
        };
        match kv_compact::compact(&shared.reader, &shared.index, &run, &mut policy) {
            Ok(outcome) => {
                let c = outcome.counts;
                shared.usage.replace(
                    &outcome.inputs,
                    outcome.output.id(),
                    Usage {
                        total: c.bytes_out,
                        dead: c.dead_bytes_out,
                        min_seq: c.min_seq_out,
                        expiring: c.expiring_bytes_out,
                        latest_expiry: c.latest_expiry_out,
                    },
                );
                report.runs += 1;
                report.segments_compacted += outcome.inputs.len() as u64;
                report.bytes_before += c.bytes_in;
                report.bytes_after += c.bytes_out;
                report.records_copied += c.records_copied;
                report.records_dropped += c.records_dropped + c.records_expired;
                report.records_expired += c.records_expired;
                report.tombstones_kept += c.tombstones_kept;
                report.tombstones_dropped += c.tombstones_dropped;
                shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .bytes_reclaimed
                    .fetch_add(c.bytes_in.saturating_sub(c.bytes_out), Ordering::Relaxed);
                log::debug!(
                    "compacted segments {ids:?} into {}: {} -> {} bytes",
                    outcome.output.id(),
                    c.bytes_in,
                    c.bytes_out
                );
            }
            Err(CompactError::Cancelled) => return Ok(report),
            Err(CompactError::DamagedInput { segment, source }) => {
                // Leave it out, now and in later passes, and go on with
                // the rest of the run: one damaged segment must not stall
                // compaction of all the others.
                log::error!("compaction skips damaged segment {segment} from now on: {source}");
                shared.damaged.lock().insert(segment);
                report.segments_skipped += 1;
                let rest: Vec<Arc<Segment>> =
                    run.into_iter().filter(|s| s.id() != segment).collect();
                if !rest.is_empty() {
                    runs.push(rest);
                }
            }
            Err(CompactError::Log(e)) => return Err(e.into()),
            // A run is never empty (`group_runs`); nothing to do.
            Err(CompactError::NoInputs) => {}
            // A kind kv-compact may add later: the run changed nothing, and
            // the database is not poisoned by it.
            Err(other) => {
                return Err(Error::Io {
                    path: run
                        .first()
                        .map_or_else(Default::default, |s| s.path().to_path_buf()),
                    source: std::io::Error::other(other.to_string()),
                });
            }
        }
    }
    Ok(report)
}

/// The ids of the segments of `eligible` (in id order, with their usage) a
/// pass compacts, in id order: those whose dead share is at least the
/// threshold, and then, while the dead share of all the segments (`usage`)
/// would stay above the space target, the others with the largest dead
/// shares, each at least the target.
fn choose(
    eligible: &[(u32, Usage)],
    usage: &BTreeMap<u32, Usage>,
    now: u64,
    options: &PassOptions,
) -> Vec<u32> {
    // An empty sealed segment (an output whose copies all died, or a log
    // segment sealed with nothing in it) is all overhead.
    let worth = |u: &Usage| u.dead_at(now) > 0 || u.total == 0;
    let mut chosen: Vec<bool> = eligible
        .iter()
        .map(|(_, u)| worth(u) && u.dead_ratio(now) >= options.min_dead_ratio)
        .collect();
    let (mut total, mut dead) = usage
        .values()
        .fold((0u64, 0u64), |(t, d), u| (t + u.total, d + u.dead_at(now)));
    for (picked, (_, u)) in chosen.iter().zip(eligible) {
        if *picked {
            // Compacting it leaves its live bytes and drops its dead ones.
            total -= u.dead_at(now).min(total);
            dead -= u.dead_at(now).min(dead);
        }
    }
    let over = |total: u64, dead: u64| dead as f64 > options.space_target * total as f64;
    if over(total, dead) {
        let mut rest: Vec<usize> = (0..eligible.len())
            .filter(|&i| {
                let u = &eligible[i].1;
                !chosen[i] && worth(u) && u.dead_ratio(now) >= options.space_target
            })
            .collect();
        rest.sort_by(|&a, &b| {
            eligible[b]
                .1
                .dead_ratio(now)
                .total_cmp(&eligible[a].1.dead_ratio(now))
        });
        for i in rest {
            if !over(total, dead) {
                break;
            }
            let u = &eligible[i].1;
            total -= u.dead_at(now).min(total);
            dead -= u.dead_at(now).min(dead);
            chosen[i] = true;
        }
    }
    eligible
        .iter()
        .zip(chosen)
        .filter(|(_, picked)| *picked)
        .map(|((id, _), _)| *id)
        .collect()
}

/// Splits candidates (in id order) into runs whose live bytes fit in one
/// segment, so that each run writes one output.
fn group_runs(
    candidates: &[Arc<Segment>],
    usage: &BTreeMap<u32, Usage>,
    run_bytes: u64,
) -> Vec<Vec<Arc<Segment>>> {
    let mut runs: Vec<Vec<Arc<Segment>>> = Vec::new();
    let mut live = 0;
    for s in candidates {
        let l = usage.get(&s.id()).map_or(0, Usage::live);
        match runs.last_mut() {
            Some(run) if live + l <= run_bytes && run.len() < kv_log::MAX_SUPERSEDES => {
                run.push(Arc::clone(s));
                live += l;
            }
            _ => {
                runs.push(vec![Arc::clone(s)]);
                live = l;
            }
        }
    }
    runs
}

struct EnginePolicy<'a> {
    floor: u64,
    shared: &'a Shared,
    pacer: Pacer<'a>,
}

impl Policy for EnginePolicy<'_> {
    fn keep_tombstone(&self, _key: &[u8], seq: u64) -> bool {
        self.floor < seq
    }

    fn is_expired(&self, expires_at: u64) -> bool {
        self.shared.time.expired(expires_at)
    }

    fn pace(&mut self, bytes: u64) -> bool {
        self.pacer.pace(bytes)
    }
}

/// Rate limit, pause and stop, checked between records.
struct Pacer<'a> {
    control: &'a Control,
    options: PassOptions,
    started: Instant,
    bytes: u64,
}

impl<'a> Pacer<'a> {
    fn new(control: &'a Control, options: PassOptions) -> Pacer<'a> {
        Pacer {
            control,
            options,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn pace(&mut self, bytes: u64) -> bool {
        if self.control.stopping.load(Ordering::Relaxed) {
            return false;
        }
        if self.options.pausable {
            while self.control.paused.load(Ordering::Relaxed) {
                if self.control.stopping.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(rate) = self.options.rate.filter(|&r| r > 0) {
            self.bytes += bytes;
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                // Sleep in short steps, so a stop is noticed quickly.
                std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
            }
        }
        true
    }
}

/// The background thread's loop.
pub(crate) fn background(
    shared: Arc<Shared>,
    wake: Receiver<()>,
    interval: Duration,
    options: PassOptions,
) {
    // A loaded index decodes each shard when something first touches it
    // (`saved_index.rs`): decode the others here, ahead of use, so that a
    // first touch later rarely waits. A close stops it between shards.
    for shard in 0..kv_index::SHARDS {
        if shared.control.stopping.load(Ordering::Relaxed) {
            return;
        }
        shared.index.load_shard(shard);
    }
    loop {
        match wake.recv_timeout(interval) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.control.stopping.load(Ordering::Relaxed) {
            return;
        }
        if shared.control.paused.load(Ordering::Relaxed) {
            continue;
        }
        write_missing_hints(&shared);
        let Some(_running) = shared.control.running.try_lock() else {
            continue;
        };
        if let Err(e) = pass(&shared, options) {
            log::error!("background compaction failed: {e}");
        }
    }
}

/// Writes a hint file for every sealed log segment that lacks one, but
/// those compaction found damaged (`Shared::damaged`).
pub(crate) fn write_missing_hints(shared: &Shared) {
    let set = shared.reader.segments();
    let damaged = shared.damaged.lock().clone();
    let lacking: Vec<Arc<Segment>> = set
        .iter()
        .filter(|s| s.is_sealed() && !s.has_hint() && !damaged.contains(&s.id()))
        .cloned()
        .collect();
    drop(set);
    for segment in lacking {
        if shared.control.stopping.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = segment.write_hint() {
            log::warn!(
                "could not write the hint file of {}: {e}",
                segment.path().display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(total: u64, dead: u64) -> Usage {
        Usage {
            total,
            dead,
            ..Usage::default()
        }
    }

    fn options(threshold: f64, target: f64) -> PassOptions {
        PassOptions {
            min_dead_ratio: threshold,
            space_target: target,
            rate: None,
            pausable: true,
            run_bytes: u64::MAX,
        }
    }

    #[test]
    fn the_space_target_takes_the_deadest_segments_until_the_whole_is_under_it() {
        // Five eligible segments of 100 bytes, dead 40, 30, 10, 35, 20;
        // segment 9 (the active one, not eligible) is 100 bytes, 20 dead.
        // Dead: 155 of 600.
        let eligible: Vec<(u32, Usage)> = [(1, 40), (2, 30), (3, 10), (4, 35), (5, 20)]
            .into_iter()
            .map(|(id, dead)| (id, usage(100, dead)))
            .collect();
        let mut all: BTreeMap<u32, Usage> = eligible.iter().copied().collect();
        all.insert(9, usage(100, 20));

        // With the target off, only the threshold picks.
        assert_eq!(
            choose(&eligible, &all, 0, &options(0.5, 1.0)),
            Vec::<u32>::new()
        );
        assert_eq!(choose(&eligible, &all, 0, &options(0.35, 1.0)), [1, 4]);
        // At 25%: 155/600 is over; taking 1 (40 dead) leaves 115/560 =
        // 20.5%, under it.
        assert_eq!(choose(&eligible, &all, 0, &options(0.5, 0.25)), [1]);
        // At 15%: then 4 (80/525 = 15.2%), then 2 (50/495 = 10.1%).
        assert_eq!(choose(&eligible, &all, 0, &options(0.5, 0.15)), [1, 2, 4]);
        // At 5%: every segment at least 5% dead, and no more: 3 and 5 are
        // taken too, and what stays dead is the active segment's.
        assert_eq!(
            choose(&eligible, &all, 0, &options(0.5, 0.05)),
            [1, 2, 3, 4, 5]
        );
        // Threshold picks count towards the target: 4 is past the
        // threshold, then 1 leaves (155 - 35 - 40) / (600 - 75) = 15.2%,
        // so 2 is taken as well.
        assert_eq!(choose(&eligible, &all, 0, &options(0.35, 0.15)), [1, 2, 4]);
        // A segment under the target itself is never taken for it.
        let few = [(1, usage(100, 10)), (2, usage(100, 10))];
        let mut lots: BTreeMap<u32, Usage> = few.iter().copied().collect();
        lots.insert(9, usage(100, 90));
        assert_eq!(
            choose(&few, &lots, 0, &options(0.5, 0.2)),
            Vec::<u32>::new()
        );
    }
}
