//! One-shot replies from the writer thread to a waiting caller, without an
//! allocation or a system call per request in the common case.
//!
//! Each calling thread owns one [`Slot`], reused for every request it makes
//! (a thread waits for one request at a time). The request carries a
//! [`Reply`] pointing at the slot; a `Reply` that is dropped without being
//! sent (the writer thread stopped) completes the slot with
//! [`Error::Closed`], so a caller never waits forever.
//!
//! **Waiting.** The writer usually answers within microseconds, sooner
//! than a thread can be put to sleep and woken again (two futex calls and
//! two context switches). So the caller first watches the slot's `done`
//! flag (`wait::SpinThenPark`): a short spin, then yielding its core for
//! a bounded time, and only then sleeps on the condition variable. The
//! writer sets `done` after storing the result, and notifies only a caller
//! that has said it sleeps (`sleeping`), so a reply to a caller that is
//! still watching costs no system call. A write's caller keeps watching
//! for as long as the writer says it is committing ([`call_while`]): the
//! reply comes as soon as the commit's sync ends.
//!
//! **The record buffer.** A put or delete is encoded on the caller's
//! thread into a buffer the slot keeps ([`take_buffer`]); the request
//! carries it to the writer, which copies the bytes out and gives it back
//! ([`Reply::give_back`]) before it replies, so the next request of the thread
//! reuses it.

use std::sync::atomic::Ordering;

use crate::sync::{Arc, AtomicBool, Condvar, Mutex, lock};
use crate::wait::{SpinThenPark, Spun};
use crate::{Error, Result};

/// A calling thread's reply slot and record buffer.
pub(crate) struct Slot {
    /// Set (release) once `result` holds the reply.
    done: AtomicBool,
    result: Mutex<Option<Result<()>>>,
    /// The caller sleeps on `ready`; set under `result`'s lock.
    sleeping: AtomicBool,
    ready: Condvar,
    /// The caller's record buffer while no request holds it.
    buffer: Mutex<Vec<u8>>,
}

impl Slot {
    pub(crate) fn new() -> Slot {
        Slot {
            done: AtomicBool::new(false),
            result: Mutex::new(None),
            sleeping: AtomicBool::new(false),
            ready: Condvar::new(),
            buffer: Mutex::new(Vec::new()),
        }
    }
}

#[cfg(not(kv_engine_loom))]
thread_local! {
    static SLOT: Arc<Slot> = Arc::new(Slot::new());
}

#[cfg(kv_engine_loom)]
loom::thread_local! {
    static SLOT: Arc<Slot> = Arc::new(Slot::new());
}

/// The writer's end: completes the caller's slot exactly once.
pub(crate) struct Reply {
    slot: Option<Arc<Slot>>,
}

impl Reply {
    pub(crate) fn send(mut self, result: Result<()>) {
        if let Some(slot) = self.slot.take() {
            complete(&slot, result);
        }
    }

    /// Gives the caller's record buffer back (its bytes copied out), for
    /// its next request. The caller does not touch the buffer until the
    /// reply is sent.
    pub(crate) fn give_back(&self, buffer: Vec<u8>) {
        if let Some(slot) = &self.slot {
            *lock(&slot.buffer) = buffer;
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            complete(&slot, Err(Error::Closed));
        }
    }
}

fn complete(slot: &Slot, result: Result<()>) {
    let mut guard = lock(&slot.result);
    *guard = Some(result);
    slot.done.store(true, Ordering::Release);
    // Read under the lock: a caller sets `sleeping` under it too, before it
    // waits, so either it sees `done` then, or it is waiting by now.
    if slot.sleeping.load(Ordering::Relaxed) {
        slot.ready.notify_one();
    }
}

/// This thread's record buffer, empty, with the capacity earlier requests
/// left it. Hand it to the writer in the request; the reply gives it back.
pub(crate) fn take_buffer() -> Vec<u8> {
    SLOT.with(take_buffer_from)
}

/// [`take_buffer`] of a given slot.
pub(crate) fn take_buffer_from(slot: &Arc<Slot>) -> Vec<u8> {
    let mut buffer = std::mem::take(&mut *lock(&slot.buffer));
    buffer.clear();
    buffer
}

/// Runs `send` with a fresh [`Reply`] for this thread's slot, then waits for
/// the reply. If `send` fails to deliver the request it drops the `Reply`,
/// which completes the slot with [`Error::Closed`].
pub(crate) fn call(send: impl FnOnce(Reply)) -> Result<()> {
    call_while(|| false, send)
}

/// [`call`], waiting actively for as long as `busy` says the writer is
/// working on the request (`wait.rs`).
pub(crate) fn call_while(busy: impl Fn() -> bool, send: impl FnOnce(Reply)) -> Result<()> {
    SLOT.with(|slot| call_on(slot, busy, send))
}

/// [`call_while`] on a given slot (the thread's own, or a model's).
pub(crate) fn call_on(
    slot: &Arc<Slot>,
    busy: impl Fn() -> bool,
    send: impl FnOnce(Reply),
) -> Result<()> {
    slot.done.store(false, Ordering::Relaxed);
    send(Reply {
        slot: Some(Arc::clone(slot)),
    });
    let mut wait = SpinThenPark::new();
    while !slot.done.load(Ordering::Acquire) {
        if wait.spin_unless_busy(busy()) == Spun::Park {
            break;
        }
    }
    let mut result = lock(&slot.result);
    loop {
        if let Some(r) = result.take() {
            slot.sleeping.store(false, Ordering::Relaxed);
            return r;
        }
        slot.sleeping.store(true, Ordering::Relaxed);
        result = slot
            .ready
            .wait(result)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}
