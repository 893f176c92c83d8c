//! The synchronization primitives of segment retirement, in one place so
//! that loom can check the protocol itself: under `--cfg loom` they are
//! loom's models (`cargo xtask loom`), in every other build the real ones,
//! unchanged.
//!
//! What loom checks here is reference counting and publication: a reader
//! that loaded the segment set keeps its segments (and their files) until
//! it lets go, and reads the bytes it expects from them even after their
//! files are unlinked at retirement; concurrent changes of the set (a rotation,
//! a compaction output, a retirement) lose none of each other. So `Arc` is
//! loom's too: it models the counts and the ordering a last drop gets.
//!
//! Under loom, `ArcSwap` is modelled by an `Arc` behind a loom mutex: a
//! `load` synchronizes with the change whose value it sees, and `rcu` is
//! one atomic read-modify-write, as arc-swap's compare-and-swap loop is.

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

#[cfg(not(loom))]
pub(crate) use arc_swap::ArcSwap;
/// What `ArcSwap::load` returns.
#[cfg(not(loom))]
pub(crate) type Guard<T> = arc_swap::Guard<Arc<T>>;

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

#[cfg(loom)]
pub(crate) use loom_model::ArcSwap;
/// What `ArcSwap::load` returns.
#[cfg(loom)]
pub(crate) type Guard<T> = Arc<T>;

#[cfg(loom)]
mod loom_model {
    use super::Arc;

    /// The part of `arc_swap::ArcSwap` the log uses.
    #[derive(Debug)]
    pub(crate) struct ArcSwap<T>(loom::sync::Mutex<Arc<T>>);

    impl<T> ArcSwap<T> {
        pub(crate) fn from_pointee(value: T) -> ArcSwap<T> {
            ArcSwap(loom::sync::Mutex::new(Arc::new(value)))
        }

        fn lock(&self) -> loom::sync::MutexGuard<'_, Arc<T>> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        pub(crate) fn load(&self) -> Arc<T> {
            Arc::clone(&self.lock())
        }

        pub(crate) fn store(&self, new: Arc<T>) {
            *self.lock() = new;
        }

        /// Replaces the value with `f(current)` in one step; returns the
        /// value replaced.
        pub(crate) fn rcu(&self, mut f: impl FnMut(&Arc<T>) -> T) -> Arc<T> {
            let mut current = self.lock();
            let new = Arc::new(f(&current));
            std::mem::replace(&mut *current, new)
        }
    }
}
