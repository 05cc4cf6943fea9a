//! Depthwise convolution (`group == c_in == c_out`: one input and one output channel per group)
//! as direct loops over the window, vectorized over channels.
//!
//! Why: the grouped path runs one GEMM per group, and a depthwise group is a `m × 1 × kh·kw`
//! product (`k = 9` for 3×3), so packing and the kernel driver cost far more than the
//! arithmetic: on a MobileNetV2-style fixture the OEU epoch was 5.3× slower than PyTorch fp32.
//! Activations are NHWC, so a tap's channels are contiguous and the inner loop over channels
//! auto-vectorizes (u8/i8 widened to i32). The sums are the same integers as the GEMM's, so the
//! requantized bytes, the weight gradient and the input gradient (added in the same
//! `(oy, ox, ky, kx)` order) are bit-identical to the grouped GEMM path; the tests below check
//! the kernels against naive loops and `tests/it` checks whole layers against the GEMM path.

use rayon::prelude::*;

use super::conv::{Conv, Window};
use super::ort_fix::{OrtRun, Patches};
use super::scratch;
use super::simd::avx2_dispatch;
use super::tensor::{QBatch, Shape};
use super::zeroed::par_zeroed_chunks;

impl Conv {
    /// One input and one output channel per group (and more than one group): the layers
    /// [`Conv::forward`] and [`Conv::backward_i8`] run with the direct loops of this module.
    /// Weights with zero points (asymmetric uint8) too: a tap is the centred weight `w − zp`,
    /// an i32 like the sums (they took the per-group GEMM, 7× slower on a MobileNetV2-style
    /// net with per-tensor uint8 weights, for no difference in the result).
    pub(crate) fn is_depthwise(&self) -> bool {
        self.group > 1 && self.group == self.in_shape.c && self.group == self.out_shape.c
    }

    /// The centred weights as `[kh·kw][c]` taps (channel-contiguous, like the activations).
    fn depthwise_taps(&self) -> Vec<i32> {
        let (kk, c) = (self.window.kh * self.window.kw, self.out_shape.c);
        let mut taps = vec![0i32; kk * c];
        for (ch, w) in self.weights.iter().enumerate() {
            for (k, v) in w.values().into_iter().enumerate().take(kk) {
                taps[k * c + ch] = v;
            }
        }
        taps
    }

    /// Depthwise forward of a batch: `[n][h][w][c]` → `[n][oh][ow][c]`, the same bytes as the
    /// per-group GEMMs (same i32 sums, same requantization).
    pub(crate) fn forward_depthwise(&self, x: &QBatch, run: Option<&OrtRun>) -> QBatch {
        let (oh, ow, c) = (self.out_shape.h, self.out_shape.w, self.out_shape.c);
        let taps = self.depthwise_taps();
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        out.data
            .par_chunks_mut(self.out_shape.len().max(1))
            .zip(x.data.par_chunks(self.in_shape.len().max(1)))
            .for_each(|(o, img)| {
                scratch::with_ints(oh * ow * c, |acc| {
                    forward_acc(
                        img,
                        self.in_shape,
                        (oh, ow),
                        &self.window,
                        self.in_zero_point,
                        &taps,
                        acc,
                    );
                    match run {
                        Some(r) => r.finish_rows(acc, c, 0, o, c, Patches::Image(img)),
                        None => self.requant.apply_rows(acc, c, &self.bias, 0, o, c),
                    }
                });
            });
        out
    }

    /// The part of [`Conv::backward_i8`] after the output gradient is quantized (`gq` at step
    /// `s_g` for `dW`, `gq_dx` at step `s_dx`, zero point 128, for `dX`): the same i32 sums and
    /// the same f32 additions in the same order as the per-group GEMMs. `unit` is the real value
    /// of one `dW` sum unit (one, or one per channel for an input quantized per channel). Fills
    /// `dw` (`[c][kh·kw]`) and returns `dX` when `gq_dx` is given.
    pub(crate) fn backward_i8_depthwise(
        &self,
        x: &QBatch,
        unit: &[f32],
        gq: &[i8],
        gq_dx: Option<&[u8]>,
        s_dx: f32,
        dw: &mut [f32],
    ) -> Option<Vec<f32>> {
        let (oh, ow, c) = (self.out_shape.h, self.out_shape.w, self.out_shape.c);
        let kk = self.window.kh * self.window.kw;
        let (il, ol) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        // About two chunks per thread, as the GEMM path: each chunk sums into its own buffer.
        let imgs = x.n.div_ceil(2 * rayon::current_num_threads()).max(1);
        let acc = x
            .data
            .par_chunks(il * imgs)
            .zip(gq.par_chunks(ol * imgs))
            .map(|(xs, g)| {
                let mut acc = vec![0i32; kk * c];
                for (img, g) in xs.chunks_exact(il).zip(g.chunks_exact(ol)) {
                    let (s, win) = (self.in_shape, &self.window);
                    weight_grad_acc(img, s, (oh, ow), win, self.in_zero_point, g, &mut acc);
                }
                acc
            })
            .reduce(
                || vec![0i32; kk * c],
                |mut s, a| {
                    for (s, a) in s.iter_mut().zip(a) {
                        *s = s.wrapping_add(a);
                    }
                    s
                },
            );
        for (ch, row) in dw.chunks_exact_mut(kk.max(1)).enumerate().take(c) {
            let unit = unit[if unit.len() > 1 { ch } else { 0 }];
            for (k, d) in row.iter_mut().enumerate() {
                *d = unit * acc[k * c + ch] as f32;
            }
        }
        let gq_dx = gq_dx?;
        let taps = self.depthwise_taps();
        Some(par_zeroed_chunks(x.data.len(), il, |i, dxi| {
            let g = &gq_dx[i * ol..][..ol];
            input_grad_add(g, s_dx, self.in_shape, (oh, ow), &self.window, &taps, dxi);
        }))
    }
}

/// The taps of output pixel `(oy, ox)` that fall inside the image, in `(ky, kx)` order, as
/// `(tap index ky·kw + kx, input pixel index iy·w + ix)`. Padding taps are skipped: they read
/// the zero point, i.e. real 0, and contribute nothing. An iterator rather than a callback so
/// the channel loops stay in the calling function and are compiled with its target features.
pub(super) struct Taps {
    h: isize,
    w: isize,
    iy0: isize,
    ix0: isize,
    kh: usize,
    kw: usize,
    dil_h: usize,
    dil_w: usize,
    ky: usize,
    kx: usize,
}

impl Taps {
    #[inline(always)]
    pub(super) fn new(in_shape: Shape, win: &Window, (oy, ox): (usize, usize)) -> Self {
        Taps {
            h: in_shape.h as isize,
            w: in_shape.w as isize,
            iy0: (oy * win.stride_h) as isize - win.pads[0] as isize,
            ix0: (ox * win.stride_w) as isize - win.pads[1] as isize,
            kh: win.kh,
            kw: win.kw,
            dil_h: win.dil_h,
            dil_w: win.dil_w,
            ky: 0,
            kx: 0,
        }
    }
}

impl Iterator for Taps {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        while self.ky < self.kh {
            let iy = self.iy0 + (self.ky * self.dil_h) as isize;
            if iy < 0 || iy >= self.h || self.kx >= self.kw {
                self.ky += 1;
                self.kx = 0;
                continue;
            }
            let kx = self.kx;
            self.kx += 1;
            let ix = self.ix0 + (kx * self.dil_w) as isize;
            if ix >= 0 && ix < self.w {
                return Some((self.ky * self.kw + kx, (iy * self.w + ix) as usize));
            }
        }
        None
    }
}

avx2_dispatch! {
    /// Forward accumulators of one image: `acc[p][c] = Σ_taps (x[tap][c] − zp)·taps[k][c]` for every
    /// output pixel `p < oh·ow`, in i32 (wrapping, as the GEMM kernels).
    ///
    /// `img`: `in_shape` HWC; `taps`: `[kh·kw][c]`; `acc`: `[oh·ow][c]`, every element written.
    forward_acc => forward_acc_body(
        img: &[u8],
        in_shape: Shape,
        hw: (usize, usize),
        win: &Window,
        zp: i32,
        taps: &[i32],
        acc: &mut [i32],
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_acc_body(
    img: &[u8],
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    zp: i32,
    taps: &[i32],
    acc: &mut [i32],
) {
    let c = in_shape.c;
    if c == 0 {
        return;
    }
    for (p, a) in acc.chunks_exact_mut(c).take(oh * ow).enumerate() {
        a.fill(0);
        for (k, pix) in Taps::new(in_shape, win, (p / ow, p % ow)) {
            let x = &img[pix * c..][..c];
            let t = &taps[k * c..][..c];
            for ((a, &x), &t) in a.iter_mut().zip(x).zip(t) {
                *a = a.wrapping_add((x as i32).wrapping_sub(zp).wrapping_mul(t));
            }
        }
    }
}

avx2_dispatch! {
    /// Add one image's weight-gradient sums into `acc` (`[kh·kw][c]`):
    /// `acc[k][c] += Σ_p g[p][c]·(x[tap k of p][c] − zp)`, exactly in i32 (wrapping).
    ///
    /// `g`: the quantized output gradient, `[oh·ow][c]`.
    weight_grad_acc => weight_grad_acc_body(
        img: &[u8],
        in_shape: Shape,
        hw: (usize, usize),
        win: &Window,
        zp: i32,
        g: &[i8],
        acc: &mut [i32],
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grad_acc_body(
    img: &[u8],
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    zp: i32,
    g: &[i8],
    acc: &mut [i32],
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
                *a = a.wrapping_add((x as i32).wrapping_sub(zp).wrapping_mul(g as i32));
            }
        }
    }
}

avx2_dispatch! {
    /// Add one image's input gradient into `dx` (`in_shape` HWC):
    /// `dx[tap k of p][c] += ((g[p][c] − 128)·taps[k][c]) as f32 · step`, visiting `(oy, ox, ky, kx)`
    /// in the order the GEMM path's col2im does, so every f32 sum is formed in the same order.
    ///
    /// `g`: the quantized, weight-scaled output gradient (`u8`, zero point 128), `[oh·ow][c]`.
    input_grad_add => input_grad_add_body(
        g: &[u8],
        step: f32,
        in_shape: Shape,
        hw: (usize, usize),
        win: &Window,
        taps: &[i32],
        dx: &mut [f32],
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_grad_add_body(
    g: &[u8],
    step: f32,
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    taps: &[i32],
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
                *d += (g as i32).wrapping_sub(128).wrapping_mul(t) as f32 * step;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Input pixel index of tap `(ky, kx)` of output pixel `(oy, ox)`, or `None` in the padding.
    fn tap(s: Shape, win: &Window, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        win.tap(s, (oy, ox), (ky, kx))
    }

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        (0..n)
            .map(|i| (seed.wrapping_mul(i as u64 * 2 + 7) >> 17) as u8)
            .collect()
    }

    proptest! {
        /// All three kernels against the definition, channel by channel and tap by tap, with
        /// padding read as the zero point; channel counts around the vector widths.
        #[test]
        fn kernels_equal_the_definition(
            h in 1usize..8, w in 1usize..8, c in 1usize..40, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), zp in 0i32..256, seed in any::<u64>(),
        ) {
            let win = Window { kh, kw, stride_h: sh, stride_w: sw, pads, dil_h: dh, dil_w: dw };
            let s = Shape { h, w, c };
            let Some((oh, ow)) = win.output_hw(h, w, false) else { return Ok(()) };
            let (m, kk) = (oh * ow, kh * kw);
            let img = bytes(s.len(), seed);
            let taps: Vec<i32> = bytes(kk * c, seed ^ 1).iter().map(|&v| v as i8 as i32).collect();
            let g8: Vec<i8> = bytes(m * c, seed ^ 2).iter().map(|&v| v as i8).collect();
            let gu = bytes(m * c, seed ^ 3);
            let step = 0.37f32;

            let mut acc = vec![7i32; m * c];
            forward_acc(&img, s, (oh, ow), &win, zp, &taps, &mut acc);
            let mut dwacc = vec![5i32; kk * c];
            weight_grad_acc(&img, s, (oh, ow), &win, zp, &g8, &mut dwacc);
            let mut dx = vec![0f32; s.len()];
            input_grad_add(&gu, step, s, (oh, ow), &win, &taps, &mut dx);

            let mut want_dw = vec![5i32; kk * c];
            let mut want_dx = vec![0f32; s.len()];
            for oy in 0..oh {
                for ox in 0..ow {
                    let p = oy * ow + ox;
                    for ch in 0..c {
                        let mut sum = 0i32;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let k = ky * kw + kx;
                                let x = tap(s, &win, oy, ox, ky, kx)
                                    .map_or(zp, |i| img[i * c + ch] as i32);
                                sum += (x - zp) * taps[k * c + ch];
                                want_dw[k * c + ch] += g8[p * c + ch] as i32 * (x - zp);
                                if let Some(i) = tap(s, &win, oy, ox, ky, kx) {
                                    want_dx[i * c + ch] +=
                                        ((gu[p * c + ch] as i32 - 128) * taps[k * c + ch]) as f32
                                            * step;
                                }
                            }
                        }
                        prop_assert_eq!(acc[p * c + ch], sum, "p={} c={}", p, ch);
                    }
                }
            }
            prop_assert_eq!(dwacc, want_dw);
            // Same f32 operations in the same order per element: equal bits.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&dx), bits(&want_dx));
        }
    }

    /// A depthwise layer with weights, bias and requantization from `seed`.
    fn layer(s: Shape, win: Window, zp: i32, seed: u64) -> Option<Conv> {
        use super::super::qparams::Requant;
        use crate::kernels::PackedWeights;
        let (oh, ow) = win.output_hw(s.h, s.w, false)?;
        let kk = win.kh * win.kw;
        let w = bytes(kk * s.c, seed ^ 5);
        let f = |i: usize, lo: f32, span: f32| {
            lo + span * (bytes(1, seed ^ i as u64)[0] as f32 / 255.0)
        };
        Some(Conv {
            window: win,
            group: s.c,
            in_shape: s,
            out_shape: Shape {
                h: oh,
                w: ow,
                c: s.c,
            },
            in_zero_point: zp,
            // Every third seed: asymmetric weights (one zero point per channel, as uint8 weights
            // give), which the direct loops centre and the GEMM corrects for.
            weights: w
                .chunks_exact(kk)
                .enumerate()
                .map(|(ch, r)| {
                    let zp = if seed.is_multiple_of(3) {
                        (ch as i32 * 37) % 101 - 50
                    } else {
                        0
                    };
                    let data = r.iter().map(|&v| v as i8).collect();
                    PackedWeights::with_zero_points(data, 1, kk, vec![zp])
                })
                .collect(),
            weight_scales: (0..s.c).map(|i| f(i + 10, 0.001, 0.01)).collect(),
            weight_bits: 8,
            bias: bytes(s.c, seed ^ 6)
                .iter()
                .map(|&v| (v as i32 - 128) * 37)
                .collect(),
            requant: Requant {
                multiplier: (0..s.c).map(|i| f(i + 100, 0.0005, 0.004)).collect(),
                offset: if seed.is_multiple_of(2) {
                    vec![]
                } else {
                    (0..s.c).map(|i| f(i + 300, -2.0, 4.0)).collect()
                },
                float_bias: vec![],
                zero_point: (seed % 200) as i32,
                lo: (seed % 7) as u8,
                hi: 250,
            },
            ort_order: None,
            ort_fix: None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whole layers, direct loops against the per-group GEMM path: the same output bytes and
        /// bit-identical `dW`, `db` and `dX` (the GEMM path is what the direct one replaced).
        #[test]
        fn layer_equals_the_gemm_path(
            n in 1usize..4, h in 1usize..9, w in 1usize..9, c in 2usize..37, k in 1usize..4,
            stride in 1usize..3, pad in 0usize..2, zp in 0i32..256, seed in any::<u64>(),
        ) {
            let win = Window { kh: k, kw: k, stride_h: stride, stride_w: stride,
                pads: [pad; 4], dil_h: 1, dil_w: 1 };
            let s = Shape { h, w, c };
            let Some(conv) = layer(s, win, zp, seed) else { return Ok(()) };
            prop_assert!(conv.is_depthwise());
            let x = QBatch { n, shape: s, data: bytes(n * s.len(), seed ^ 7).into() };
            let y = conv.forward(&x);
            prop_assert_eq!(&y.data, &conv.forward_grouped(&x).data);
            let gy: Vec<f32> = bytes(y.data.len(), seed ^ 8)
                .iter().map(|&v| (v as f32 - 120.0) * 1e-3).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for need_dx in [false, true] {
                let (g1, dx1) = conv.backward_i8_with(&x, &[0.02], &gy, need_dx, false);
                let (g0, dx0) = conv.backward_i8_with(&x, &[0.02], &gy, need_dx, true);
                prop_assert_eq!(bits(&g1.dw), bits(&g0.dw));
                prop_assert_eq!(bits(&g1.db), bits(&g0.db));
                prop_assert_eq!(dx1.map(|d| bits(&d)), dx0.map(|d| bits(&d)));
            }
            // An input quantized per channel: channel c's weight gradient is the one-scale
            // gradient times s_c, on both paths, and its input gradient does not depend on it.
            let scales: Vec<f32> = (0..c).map(|i| 0.004 + 0.0013 * i as f32).collect();
            let (one, dx_one) = conv.backward_i8_with(&x, &[1.0], &gy, true, false);
            let (pc, dx_pc) = conv.backward_i8_with(&x, &scales, &gy, true, false);
            let (pc0, _) = conv.backward_i8_with(&x, &scales, &gy, true, true);
            prop_assert_eq!(bits(&pc.dw), bits(&pc0.dw));
            prop_assert_eq!(dx_one.map(|d| bits(&d)), dx_pc.map(|d| bits(&d)));
            let kk = k * k;
            for (i, (&a, &b)) in pc.dw.iter().zip(&one.dw).enumerate() {
                let want = b * scales[i / kk];
                prop_assert!((a - want).abs() <= 1e-6 * want.abs(), "{} vs {}", a, want);
            }
        }
    }
}
