//! Bounded waiting before sleeping: the hand-off between callers and the
//! writer thread (`reply.rs`, `writer.rs`).
//!
//! A write is answered within a few microseconds, and the next one of a
//! busy caller arrives as soon; putting a thread to sleep and waking it
//! costs more than that (a futex call on each side and two context
//! switches). So a waiter first spins on its condition for a moment, then
//! gives its core away (`yield_now`) for a bounded time, so that the thread
//! it waits for can run even when there are more threads than cores, and
//! only then sleeps. The bound keeps an idle database from burning CPU: a
//! waiter sleeps at most [`YIELD_FOR`] after it began waiting. This is the
//! shape of RocksDB's write-thread wait (a short busy loop, then a bounded
//! `yield` loop, then blocking).
//!
//! A caller also waits while the writer gathers and commits its group
//! (`Shared::committing`): under `SyncPolicy::Always` that is up to
//! 200 µs of gathering and an
//! `fdatasync`, a hundred microseconds or more, after which the reply comes
//! at once; a caller that slept through it would cost the writer a futex
//! wake-up and itself the time to be scheduled again (tens of
//! microseconds on a virtual machine, a fifth of the sync). So a caller
//! keeps yielding for as long as a commit is in progress
//! ([`SpinThenPark::spin_unless_busy`]), [`BUSY_FOR`] at most (a disk that
//! stalls is waited for asleep), and sleeps [`YIELD_FOR`] after it ends,
//! as before.

use std::time::{Duration, Instant};

/// How many rounds of `spin_loop` hints before yielding: each round doubles
/// the hints (1, 2, ... 32: 63 in all, a few thousand cycles at most on
/// current x86 cores; not measured on its own).
const SPIN_ROUNDS: u32 = 6;

/// How long a waiter yields its core before it sleeps.
pub(crate) const YIELD_FOR: Duration = Duration::from_micros(50);

/// The longest a caller yields while the writer's commit is in progress (a
/// sync that takes longer, a disk that stalls, is waited for asleep).
pub(crate) const BUSY_FOR: Duration = Duration::from_millis(5);

/// What to do after one step of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spun {
    /// Check the condition again.
    Again,
    /// The time to wait actively is over: sleep (block) now.
    Park,
}

/// The state of one bounded active wait.
#[derive(Debug)]
pub(crate) struct SpinThenPark {
    round: u32,
    yielding_since: Option<Instant>,
    /// When the wait started to be extended for `busy`.
    busy_since: Option<Instant>,
}

impl SpinThenPark {
    pub(crate) fn new() -> SpinThenPark {
        SpinThenPark {
            round: 0,
            yielding_since: None,
            busy_since: None,
        }
    }

    /// [`SpinThenPark::spin`], except that while `busy` (the writer's
    /// commit is in progress) the yielding goes on, for [`BUSY_FOR`] at
    /// most; the [`YIELD_FOR`] before sleeping counts from the last busy
    /// step.
    #[cfg(not(kv_engine_loom))]
    pub(crate) fn spin_unless_busy(&mut self, busy: bool) -> Spun {
        if busy && self.round >= SPIN_ROUNDS {
            let now = Instant::now();
            let since = *self.busy_since.get_or_insert(now);
            if now.duration_since(since) < BUSY_FOR {
                // Yield without asking whether the yielding is over: a
                // waiter preempted right after `now` would otherwise see
                // more than YIELD_FOR pass and park inside the busy time.
                self.yielding_since = Some(now);
                std::thread::yield_now();
                return Spun::Again;
            }
        }
        self.spin()
    }

    /// Waits a little (a spin, or a yield of the core), to be called
    /// between checks of the condition; `Park` once the active wait is
    /// over.
    #[cfg(not(kv_engine_loom))]
    pub(crate) fn spin(&mut self) -> Spun {
        if self.round < SPIN_ROUNDS {
            for _ in 0..(1u32 << self.round) {
                std::hint::spin_loop();
            }
            self.round += 1;
            return Spun::Again;
        }
        let since = *self.yielding_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= YIELD_FOR {
            return Spun::Park;
        }
        std::thread::yield_now();
        Spun::Again
    }

    /// Under loom: as [`SpinThenPark::spin`].
    #[cfg(kv_engine_loom)]
    pub(crate) fn spin_unless_busy(&mut self, _busy: bool) -> Spun {
        let _ = self.busy_since;
        self.spin()
    }

    /// Under loom, where time does not pass: one yield (so that the model
    /// runs the other threads), then `Park`.
    #[cfg(kv_engine_loom)]
    pub(crate) fn spin(&mut self) -> Spun {
        let _ = self.yielding_since;
        self.round += 1;
        if self.round > 1 {
            return Spun::Park;
        }
        loom::thread::yield_now();
        Spun::Again
    }
}

#[cfg(all(test, not(kv_engine_loom)))]
mod tests {
    use super::*;

    #[test]
    fn an_active_wait_ends_in_park_after_a_bounded_time() {
        let mut wait = SpinThenPark::new();
        let mut steps = 0u64;
        while wait.spin() == Spun::Again {
            steps += 1;
            assert!(steps < 100_000_000, "the wait never ends");
        }
        assert!(steps >= u64::from(SPIN_ROUNDS), "it spins before it parks");
        assert_eq!(wait.spin(), Spun::Park, "and stays over once over");
    }

    #[test]
    fn a_wait_while_the_writer_commits_goes_on_but_not_forever() {
        let started = Instant::now();
        let mut wait = SpinThenPark::new();
        let mut steps = 0u64;
        while wait.spin_unless_busy(true) == Spun::Again {
            steps += 1;
            assert!(steps < 1_000_000_000, "the wait never ends");
        }
        // It cannot park before the busy time is over: every busy step
        // before that restarts the yielding (a lower bound: a slow machine
        // only makes it later).
        assert!(started.elapsed() >= BUSY_FOR);
        assert_eq!(wait.spin_unless_busy(true), Spun::Park);
    }
}
