//! Group commit: synced single puts (`SyncPolicy::Always`) from 1 and from
//! 8 threads. Each measured element is one acknowledged, durable put.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kv_engine::{Db, Options, SyncPolicy};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db =
        Arc::new(Db::open_with(dir.path(), Options::default().sync(SyncPolicy::Always)).unwrap());
    let counter = Arc::new(AtomicU64::new(0));
    let value = [0xA5u8; 100];

    let mut group = c.benchmark_group("group_commit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 8] {
        group.bench_function(format!("synced-put/{threads}-threads"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let db = Arc::clone(&db);
                        let counter = Arc::clone(&counter);
                        std::thread::spawn(move || {
                            for _ in 0..per_thread {
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                db.put(&n.to_le_bytes(), &value).unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                // Time per put, as if `iters` puts were made.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
