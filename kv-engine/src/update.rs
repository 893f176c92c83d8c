//! [`Db::update`](crate::Db::update): atomic read-modify-write. The caller's
//! function runs on the writer thread, the only one that changes keys, so
//! nothing changes the keys between its read and its write: it sees each
//! key as every write queued before it leaves it (those of the group being
//! gathered included), and its batch joins that group.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use kv_format::{NO_EXPIRY, RecordKind};

use crate::batch::{OpKind, WriteBatch};
use crate::shared::Shared;
use crate::writer::Write;
use crate::{Error, Result};

/// A key's value as an update sees it: the value and the time it has left
/// to live (`None` if it never expires). An absent (deleted or expired) key
/// is `None` in the slice the update function gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Current {
    /// The value.
    pub value: Vec<u8>,
    /// What is left of its time to live, if it expires (never zero).
    pub ttl: Option<Duration>,
}

/// The caller's function, boxed for the writer thread: given the keys'
/// current values, it fills the batch to apply.
pub(crate) type UpdateFn = Box<dyn FnOnce(&[Option<Current>], &mut WriteBatch) + Send>;

/// An update sent to the writer: the keys to read and the function.
pub(crate) struct Update {
    pub(crate) keys: Vec<Vec<u8>>,
    pub(crate) run: UpdateFn,
}

impl Update {
    /// Runs the update on the writer thread, over the keys as `queued` (the
    /// writes gathered before it, oldest first, not yet applied) and the
    /// index leave them. Returns the batch to apply (maybe empty: the
    /// caller still waits for the group, whose outcome its reads assumed).
    pub(crate) fn evaluate(
        self,
        shared: &Shared,
        dir: &Path,
        queued: &[&Write],
    ) -> Result<WriteBatch> {
        let mut current = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            current.push(current_of(shared, dir, key, queued)?);
        }
        let mut batch = WriteBatch::new();
        let run = self.run;
        catch_unwind(AssertUnwindSafe(|| run(&current, &mut batch))).map_err(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Error::UpdatePanicked { reason }
        })?;
        for op in &batch.ops {
            shared.limits.check(op.key_len, op.value_len)?;
        }
        let encoded = batch.encoded_len();
        if encoded > kv_wal::MAX_RECORD_LEN as usize {
            return Err(Error::BatchTooLarge {
                len: encoded,
                max: kv_wal::MAX_RECORD_LEN as usize,
            });
        }
        Ok(batch)
    }
}

/// `key` as the queued writes (newest last) and then the index leave it.
fn current_of(
    shared: &Shared,
    dir: &Path,
    key: &[u8],
    queued: &[&Write],
) -> Result<Option<Current>> {
    let time = &shared.time;
    let from_expiry = |value: &[u8], expires_at: u64| {
        if expires_at == NO_EXPIRY {
            Some(Current {
                value: value.to_vec(),
                ttl: None,
            })
        } else if time.expired(expires_at) {
            None
        } else {
            let left = expires_at.saturating_sub(time.now()).max(1);
            Some(Current {
                value: value.to_vec(),
                ttl: Some(Duration::from_millis(left)),
            })
        }
    };
    for write in queued.iter().rev() {
        let mut found = None;
        match write {
            Write::Record(bytes) => {
                let record = kv_format::decode(bytes)?.record;
                if record.key == key {
                    found = Some(match record.kind {
                        RecordKind::Tombstone => None,
                        RecordKind::Put => from_expiry(record.value, record.expires_at),
                    });
                }
            }
            Write::Batch(batch) => {
                // The last op on the key wins.
                for op in batch.ops().filter(|op| op.key == key) {
                    found = Some(match op.kind {
                        OpKind::Delete => None,
                        OpKind::Put { ttl: None } => Some(Current {
                            value: op.value.to_vec(),
                            ttl: None,
                        }),
                        OpKind::Put { ttl: Some(ttl) } if ttl.is_zero() => None,
                        OpKind::Put { ttl: Some(ttl) } => Some(Current {
                            value: op.value.to_vec(),
                            ttl: Some(ttl),
                        }),
                    });
                }
            }
        }
        if let Some(found) = found {
            return Ok(found);
        }
    }
    let Some(entry) = shared.live_entry(key) else {
        shared.index_health.check()?;
        return Ok(None);
    };
    // Only this thread changes keys, so the value read is the entry's.
    Ok(shared
        .read_live(dir, key, |_, value| from_expiry(value, entry.expires_at))?
        .flatten())
}
