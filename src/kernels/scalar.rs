//! Portable kernel: plain Rust written so the compiler can vectorise the inner dot product.
//! It is what armv7 and any CPU without a SIMD tier run. Large products still split their
//! output rows over rayon (the same policy as the SIMD tiers).

use super::par::par_rows;
use super::PackedWeights;

/// See [`super::GemmKernel::run`]. Products of `u8 × i8` summed in i32 are exact for any
/// `k < 2^16` (|a·b| ≤ 255·128), far beyond every layer here.
pub(super) fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0);
        return;
    }
    par_rows(m, n, k, 1, a, c, |_, a, c| rows(a, a_zp, w, c));
}

fn rows(a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    let (n, k) = (w.n, w.k);
    for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        for ((brow, out), &bsum) in w
            .data
            .chunks_exact(k)
            .zip(crow.iter_mut())
            .zip(w.row_sums())
        {
            let dot: i32 = arow
                .iter()
                .zip(brow)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            *out = dot - a_zp * bsum;
        }
    }
}
