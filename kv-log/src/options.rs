//! [`LogOptions`]: the options of a [`Log`] and their defaults.

use crate::DEFAULT_SEGMENT_SIZE;
// Named only by doc links.
#[cfg(doc)]
use crate::{Log, MAX_SEGMENT_SIZE};

/// Options of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The size at which the active segment is sealed and a new one begun.
    /// Default [`DEFAULT_SEGMENT_SIZE`] (256 MiB); at most
    /// [`MAX_SEGMENT_SIZE`]. A record larger than this gets a segment of
    /// its own.
    pub segment_size: u64,
    /// Makes chosen file operations fail, for tests (the `fail-points`
    /// feature): every write, sync, rename and file creation of the log,
    /// its segments, compaction outputs and hint files is checked against
    /// it. Default none (`kv_fs::Faults::default()`).
    #[cfg(feature = "fail-points")]
    pub faults: kv_fs::Faults,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            #[cfg(feature = "fail-points")]
            faults: kv_fs::Faults::default(),
        }
    }
}
