//! One compaction run.

use std::ops::Range;
use std::sync::Arc;

use kv_format::{Record, RecordFormat, RecordKind};
use kv_index::{Entry, Index};
use kv_log::{Location, LogError, LogReader, Segment};

use thiserror::Error;

/// An error from a compaction run. After an error nothing has changed: the
/// output, if begun, is deleted, and the index and the inputs are as they
/// were.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Reading an input or writing the output failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// [`Policy::pace`] asked the run to stop.
    #[error("compaction was cancelled")]
    Cancelled,
    /// A run needs at least one input segment.
    #[error("a compaction run needs at least one input segment")]
    NoInputs,
    /// An input segment holds a record that fails its checks: the run
    /// stopped and changed nothing. A run without that segment can go on.
    #[error("input segment {segment} is damaged: {source}")]
    DamagedInput {
        /// The damaged input's id.
        segment: u32,
        /// What is wrong, naming the file and offset.
        #[source]
        source: LogError,
    },
}

/// What the engine decides for a run.
pub trait Policy {
    /// Whether a tombstone of `key` with sequence number `seq`, whose key
    /// is absent from the index, must be kept: true if a record of `key`
    /// older than `seq` may still exist in a segment outside the run.
    fn keep_tombstone(&self, key: &[u8], seq: u64) -> bool;

    /// Whether a put that expires at `expires_at` (milliseconds since the
    /// Unix epoch, never 0) has expired and can be dropped.
    fn is_expired(&self, _expires_at: u64) -> bool {
        false
    }

    /// Called after every `bytes` read from the inputs: a chance to sleep
    /// (rate limit) or wait (pause). Returning `false` cancels the run.
    fn pace(&mut self, _bytes: u64) -> bool {
        true
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The output segment, durable and in the segment set.
    pub output: Arc<Segment>,
    /// Ids of the inputs, now retired.
    pub inputs: Vec<u32>,
    /// The counts of the run.
    pub counts: Counts,
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Record bytes read from the inputs.
    pub bytes_in: u64,
    /// Record bytes written to the output.
    pub bytes_out: u64,
    /// Bytes of the output that are dead already: copies whose key a
    /// concurrent write changed before the switch, and kept tombstones.
    pub dead_bytes_out: u64,
    /// The lowest sequence number in the output (`u64::MAX` if empty).
    pub min_seq_out: u64,
    /// Puts copied.
    pub records_copied: u64,
    /// Index entries switched to the output.
    pub entries_switched: u64,
    /// Tombstones copied because an older record may still exist.
    pub tombstones_kept: u64,
    /// Tombstones dropped.
    pub tombstones_dropped: u64,
    /// Dead or expired puts dropped.
    pub records_dropped: u64,
    /// Expired puts the index still pointed at, taken out of the index;
    /// each was replaced by a tombstone if an older record of its key may
    /// exist outside the run (so the key stays absent after a reopen), and
    /// dropped otherwise.
    pub records_expired: u64,
    /// Bytes of the copied puts that have an expiry.
    pub expiring_bytes_out: u64,
    /// The latest expiry among the copied puts (0 if none has one).
    pub latest_expiry_out: u64,
}

/// A copied put, to switch in the index once the output is visible; or
/// (with `new` = `None`) an expired put to take out of the index.
struct Copied {
    key: Range<usize>,
    old: Entry,
    new: Option<Location>,
}

/// What becomes of one input record.
enum Fate {
    Drop,
    /// A live put, copied as it is; the entry pointing at it.
    Copy(Entry),
    /// A tombstone still needed, copied as it is.
    KeepTombstone,
    /// An expired put the index points at: written as a tombstone if
    /// `tombstone`, else dropped; taken out of the index either way.
    Expire {
        old: Entry,
        tombstone: bool,
    },
}

/// Compacts `inputs` (sealed segments) into one new segment, switches the
/// index to it and retires the inputs. See the crate docs for the rules.
///
/// # Errors
///
/// [`CompactError::DamagedInput`] if an input is damaged,
/// [`CompactError::Log`] if the output cannot be written;
/// [`CompactError::Cancelled`]. Either way nothing has changed.
pub fn compact(
    reader: &LogReader,
    index: &Index,
    inputs: &[Arc<Segment>],
    policy: &mut impl Policy,
) -> crate::Result<Outcome> {
    if inputs.is_empty() {
        return Err(CompactError::NoInputs);
    }
    let ids: Vec<u32> = inputs.iter().map(|s| s.id()).collect();
    let mut output = reader.create_output(&ids)?;
    let mut keys = Vec::new();
    let mut copied = Vec::new();
    let mut scratch = Vec::new();
    let mut counts = Counts {
        min_seq_out: u64::MAX,
        ..Counts::default()
    };
    for input in inputs {
        let mut failure = None;
        let mut cancelled = false;
        input
            .for_each_record(|loc, record| {
                if failure.is_some() || cancelled {
                    return;
                }
                counts.bytes_in += u64::from(loc.len);
                let fate = match record.kind {
                    RecordKind::Put => match index.get(record.key) {
                        Some(e) if e.segment == loc.segment && e.offset == loc.offset => {
                            if record.expires_at != 0 && policy.is_expired(record.expires_at) {
                                Fate::Expire {
                                    old: e,
                                    tombstone: policy.keep_tombstone(record.key, record.seq),
                                }
                            } else {
                                Fate::Copy(e)
                            }
                        }
                        _ => Fate::Drop,
                    },
                    // A present key was written again after this delete: the
                    // newer record shadows every older one.
                    RecordKind::Tombstone => {
                        if index.get(record.key).is_none()
                            && policy.keep_tombstone(record.key, record.seq)
                        {
                            Fate::KeepTombstone
                        } else {
                            Fate::Drop
                        }
                    }
                };
                let appended = match &fate {
                    Fate::Drop
                    | Fate::Expire {
                        tombstone: false, ..
                    } => None,
                    // The bytes were just decoded and checked from this map,
                    // and are copied as they are, unless they are of an
                    // older layout than the output's: re-encoded then.
                    Fate::Copy(_) | Fate::KeepTombstone
                        if input.record_format() == RecordFormat::CURRENT =>
                    {
                        Some(
                            input
                                .read(loc.offset, loc.len)
                                .and_then(|bytes| output.append_encoded(bytes)),
                        )
                    }
                    Fate::Copy(_) | Fate::KeepTombstone => {
                        scratch.clear();
                        Some(
                            kv_format::encode(record, &mut scratch)
                                .map_err(|e| LogError::Corruption {
                                    path: input.path().to_path_buf(),
                                    offset: u64::from(loc.offset),
                                    reason: e.to_string(),
                                })
                                .and_then(|_| output.append_encoded(&scratch)),
                        )
                    }
                    Fate::Expire {
                        tombstone: true, ..
                    } => {
                        scratch.clear();
                        Some(
                            kv_format::encode(
                                &Record::tombstone(record.seq, record.key),
                                &mut scratch,
                            )
                            .map_err(|e| LogError::Corruption {
                                path: input.path().to_path_buf(),
                                offset: u64::from(loc.offset),
                                reason: e.to_string(),
                            })
                            .and_then(|_| output.append_encoded(&scratch)),
                        )
                    }
                };
                let new = match appended {
                    None => None,
                    Some(Ok(new)) => {
                        counts.bytes_out += u64::from(new.len);
                        counts.min_seq_out = counts.min_seq_out.min(record.seq);
                        Some(new)
                    }
                    Some(Err(e)) => {
                        failure = Some(e);
                        return;
                    }
                };
                match fate {
                    Fate::Drop => match record.kind {
                        RecordKind::Put => counts.records_dropped += 1,
                        RecordKind::Tombstone => counts.tombstones_dropped += 1,
                    },
                    Fate::Copy(old) => {
                        let start = keys.len();
                        keys.extend_from_slice(record.key);
                        copied.push(Copied {
                            key: start..keys.len(),
                            old,
                            new,
                        });
                        counts.records_copied += 1;
                        if record.expires_at != 0 {
                            // The output's copy: shorter than the input's
                            // when a version 1 record was encoded again.
                            counts.expiring_bytes_out += new.map_or(0, |n| u64::from(n.len));
                            counts.latest_expiry_out =
                                counts.latest_expiry_out.max(record.expires_at);
                        }
                    }
                    Fate::KeepTombstone => {
                        counts.tombstones_kept += 1;
                        counts.dead_bytes_out += new.map_or(0, |n| u64::from(n.len));
                    }
                    Fate::Expire { old, .. } => {
                        let start = keys.len();
                        keys.extend_from_slice(record.key);
                        copied.push(Copied {
                            key: start..keys.len(),
                            old,
                            new: None,
                        });
                        counts.records_expired += 1;
                        counts.dead_bytes_out += new.map_or(0, |n| u64::from(n.len));
                    }
                }
                cancelled = !policy.pace(u64::from(loc.len));
            })
            .map_err(|e| match e {
                e @ LogError::Corruption { .. } => CompactError::DamagedInput {
                    segment: input.id(),
                    source: e,
                },
                other => CompactError::Log(other),
            })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        if cancelled {
            return Err(CompactError::Cancelled);
        }
    }

    // Durable and visible first; from here on the output supersedes the
    // inputs, even across a crash.
    let output = output.finish()?;
    for c in &copied {
        let key = &keys[c.key.clone()];
        let Some(new) = c.new else {
            // Expired: gone from the index now, so that no clock moving
            // backwards can bring it back; unless a write got there first.
            index.remove_if(key, &c.old);
            continue;
        };
        let entry = Entry {
            segment: new.segment,
            offset: new.offset,
            len: new.len,
            ..c.old
        };
        if index.compare_and_swap(key, &c.old, entry) {
            counts.entries_switched += 1;
        } else {
            // A concurrent write won: this copy is dead on arrival.
            counts.dead_bytes_out += u64::from(new.len);
        }
    }
    reader.retire(&ids);
    if let Err(e) = output.write_hint() {
        log::warn!(
            "could not write the hint file of {}: {e}",
            output.path().display()
        );
    }
    Ok(Outcome {
        output,
        inputs: ids,
        counts,
    })
}
