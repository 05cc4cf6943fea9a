//! Criterion benches of every int8 GEMM kernel this CPU runs, on the fixture models' real GEMM
//! shapes and on square sizes. Throughput is counted as 2·m·n·k operations (a multiply and an
//! add per term), so criterion's "Gelem/s" reads as GOPS.
//!
//! `cargo bench --bench kernels` (rayon's global pool: set `RAYON_NUM_THREADS=1` for one thread).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qforget::kernels::{self, PackedWeights};

/// `(label, m, n, k)`: the fmnist CNN's convolutions as im2col GEMMs (one image) and its first
/// fully connected layer at batch 256, then square products.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("fmnist-conv1", 784, 16, 9),
    ("fmnist-conv2", 196, 32, 144),
    ("fmnist-fc1", 256, 128, 1568),
    ("square-256", 256, 256, 256),
    ("square-512", 512, 512, 512),
    ("square-1024", 1024, 1024, 1024),
];

fn gemm(c: &mut Criterion) {
    for &(label, m, n, k) in SHAPES {
        let mut g = c.benchmark_group(label);
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 251) as u8).collect();
        let b: Vec<i8> = (0..n * k).map(|i| (i * 53 % 256) as u8 as i8).collect();
        let w = PackedWeights::new(b, n, k);
        let mut out = vec![0i32; m * n];
        for kernel in kernels::available() {
            g.bench_function(BenchmarkId::from_parameter(kernel.name), |bench| {
                bench.iter(|| kernel.run(m, &a, 3, &w, &mut out))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, gemm);
criterion_main!(benches);
