//! Atomic batches of writes.

use std::time::Duration;

/// Several puts and deletes applied atomically by
/// [`Db::write`](crate::Db::write): after any crash, either all of a batch
/// is there or none of it. Within a batch, later operations on a key win.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = kv_engine::Db::open(dir.path())?;
/// let mut batch = kv_engine::WriteBatch::new();
/// batch.put(b"from", b"90").put(b"to", b"110").delete(b"pending");
/// db.write(batch)?;
/// assert_eq!(db.get(b"to")?.as_deref(), Some(&b"110"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
    /// Every operation's key and value, back to back in the order of
    /// `ops`: one buffer, so a batch of many small writes costs a few
    /// allocations, not two per operation.
    pub(crate) bytes: Vec<u8>,
}

/// One operation of a [`WriteBatch`]; its key and value are the next
/// `key_len + value_len` bytes of the batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchOp {
    pub(crate) kind: OpKind,
    pub(crate) key_len: usize,
    pub(crate) value_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put { ttl: Option<Duration> },
    Delete,
}

/// An operation of a batch, with its key and value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op<'a> {
    pub(crate) kind: OpKind,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put of `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        self.push(OpKind::Put { ttl: None }, key, value)
    }

    /// Adds a put of `key` to `value` that expires `ttl` after the batch
    /// is applied (see [`Db::put_with_ttl`](crate::Db::put_with_ttl)).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> &mut WriteBatch {
        self.push(OpKind::Put { ttl: Some(ttl) }, key, value)
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut WriteBatch {
        self.push(OpKind::Delete, key, &[])
    }

    fn push(&mut self, kind: OpKind, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.ops.push(BatchOp {
            kind,
            key_len: key.len(),
            value_len: value.len(),
        });
        self
    }

    /// The number of operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Removes every operation, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.bytes.clear();
    }

    /// Bytes of keys and values, to bound the batch's encoded size cheaply.
    pub(crate) fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes the batch's records take in the WAL payload: its keys and
    /// values, and each record's header (an expiring put's has its expiry).
    pub(crate) fn encoded_len(&self) -> usize {
        let headers: usize = self
            .ops()
            .map(|op| {
                let (kind, expires_at) = match op.kind {
                    OpKind::Put { ttl: None } => (kv_format::RecordKind::Put, kv_format::NO_EXPIRY),
                    // Any expiry but "never" takes the same eight bytes.
                    OpKind::Put { ttl: Some(_) } => (kv_format::RecordKind::Put, 1),
                    OpKind::Delete => (kv_format::RecordKind::Tombstone, kv_format::NO_EXPIRY),
                };
                let record = kv_format::Record {
                    seq: 0,
                    expires_at,
                    kind,
                    key: op.key,
                    value: op.value,
                };
                record.encoded_len() - op.key.len() - op.value.len()
            })
            .sum();
        self.payload_bytes() + headers
    }

    /// The operations, in order, with their keys and values.
    pub(crate) fn ops(&self) -> impl Iterator<Item = Op<'_>> {
        let mut at = 0;
        self.ops.iter().map(move |op| {
            let key = &self.bytes[at..at + op.key_len];
            let value = &self.bytes[at + op.key_len..at + op.key_len + op.value_len];
            at += op.key_len + op.value_len;
            Op {
                kind: op.kind,
                key,
                value,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_give_back_each_key_and_value_in_order() {
        let mut batch = WriteBatch::new();
        batch
            .put(b"a", b"one")
            .delete(b"bb")
            .put_with_ttl(b"c", b"", Duration::from_secs(5))
            .put(b"dd", b"four");
        let ops: Vec<_> = batch
            .ops()
            .map(|op| (op.kind, op.key.to_vec(), op.value.to_vec()))
            .collect();
        let put = OpKind::Put { ttl: None };
        let ttl = OpKind::Put {
            ttl: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            ops,
            vec![
                (put, b"a".to_vec(), b"one".to_vec()),
                (OpKind::Delete, b"bb".to_vec(), Vec::new()),
                (ttl, b"c".to_vec(), Vec::new()),
                (put, b"dd".to_vec(), b"four".to_vec()),
            ]
        );
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.payload_bytes(), 1 + 3 + 2 + 1 + 2 + 4);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.ops().count(), 0);
        assert_eq!(batch.payload_bytes(), 0);
    }
}
