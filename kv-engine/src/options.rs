use kv_format::MAX_VALUE_LEN;
use kv_log::DEFAULT_SEGMENT_SIZE;
use std::sync::Arc;
use std::time::Duration;

use kv_wal::{RecoveryMode, SyncPolicy, WalOptions};

use crate::clock::{Clock, SystemClock};
use crate::compactor::PassOptions;

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
    /// When the write-ahead log is synced. Default [`SyncPolicy::Always`]:
    /// an acknowledged write survives power loss. Under every policy an
    /// acknowledged write survives the process being killed.
    pub sync: SyncPolicy,
    /// How a damaged tail of the write-ahead log is treated at open.
    /// Default [`RecoveryMode::TolerateCorruptedTail`].
    pub wal_recovery: RecoveryMode,
    /// A checkpoint (segments synced, WAL dropped) is taken whenever the WAL
    /// has grown by this many bytes, and at close. Default 64 MiB.
    pub checkpoint_wal_size: u64,
    /// Whether a background thread compacts on its own. Default true.
    pub background_compaction: bool,
    /// Background compaction takes a sealed segment once this share of its
    /// bytes is dead (0 to 1). Default 0.5.
    pub compaction_threshold: f64,
    /// Most bytes per second background compaction reads, or `None` for no
    /// limit. Default `None`. [`Db::compact`](crate::Db::compact) is not
    /// limited.
    pub compaction_rate: Option<u64>,
    /// How often the background thread looks for work, besides after every
    /// checkpoint. Default 1 s.
    pub compaction_interval: Duration,
    /// Where expiry times come from. Default [`SystemClock`]; tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Makes chosen WAL writes or syncs fail, for tests.
    #[cfg(feature = "fail-points")]
    pub wal_faults: Option<Arc<kv_wal::FaultInjector>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_value_len: MAX_VALUE_LEN,
            max_group_size: 1024,
            sync: SyncPolicy::Always,
            wal_recovery: RecoveryMode::default(),
            checkpoint_wal_size: 64 << 20,
            background_compaction: true,
            compaction_threshold: 0.5,
            compaction_rate: None,
            compaction_interval: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
            #[cfg(feature = "fail-points")]
            wal_faults: None,
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

    /// Sets [`Options::sync`].
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sets [`Options::wal_recovery`].
    pub fn wal_recovery(mut self, mode: RecoveryMode) -> Self {
        self.wal_recovery = mode;
        self
    }

    /// Sets [`Options::checkpoint_wal_size`].
    pub fn checkpoint_wal_size(mut self, bytes: u64) -> Self {
        self.checkpoint_wal_size = bytes;
        self
    }

    /// Sets [`Options::background_compaction`].
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }

    /// Sets [`Options::compaction_threshold`], clamped to 0..=1.
    pub fn compaction_threshold(mut self, dead_share: f64) -> Self {
        self.compaction_threshold = dead_share.clamp(0.0, 1.0);
        self
    }

    /// Sets [`Options::compaction_rate`].
    pub fn compaction_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.compaction_rate = bytes_per_second;
        self
    }

    /// Sets [`Options::compaction_interval`].
    pub fn compaction_interval(mut self, interval: Duration) -> Self {
        self.compaction_interval = interval;
        self
    }

    /// Sets [`Options::clock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn background_pass(&self) -> PassOptions {
        PassOptions {
            min_dead_ratio: self.compaction_threshold,
            rate: self.compaction_rate,
            pausable: true,
            run_bytes: self.segment_size,
        }
    }

    pub(crate) fn wal_options(&self) -> WalOptions {
        let options = WalOptions::default()
            .with_sync(self.sync)
            .with_recovery(self.wal_recovery);
        #[cfg(feature = "fail-points")]
        let options = match &self.wal_faults {
            Some(faults) => options.with_faults(Arc::clone(faults)),
            None => options,
        };
        options
    }

    /// Sets [`Options::max_group_size`] (at least 1).
    pub fn max_group_size(mut self, writes: usize) -> Self {
        self.max_group_size = writes.max(1);
        self
    }
}
