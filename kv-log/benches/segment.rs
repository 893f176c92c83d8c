//! Reading records from a mapped segment.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use kv_format::{Record, decode};
use kv_log::{Log, LogOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogOptions::default(), |_, _| {}).unwrap();
    let value = [7u8; 100];
    let locs: Vec<_> = (0..10_000u64)
        .map(|i| {
            log.append(&Record::put(i, &i.to_le_bytes(), &value))
                .unwrap()
        })
        .collect();
    log.flush().unwrap();
    let reader = log.reader();

    let mut group = c.benchmark_group("segment");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("read+decode/100B-value", |b| {
        b.iter(|| {
            i = (i + 97) % locs.len();
            let set = reader.segments();
            black_box(
                decode(set.read(locs[i]).unwrap())
                    .unwrap()
                    .record
                    .value
                    .len(),
            )
        })
    });
    group.bench_function("append+flush/100B-value", |b| {
        let mut seq = 1_000_000u64;
        b.iter(|| {
            seq += 1;
            log.append(&Record::put(seq, &seq.to_le_bytes(), &value))
                .unwrap();
            log.flush().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
