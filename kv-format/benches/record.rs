//! Record encode and decode throughput.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use kv_format::{Record, decode, encode};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for &(key_len, value_len) in &[(16usize, 100usize), (8, 1024), (16, 16 << 10)] {
        let key = vec![b'k'; key_len];
        let value = vec![b'v'; value_len];
        let record = Record::put(1, &key, &value);
        let label = format!("{key_len}B-key/{value_len}B-value");
        group.throughput(Throughput::Bytes(record.encoded_len() as u64));
        let mut buf = Vec::with_capacity(record.encoded_len());
        group.bench_function(BenchmarkId::new("encode", &label), |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&record), &mut buf).unwrap()
            })
        });
        let mut encoded = Vec::new();
        encode(&record, &mut encoded).unwrap();
        group.bench_function(BenchmarkId::new("decode", &label), |b| {
            b.iter(|| decode(black_box(&encoded)).unwrap().len)
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
