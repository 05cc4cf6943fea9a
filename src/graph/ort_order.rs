//! A 1×1 convolution whose output is quantized per channel, computed in onnxruntime's float
//! order instead of by the integer GEMM.
//!
//! Why: NNCF's QDQ graphs run the convolution in float (`DequantizeLinear → Conv → Clip →
//! QuantizeLinear`), and the integer GEMM plus one requantization lands on the other side of a
//! rounding boundary for a few values in a million, like every QDQ layer here (1 LSB). After a
//! per-channel QuantizeLinear that 1 LSB does not stay small: a channel with a small scale sees
//! an upstream 1-LSB change as several of its own steps, and through a MobileNetV2 the flips
//! grew to 7 LSB at the last conv and changed one top-1 of 10,000 on the NNCF fixture (a logit
//! gap of 0.005). onnxruntime (graph optimizations off) computes such a layer as an SGEMM that
//! adds the products of the dequantized input and weights in input-channel order with fused
//! multiply-adds, adds the float bias, clips, divides by the channel's scale and rounds half to
//! even. Doing exactly that reproduced onnxruntime's bytes on all 25 M values of each of the four
//! such layers of the fixture (given onnxruntime's input), where the integer path differed in
//! 2–5 of a million.
//!
//! The same request still gives the same bytes everywhere: `f32::mul_add` is one IEEE rounding
//! on every platform (a hardware FMA where the CPU has one, an exact software one otherwise).

use rayon::prelude::*;

use super::conv::Conv;
use super::qparams::round_half_even;
use super::tensor::QBatch;

/// What a conv needs to run in onnxruntime's float order (see the module documentation).
#[derive(Debug, Clone)]
pub struct OrtOrder {
    /// Real step of the (per-tensor) input.
    pub in_scale: f32,
    /// Real step of each output channel.
    pub out_scales: Vec<f32>,
    /// The file's real bias per output channel, used while the layer's requantization holds no
    /// trained float bias (`Requant::float_bias` empty).
    pub bias: Vec<f32>,
}

impl OrtOrder {
    /// Whether conv `c` is a layer this order applies to: 1×1, stride 1, no padding, one group,
    /// no integer bias (the float bias comes from the file).
    pub fn applies_to(c: &Conv) -> bool {
        let w = &c.window;
        w.kh == 1
            && w.kw == 1
            && w.stride_h == 1
            && w.stride_w == 1
            && w.pads == [0; 4]
            && c.group == 1
            && c.bias.iter().all(|&b| b == 0)
    }
}

impl Conv {
    /// [`Conv::forward`] in onnxruntime's float order (`o`: this layer's [`OrtOrder`]).
    pub(crate) fn forward_ort_order(&self, o: &OrtOrder, x: &QBatch) -> QBatch {
        let (k, c_out) = (self.in_shape.c, self.out_shape.c);
        // Dequantized weights, `[k][c_out]` so the inner loop runs over output channels.
        let mut w_t = vec![0f32; k * c_out];
        for (c, row) in self.weights[0].data.chunks_exact(k.max(1)).enumerate() {
            let s = self.scale_of(c);
            for (j, &v) in row.iter().enumerate() {
                w_t[j * c_out + c] = v as f32 * s;
            }
        }
        let rq = &self.requant;
        let p = Pixels {
            w_t,
            k,
            c_out,
            zp_in: self.in_zero_point,
            in_scale: o.in_scale,
            bias: if rq.float_bias.is_empty() {
                &o.bias
            } else {
                &rq.float_bias
            },
            out_scales: &o.out_scales,
            zp_out: rq.zero_point as f32,
            lo: rq.lo as f32,
            hi: rq.hi as f32,
        };
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        // Blocks of pixels (a 1×1 conv treats every pixel alike), a few per thread.
        let block = 256;
        out.data
            .par_chunks_mut(c_out.max(1) * block)
            .zip(x.data.par_chunks(k.max(1) * block))
            .for_each(|(dst, src)| p.run(src, dst));
        out
    }
}

/// One layer's constants for [`Conv::forward_ort_order`].
struct Pixels<'a> {
    w_t: Vec<f32>,
    k: usize,
    c_out: usize,
    zp_in: i32,
    in_scale: f32,
    bias: &'a [f32],
    out_scales: &'a [f32],
    zp_out: f32,
    lo: f32,
    hi: f32,
}

impl Pixels<'_> {
    /// Output bytes `dst` (`[pixel][c_out]`) of input bytes `src` (`[pixel][k]`).
    fn run(&self, src: &[u8], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2")
        {
            // SAFETY: the CPU has FMA and AVX2 (checked just above).
            return unsafe { self.run_fma(src, dst) };
        }
        self.run_portable(src, dst)
    }

    /// [`Pixels::run`] with AVX2 and FMA: sixteen output channels at a time in two registers,
    /// each lane one fused multiply-add per input channel, in input-channel order (the bytes of
    /// [`Pixels::run_portable`]; the compiler did not vectorize its `mul_add` loops).
    ///
    /// # Safety
    /// The CPU must have FMA and AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma,avx2")]
    unsafe fn run_fma(&self, src: &[u8], dst: &mut [u8]) {
        use std::arch::x86_64::{
            _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
        };
        let (k, c_out) = (self.k.max(1), self.c_out.max(1));
        let groups = c_out / LANES;
        let mut xs = vec![0f32; k];
        let mut y = vec![0f32; c_out];
        for (px, d) in src.chunks_exact(k).zip(dst.chunks_exact_mut(c_out)) {
            for (x, &b) in xs.iter_mut().zip(px) {
                *x = (b as i32).wrapping_sub(self.zp_in) as f32 * self.in_scale;
            }
            for (g, yg) in y.chunks_exact_mut(LANES).enumerate().take(groups) {
                let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for (&x, row) in xs.iter().zip(self.w_t.chunks_exact(c_out)) {
                    let w = &row[g * LANES..][..LANES];
                    let xv = _mm256_set1_ps(x);
                    // SAFETY: `w` holds 16 floats, two unaligned loads of 8.
                    let (w0, w1) = unsafe {
                        (
                            _mm256_loadu_ps(w.as_ptr()),
                            _mm256_loadu_ps(w.as_ptr().add(8)),
                        )
                    };
                    a0 = _mm256_fmadd_ps(xv, w0, a0);
                    a1 = _mm256_fmadd_ps(xv, w1, a1);
                }
                // SAFETY: `yg` holds 16 floats, two unaligned stores of 8.
                unsafe {
                    _mm256_storeu_ps(yg.as_mut_ptr(), a0);
                    _mm256_storeu_ps(yg.as_mut_ptr().add(8), a1);
                }
            }
            self.rest(&xs, &mut y, groups * LANES);
            self.finish(&y, d);
        }
    }

    /// Sums of output channels `from..` (those [`Pixels::run_fma`] does not take in groups).
    #[inline(always)]
    fn rest(&self, xs: &[f32], y: &mut [f32], from: usize) {
        let c_out = self.c_out.max(1);
        for (c, y) in y.iter_mut().enumerate().skip(from) {
            let mut a = 0f32;
            for (&x, row) in xs.iter().zip(self.w_t.chunks_exact(c_out)) {
                a = x.mul_add(row[c], a);
            }
            *y = a;
        }
    }

    /// Bias, division by the channel's scale, rounding, zero point and clamp of one pixel.
    #[inline(always)]
    fn finish(&self, y: &[f32], d: &mut [u8]) {
        let scales = self.bias.iter().zip(self.out_scales);
        for ((d, &v), (&b, &s)) in d.iter_mut().zip(y).zip(scales) {
            let r = round_half_even((v + b) / s) + self.zp_out;
            *d = r.clamp(self.lo, self.hi) as u8;
        }
    }

    #[inline(always)]
    fn run_portable(&self, src: &[u8], dst: &mut [u8]) {
        let (k, c_out) = (self.k.max(1), self.c_out.max(1));
        let mut xs = vec![0f32; k];
        let mut y = vec![0f32; c_out];
        for (px, d) in src.chunks_exact(k).zip(dst.chunks_exact_mut(c_out)) {
            for (x, &b) in xs.iter_mut().zip(px) {
                *x = (b as i32).wrapping_sub(self.zp_in) as f32 * self.in_scale;
            }
            self.rest(&xs, &mut y, 0);
            self.finish(&y, d);
        }
    }
}

/// Output channels [`Pixels::run_fma`] sums together (two AVX registers of f32).
#[cfg(target_arch = "x86_64")]
const LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_fused_into_the_sum() {
        // a = 1 + 2^-12, both inputs dequantize to a; weights −1 and a. The running sum is
        // −a, then fma(a, a, −a) = 2^-12 + 2^-24 exactly, the bias −2^-12 leaves 2^-24: 4 steps
        // of 2^-26 above the zero point 3. Rounding a·a first (to 1 + 2^-11, a tie to even)
        // would lose the 2^-24 and give the zero point.
        let a = 1.0 + f32::EPSILON * 2048.0;
        assert_eq!(a * a - a, 2f32.powi(-12));
        let bias = [-(2f32.powi(-12))];
        let scales = [2f32.powi(-26)];
        let p = Pixels {
            w_t: vec![-1.0, a],
            k: 2,
            c_out: 1,
            zp_in: 10,
            in_scale: a,
            bias: &bias,
            out_scales: &scales,
            zp_out: 3.0,
            lo: 0.0,
            hi: 255.0,
        };
        let mut d = [0u8];
        p.run(&[11, 11], &mut d);
        assert_eq!(d[0], 7);
        let mut e = [0u8];
        p.run_portable(&[11, 11], &mut e);
        assert_eq!(e, d);
    }

    #[test]
    fn vector_path_gives_the_portable_bytes() {
        // Two full groups of 16 output channels and a remainder, on many pixels.
        let (k, c_out, n) = (23, 37, 50);
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let w_t: Vec<f32> = (0..k * c_out)
            .map(|_| (next() % 255) as f32 * 1e-3 - 0.127)
            .collect();
        let bias: Vec<f32> = (0..c_out)
            .map(|_| (next() % 100) as f32 * 0.01 - 0.5)
            .collect();
        let scales: Vec<f32> = (0..c_out)
            .map(|_| 0.004 + (next() % 50) as f32 * 1e-4)
            .collect();
        let p = Pixels {
            w_t,
            k,
            c_out,
            zp_in: 3,
            in_scale: 0.021,
            bias: &bias,
            out_scales: &scales,
            zp_out: 5.0,
            lo: 5.0,
            hi: 255.0,
        };
        let src: Vec<u8> = (0..n * k).map(|_| next() as u8).collect();
        let (mut a, mut b) = (vec![0u8; n * c_out], vec![0u8; n * c_out]);
        p.run(&src, &mut a);
        p.run_portable(&src, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().any(|&v| v > 5 && v < 255), "all outputs clamped");
    }
}
