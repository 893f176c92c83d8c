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
    /// Bytes of keys and values, to bound the batch's encoded size cheaply.
    pub(crate) payload_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl BatchOp {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }

    pub(crate) fn value_len(&self) -> usize {
        match self {
            BatchOp::Put { value, .. } => value.len(),
            BatchOp::Delete { .. } => 0,
        }
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put of `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut WriteBatch {
        self.payload_bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl: None,
        });
        self
    }

    /// Adds a put of `key` to `value` that expires `ttl` after the batch
    /// is applied (see [`Db::put_with_ttl`](crate::Db::put_with_ttl)).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> &mut WriteBatch {
        self.payload_bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl: Some(ttl),
        });
        self
    }

    /// Adds a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut WriteBatch {
        self.payload_bytes += key.len();
        self.ops.push(BatchOp::Delete { key: key.to_vec() });
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
        self.payload_bytes = 0;
    }
}
