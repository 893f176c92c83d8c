//! Fault injection for tests, compiled only with the `fail-points` feature.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes a chosen write or sync of a [`Wal`](crate::Wal) fail, to test what
/// happens after an I/O error. Only compiled with the `fail-points` feature.
///
/// Attach one with [`WalOptions::with_faults`](crate::WalOptions::with_faults).
/// It counts the frame writes (one per flush) and the data syncs of WAL
/// files (one per commit or sync that has something to sync, and one per
/// rotation) of the `Wal`s it is attached to, from 1. The file headers and
/// directory syncs of file creation are not counted.
///
/// A failing write first writes half of its bytes, as a write cut short by
/// a full disk or a crash would.
#[derive(Debug, Default)]
pub struct FaultInjector {
    writes: AtomicU64,
    syncs: AtomicU64,
    fail_write_at: AtomicU64,
    fail_sync_at: AtomicU64,
}

impl FaultInjector {
    /// An injector that fails nothing until told to.
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// Makes write number `n` (counting from 1) fail; 0 fails none.
    pub fn fail_nth_write(&self, n: u64) {
        self.fail_write_at.store(n, Ordering::SeqCst);
    }

    /// Makes sync number `n` (counting from 1) fail; 0 fails none.
    pub fn fail_nth_sync(&self, n: u64) {
        self.fail_sync_at.store(n, Ordering::SeqCst);
    }

    /// Makes the next write fail.
    pub fn fail_next_write(&self) {
        self.fail_nth_write(self.writes() + 1);
    }

    /// Makes the next sync fail.
    pub fn fail_next_sync(&self) {
        self.fail_nth_sync(self.syncs() + 1);
    }

    /// The number of writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The number of syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Counts a write; fails it if it is the chosen one.
    pub(crate) fn before_write(&self) -> io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_write_at.load(Ordering::SeqCst) {
            return Err(io::Error::other(format!("injected failure of write {n}")));
        }
        Ok(())
    }

    /// Counts a sync; fails it if it is the chosen one.
    pub(crate) fn before_sync(&self) -> io::Result<()> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_sync_at.load(Ordering::SeqCst) {
            return Err(io::Error::other(format!("injected failure of sync {n}")));
        }
        Ok(())
    }
}
