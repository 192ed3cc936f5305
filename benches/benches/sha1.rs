//! SHA-1 throughput on one 4 MiB piece: the accelerated backend (RustCrypto `sha1`, SHA-NI
//! when the CPU has it) against the portable one (`sha1_smol`).

#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringswarm_engine::verify::Sha1Backend;
use std::hint::black_box;

const PIECE: usize = 4 << 20;

fn piece() -> Vec<u8> {
    // Not all zeroes, not all equal: a cheap pseudo-random fill.
    let mut x: u32 = 0x9e37_79b9;
    (0..PIECE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha1(c: &mut Criterion) {
    let data = piece();
    let mut g = c.benchmark_group("sha1_4MiB_piece");
    g.throughput(Throughput::Bytes(PIECE as u64));
    g.sample_size(20);
    for (name, backend) in [
        ("accelerated", Sha1Backend::Accelerated),
        ("portable", Sha1Backend::Portable),
    ] {
        g.bench_function(name, |b| b.iter(|| backend.digest(black_box(&data))));
    }
    g.finish();
}

criterion_group!(benches, sha1);
criterion_main!(benches);
