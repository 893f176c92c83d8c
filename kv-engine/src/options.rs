use kv_format::MAX_VALUE_LEN;
use kv_log::DEFAULT_SEGMENT_SIZE;

/// Options for [`Db::open_with`](crate::Db::open_with).
///
/// ```
/// let options = kv_engine::Options::default()
///     .segment_size(64 << 20)
///     .max_value_len(1 << 20);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Size at which the active segment is sealed and a new one begun.
    /// Default 256 MiB; at most 4 GiB.
    pub segment_size: u64,
    /// The largest value accepted by `put`. Default and maximum 64 MiB.
    pub max_value_len: usize,
    /// Most writes the writer thread takes into one group. Default 1024.
    pub max_group_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_value_len: MAX_VALUE_LEN,
            max_group_size: 1024,
        }
    }
}

impl Options {
    /// Sets [`Options::segment_size`].
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets [`Options::max_value_len`], clamped to 64 MiB.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes.min(MAX_VALUE_LEN);
        self
    }

    /// Sets [`Options::max_group_size`] (at least 1).
    pub fn max_group_size(mut self, writes: usize) -> Self {
        self.max_group_size = writes.max(1);
        self
    }
}
