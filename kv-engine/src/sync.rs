//! The synchronization primitives of the hand-off between callers and the
//! writer thread (`reply.rs`, `wait.rs`), in one place so that loom can
//! check the protocol itself: under `--cfg kv_engine_loom` they are loom's
//! models (`cargo xtask loom`), in every other build the real ones.
//!
//! NOTE: a cfg of its own, not `loom`: under `--cfg loom` kv-index and
//! kv-log swap their primitives too, and the engine does not build against
//! loom's `Arc` in their APIs. The hand-off touches neither.

#[cfg(not(kv_engine_loom))]
pub(crate) use std::sync::atomic::AtomicBool;
#[cfg(not(kv_engine_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(kv_engine_loom)]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(kv_engine_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `mutex`, whether or not a thread panicked while holding it (the
/// data under these locks is whole after every step).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
