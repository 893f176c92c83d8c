//! Time for expiry: a clock the engine reads, replaceable in tests.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the engine reads the time from, to stamp and check expiries.
///
/// The engine reads the clock when a write with a time to live is applied
/// and when it meets a key that has an expiry (reads, iteration, `len`,
/// compaction). It never trusts the clock to move forwards: the time it
/// uses is the highest the clock has reported since the database was
/// opened, so a key that has expired stays expired while the database is
/// open, however the clock moves.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The system's wall clock, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests of expiry that must not
/// sleep. Share it with the database through an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use kv_engine::{Db, ManualClock, Options};
///
/// let clock = Arc::new(ManualClock::new(1_000));
/// let dir = tempfile::tempdir()?;
/// let db = Db::open_with(dir.path(), Options::default().clock(clock.clone()))?;
/// db.put_with_ttl(b"session", b"abc", Duration::from_secs(30))?;
/// clock.advance(Duration::from_secs(29));
/// assert!(db.get(b"session")?.is_some());
/// clock.advance(Duration::from_secs(1));
/// assert!(db.get(b"session")?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock showing `millis` milliseconds since the Unix epoch.
    pub fn new(millis: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(millis),
        }
    }

    /// Sets the time, forwards or backwards.
    pub fn set(&self, millis: u64) {
        self.now.store(millis, Ordering::SeqCst);
    }

    /// Moves the time forwards by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// The engine's view of a [`Clock`]: never goes backwards.
#[derive(Debug)]
pub(crate) struct Monotonic {
    clock: std::sync::Arc<dyn Clock>,
    highest: AtomicU64,
}

impl Monotonic {
    pub(crate) fn new(clock: std::sync::Arc<dyn Clock>) -> Monotonic {
        let now = clock.now_millis();
        Monotonic {
            clock,
            highest: AtomicU64::new(now),
        }
    }

    /// The highest time the clock has shown, in milliseconds.
    pub(crate) fn now(&self) -> u64 {
        let now = self.clock.now_millis();
        let highest = self.highest.load(Ordering::Relaxed);
        if now > highest {
            // Only when the clock has moved on: readers share no cache line
            // writes within one millisecond.
            self.highest.fetch_max(now, Ordering::Relaxed).max(now)
        } else {
            highest
        }
    }

    /// Whether a record that expires at `expires_at` has expired.
    pub(crate) fn expired(&self, expires_at: u64) -> bool {
        expires_at != kv_format::NO_EXPIRY && self.now() >= expires_at
    }

    /// The expiry of a record written now with time to live `ttl`; never
    /// [`NO_EXPIRY`](kv_format::NO_EXPIRY).
    pub(crate) fn expiry_after(&self, ttl: Duration) -> u64 {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.now().saturating_add(ttl).max(1)
    }
}
