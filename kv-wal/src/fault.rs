//! Fault injection for tests. The injector is compiled only with the
//! `fail-points` feature; without it [`Faults::check`] is an empty inline
//! function, so the call sites need no `cfg` and cost nothing.

use std::fmt;
use std::io;
use std::path::Path;

#[cfg(feature = "fail-points")]
use parking_lot::Mutex;

/// A kind of file-system operation the `FaultInjector` counts and can
/// make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "fail-points"), allow(unreachable_pub, dead_code))]
pub enum FaultOp {
    /// A write of bytes to a file (a WAL flush, a file header, a segment
    /// append, a hint file, the marker).
    Write,
    /// An `fsync`/`fdatasync` of a file or a directory.
    Sync,
    /// A rename of a temporary file into place.
    Rename,
    /// The creation (open with `O_CREAT`) of a file.
    Create,
}

#[cfg_attr(not(feature = "fail-points"), allow(unreachable_pub, dead_code))]
impl FaultOp {
    /// Every operation kind, in a fixed order.
    pub const ALL: [FaultOp; 4] = [
        FaultOp::Write,
        FaultOp::Sync,
        FaultOp::Rename,
        FaultOp::Create,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A lowercase name: `write`, `sync`, `rename` or `create`.
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Write => "write",
            FaultOp::Sync => "sync",
            FaultOp::Rename => "rename",
            FaultOp::Create => "create",
        }
    }
}

impl fmt::Display for FaultOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(feature = "fail-points")]
/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// `EIO`: an I/O error of the device.
    Eio,
    /// `ENOSPC`: no space left on the device.
    NoSpace,
}

#[cfg(feature = "fail-points")]
impl FaultError {
    /// Both errors.
    pub const ALL: [FaultError; 2] = [FaultError::Eio, FaultError::NoSpace];

    /// The errno, the same on Linux and macOS.
    fn errno(self) -> i32 {
        match self {
            FaultError::Eio => 5,
            FaultError::NoSpace => 28,
        }
    }

    /// `EIO` or `ENOSPC`.
    pub fn name(self) -> &'static str {
        match self {
            FaultError::Eio => "EIO",
            FaultError::NoSpace => "ENOSPC",
        }
    }
}

#[cfg(feature = "fail-points")]
/// Whether an injected fault fails one operation or every one after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// Only the chosen operation fails.
    Once,
    /// The chosen operation and every later one of the same kind fail,
    /// until [`FaultInjector::clear`].
    Persistent,
}

#[cfg(feature = "fail-points")]
#[derive(Debug, Clone, Copy)]
struct Plan {
    at: u64,
    error: FaultError,
    mode: FaultMode,
}

#[cfg(feature = "fail-points")]
#[derive(Debug, Default)]
struct State {
    counts: [u64; 4],
    plans: [Option<Plan>; 4],
    hits: u64,
    first_hit: Option<(FaultOp, std::path::PathBuf)>,
}

#[cfg(feature = "fail-points")]
/// Makes a chosen file operation fail, to test what happens after an I/O
/// error. Only compiled with the `fail-points` feature.
///
/// It counts, from 1 and separately per [`FaultOp`], the operations of
/// everything it is attached to: a [`Wal`](crate::Wal) through
/// [`WalOptions::with_faults`](crate::WalOptions::with_faults), and any
/// other code that calls [`FaultInjector::check`] before its own
/// operations (the kv engine attaches one injector to its WAL, its segment
/// files and its marker, so one count covers them all).
///
/// For the WAL that is every frame write (one per flush), every file
/// header write, every data sync (one per commit or sync that has
/// something to sync, one per rotation, one per discarded write), every
/// directory sync, and the temporary-file creation and rename of every new
/// file.
///
/// A failing write first writes half of its bytes, as a write cut short by
/// a full disk or a crash would.
#[derive(Debug, Default)]
pub struct FaultInjector {
    state: Mutex<State>,
}

#[cfg(feature = "fail-points")]
impl FaultInjector {
    /// An injector that fails nothing until told to.
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// Makes operation number `n` of kind `op` (counting from 1 since the
    /// injector was made) fail with `error`; with [`FaultMode::Persistent`]
    /// every later one of that kind fails too. `n == 0` fails none.
    /// Replaces any earlier plan for `op`.
    pub fn fail_nth(&self, op: FaultOp, n: u64, error: FaultError, mode: FaultMode) {
        self.state.lock().plans[op.index()] = (n > 0).then_some(Plan { at: n, error, mode });
    }

    /// Makes the next operation of kind `op` fail, as [`FaultInjector::fail_nth`].
    pub fn fail_next(&self, op: FaultOp, error: FaultError, mode: FaultMode) {
        let next = self.count(op) + 1;
        self.fail_nth(op, next, error, mode);
    }

    /// Stops failing anything: the fault "clears" (space was freed, the
    /// device came back). The counts go on.
    pub fn clear(&self) {
        self.state.lock().plans = [None; 4];
    }

    /// Makes write number `n` (counting from 1) fail once with `EIO`; 0
    /// fails none.
    pub fn fail_nth_write(&self, n: u64) {
        self.fail_nth(FaultOp::Write, n, FaultError::Eio, FaultMode::Once);
    }

    /// Makes sync number `n` (counting from 1) fail once with `EIO`; 0
    /// fails none.
    pub fn fail_nth_sync(&self, n: u64) {
        self.fail_nth(FaultOp::Sync, n, FaultError::Eio, FaultMode::Once);
    }

    /// Makes the next write fail once with `EIO`.
    pub fn fail_next_write(&self) {
        self.fail_next(FaultOp::Write, FaultError::Eio, FaultMode::Once);
    }

    /// Makes the next sync fail once with `EIO`.
    pub fn fail_next_sync(&self) {
        self.fail_next(FaultOp::Sync, FaultError::Eio, FaultMode::Once);
    }

    /// The number of operations of kind `op` attempted so far.
    pub fn count(&self, op: FaultOp) -> u64 {
        self.state.lock().counts[op.index()]
    }

    /// The number of writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.count(FaultOp::Write)
    }

    /// The number of syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.count(FaultOp::Sync)
    }

    /// The number of operations that were made to fail so far.
    pub fn hits(&self) -> u64 {
        self.state.lock().hits
    }

    /// The first operation that was made to fail, and the path it was on.
    pub fn first_hit(&self) -> Option<(FaultOp, std::path::PathBuf)> {
        self.state.lock().first_hit.clone()
    }

    /// Counts one operation of kind `op` on `path`, and returns the
    /// injected error if it is one that must fail. Call it just before the
    /// real operation, and skip the operation on `Err` (for a write, write
    /// part of the bytes first if you like).
    ///
    /// # Errors
    ///
    /// The injected error, whose message names the operation, its number
    /// and the path; its [`io::ErrorKind`] is
    /// [`StorageFull`](io::ErrorKind::StorageFull) for `ENOSPC`.
    pub fn check(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let i = op.index();
        state.counts[i] += 1;
        let n = state.counts[i];
        let Some(plan) = state.plans[i] else {
            return Ok(());
        };
        let fails = match plan.mode {
            FaultMode::Once => n == plan.at,
            FaultMode::Persistent => n >= plan.at,
        };
        if !fails {
            return Ok(());
        }
        state.hits += 1;
        state
            .first_hit
            .get_or_insert_with(|| (op, path.to_path_buf()));
        let os = io::Error::from_raw_os_error(plan.error.errno());
        Err(io::Error::new(
            os.kind(),
            format!("injected failure of {op} {n} on {}: {os}", path.display()),
        ))
    }
}

/// The injector a `Wal` was given, if any: `check` is a no-op without one
/// (and without the `fail-points` feature), so call sites need no `cfg`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    #[cfg(feature = "fail-points")]
    pub(crate) injector: Option<std::sync::Arc<FaultInjector>>,
}

impl Faults {
    /// Counts one operation; `Err` if it must fail.
    #[inline]
    pub(crate) fn check(&self, op: FaultOp, path: &Path) -> io::Result<()> {
        #[cfg(feature = "fail-points")]
        if let Some(injector) = &self.injector {
            return injector.check(op, path);
        }
        let _ = (op, path);
        Ok(())
    }
}
