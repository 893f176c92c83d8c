//! Compaction for the kv storage engine.
//!
//! Compaction will copy the live records of sealed segments into new
//! segments and switch each key's index entry with a compare-and-swap, so
//! that a concurrent write always wins, reclaiming the space of overwritten,
//! deleted and expired records. It is planned work (see ARCHITECTURE.md);
//! this crate has no public API yet.
//!
//! Dependencies will point down only: to `kv-format`, `kv-log` and
//! `kv-index`. This crate spawns no threads: `kv-engine` owns the thread
//! that drives it.

#![forbid(unsafe_code)]
