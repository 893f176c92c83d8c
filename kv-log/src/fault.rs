//! The fault-injection seam for tests. The hook is compiled only with the
//! `fail-points` feature; without it [`Faults::check`] is an empty inline
//! function, so the call sites need no `cfg` and cost nothing.
//!
//! NOTE: kv-log takes a plain closure rather than a shared injector type,
//! so that it depends on nothing new: the engine hands it a closure over
//! the same counter it gives the WAL, and one count covers both.

use std::io;
use std::path::Path;

/// A kind of file operation the fault hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(feature = "fail-points"), allow(unreachable_pub, dead_code))]
pub enum FileOp {
    /// A write of bytes: a segment append, a segment or compaction output
    /// header, a hint file.
    Write,
    /// An `fsync`/`fdatasync` of a file or of the directory.
    Sync,
    /// A rename of a temporary file into place.
    Rename,
    /// The creation of a file.
    Create,
}

/// A test hook asked before every write, sync, rename and file creation of
/// a [`Log`](crate::Log), its segments and compaction outputs: `Err` makes
/// the operation fail with that error instead. Only with the
/// `fail-points` feature; set it in
/// [`LogOptions::faults`](crate::LogOptions::faults).
#[cfg(feature = "fail-points")]
#[derive(Clone)]
pub struct FaultHook(std::sync::Arc<HookFn>);

/// The function a [`FaultHook`] wraps.
#[cfg(feature = "fail-points")]
type HookFn = dyn Fn(FileOp, &Path) -> io::Result<()> + Send + Sync;

#[cfg(feature = "fail-points")]
impl FaultHook {
    /// Wraps `hook`, which is called with each operation and the path it is
    /// on.
    pub fn new(hook: impl Fn(FileOp, &Path) -> io::Result<()> + Send + Sync + 'static) -> Self {
        FaultHook(std::sync::Arc::new(hook))
    }
}

#[cfg(feature = "fail-points")]
impl std::fmt::Debug for FaultHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultHook")
    }
}

/// The hook a `Log` was given, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    #[cfg(feature = "fail-points")]
    pub(crate) hook: Option<FaultHook>,
}

impl Faults {
    /// Asks the hook about one operation; `Err` if it must fail.
    #[inline]
    pub(crate) fn check(&self, op: FileOp, path: &Path) -> io::Result<()> {
        #[cfg(feature = "fail-points")]
        if let Some(hook) = &self.hook {
            return (hook.0)(op, path);
        }
        let _ = (op, path);
        Ok(())
    }
}
