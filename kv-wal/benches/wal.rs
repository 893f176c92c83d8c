//! Append throughput: one owner committing each record under `Never` and
//! `Always`, and `SharedWal` group commit under `Always` with 1 and 8
//! threads.

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kv_wal::{SharedWal, SyncPolicy, Wal, WalOptions};

const PAYLOAD: &[u8] = &[0xa5; 64];

fn single_owner(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_commit");
    group.throughput(Throughput::Elements(1));
    for (name, policy) in [("never", SyncPolicy::Never), ("always", SyncPolicy::Always)] {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalOptions::default().with_sync(policy)).unwrap();
        group.bench_function(BenchmarkId::new(name, "64B"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    wal.append(PAYLOAD).unwrap();
                    wal.commit().unwrap();
                }
                let elapsed = start.elapsed();
                // Keep the directory small between samples.
                wal.remove_before(wal.end_position()).unwrap();
                elapsed
            })
        });
    }
    group.finish();
}

fn shared(c: &mut Criterion) {
    let mut group = c.benchmark_group("shared_append_always");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 8] {
        let dir = tempfile::tempdir().unwrap();
        let wal = SharedWal::open(
            dir.path(),
            WalOptions::default().with_sync(SyncPolicy::Always),
        )
        .unwrap();
        group.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..threads {
                        scope.spawn(|| {
                            for _ in 0..per_thread {
                                wal.append(PAYLOAD).unwrap();
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                wal.remove_before(wal.end_position()).unwrap();
                // Report the time per append actually made.
                let made = per_thread * threads;
                Duration::from_secs_f64(elapsed.as_secs_f64() * iters as f64 / made as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single_owner, shared);
criterion_main!(benches);
