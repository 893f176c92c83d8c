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

use std::time::{Duration, Instant};

/// How many rounds of `spin_loop` hints before yielding: each round doubles
/// the hints (1, 2, ... 32: 63 in all, a few thousand cycles at most on
/// current x86 cores; not measured on its own).
const SPIN_ROUNDS: u32 = 6;

/// How long a waiter yields its core before it sleeps.
pub(crate) const YIELD_FOR: Duration = Duration::from_micros(50);

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
}

impl SpinThenPark {
    pub(crate) fn new() -> SpinThenPark {
        SpinThenPark {
            round: 0,
            yielding_since: None,
        }
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
}
