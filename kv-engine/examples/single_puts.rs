//! One thread doing single `put`s (16-byte keys, 100-byte values,
//! `SyncPolicy::Never` unless asked), as a new user would: for `perf stat` and `strace
//! -c` of the write path (context switches and syscalls per put). Timings
//! for comparison belong to `cargo xtask bench`; this prints only a rough
//! rate.
//!
//! `cargo run --release -p kv-engine --example single_puts -- [COUNT] [DIR] [always] [THREADS]`
//! (`always`: `SyncPolicy::Always`, each put synced; `THREADS` threads
//! share the COUNT puts, 1 by default)

use std::time::Instant;

use kv_engine::{Db, Options, SyncPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let scratch = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| scratch.path().join("db"), Into::into);
    let policy = match args.next().as_deref() {
        Some("always") => SyncPolicy::Always,
        _ => SyncPolicy::Never,
    };
    let threads: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let db = Db::open_with(&dir, Options::default().sync(policy))?;
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let db = &db;
                scope.spawn(move || put_range(db, t, threads.max(1), count))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("a writer thread panicked"))
    })?;
    let secs = start.elapsed().as_secs_f64();
    db.close()?;
    println!(
        "{count} puts in {secs:.3} s: {:.0} puts/s, {:.2} us each",
        count as f64 / secs,
        secs * 1e6 / count as f64
    );
    Ok(())
}

/// Puts every `threads`-th of the `count` keys, from key `first`.
fn put_range(db: &Db, first: u64, threads: u64, count: u64) -> Result<(), kv_engine::Error> {
    let value = [0x5Au8; 100];
    for i in (first..count).step_by(threads as usize) {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&i.to_le_bytes());
        key[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        db.put(&key, &value)?;
    }
    Ok(())
}
