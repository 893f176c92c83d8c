//! One-shot replies from the writer thread to a waiting caller, without an
//! allocation per request.
//!
//! Each calling thread owns one [`Slot`], reused for every request it makes
//! (a thread waits for one request at a time). The request carries a
//! [`Reply`] pointing at the slot; a `Reply` that is dropped without being
//! sent (the writer thread stopped) completes the slot with
//! [`Error::Closed`], so a caller never waits forever.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

#[derive(Default)]
pub(crate) struct Slot {
    result: Mutex<Option<Result<()>>>,
    ready: Condvar,
}

thread_local! {
    static SLOT: Arc<Slot> = Arc::new(Slot::default());
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
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            complete(&slot, Err(Error::Closed));
        }
    }
}

fn complete(slot: &Slot, result: Result<()>) {
    *slot.result.lock() = Some(result);
    slot.ready.notify_one();
}

/// Runs `send` with a fresh [`Reply`] for this thread's slot, then waits for
/// the reply. If `send` fails to deliver the request it drops the `Reply`,
/// which completes the slot with [`Error::Closed`].
pub(crate) fn call(send: impl FnOnce(Reply)) -> Result<()> {
    SLOT.with(|slot| {
        *slot.result.lock() = None;
        send(Reply {
            slot: Some(Arc::clone(slot)),
        });
        let mut result = slot.result.lock();
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            slot.ready.wait(&mut result);
        }
    })
}
