//! The hand-off between a caller and the writer thread (`reply.rs`, with
//! the bounded wait of `wait.rs`), checked with loom: every interleaving
//! (up to a bound on preemptions) of a caller waiting for its reply and
//! the writer answering it. Built only with `--cfg kv_engine_loom`; run
//! with `cargo xtask loom`.
//!
//! What must hold: the caller gets exactly the reply the writer sent, for
//! this request and not an earlier one; it never sleeps through the reply
//! (loom reports a deadlock if every thread waits); a reply dropped
//! unsent (the writer stopped) reads as `Closed`; the record buffer the
//! writer gives back is the caller's again before the call returns.

use loom::thread;

use crate::reply::{Slot, call_on, take_buffer_from};
use crate::sync::Arc;
use crate::{Error, Result};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn is_closed(r: &Result<()>) -> bool {
    matches!(r, Err(Error::Closed))
}

#[test]
fn the_caller_gets_the_reply_whenever_it_comes() {
    model(|| {
        let slot = Arc::new(Slot::new());
        let mut writer = None;
        let result = call_on(
            &slot,
            || false,
            |reply| {
                writer = Some(thread::spawn(move || reply.send(Ok(()))));
            },
        );
        assert!(result.is_ok(), "{result:?}");
        writer.unwrap().join().unwrap();
    });
}

#[test]
fn a_reply_dropped_unsent_reads_as_closed() {
    model(|| {
        let slot = Arc::new(Slot::new());
        let mut writer = None;
        let result = call_on(
            &slot,
            || false,
            |reply| {
                writer = Some(thread::spawn(move || drop(reply)));
            },
        );
        assert!(is_closed(&result), "{result:?}");
        writer.unwrap().join().unwrap();
    });
}

#[test]
fn a_second_request_never_sees_the_first_reply() {
    model(|| {
        let slot = Arc::new(Slot::new());
        let mut first = None;
        let r1 = call_on(
            &slot,
            || false,
            |reply| {
                first = Some(thread::spawn(move || reply.send(Err(Error::Closed))));
            },
        );
        assert!(is_closed(&r1), "{r1:?}");
        let mut second = None;
        let r2 = call_on(
            &slot,
            || false,
            |reply| {
                second = Some(thread::spawn(move || reply.send(Ok(()))));
            },
        );
        assert!(r2.is_ok(), "the second call got {r2:?}");
        first.unwrap().join().unwrap();
        second.unwrap().join().unwrap();
    });
}

#[test]
fn the_buffer_given_back_is_the_callers_after_the_reply() {
    model(|| {
        let slot = Arc::new(Slot::new());
        let mut buffer = take_buffer_from(&slot);
        buffer.extend_from_slice(b"record");
        let mut writer = None;
        let result = call_on(
            &slot,
            || false,
            |reply| {
                writer = Some(thread::spawn(move || {
                    reply.give_back(buffer);
                    reply.send(Ok(()));
                }));
            },
        );
        assert!(result.is_ok());
        let back = take_buffer_from(&slot);
        assert!(
            back.is_empty() && back.capacity() >= 6,
            "the buffer came back"
        );
        writer.unwrap().join().unwrap();
    });
}
