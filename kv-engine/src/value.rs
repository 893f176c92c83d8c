//! [`Value`]: a value read without copying, pinned to the mapped segment
//! that holds it. It only borrows bytes already read and checked; finding
//! and checking the record is the read path's (`shared.rs`).

use std::ops::Deref;
use std::sync::Arc;

use kv_log::Segment;

/// A value read without copying: it borrows the mapped segment that holds
/// it and keeps that segment alive while held. Derefs to `[u8]`.
#[derive(Debug, Clone)]
pub struct Value {
    segment: Arc<Segment>,
    start: usize,
    len: usize,
}

impl Value {
    /// `value`, a slice of `segment`'s bytes, pinned.
    pub(crate) fn new(segment: &Arc<Segment>, value: &[u8]) -> Value {
        Value {
            segment: Arc::clone(segment),
            start: value.as_ptr() as usize - segment.bytes().as_ptr() as usize,
            len: value.len(),
        }
    }
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // The range was taken from this segment's readable bytes, which
        // never shrink while the segment lives.
        &self.segment.bytes()[self.start..self.start + self.len]
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}
