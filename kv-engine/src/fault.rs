//! The fault-injection seam (the `fail-points` feature, for tests): one
//! [`kv_wal::FaultInjector`] set in [`Options::faults`](crate::Options)
//! counts and fails the file operations of the WAL, the segment log (its
//! segments, compaction outputs and hint files, through a
//! [`kv_log::FaultHook`]) and the marker alike. Without the
//! feature, [`Faults::check`] is an empty inline function.

use std::io;
use std::path::Path;

use crate::Options;

/// A file operation the engine itself does (the marker).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Write,
    Sync,
    Rename,
    Create,
}

/// The injector of [`Options::faults`](crate::Options), if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    #[cfg(feature = "fail-points")]
    injector: Option<std::sync::Arc<kv_wal::FaultInjector>>,
}

impl Faults {
    pub(crate) fn new(options: &Options) -> Faults {
        let _ = options;
        Faults {
            #[cfg(feature = "fail-points")]
            injector: options.faults.clone(),
        }
    }

    /// Counts one operation; `Err` if it must fail.
    #[inline]
    pub(crate) fn check(&self, op: Op, path: &Path) -> io::Result<()> {
        #[cfg(feature = "fail-points")]
        if let Some(injector) = &self.injector {
            let op = match op {
                Op::Write => kv_wal::FaultOp::Write,
                Op::Sync => kv_wal::FaultOp::Sync,
                Op::Rename => kv_wal::FaultOp::Rename,
                Op::Create => kv_wal::FaultOp::Create,
            };
            return injector.check(op, path);
        }
        let _ = (op, path);
        Ok(())
    }

    /// The options of the segment log, with a hook that asks the same
    /// injector.
    pub(crate) fn log_options(&self, segment_size: u64) -> kv_log::LogOptions {
        kv_log::LogOptions {
            segment_size,
            #[cfg(feature = "fail-points")]
            faults: self.injector.clone().map(|injector| {
                kv_log::FaultHook::new(move |op, path| {
                    let op = match op {
                        kv_log::FileOp::Write => kv_wal::FaultOp::Write,
                        kv_log::FileOp::Sync => kv_wal::FaultOp::Sync,
                        kv_log::FileOp::Rename => kv_wal::FaultOp::Rename,
                        kv_log::FileOp::Create => kv_wal::FaultOp::Create,
                    };
                    injector.check(op, path)
                })
            }),
            ..kv_log::LogOptions::default()
        }
    }
}
