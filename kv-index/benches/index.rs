//! Lookup and insert latency at 1M keys of 16 bytes.

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kv_index::{Entry, Index};

const KEYS: u64 = 1_000_000;

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

fn entry(i: u64) -> Entry {
    Entry {
        segment: (i >> 20) as u32,
        offset: (i * 128) as u32,
        len: 128,
        expires_at: 0,
        tombstone: false,
    }
}

/// Visits `0..KEYS` in a scattered order, so lookups miss the cache as a
/// real workload's would.
fn scattered(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % KEYS
}

fn bench(c: &mut Criterion) {
    let index = Index::new();
    for i in 0..KEYS {
        index.insert(&key(i), entry(i));
    }
    let mut group = c.benchmark_group("index-1M");
    let mut i = 0u64;
    group.bench_function("get-hit", |b| {
        b.iter(|| {
            i += 1;
            index.get(black_box(&key(scattered(i))))
        })
    });
    group.bench_function("get-miss", |b| {
        b.iter(|| {
            i += 1;
            index.get(black_box(&key(KEYS + scattered(i))))
        })
    });
    group.bench_function("insert-overwrite", |b| {
        b.iter(|| {
            i += 1;
            let k = scattered(i);
            index.insert(black_box(&key(k)), entry(k + i))
        })
    });
    group.bench_function("insert-new-then-remove", |b| {
        b.iter(|| {
            i += 1;
            let k = key(KEYS + scattered(i));
            index.insert(black_box(&k), entry(i));
            index.remove(black_box(&k))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
