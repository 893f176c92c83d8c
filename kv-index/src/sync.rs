//! The synchronization primitives of the seqlock protocol, in one place so
//! that loom can check the protocol itself: under `--cfg loom` they are
//! loom's models (`cargo xtask loom`), in every other build the real ones,
//! unchanged.
//!
//! Under loom, `ArcSwap` is modelled by a cell holding an `Arc` behind a
//! loom mutex: a `load` then synchronizes with the `swap` whose value it
//! sees (acquire/release, which is what arc-swap promises), and loom can
//! interleave both with every other step. The mutex is slightly stronger
//! than arc-swap (a load also orders before a later swap), which hides no
//! bug of the seqlock: readers never rely on that edge. The `Arc` inside
//! stays `std`'s: what the storage's lifetime needs is Rust's ownership,
//! not a protocol.

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use arc_swap::ArcSwap;
#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom_model::{ArcSwap, Mutex};

#[cfg(loom)]
mod loom_model {
    use std::sync::Arc;

    /// `parking_lot::Mutex`'s interface over loom's mutex.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }

    /// The part of `arc_swap::ArcSwap` the index uses.
    #[derive(Debug)]
    pub(crate) struct ArcSwap<T>(loom::sync::Mutex<Arc<T>>);

    impl<T> ArcSwap<T> {
        pub(crate) fn from_pointee(value: T) -> ArcSwap<T> {
            ArcSwap(loom::sync::Mutex::new(Arc::new(value)))
        }

        pub(crate) fn load(&self) -> Arc<T> {
            Arc::clone(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }

        pub(crate) fn swap(&self, new: Arc<T>) -> Arc<T> {
            std::mem::replace(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()), new)
        }
    }
}
