//! The knobs of a [`Wal`](crate::Wal): sync policy, recovery mode, sizes.

use std::time::Duration;

use crate::format::{FILE_HEADER_LEN, MAX_RECORD_LEN};
use crate::{Error, Result};

/// When appended records are synced to stable storage.
///
/// Under every policy a record is handed to the operating system (copied
/// into the mapped file, so into the page cache) before its caller is
/// acknowledged, so a crash of the process loses nothing acknowledged. The policies differ in what a crash of the
/// operating system or a power loss can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncPolicy {
    /// Every commit syncs (`fdatasync`) before it returns: nothing
    /// acknowledged is lost, even by a power loss. Group commit makes one
    /// sync cover every record written with it.
    Always,
    /// A commit returns once its records are written; the owner syncs when
    /// [`Wal::sync_deadline`](crate::Wal::sync_deadline) passes, so nothing
    /// acknowledged stays unsynced longer than this interval (as long as
    /// the owner calls [`Wal::sync_if_due`](crate::Wal::sync_if_due) on
    /// time: this crate spawns no timer thread). A power loss can take the
    /// last interval's records.
    Interval(Duration),
    /// The WAL never syncs on its own (except when it rotates to a new
    /// file); the operating system writes pages back when it chooses. A
    /// power loss can take any records not yet written back.
    Never,
}

/// What to do with a damaged frame found when the log is opened or
/// replayed, after RocksDB's WAL recovery modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecoveryMode {
    /// An incomplete or damaged frame at the end of the last file (with
    /// zeros after it or not) is the mark of a write interrupted by a
    /// crash: it is dropped (and [`Wal::open`](crate::Wal::open) truncates
    /// the file there). Damage anywhere else is [`Error::Corruption`].
    ///
    /// In both modes, zeros from the end of the last frame to the end of
    /// the last file are not damage: they are the space allocated ahead of
    /// the frames, the clean end of the log.
    #[default]
    TolerateCorruptedTail,
    /// Any bad frame, even at the end of the last file, is
    /// [`Error::Corruption`].
    AbsoluteConsistency,
}

/// The options a [`Wal`](crate::Wal) is opened with.
///
/// Build them from [`WalOptions::default`] and the `with_*` methods; the
/// struct is `#[non_exhaustive]` so that options can be added.
///
/// ```
/// use std::time::Duration;
/// use kv_wal::{RecoveryMode, SyncPolicy, WalOptions};
///
/// let options = WalOptions::default()
///     .with_sync(SyncPolicy::Interval(Duration::from_millis(10)))
///     .with_recovery(RecoveryMode::AbsoluteConsistency)
///     .with_max_file_size(16 << 20);
/// assert_eq!(options.max_file_size, 16 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WalOptions {
    /// When records are synced. Default: [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// How damage at the end of the log is treated when it is opened.
    /// Default: [`RecoveryMode::TolerateCorruptedTail`].
    pub recovery: RecoveryMode,
    /// A file that would grow past this many bytes is closed and a new one
    /// started. A record longer than this gets a file of its own. Default:
    /// 64 MiB.
    pub max_file_size: u64,
    /// The longest payload accepted by `append`, 1 to [`MAX_RECORD_LEN`].
    /// Default: [`MAX_RECORD_LEN`] (256 MiB). Replay accepts records up to
    /// [`MAX_RECORD_LEN`] whatever this is, so lowering it never makes old
    /// records unreadable.
    pub max_record_len: u32,
    /// A version number of the owner's, for the encoding of its payloads:
    /// stored in the header of every file this `Wal` creates, and given
    /// back with each payload by [`Replay::payload_version`](crate::Replay::payload_version),
    /// so that an owner that changes its encoding can still read the
    /// payloads of files written before. [`Wal::open`](crate::Wal::open)
    /// goes on in a new file when the last one has an earlier payload
    /// version, so a file holds payloads of one version, and refuses a log
    /// with a file of a later one ([`Error::UnsupportedPayloadVersion`](crate::Error::UnsupportedPayloadVersion)),
    /// changing nothing: payload versions only grow. Default 0, which is
    /// also what files of builds before this field read as.
    pub payload_version: u8,
    /// Makes chosen writes, syncs, renames or file creations fail, for
    /// tests (the `fail-points` feature).
    #[cfg(feature = "fail-points")]
    pub faults: Option<std::sync::Arc<crate::FaultInjector>>,
}

/// The default [`WalOptions::max_file_size`]: 64 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 20;

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync: SyncPolicy::Always,
            recovery: RecoveryMode::default(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_record_len: MAX_RECORD_LEN,
            payload_version: 0,
            #[cfg(feature = "fail-points")]
            faults: None,
        }
    }
}

impl WalOptions {
    /// Sets [`WalOptions::payload_version`].
    #[must_use]
    pub fn with_payload_version(mut self, payload_version: u8) -> Self {
        self.payload_version = payload_version;
        self
    }

    /// Sets [`WalOptions::sync`].
    #[must_use]
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Sets [`WalOptions::recovery`].
    #[must_use]
    pub fn with_recovery(mut self, recovery: RecoveryMode) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets [`WalOptions::max_file_size`].
    #[must_use]
    pub fn with_max_file_size(mut self, max_file_size: u64) -> Self {
        self.max_file_size = max_file_size;
        self
    }

    /// Sets [`WalOptions::max_record_len`].
    #[must_use]
    pub fn with_max_record_len(mut self, max_record_len: u32) -> Self {
        self.max_record_len = max_record_len;
        self
    }

    /// Sets the fault injector that tests use to make file operations fail.
    ///
    /// The WAL checks every frame write (one per flush), every allocation
    /// of space ahead (a write, one per mebibyte appended to a file, so
    /// also at the first flush into each file), every file header write,
    /// every data sync (one per commit or sync that has something to sync,
    /// one per rotation or close that has something to sync or space
    /// allocated ahead to cut off, one per rolled-back write, one per cut
    /// at open), every directory sync, and the temporary-file creation and
    /// rename of every new file.
    #[cfg(feature = "fail-points")]
    #[must_use]
    pub fn with_faults(mut self, faults: std::sync::Arc<crate::FaultInjector>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The fault-injection seam these options carry: empty unless the
    /// `fail-points` feature is on and an injector was set.
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

    /// Checks that every option is in range.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_record_len == 0 || self.max_record_len > MAX_RECORD_LEN {
            return Err(Error::InvalidOptions(format!(
                "max_record_len is {}, but it must be 1 to {MAX_RECORD_LEN}",
                self.max_record_len
            )));
        }
        if self.max_file_size <= FILE_HEADER_LEN as u64 {
            return Err(Error::InvalidOptions(format!(
                "max_file_size is {}, but it must be more than the {FILE_HEADER_LEN}-byte file header",
                self.max_file_size
            )));
        }
        Ok(())
    }
}
