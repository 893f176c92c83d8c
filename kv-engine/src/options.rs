//! [`Options`]: every tunable of a [`Db`](crate::Db), its default, and the
//! checks `Db::open` makes before touching a file (`Options::validate`).

use kv_format::MAX_VALUE_LEN;
use kv_log::{DEFAULT_SEGMENT_SIZE, MAX_SUPERSEDES, SEGMENT_HEADER_LEN};
use std::sync::Arc;
use std::time::Duration;

use kv_wal::{RecoveryMode, SyncPolicy, WalOptions};

use crate::clock::{Clock, SystemClock};
use crate::compactor::PassOptions;
use crate::{Error, Result};

/// Options for [`Db::open_with`](crate::Db::open_with).
///
/// The fields are public; [`Db::open_with`](crate::Db::open_with) checks
/// them first ([`Options::validate`]) and refuses a value out of range with
/// [`Error::InvalidOptions`], before touching any file. Some builder
/// methods clamp instead, as each says.
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
    /// Default 256 MiB. Refused outside
    /// [`Options::MIN_SEGMENT_SIZE`]`..=`[`Options::MAX_SEGMENT_SIZE`]
    /// (256 bytes to 4 GiB − 1 MiB): offsets in a segment are 32-bit, and a
    /// segment compacted alone gets a longer header than it had. A record
    /// larger than this gets a segment of its own.
    ///
    /// What it trades: only sealed segments are compacted. With background
    /// compaction on, the active segment is also sealed once it holds a
    /// quarter of the live bytes (and a sixteenth of this size), so a
    /// small database does not keep its dead bytes in one large active
    /// segment (the `space_steady` example, 1M keys of 116 bytes
    /// overwritten at 100,000/s with 256 MiB segments: median 2.2× the
    /// keys and values, 3.1× before that rule); smaller segments mean more
    /// files and more, smaller compactions.
    pub segment_size: u64,
    /// The largest value accepted by `put`. Default and maximum 64 MiB (the
    /// record format's limit): a larger value in the field is refused, the
    /// builder [`Options::max_value_len`] clamps.
    pub max_value_len: usize,
    /// Most writes the writer thread takes into one group. Default 1024.
    /// Refused outside `1..=`[`Options::MAX_GROUP_SIZE`] (65,536): the
    /// writer's queue holds four groups and is allocated whole at open. The
    /// builder [`Options::max_group_size`] raises 0 to 1.
    pub max_group_size: usize,
    /// Whether [`Db::open_with`](crate::Db::open_with) creates a database
    /// where there is none ([`holds_database`](crate::holds_database)
    /// says whether there is). Default true: a missing directory is
    /// created, and so is a database in a directory that holds other
    /// files. When false, such an open fails with
    /// [`Error::NotADatabase`](crate::Error::NotADatabase) before touching
    /// any file, as a reader of an existing database wants.
    pub create_if_missing: bool,
    /// Opens the database as a read-only view (see
    /// [`Db::open_read_only`](crate::Db::open_read_only)): nothing in the
    /// directory is created, changed or locked, the database may be open
    /// for writing in another process meanwhile, and writes are refused
    /// with [`Error::ReadOnly`](crate::Error::ReadOnly). Implies that a
    /// missing database is not created. Default false.
    pub read_only: bool,
    /// When the write-ahead log is synced. Default [`SyncPolicy::Always`]:
    /// an acknowledged write survives power loss. Under every policy an
    /// acknowledged write survives the process being killed.
    pub sync: SyncPolicy,
    /// How a damaged tail of the write-ahead log is treated at open.
    /// Default [`RecoveryMode::TolerateCorruptedTail`].
    pub wal_recovery: RecoveryMode,
    /// The WAL is trimmed (segments synced, a new marker written, WAL files
    /// the segments now cover deleted) whenever it has grown by this many
    /// bytes, or by an eighth of the segments' bytes (as of the last trim)
    /// if that is less but at least 4 MiB, 2 s after the last write once
    /// the writer is idle, and at close. Default 64 MiB.
    /// Any value is accepted; 0 trims after every group of writes, which is
    /// correct but slow (each time syncs the segments and replaces the
    /// marker).
    ///
    /// What it trades: the WAL takes up to about this much disk besides
    /// the segments (by the eighth, at most about 16 MiB for the 131 MB
    /// of records of the `space_steady` example's 1M keys; a fixed 64 MiB
    /// measured 0.47× the data there),
    /// and segments become compactable only once a marker lists them; a
    /// smaller value trims, so syncs the segments and rewrites the marker,
    /// more often.
    pub max_wal_size: u64,
    /// Whether a background thread compacts on its own. Default true. The
    /// same thread first decodes, ahead of use, the shards of a saved
    /// index that nothing has touched yet (see [`Options::save_index`]).
    pub background_compaction: bool,
    /// Whether a clean close saves the index (the file `INDEX`, about 11
    /// bytes plus the key per key), so that the next open loads it rather
    /// than rebuilding it from hint files and segments, for a close that
    /// writes those bytes (without a sync) and a closed database that holds
    /// them. The open reads only its header (about 1 ms, whatever the
    /// number of keys); each of the index's 64 shards is then decoded when
    /// first touched (about 0.5 ms per million keys in the database) or by
    /// the background thread, whichever comes first, rather than about
    /// 0.2 s per million keys to rebuild the whole index. Default true.
    /// The file is used only if it matches the database exactly; it is
    /// removed before the first write after the open that loads it (a
    /// session that only reads leaves it, and the marker, as they were),
    /// so after a crash that followed a write the index is rebuilt. Off, a
    /// close writes none and removes any there is.
    pub save_index: bool,
    /// Background compaction takes a sealed segment once this share of its
    /// bytes is dead (0 to 1), whatever the rest of the directory looks
    /// like. Default 0.5. Lower keeps less dead data on disk for more
    /// copying (the `space_steady` example, record format 1, 64 MiB
    /// segments and a 16 MiB WAL: 2.2× the data at 0.5, 1.95× at 0.3, with
    /// 11 and 18 compactions in 30 s); [`Options::compaction_space_target`]
    /// is the knob for the directory as a whole. NaN or a value outside
    /// 0..=1 in the field is refused; the builder
    /// [`Options::compaction_threshold`] clamps to 0..=1 (and keeps NaN,
    /// which is then refused).
    pub compaction_threshold: f64,
    /// Background compaction also keeps the dead share of all the segments'
    /// bytes at most this (0 to 1), looking at the whole directory rather
    /// than at each segment: when more is dead, it takes, besides the
    /// segments past [`Options::compaction_threshold`], the sealed ones
    /// with the largest dead shares (each at least this much dead) until
    /// what would be left is under it. Default 0.25. Lower keeps less dead
    /// data for more copying; 1 turns it off, leaving the per-segment
    /// threshold alone. In the `space_steady` example (1M keys of 116
    /// bytes overwritten at 100,000 a second for 30 s, other options at
    /// their defaults), the directory 5 s after the writes was 1.89× the
    /// data with it off, 1.72× at 0.25 and 1.63× at 0.2, for 3.49, 3.85
    /// and 4.36 bytes written to storage per byte put. NaN or a value
    /// outside 0..=1 in the field is refused; the builder clamps.
    pub compaction_space_target: f64,
    /// Most bytes per second background compaction reads, or `None` for no
    /// limit. Default `None`; `Some(0)` also means no limit.
    /// [`Db::compact`](crate::Db::compact) is not limited.
    pub compaction_rate: Option<u64>,
    /// How often the background thread looks for work, besides after every
    /// WAL trim. Default 1 s. Refused below
    /// [`Options::MIN_COMPACTION_INTERVAL`] (1 ms), whether or not
    /// background compaction is on: a zero interval would spin the thread.
    pub compaction_interval: Duration,
    /// Where expiry times come from. Default [`SystemClock`]; tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Makes chosen file operations fail, for tests (the `fail-points`
    /// feature): one injector counts the writes, syncs, renames and file
    /// creations of the WAL, the segments, compaction outputs, hint files,
    /// the marker and the copy `Db::checkpoint` makes.
    #[cfg(feature = "fail-points")]
    pub faults: Option<Arc<kv_fs::FaultInjector>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_value_len: MAX_VALUE_LEN,
            max_group_size: 1024,
            create_if_missing: true,
            read_only: false,
            sync: SyncPolicy::Always,
            wal_recovery: RecoveryMode::default(),
            max_wal_size: 64 << 20,
            background_compaction: true,
            save_index: true,
            compaction_threshold: 0.5,
            compaction_space_target: 0.25,
            compaction_rate: None,
            compaction_interval: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
            #[cfg(feature = "fail-points")]
            faults: None,
        }
    }
}

impl Options {
    /// The smallest [`Options::segment_size`]: 256 bytes. Sizes this small
    /// are for tests; every segment is a file, and small ones make many.
    pub const MIN_SEGMENT_SIZE: u64 = 256;
    /// The largest [`Options::segment_size`]: 4 GiB − 1 MiB. Offsets and
    /// lengths in the index are 32-bit, so no segment may reach 4 GiB, and
    /// a compaction output's header is longer than a log segment's.
    pub const MAX_SEGMENT_SIZE: u64 = (4 << 30) - (1 << 20);
    /// The largest [`Options::max_group_size`]: 65,536 writes.
    pub const MAX_GROUP_SIZE: usize = 1 << 16;
    /// The shortest [`Options::compaction_interval`]: 1 ms.
    pub const MIN_COMPACTION_INTERVAL: Duration = Duration::from_millis(1);

    /// Checks every field against its range (each field's documentation
    /// gives it). [`Db::open_with`](crate::Db::open_with) calls this first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] naming the first field out of range, what
    /// it holds and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let refuse =
            |option: &'static str, reason: String| Err(Error::InvalidOptions { option, reason });
        if !(Self::MIN_SEGMENT_SIZE..=Self::MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return refuse(
                "segment_size",
                format!(
                    "{} bytes is outside the allowed {} to {} bytes (256 bytes to 4 GiB - 1 MiB)",
                    self.segment_size,
                    Self::MIN_SEGMENT_SIZE,
                    Self::MAX_SEGMENT_SIZE
                ),
            );
        }
        if self.max_value_len > MAX_VALUE_LEN {
            return refuse(
                "max_value_len",
                format!(
                    "{} bytes is above the record format's maximum of {MAX_VALUE_LEN} bytes (64 MiB)",
                    self.max_value_len
                ),
            );
        }
        if !(1..=Self::MAX_GROUP_SIZE).contains(&self.max_group_size) {
            return refuse(
                "max_group_size",
                format!(
                    "{} writes is outside the allowed 1 to {}",
                    self.max_group_size,
                    Self::MAX_GROUP_SIZE
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.compaction_threshold) {
            return refuse(
                "compaction_threshold",
                format!(
                    "{} is not a share of dead bytes from 0 to 1",
                    self.compaction_threshold
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.compaction_space_target) {
            return refuse(
                "compaction_space_target",
                format!(
                    "{} is not a share of dead bytes from 0 to 1",
                    self.compaction_space_target
                ),
            );
        }
        if self.compaction_interval < Self::MIN_COMPACTION_INTERVAL {
            return refuse(
                "compaction_interval",
                format!(
                    "{:?} is below the minimum of 1 ms (a shorter interval would keep the compactor thread busy)",
                    self.compaction_interval
                ),
            );
        }
        Ok(())
    }

    /// Sets [`Options::segment_size`].
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets [`Options::max_value_len`], clamped to 64 MiB (the field itself
    /// is refused above that).
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes.min(MAX_VALUE_LEN);
        self
    }

    /// Sets [`Options::create_if_missing`].
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets [`Options::read_only`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
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

    /// Sets [`Options::max_wal_size`].
    pub fn max_wal_size(mut self, bytes: u64) -> Self {
        self.max_wal_size = bytes;
        self
    }

    /// Sets [`Options::background_compaction`].
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }

    /// Sets [`Options::save_index`].
    pub fn save_index(mut self, on: bool) -> Self {
        self.save_index = on;
        self
    }

    /// Sets [`Options::compaction_threshold`], clamped to 0..=1. NaN is
    /// kept, and refused at open.
    pub fn compaction_threshold(mut self, dead_share: f64) -> Self {
        self.compaction_threshold = dead_share.clamp(0.0, 1.0);
        self
    }

    /// Sets [`Options::compaction_space_target`], clamped to 0..=1. NaN is
    /// kept, and refused at open.
    pub fn compaction_space_target(mut self, dead_share: f64) -> Self {
        self.compaction_space_target = dead_share.clamp(0.0, 1.0);
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
            space_target: self.compaction_space_target,
            rate: self.compaction_rate,
            pausable: true,
            run_bytes: self.run_bytes(),
        }
    }

    /// The most live bytes one compaction run merges: see [`run_bytes`].
    pub(crate) fn run_bytes(&self) -> u64 {
        run_bytes(self.segment_size)
    }

    pub(crate) fn wal_options(&self) -> WalOptions {
        let options = WalOptions::default()
            .with_sync(self.sync)
            .with_recovery(self.wal_recovery)
            .with_payload_version(kv_format::FORMAT_VERSION);
        #[cfg(feature = "fail-points")]
        let options = match &self.faults {
            Some(faults) => options.with_faults(Arc::clone(faults)),
            None => options,
        };
        options
    }

    /// The fault-injection seam of [`Options::faults`], for the engine's own
    /// files (the marker, the checkpoint copy) and the segment log: empty
    /// without the `fail-points` feature or an injector.
    pub(crate) fn faults(&self) -> kv_fs::Faults {
        #[cfg(feature = "fail-points")]
        {
            kv_fs::Faults::from(self.faults.clone())
        }
        #[cfg(not(feature = "fail-points"))]
        {
            kv_fs::Faults::default()
        }
    }

    /// The options of the segment log, its file operations checked against
    /// `faults` (those of [`Options::faults`], shared with the WAL).
    pub(crate) fn log_options(&self, faults: &kv_fs::Faults) -> kv_log::LogOptions {
        let _ = faults;
        kv_log::LogOptions {
            segment_size: self.segment_size,
            #[cfg(feature = "fail-points")]
            faults: faults.clone(),
        }
    }

    /// Sets [`Options::max_group_size`], raising 0 to 1. A value above
    /// [`Options::MAX_GROUP_SIZE`] is kept, and refused at open.
    pub fn max_group_size(mut self, writes: usize) -> Self {
        self.max_group_size = writes.max(1);
        self
    }
}

/// The record layout of the payloads of a WAL file of payload version
/// `payload_version` (docs/format.md, "WAL payload"): this build writes
/// the record format version ([`kv_format::FORMAT_VERSION`]); files of the
/// builds before the field say 0, and hold version 1 records. `None` for a
/// version this build does not read.
pub(crate) fn wal_records(payload_version: u8) -> Option<kv_format::RecordFormat> {
    match payload_version {
        0 => Some(kv_format::RecordFormat::V1),
        2 => Some(kv_format::RecordFormat::V2),
        _ => None,
    }
}

/// The longest compaction output header: [`SEGMENT_HEADER_LEN`], then one
/// id per input (at most [`MAX_SUPERSEDES`]) and their checksum.
const MAX_OUTPUT_HEADER: u64 = SEGMENT_HEADER_LEN as u64 + 4 * MAX_SUPERSEDES as u64 + 8;

/// Room left in every output for what the live bytes of its inputs do not
/// count: tombstones the run must keep are dead bytes in `Usage`.
const RUN_MARGIN: u64 = 64 << 20;

/// The most live bytes one compaction run may merge, for a `segment_size`:
/// that size (a run writes one output about as large as a segment), but
/// never so much that the output, with its longest header and the margin
/// for kept tombstones, could pass [`kv_log::MAX_SEGMENT_SIZE`], where
/// `CompactionOutput::append_encoded` refuses records. Whatever the
/// `segment_size`, even one not validated.
pub(crate) fn run_bytes(segment_size: u64) -> u64 {
    segment_size.min(kv_log::MAX_SEGMENT_SIZE - MAX_OUTPUT_HEADER - RUN_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_always_fits_in_one_output() {
        for segment_size in [
            0,
            Options::MIN_SEGMENT_SIZE,
            DEFAULT_SEGMENT_SIZE,
            Options::MAX_SEGMENT_SIZE,
            kv_log::MAX_SEGMENT_SIZE,
            4 << 30,
            5 << 30,
            u64::MAX,
        ] {
            let run = run_bytes(segment_size);
            assert!(run <= segment_size, "{segment_size}: {run}");
            let output = run + MAX_OUTPUT_HEADER + RUN_MARGIN;
            assert!(
                output <= kv_log::MAX_SEGMENT_SIZE,
                "{segment_size}: a run of {run} bytes can write {output} bytes"
            );
            let options = Options::default().segment_size(segment_size);
            assert_eq!(options.background_pass().run_bytes, run);
        }
        // Sizes well below the limit are not cut.
        assert_eq!(run_bytes(DEFAULT_SEGMENT_SIZE), DEFAULT_SEGMENT_SIZE);
        assert_eq!(run_bytes(4096), 4096);
    }

    #[test]
    fn a_segment_compacted_alone_fits_in_one_output() {
        // A log segment holds at most `segment_size` bytes (header
        // included) unless one record is larger; compacted alone, its
        // records get a header of one input.
        let one_input_header = SEGMENT_HEADER_LEN as u64 + 4 + 8;
        let largest_data = Options::MAX_SEGMENT_SIZE - SEGMENT_HEADER_LEN as u64;
        assert!(largest_data + one_input_header <= kv_log::MAX_SEGMENT_SIZE);
    }
}
