//! The internet checksum over a full-size segment and over a 64 KiB super-packet, beside a copy
//! of the same bytes (the anchor: the demux copies every segment it checksums).
//!
//! `cargo bench -p braid-core --bench checksum -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use braid_core::wire::checksum::{accumulate, finish};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn checksum_and_copy(c: &mut Criterion) {
    for len in [1_400usize, 65_535] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut copy = vec![0u8; len];
        let mut group = c.benchmark_group(format!("{len}_bytes"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("checksum", |b| b.iter(|| finish(accumulate(0, black_box(&data)))));
        group.bench_function("copy", |b| {
            b.iter(|| {
                copy.copy_from_slice(black_box(&data));
                black_box(&copy);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, checksum_and_copy);
criterion_main!(benches);
