//! Measures the index's memory per key.
//!
//! Inserts N keys of 16 bytes (N from the first argument, default
//! 1,000,000) with realistic entries: records of 100 to 300
//! bytes appended to 256 MiB segments, no expiry. Prints
//! `Index::memory_usage() / N` and the growth of the process's resident set
//! (VmRSS in /proc/self/status) per key. A second argument `presized` builds
//! the index with `Index::with_capacity(N)` instead of `Index::new()`.
//!
//! ```text
//! cargo run --release -p kv-index --example memory -- 10000000 [presized]
//! ```

use std::time::Instant;

use kv_index::{Entry, Index};

/// Segment files roll over at this size.
const SEGMENT_BYTES: u64 = 256 << 20;

/// The resident set size of this process in bytes, if /proc says.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A 16-byte key: "key-" and twelve digits.
fn key(i: u64) -> [u8; 16] {
    let mut key = *b"key-000000000000";
    let mut n = i;
    for byte in key[4..].iter_mut().rev() {
        *byte = b'0' + (n % 10) as u8;
        n /= 10;
    }
    key
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(arg) => arg.replace('_', "").parse().expect("N must be a number"),
        None => 1_000_000,
    };
    let presized = args.next().as_deref() == Some("presized");

    let rss_before = rss_bytes();
    let index = if presized {
        Index::with_capacity(n as usize)
    } else {
        Index::new()
    };
    let start = Instant::now();
    let (mut segment, mut offset) = (0u32, 0u64);
    for i in 0..n {
        // A record of 100 to 300 bytes: header, 16-byte key and value.
        let len = 100 + (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u32 % 201;
        if offset + u64::from(len) > SEGMENT_BYTES {
            segment += 1;
            offset = 0;
        }
        let entry = Entry {
            segment,
            offset: offset as u32,
            len,
            expires_at: 0,
            tombstone: false,
        };
        index.insert(&key(i), entry);
        offset += u64::from(len);
    }
    let elapsed = start.elapsed();
    let rss_after = rss_bytes();

    assert_eq!(index.len() as u64, n);
    assert!(index.get(&key(n / 2)).is_some());
    let usage = index.memory_usage();
    let per_key = |bytes: u64| bytes as f64 / n.max(1) as f64;
    println!(
        "keys: {n} x 16 bytes, {} ({:.2?} to insert)",
        if presized {
            "Index::with_capacity(N)"
        } else {
            "Index::new()"
        },
        elapsed
    );
    println!(
        "memory_usage: {usage} bytes = {:.1} bytes/key",
        per_key(usage as u64)
    );
    match (rss_before, rss_after) {
        (Some(before), Some(after)) => println!(
            "VmRSS: {before} -> {after} bytes, delta {} = {:.1} bytes/key",
            after.saturating_sub(before),
            per_key(after.saturating_sub(before))
        ),
        _ => println!("VmRSS: not available (no /proc/self/status)"),
    }
}
