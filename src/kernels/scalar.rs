//! Portable kernel: plain Rust written so the compiler can vectorise the inner dot product.
//! It is what armv7 and any CPU without a SIMD tier run.

use super::PackedWeights;

/// See [`super::GemmKernel::run`]. Products of `u8 × i8` summed in i32 are exact for any
/// `k < 2^16` (|a·b| ≤ 255·128), far beyond every layer here.
pub(super) fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    let (n, k) = (w.n, w.k);
    if k == 0 {
        c.fill(0);
        return;
    }
    for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)).take(m) {
        for ((brow, out), &bsum) in w.data.chunks_exact(k).zip(crow.iter_mut()).zip(&w.row_sums) {
            let dot: i32 = arow
                .iter()
                .zip(brow)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            *out = dot - a_zp * bsum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{reference, PackedWeights, SCALAR};

    #[test]
    fn matches_reference_on_extremes() {
        // Worst case for 16-bit intermediates: 255 × −128 everywhere, zero point at both ends.
        for &(m, n, k) in &[(0, 3, 4), (1, 1, 1), (3, 5, 7), (2, 4, 300)] {
            let a: Vec<u8> = (0..m * k)
                .map(|i| if i % 3 == 0 { 255 } else { 0 })
                .collect();
            let b: Vec<i8> = (0..n * k)
                .map(|i| if i % 2 == 0 { -128 } else { 127 })
                .collect();
            for zp in [0, 128, 255] {
                let mut want = vec![0; m * n];
                reference::gemm_u8i8(m, n, k, &a, zp, &b, &mut want);
                let mut got = vec![0; m * n];
                SCALAR.run(m, &a, zp, &PackedWeights::new(b.clone(), n, k), &mut got);
                assert_eq!(got, want, "m={m} n={n} k={k} zp={zp}");
            }
        }
    }
}
