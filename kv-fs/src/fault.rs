//! The fault-injection seam for tests. The injector is compiled only with
//! the `fail-points` feature; without it [`Faults::check`] is an empty
//! inline function, so the call sites need no `cfg` and cost nothing.

use std::fmt;
use std::io;
use std::path::Path;

#[cfg(feature = "fail-points")]
use parking_lot::Mutex;
#[cfg(feature = "fail-points")]
use std::path::PathBuf;
#[cfg(feature = "fail-points")]
use std::sync::Arc;

/// A kind of file-system operation: what [`Faults::check`] is asked about
/// and the `FaultInjector` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileOp {
    /// A write of bytes to a file.
    Write,
    /// An `fsync`/`fdatasync` of a file or a directory.
    Sync,
    /// A rename into place.
    Rename,
    /// The creation (open with `O_CREAT`) of a file.
    Create,
}

impl FileOp {
    /// Every operation kind, in a fixed order.
    pub const ALL: [FileOp; 4] = [FileOp::Write, FileOp::Sync, FileOp::Rename, FileOp::Create];

    /// A lowercase name: `write`, `sync`, `rename` or `create`.
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Write => "write",
            FileOp::Sync => "sync",
            FileOp::Rename => "rename",
            FileOp::Create => "create",
        }
    }
}

impl fmt::Display for FileOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The seam every file operation of kv is checked against: empty (a no-op)
/// unless the `fail-points` feature is on and an injector was attached.
/// Cheap to clone: clones share the injector and its counts.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    #[cfg(feature = "fail-points")]
    injector: Option<Arc<FaultInjector>>,
}

impl Faults {
    /// Counts one operation of kind `op` on `path`. Call it just before the
    /// real operation, and skip the operation on `Err`.
    ///
    /// # Errors
    ///
    /// The injected error, if the attached injector says this operation
    /// fails; never without the `fail-points` feature.
    #[inline]
    pub fn check(&self, op: FileOp, path: &Path) -> io::Result<()> {
        #[cfg(feature = "fail-points")]
        if let Some(injector) = &self.injector {
            return injector.check(op, path);
        }
        let _ = (op, path);
        Ok(())
    }

    /// The injector attached, if any.
    #[cfg(feature = "fail-points")]
    pub fn injector(&self) -> Option<&Arc<FaultInjector>> {
        self.injector.as_ref()
    }
}

#[cfg(feature = "fail-points")]
impl From<Arc<FaultInjector>> for Faults {
    fn from(injector: Arc<FaultInjector>) -> Faults {
        Faults {
            injector: Some(injector),
        }
    }
}

#[cfg(feature = "fail-points")]
impl From<Option<Arc<FaultInjector>>> for Faults {
    fn from(injector: Option<Arc<FaultInjector>>) -> Faults {
        Faults { injector }
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
    first_hit: Option<(FileOp, PathBuf)>,
}

#[cfg(feature = "fail-points")]
/// Makes a chosen file operation fail, to test what happens after an I/O
/// error. Only compiled with the `fail-points` feature.
///
/// It counts, from 1 and separately per [`FileOp`], the operations of
/// everything it is attached to (through a [`Faults`] made from it), so
/// that one count covers every file of a caller that attaches one injector
/// to all of its parts. Each crate's docs say which operations it checks.
///
/// A failing write made through [`write_or_tear`](crate::write_or_tear)
/// first writes half of its bytes, as a write cut short by a full disk or a
/// crash would.
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
    pub fn fail_nth(&self, op: FileOp, n: u64, error: FaultError, mode: FaultMode) {
        self.state.lock().plans[op as usize] = (n > 0).then_some(Plan { at: n, error, mode });
    }

    /// Makes the next operation of kind `op` fail, as [`FaultInjector::fail_nth`].
    pub fn fail_next(&self, op: FileOp, error: FaultError, mode: FaultMode) {
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
        self.fail_nth(FileOp::Write, n, FaultError::Eio, FaultMode::Once);
    }

    /// Makes sync number `n` (counting from 1) fail once with `EIO`; 0
    /// fails none.
    pub fn fail_nth_sync(&self, n: u64) {
        self.fail_nth(FileOp::Sync, n, FaultError::Eio, FaultMode::Once);
    }

    /// Makes the next write fail once with `EIO`.
    pub fn fail_next_write(&self) {
        self.fail_next(FileOp::Write, FaultError::Eio, FaultMode::Once);
    }

    /// Makes the next sync fail once with `EIO`.
    pub fn fail_next_sync(&self) {
        self.fail_next(FileOp::Sync, FaultError::Eio, FaultMode::Once);
    }

    /// The number of operations of kind `op` attempted so far.
    pub fn count(&self, op: FileOp) -> u64 {
        self.state.lock().counts[op as usize]
    }

    /// The number of writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.count(FileOp::Write)
    }

    /// The number of syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.count(FileOp::Sync)
    }

    /// The number of operations that were made to fail so far.
    pub fn hits(&self) -> u64 {
        self.state.lock().hits
    }

    /// The first operation that was made to fail, and the path it was on.
    pub fn first_hit(&self) -> Option<(FileOp, PathBuf)> {
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
    pub fn check(&self, op: FileOp, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        let i = op as usize;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_operation_of_a_kind_fails_once_or_from_then_on() {
        let injector = Arc::new(FaultInjector::new());
        let faults = Faults::from(Arc::clone(&injector));
        let path = Path::new("f");
        injector.fail_nth(FileOp::Sync, 2, FaultError::NoSpace, FaultMode::Once);
        assert!(faults.check(FileOp::Write, path).is_ok());
        assert!(faults.check(FileOp::Sync, path).is_ok());
        let e = faults.check(FileOp::Sync, path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("sync 2 on f"), "{e}");
        assert!(faults.check(FileOp::Sync, path).is_ok());
        assert_eq!(
            (injector.syncs(), injector.writes(), injector.hits()),
            (3, 1, 1)
        );
        assert_eq!(injector.first_hit(), Some((FileOp::Sync, path.into())));

        injector.fail_next(FileOp::Rename, FaultError::Eio, FaultMode::Persistent);
        assert!(faults.check(FileOp::Rename, path).is_err());
        assert!(faults.clone().check(FileOp::Rename, path).is_err());
        injector.clear();
        assert!(faults.check(FileOp::Rename, path).is_ok());
        assert_eq!(injector.count(FileOp::Rename), 3);
        assert_eq!(injector.first_hit(), Some((FileOp::Sync, path.into())));
    }

    #[test]
    fn without_an_injector_nothing_fails() {
        for op in FileOp::ALL {
            assert!(Faults::default().check(op, Path::new("f")).is_ok());
        }
        assert_eq!(FileOp::Create.to_string(), "create");
    }
}
