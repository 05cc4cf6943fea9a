//! f32 backward of a depthwise convolution (`group == c_in == c_out`) as direct loops over the
//! window, vectorized over channels: the `--grad-path f32` twin of the int8 loops in
//! `depthwise`.
//!
//! Why: the general f32 backward runs one GEMM per group, and a depthwise group is an
//! `m × 1 × kh·kw` product, so packing and the driver cost far more than the arithmetic. On
//! Retrain of the Fashion-MNIST CNN with kept BatchNormalizations (per-channel 1×1 layers, a
//! depthwise conv each) the f32 backward took 2.5× the int8 one for that reason alone.
//!
//! Sums are formed in a fixed order whatever the thread count: each image's weight-gradient
//! term is computed on its own (in parallel) and the terms are added in image order, as the
//! general path does; an input gradient belongs to one image.

use rayon::prelude::*;

use super::conv::{Conv, Window};
use super::depthwise::Taps;
use super::grad::{add_into, LayerGrad};
use super::simd::avx2_dispatch;
use super::tensor::Shape;
use super::zeroed::par_zeroed_chunks;

/// Images whose weight-gradient terms are computed in parallel before they are added in order.
const IMAGES_PER_ROUND: usize = 16;

impl Conv {
    /// [`Conv::backward_f32`] of a depthwise conv ([`Conv::is_depthwise`]): `x` the real input
    /// (`n × in_len`), `gy` the masked output gradient, `w` the real weights (`[c][kh·kw]`).
    pub(crate) fn backward_f32_depthwise(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let (oh, ow, c) = (self.out_shape.h, self.out_shape.w, self.out_shape.c);
        let kk = self.window.kh * self.window.kw;
        let (il, ol) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        let (s, win) = (self.in_shape, &self.window);
        let mut acc = vec![0f32; kk * c];
        for (xs, gs) in x
            .chunks(il * IMAGES_PER_ROUND)
            .zip(gy.chunks(ol * IMAGES_PER_ROUND))
        {
            let terms: Vec<Vec<f32>> = xs
                .par_chunks(il)
                .zip(gs.par_chunks(ol))
                .map(|(img, g)| {
                    let mut t = vec![0f32; kk * c];
                    weight_grad_f32(img, s, (oh, ow), win, g, &mut t);
                    t
                })
                .collect();
            for t in &terms {
                add_into(&mut acc, t);
            }
        }
        let mut dw = vec![0f32; c * kk];
        for (ch, row) in dw.chunks_exact_mut(kk.max(1)).enumerate().take(c) {
            for (k, d) in row.iter_mut().enumerate() {
                *d = acc[k * c + ch];
            }
        }
        let mut db = vec![0f32; c];
        for px in gy.chunks_exact(c.max(1)) {
            add_into(&mut db, px);
        }
        let dx = need_dx.then(|| {
            let mut taps = vec![0f32; kk * c];
            for (ch, row) in w.chunks_exact(kk.max(1)).enumerate().take(c) {
                for (k, &v) in row.iter().enumerate() {
                    taps[k * c + ch] = v;
                }
            }
            par_zeroed_chunks(x.len(), il, |i, dxi| {
                input_grad_f32(&gy[i * ol..][..ol], s, (oh, ow), win, &taps, dxi)
            })
        });
        (LayerGrad { dw, db }, dx)
    }
}

avx2_dispatch! {
    /// Add one image's weight-gradient terms into `acc` (`[kh·kw][c]`):
    /// `acc[k][c] += Σ_p g[p][c]·x[tap k of p][c]`, pixels in order (padding taps read 0).
    weight_grad_f32 => weight_grad_f32_body(
        img: &[f32],
        in_shape: Shape,
        hw: (usize, usize),
        win: &Window,
        g: &[f32],
        acc: &mut [f32],
    )
}

#[inline(always)]
fn weight_grad_f32_body(
    img: &[f32],
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    g: &[f32],
    acc: &mut [f32],
) {
    let c = in_shape.c;
    if c == 0 {
        return;
    }
    for (p, gp) in g.chunks_exact(c).take(oh * ow).enumerate() {
        for (k, pix) in Taps::new(in_shape, win, (p / ow, p % ow)) {
            let x = &img[pix * c..][..c];
            let a = &mut acc[k * c..][..c];
            for ((a, &x), &g) in a.iter_mut().zip(x).zip(gp) {
                *a += g * x;
            }
        }
    }
}

avx2_dispatch! {
    /// Add one image's input gradient into `dx` (`in_shape` HWC):
    /// `dx[tap k of p][c] += g[p][c]·taps[k][c]` (`taps`: `[kh·kw][c]`).
    input_grad_f32 => input_grad_f32_body(
        g: &[f32],
        in_shape: Shape,
        hw: (usize, usize),
        win: &Window,
        taps: &[f32],
        dx: &mut [f32],
    )
}

#[inline(always)]
fn input_grad_f32_body(
    g: &[f32],
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    taps: &[f32],
    dx: &mut [f32],
) {
    let c = in_shape.c;
    if c == 0 {
        return;
    }
    for (p, gp) in g.chunks_exact(c).take(oh * ow).enumerate() {
        for (k, pix) in Taps::new(in_shape, win, (p / ow, p % ow)) {
            let d = &mut dx[pix * c..][..c];
            let t = &taps[k * c..][..c];
            for ((d, &g), &t) in d.iter_mut().zip(gp).zip(t) {
                *d += g * t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::float_conv::FloatConv;
    use proptest::prelude::*;

    fn reals(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| ((seed.wrapping_mul(i as u64 * 2 + 7) >> 17) as u8 as f32 - 127.5) / 64.0)
            .collect()
    }

    /// `a` and `b` agree within f32 rounding of sums of `|terms|`: every value within
    /// `1e-5·(1 + max|b|)`.
    fn close(a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
        prop_assert_eq!(a.len(), b.len());
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            prop_assert!((x - y).abs() <= 1e-5 * (1.0 + m), "[{}] {} vs {}", i, x, y);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Direct loops against the per-group GEMMs they replace (the general f32 backward):
        /// `dW`, `db` and `dX` on random windows with strides, padding and dilation, channel
        /// counts around the vector widths, 1–20 images (more than one round of terms).
        #[test]
        fn direct_loops_equal_the_grouped_gemms(
            n in 1usize..21, h in 1usize..9, w in 1usize..9, c in 2usize..37,
            kh in 1usize..4, kw in 1usize..4, stride in 1usize..3, dil in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), seed in any::<u64>(),
        ) {
            let win = Window { kh, kw, stride_h: stride, stride_w: stride, pads,
                dil_h: dil, dil_w: dil };
            let s = Shape { h, w, c };
            let Some((oh, ow)) = win.output_hw(h, w, false) else { return Ok(()) };
            let out = Shape { h: oh, w: ow, c };
            let conv = FloatConv::geometry(win, c, s, out);
            prop_assert!(conv.is_depthwise());
            let x = reals(n * s.len(), seed);
            let gy = reals(n * out.len(), seed ^ 1);
            let wt = reals(c * kh * kw, seed ^ 2);
            for need_dx in [false, true] {
                let (g1, dx1) = conv.backward_f32_depthwise(&x, &gy, &wt, need_dx);
                let (g0, dx0) = conv.backward_f32_grouped(&x, &gy, &wt, need_dx);
                close(&g1.dw, &g0.dw)?;
                close(&g1.db, &g0.db)?;
                prop_assert_eq!(dx1.is_some(), need_dx);
                if let (Some(a), Some(b)) = (dx1, dx0) {
                    close(&a, &b)?;
                }
            }
        }
    }
}
