//! Point reads and writes through `Db`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use kv_engine::{Db, Options, SyncPolicy};

const KEYS: u64 = 100_000;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_with(dir.path(), Options::default()).unwrap());
    let value = [0x5Au8; 100];
    for i in 0..KEYS {
        db.put(&key(i), &value).unwrap();
    }

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("get/hit/16B-key/100B-value", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(db.get(&key(i)).unwrap())
        })
    });
    group.bench_function("get_pinned/hit", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(db.get_pinned(&key(i)).unwrap().map(|v| v.len()))
        })
    });
    group.bench_function("get/miss", |b| {
        b.iter(|| {
            i += 1;
            black_box(db.get(&key(KEYS + i)).unwrap())
        })
    });
    let mut n = KEYS;
    group.bench_function("put/single-thread/16B-key/100B-value", |b| {
        b.iter(|| {
            n += 1;
            db.put(&key(n), &value).unwrap()
        })
    });
    // The single-put path without a sync: the hand-off to the writer, the
    // WAL write and the segment write of one caller's put.
    let buffered_dir = tempfile::tempdir().unwrap();
    let buffered = Db::open_with(
        buffered_dir.path(),
        Options::default().sync(SyncPolicy::Never),
    )
    .unwrap();
    let mut m = 0u64;
    group.bench_function("put/single-thread/never-synced/16B-key/100B-value", |b| {
        b.iter(|| {
            m += 1;
            buffered.put(&key(m), &value).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
