//! onnxruntime's bytes for a QDQ convolution, from the integer sums, by exception.
//!
//! Why: with graph optimizations off, onnxruntime runs `DequantizeLinear → Conv →
//! QuantizeLinear` as a float convolution (MLAS: im2col with the patch in `[c_in][kh][kw]`
//! order, an SGEMM, then the bias), while qforget runs the same layer as an exact integer sum
//! and one requantization. The two agree except where the real output lies within the float
//! sum's rounding error of a rounding boundary (`k + ½` output steps): there the float order
//! decides, a few values in a hundred thousand. Those 1-LSB flips grow through later layers and
//! changed top-1 on real models (a ShuffleNet-style fixture: 55 of 62.7 M stem-conv values,
//! one flipped test image; residual and MobileNetV2-style networks: 1–3 of 10,000).
//!
//! Computing every output in float would cost the integer kernels' speed (training runs the
//! same forward). Instead the integer sum gives each output's exact real value `z*` (in output
//! steps), and a rigorous bound on how far onnxruntime's float result can lie from it: at most
//! `(D + 8)·u·(Σ|x·w| + |b|) / s_out` with `u = 2⁻²⁴` (the sum's `D` roundings, the
//! dequantizations, the bias add and the division each round once; `D = K` for one chain of
//! fused multiply-adds, `min(K, L + S)` for `S` slices of `L` inputs each summed from zero and
//! added to the output), where `Σ|x·w|` is bounded by `s_in·s_w·max|w|·Σ|x − zp|` over the patch
//! (or by Cauchy–Schwarz, whichever is smaller). An output farther than that from a boundary
//! rounds the same way in both; only the rest (typically under 1 %) is recomputed exactly as
//! MLAS does on x86-64:
//! - the sums run over the patch in `[c_in][kh][kw]` order, in slices of `K` whose length
//!   `MlasConvOperation` derives from the output size and `K` ([`mlas_stride_k`]); each slice
//!   starts from zero and is added to the output;
//! - with more than one filter per group, each slice is a chain of fused multiply-adds (the
//!   SGEMM kernels of AVX2 and AVX-512);
//! - with one filter per group (a depthwise conv), MLAS takes its `M = 1` kernel, which rounds
//!   every product and adds them four at a time: `((p₀ + p₁) + p₂) + p₃`, then into the output;
//! - then the float bias `b_i32 · s_bias` is added, the sum divided by the output scale,
//!   rounded half to even, offset by the zero point and clamped.
//!
//! A conv whose output has one pixel (MLAS's `N = 1` kernel) keeps the integer result.
//!
//! A **float bias** (NNCF keeps Conv/Gemm biases in float and puts a float Relu between the
//! layer and the next QuantizeLinear; onnxruntime's MatMul-only quantization adds a float bias
//! with an `Add`) is the same computation with the file's float values added instead of
//! `b_i32 · s_bias`; the Relu/Clip is the clamp after rounding. A **per-channel input** (NNCF
//! quantizes a depthwise conv's input per channel) is dequantized with each channel's own
//! scale, which a depthwise conv, reading one input channel per output channel, allows.
//! Covering both took the NNCF fixtures' float logits from 114, 221, 11 and 569 rows of 10,000
//! beyond 1e-4 relative of onnxruntime's (CNN, residual CNN, MLP, MobileNetV2) to none.

use std::sync::Arc;

use super::conv::Conv;
use super::linear::Linear;
use super::ort_flat::{screen_flat, FLAT_MAX_WIDTH};
use super::ort_rows::{RowCache, RowConsts};
use super::ort_screen::{l1_l2, near_outputs, rows_norms, screen_rows, NearConsts};
use super::qparams::{rounded_byte, Requant};
use crate::kernels::PackedWeights;

/// What a QDQ conv needs to reproduce onnxruntime's float order (see the module docs).
#[derive(Debug, Clone)]
pub struct OrtFix {
    /// Real step of the input (per tensor).
    pub in_scale: f32,
    /// Real step of the input each output channel reads, where the input is quantized per
    /// channel (NNCF does so for a depthwise conv's input, which only a conv with one input
    /// channel per group reads); empty: `in_scale` everywhere.
    pub in_scales: Vec<f32>,
    /// Real step of the (per-tensor) output.
    pub out_scale: f32,
    /// The file's scale of the int32 bias, one value or one per output channel: onnxruntime
    /// adds `b_i32 · bias_scale[c]` in float.
    pub bias_scale: Vec<f32>,
    /// The bias is a Gemm's `C` (`beta = 1`): the sums' starting value, not added after them.
    pub bias_first: bool,
    /// The file's float bias, per output channel, where the layer has one instead of an int32
    /// bias (NNCF keeps Conv/Gemm biases in float; a float `Add` after a MatMul): onnxruntime
    /// adds exactly these values. Empty: the int32 bias times `bias_scale`. A bias that trains
    /// is read from the layer's [`super::Requant::float_bias`] instead (its current values).
    pub float_bias: Vec<f32>,
    /// The constants derived from the layer's current weights, kept between forward calls.
    pub(crate) rows: RowCache,
}

/// `(z + MAGIC) − MAGIC` is `z` rounded half to even, for `|z| < 2⁵¹`.
pub(super) const MAGIC: f64 = 6_755_399_441_055_744.0;

/// Unit roundoff of f32.
const U: f64 = 1.0 / 16_777_216.0;

/// `MlasConvOperation`'s slice of `K` for an output of `n` pixels (one thread): the SGEMM
/// strides start at 128 × 128; a short `K` widens the `N` stride, a short `N` the `K` stride.
pub(crate) fn mlas_stride_k(n: usize, k: usize) -> usize {
    let (mut sn, mut sk) = (128usize, 128usize);
    if n >= k {
        // (MLAS doubles the N stride here; only the K stride matters to the sums.)
        while sk / 2 >= k {
            sk /= 2;
        }
    } else {
        while sn > 16 && sn / 2 >= n {
            sk *= 2;
            sn /= 2;
        }
    }
    sk
}

impl OrtFix {
    /// Whether conv `c` is one this order covers: more than one output pixel (MLAS's `N = 1`
    /// kernel sums in another order). A real-valued offset in its requantization must be its
    /// float bias over the output scale, which the importer checks ([`OrtFix::float_bias`]).
    pub fn applies_to(c: &Conv) -> bool {
        c.out_shape.h * c.out_shape.w > 1
    }

    /// Whether linear layer `l` is one this order covers: more than one output (MLAS's `N = 1`
    /// kernel).
    pub fn applies_to_linear(l: &Linear) -> bool {
        l.out_features > 1
    }

    /// Real step of the input that output channel `c` reads.
    fn in_scale_of(&self, c: usize) -> f32 {
        self.in_scales.get(c).copied().unwrap_or(self.in_scale)
    }

    /// The float bias onnxruntime adds (current values when it trains), or `None` for the
    /// int32-bias form.
    fn float_bias_of<'b>(&'b self, rq: &'b Requant) -> Option<&'b [f32]> {
        if self.float_bias.is_empty() {
            None
        } else if rq.float_bias.len() == self.float_bias.len() {
            Some(&rq.float_bias)
        } else {
            Some(&self.float_bias)
        }
    }

    /// The constants of one forward call of `conv` (its current weights and bias).
    pub(crate) fn prepare<'a>(&'a self, conv: &'a Conv) -> OrtRun<'a> {
        let (g, k) = (conv.group.max(1), conv.row());
        let cout_g = conv.out_shape.c / g;
        let cin_g = conv.in_shape.c / g;
        let taps = conv.window.kh * conv.window.kw;
        // Graph order `[kh][kw][c_in/g]` → onnxruntime's `[c_in/g][kh][kw]`.
        let order = || (0..k).map(|i| (i % cin_g) * taps + i / cin_g).collect();
        let weights: Vec<&PackedWeights> = conv.weights.iter().collect();
        let n_out = conv.out_shape.h * conv.out_shape.w;
        let sums = Sums {
            stride_k: mlas_stride_k(n_out, k),
            m1: cout_g == 1,
        };
        let scales = (0..conv.out_shape.c).map(|c| conv.scale_of(c)).collect();
        let rows = self.rows.get(&weights, order, scales);
        self.run(rows, &conv.bias, Layer::Conv(conv), sums)
    }

    /// The constants of one forward call of linear layer `l`: a Gemm or MatMul onnxruntime
    /// runs as one SGEMM over the batch (`M` = rows, more than one), `N` = outputs.
    pub(crate) fn prepare_linear<'a>(&'a self, l: &'a Linear) -> OrtRun<'a> {
        let k = l.in_features;
        let sums = Sums {
            stride_k: mlas_stride_k(l.out_features, k),
            m1: false,
        };
        let scales = (0..l.out_features).map(|o| l.scale_of(o)).collect();
        let rows = self.rows.get(&[&l.weights], || (0..k).collect(), scales);
        self.run(rows, &l.bias, Layer::Linear(l), sums)
    }

    /// The shared part of [`OrtFix::prepare`] and [`OrtFix::prepare_linear`]: `rows` are the
    /// layer's weight-derived constants (kept across calls).
    fn run<'a>(
        &'a self,
        rows: Arc<RowConsts>,
        bias_i: &[i32],
        layer: Layer<'a>,
        sums: Sums,
    ) -> OrtRun<'a> {
        let k = rows.inv.len();
        let c_out = rows.scales.len();
        let rq = layer.requant();
        let float_bias = self.float_bias_of(rq);
        let s_out = self.out_scale as f64;
        let bound = (sums.roundings(k) + 8) as f64 * U * 1.001;
        let mut bias = vec![0f32; c_out];
        let (mut a, mut b) = (vec![0f64; c_out], vec![0f64; c_out]);
        let (mut m_patch, mut m_const) = (vec![0f64; c_out], vec![0f64; c_out]);
        let mut m_norm = vec![0f64; c_out];
        for c in 0..c_out {
            let (s, wmax, wnorm) = (rows.scales[c], rows.wmax[c], rows.wnorm[c]);
            bias[c] = match float_bias {
                Some(fb) => fb[c],
                None => {
                    let bs = self.bias_scale[if self.bias_scale.len() > 1 { c } else { 0 }];
                    bias_i[c] as f32 * bs
                }
            };
            let step = self.in_scale_of(c) as f64 * s as f64;
            a[c] = step / s_out;
            b[c] = bias[c] as f64 / s_out;
            m_patch[c] = bound * step * wmax as f64 / s_out;
            m_norm[c] = bound * step * wnorm / s_out;
            m_const[c] = bound * (bias[c] as f64).abs() / s_out + 1e-9;
        }
        let mult: Vec<f32> = (0..c_out)
            .map(|c| rq.multiplier[if rq.multiplier.len() > 1 { c } else { 0 }])
            .collect();
        // `(acc + b_i)·mult` in f32 lies within 4u·|v| of `(acc + b_i)·s_in·s_w/s_out` (the
        // conversion, the multiplier's two roundings, the product), which differs from the
        // exact `z*` by the bias's `|b_i·s_in·s_w − b_f| / s_out`.
        let screen_patch = m_patch.iter().map(|&m| (m * 1.01) as f32).collect();
        let screen_norm = m_norm.iter().map(|&m| (m * 1.01) as f32).collect();
        // The integer path's bias in output steps: `b_i·s_in·s_w / s_out`, or the offset
        // (`b / s_out` rounded to f32) where the bias is float.
        let int_path_b = |c: usize| match float_bias {
            Some(_) => rq.offset.get(c).map_or(0.0, |&o| o as f64),
            None => {
                let s_in = self.in_scale_of(c) as f64;
                bias_i[c] as f64 * s_in * rows.scales[c] as f64 / s_out
            }
        };
        let dev: Vec<f64> = (0..c_out)
            .map(|c| (int_path_b(c) - bias[c] as f64 / s_out).abs())
            .collect();
        let screen_const = (0..c_out)
            .map(|c| ((m_const[c] + dev[c]) * 1.01 + 1e-6) as f32)
            .collect();
        if float_bias.is_some() {
            // Where the integer path's offset and the file's bias differ (by an f32 rounding),
            // an output whose exact value is that close to a boundary is recomputed too.
            for (m, d) in m_const.iter_mut().zip(&dev) {
                *m += d * 1.01;
            }
        }
        OrtRun {
            fix: self,
            layer,
            rows,
            bias,
            a,
            b,
            m_patch,
            m_norm,
            m_const,
            mult,
            screen_patch,
            screen_norm,
            screen_const,
            offset: (0..c_out)
                .map(|c| rq.offset.get(c).copied().unwrap_or(0.0))
                .collect(),
            k,
            sums,
        }
    }
}

/// Which layer an [`OrtRun`] serves (its zero points, output stage and, for a conv, the
/// geometry a depthwise patch is gathered with).
#[derive(Clone, Copy)]
enum Layer<'a> {
    Conv(&'a Conv),
    Linear(&'a Linear),
}

impl Layer<'_> {
    fn in_zero_point(&self) -> i32 {
        match self {
            Layer::Conv(c) => c.in_zero_point,
            Layer::Linear(l) => l.in_zero_point,
        }
    }

    fn requant(&self) -> &Requant {
        match self {
            Layer::Conv(c) => &c.requant,
            Layer::Linear(l) => &l.requant,
        }
    }
}

/// How MLAS sums one output: the slice of `K`, and which kernel.
#[derive(Clone, Copy)]
struct Sums {
    stride_k: usize,
    /// One filter per group: MLAS's `M = 1` kernel.
    m1: bool,
}

impl Sums {
    /// How many roundings of size `u·Σ|p|` a float sum of `k` products can take: one per
    /// input in a single chain (a fused multiply-add rounds once); over slices of `stride_k`,
    /// each a chain from zero added to the output, one per input of a slice and one per
    /// slice, the blocked sum's `(L + S)·u·Σ|p|`. Why: far below `K` for a long `K` (a
    /// 1,568-input Gemm in slices of 128: 141 against 1,568), and each of those roundings
    /// widened the screen, so more outputs were recomputed in float. MLAS's `M = 1` kernel
    /// keeps one running sum over every slice: `K`.
    fn roundings(&self, k: usize) -> usize {
        if self.m1 {
            return k;
        }
        let stride = self.stride_k.max(1);
        k.min(stride + k.div_ceil(stride))
    }
}

/// Where a block of accumulator rows came from, for the bounds and the recomputation.
pub(crate) enum Patches<'a> {
    /// Rows of `k` input bytes in graph order (im2col rows `[kh][kw][c_in/g]`, the input
    /// pixels of a 1×1 conv, a linear layer's input rows), one per accumulator row.
    Rows(&'a [u8]),
    /// Rows as [`Patches::Rows`], with each row's `[Σ|q − zp|, Σ(q − zp)²]` already summed
    /// ([`super::patch_norms`] on a conv's image).
    Summed(&'a [u8], &'a [[u64; 2]]),
    /// A depthwise conv's image (`[h][w][c]`); row `r` is output pixel `r`.
    Image(&'a [u8]),
}

/// One forward call's constants for an [`OrtFix`] layer.
pub(crate) struct OrtRun<'a> {
    fix: &'a OrtFix,
    layer: Layer<'a>,
    /// The weights' constants: rows in graph and onnxruntime order, norms (kept by the
    /// [`OrtFix`] across calls while the weights stay the same).
    rows: Arc<RowConsts>,
    /// onnxruntime's float bias per channel.
    bias: Vec<f32>,
    /// `z* = acc·a[c] + b[c]`: the exact real output in output steps.
    a: Vec<f64>,
    b: Vec<f64>,
    /// The bound on onnxruntime's error: `m_patch[c]·Σ|x − zp| + m_const[c]`.
    m_patch: Vec<f64>,
    /// The same bound by Cauchy–Schwarz: `m_norm[c]·‖x − zp‖₂ + m_const[c]` (the smaller
    /// of the two holds).
    m_norm: Vec<f64>,
    m_const: Vec<f64>,
    /// The first pass's screen, in f32: the layer's requantization multiplier per channel,
    /// and the bound above widened by how far that f32 value can lie from the exact one.
    mult: Vec<f32>,
    screen_patch: Vec<f32>,
    screen_norm: Vec<f32>,
    screen_const: Vec<f32>,
    /// The integer path's offset per channel (its float bias in output steps; 0 without).
    offset: Vec<f32>,
    k: usize,
    sums: Sums,
}

impl OrtRun<'_> {
    /// The output bytes of accumulator rows `acc` (`rows × width`, channels `c0..c0 + width`,
    /// bias not added) into the rows of `out` that start every `stride` bytes, as onnxruntime
    /// computes them; `src` holds the rows' inputs.
    pub(crate) fn finish_rows(
        &self,
        acc: &[i32],
        width: usize,
        c0: usize,
        out: &mut [u8],
        stride: usize,
        src: Patches,
    ) {
        if width == 0 {
            return;
        }
        let rq = self.layer.requant();
        let zp_in = self.layer.in_zero_point();
        let zp = rq.zero_point as f64;
        let (lo, hi) = (rq.lo as f64, rq.hi as f64);
        let rows = acc.len() / width;
        // Each row's `Σ|x − zp|` and `‖x − zp‖₂`, in one pass over the rows; a depthwise row
        // (an image) takes the largest |q − zp| of any input byte for every input.
        let patch: Vec<(f64, f64)> = match &src {
            Patches::Rows(bytes) => {
                let mut sums = vec![[0u64; 2]; rows];
                rows_norms(&bytes[..rows * self.k], self.k, zp_in, &mut sums);
                l1_l2(&sums)
            }
            Patches::Summed(_, sums) => l1_l2(&sums[..rows]),
            Patches::Image(_) => {
                let widest = zp_in.max(255 - zp_in) as f64;
                let k = self.k as f64;
                vec![(widest * k, widest * k.sqrt()); rows]
            }
        };
        // Every output as the integer path computes it, and which rows hold a value that might
        // lie within the bound of a rounding boundary: one call over the rows (a loop compiled
        // for AVX2; a call per row cost more than the screen itself on 16-channel rows).
        let mut near = vec![false; rows];
        let cs = c0..c0 + width;
        let (bias, mult) = (
            (self.bias_i(c0, width), &self.offset[cs.clone()]),
            &self.mult[cs.clone()],
        );
        let screen = (
            &self.screen_patch[cs.clone()],
            &self.screen_norm[cs.clone()],
            &self.screen_const[cs.clone()],
        );
        let out_stage = (zp as f32, lo as f32, hi as f32);
        if stride == width && width <= FLAT_MAX_WIDTH && !width.is_multiple_of(16) {
            // Narrow rows back to back: blocks across the rows' ends (a 10-channel row took a
            // block of eight lanes and a padded one of four).
            screen_flat(
                acc, width, bias, mult, screen, &patch, out_stage, out, &mut near,
            );
        } else {
            screen_rows(
                acc,
                width,
                bias,
                mult,
                screen,
                &patch,
                out_stage,
                (out, stride),
                &mut near,
            );
        }
        // The outputs of those rows within the exact bound, in f64.
        let mut todo = Vec::new();
        let consts = NearConsts {
            a: &self.a[cs.clone()],
            b: &self.b[cs.clone()],
            m_patch: &self.m_patch[cs.clone()],
            m_norm: &self.m_norm[cs.clone()],
            m_const: &self.m_const[cs],
        };
        let mut hits = Vec::new();
        for r in (0..rows).filter(|&r| near[r]) {
            hits.clear();
            near_outputs(
                &acc[r * width..][..width],
                consts,
                patch[r],
                (zp, lo, hi),
                &mut hits,
            );
            todo.extend(hits.iter().map(|&j| (r, c0 + j)));
        }
        self.recompute_all(&src, &todo, out, stride, c0);
    }

    /// Outputs `(row, channel)` of `todo` recomputed in MLAS's order into `out` (rows every
    /// `stride` bytes from channel `c0`). Eight sums at a time run side by side: each is a
    /// chain of dependent fused multiply-adds, so one alone waits on every step's latency.
    fn recompute_all(
        &self,
        src: &Patches,
        todo: &[(usize, usize)],
        out: &mut [u8],
        stride: usize,
        c0: usize,
    ) {
        if todo.is_empty() {
            return;
        }
        let k = self.k;
        let Sums { stride_k, m1 } = self.sums;
        let rq = self.layer.requant();
        let mut xs = vec![0f32; LANES * k];
        let mut ws = vec![0f32; LANES * k];
        for group in todo.chunks(LANES) {
            for ((x, w), &(r, c)) in xs
                .chunks_exact_mut(k.max(1))
                .zip(ws.chunks_exact_mut(k.max(1)))
                .zip(group)
            {
                self.gather(src, r, c, x);
                if self.rows.w.is_empty() {
                    self.rows.dequantize_row(c, w);
                }
            }
            let w_of = |l: usize| {
                let l = l.min(group.len() - 1);
                if self.rows.w.is_empty() {
                    &ws[l * k..][..k]
                } else {
                    &self.rows.w[group[l].1 * k..][..k]
                }
            };
            let ys: [f32; LANES] = if m1 {
                std::array::from_fn(|l| {
                    let x = &xs[l.min(group.len() - 1) * k..][..k];
                    let x_ort: Vec<f32> = self.rows.inv.iter().map(|&i| x[i]).collect();
                    m1_sum(&x_ort, w_of(l), stride_k)
                })
            } else {
                let start: [f32; LANES] = std::array::from_fn(|l| {
                    let c = group[l.min(group.len() - 1)].1;
                    if self.fix.bias_first {
                        self.bias[c]
                    } else {
                        0.0
                    }
                });
                let x_of = |l: usize| &xs[l.min(group.len() - 1) * k..][..k];
                Lanes {
                    x: std::array::from_fn(x_of),
                    w: std::array::from_fn(w_of),
                    idx: &self.rows.inv,
                    stride_k,
                    start,
                }
                .sums()
            };
            for (&(r, c), &y) in group.iter().zip(&ys) {
                // A Gemm's bias started the sums; any other bias is added after them.
                let y = if self.fix.bias_first && !m1 {
                    y
                } else {
                    y + self.bias[c]
                };
                out[r * stride + c - c0] = rounded_byte(
                    y / self.fix.out_scale,
                    rq.zero_point as f32,
                    rq.lo as f32,
                    rq.hi as f32,
                );
            }
        }
    }

    /// The integer bias of channels `c0..c0 + width`.
    fn bias_i(&self, c0: usize, width: usize) -> &[i32] {
        let b = match self.layer {
            Layer::Conv(c) => &c.bias,
            Layer::Linear(l) => &l.bias,
        };
        &b[c0..c0 + width]
    }

    /// The inputs of output `(row r, channel c)` in graph order, dequantized (0.0 in a conv's
    /// padding), into `x` (`k` long). (A depthwise conv's image has one channel per group, so
    /// graph and onnxruntime order agree there.)
    fn gather(&self, src: &Patches, r: usize, c: usize, x: &mut [f32]) {
        let k = self.k;
        let s_in = self.fix.in_scale_of(c);
        let zp_in = self.layer.in_zero_point();
        x.fill(0.0);
        match (src, self.layer) {
            (Patches::Rows(rows) | Patches::Summed(rows, _), _) => {
                let row = &rows[r * k..][..k];
                for (v, &q) in x.iter_mut().zip(row) {
                    *v = (q as i32 - zp_in) as f32 * s_in;
                }
            }
            (Patches::Image(img), Layer::Conv(conv)) => {
                let (s, win) = (conv.in_shape, &conv.window);
                let cin_g = s.c / conv.group.max(1);
                let g = c / (conv.out_shape.c / conv.group.max(1)).max(1);
                let (oy, ox) = (r / conv.out_shape.w.max(1), r % conv.out_shape.w.max(1));
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        let Some(pix) = win.tap(s, (oy, ox), (ky, kx)) else {
                            continue;
                        };
                        let px = pix * s.c + g * cin_g;
                        for ci in 0..cin_g {
                            let at = (ky * win.kw + kx) * cin_g + ci;
                            x[at] = (img[px + ci] as i32 - zp_in) as f32 * s_in;
                        }
                    }
                }
            }
            (Patches::Image(_), Layer::Linear(_)) => unreachable!("a linear layer reads rows"),
        }
    }
}

/// Sums run side by side by [`OrtRun::recompute_all`].
const LANES: usize = 8;

/// Eight of MLAS's SGEMM sums at once: lane `l` starts at `start[l]` (a Gemm's bias, else 0)
/// and adds, slice by slice of `stride_k` inputs, a chain of fused multiply-adds from zero of
/// `w[l][j]·x[l][idx[j]]` (`w` in onnxruntime's order, `x` in graph order). Each lane's
/// operations are those of one sum alone, in the same order, so the same value.
struct Lanes<'a> {
    x: [&'a [f32]; LANES],
    w: [&'a [f32]; LANES],
    idx: &'a [usize],
    stride_k: usize,
    start: [f32; LANES],
}

impl Lanes<'_> {
    fn sums(&self) -> [f32; LANES] {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked just above).
            return unsafe { self.sums_fma() };
        }
        self.sums_portable()
    }

    /// [`Lanes::sums`] compiled with the FMA instruction.
    ///
    /// # Safety
    /// The CPU must have FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "fma")]
    unsafe fn sums_fma(&self) -> [f32; LANES] {
        self.sums_portable()
    }

    #[inline(always)]
    fn sums_portable(&self) -> [f32; LANES] {
        let (x, w, k) = (&self.x, &self.w, self.idx.len());
        let mut y = self.start;
        let mut s = 0;
        while s < k {
            let e = (s + self.stride_k).min(k);
            let mut acc = [0f32; LANES];
            for (j, &i) in self.idx.iter().enumerate().take(e).skip(s) {
                for l in 0..LANES {
                    acc[l] = w[l][j].mul_add(x[l][i], acc[l]);
                }
            }
            for l in 0..LANES {
                y[l] += acc[l];
            }
            s = e;
        }
        y
    }
}

/// MLAS's `M = 1` kernel (`MlasSgemmKernelM1Avx`): in each slice, products rounded, summed
/// four at a time (`((p₀ + p₁) + p₂) + p₃`), each group added to the output, then a pair and a
/// single for the rest.
pub(crate) fn m1_sum(x: &[f32], w: &[f32], stride_k: usize) -> f32 {
    let mut y = 0f32;
    for (xs, ws) in x.chunks(stride_k).zip(w.chunks(stride_k)) {
        let p = |i: usize| ws[i] * xs[i];
        let quads = xs.len() / 4 * 4;
        for i in (0..quads).step_by(4) {
            y += ((p(i) + p(i + 1)) + p(i + 2)) + p(i + 3);
        }
        let rest = xs.len() - quads;
        let mut i = quads;
        if rest & 2 != 0 {
            y += p(i) + p(i + 1);
            i += 2;
        }
        if rest & 1 != 0 {
            y += p(i);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::super::conv::Window;
    use super::super::ort_screen::{flips, flips32};
    use super::super::tensor::{QBatch, Shape};
    use super::*;
    use crate::kernels::PackedWeights;
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A conv with random weights, bias and scales, and its [`OrtFix`].
    #[allow(clippy::too_many_arguments)]
    fn conv(
        s: Shape,
        c_out: usize,
        group: usize,
        win: Window,
        zp_in: i32,
        rng: &mut ChaCha8Rng,
    ) -> Conv {
        let (oh, ow) = win.output_hw(s.h, s.w, false).unwrap();
        let (cin_g, cout_g) = (s.c / group, c_out / group);
        let k = win.kh * win.kw * cin_g;
        let weights = (0..group)
            .map(|_| {
                let w = (0..cout_g * k)
                    .map(|_| rng.random_range(-127i32..=127) as i8)
                    .collect();
                PackedWeights::new(w, cout_g, k)
            })
            .collect();
        let in_scale = rng.random_range(0.001f32..0.05);
        let weight_scales: Vec<f32> = (0..c_out)
            .map(|_| rng.random_range(0.0005f32..0.02))
            .collect();
        // An output step small enough that most outputs land inside the byte range.
        let out_scale = rng.random_range(0.002f32..0.05) * (k as f32).sqrt();
        let bias = (0..c_out).map(|_| rng.random_range(-3000..3000)).collect();
        let zero_point = rng.random_range(0..256);
        let mut c = Conv {
            window: win,
            group,
            in_shape: s,
            out_shape: Shape {
                h: oh,
                w: ow,
                c: c_out,
            },
            in_zero_point: zp_in,
            weights,
            weight_scales: weight_scales.clone(),
            weight_bits: 8,
            bias,
            requant: Requant {
                multiplier: weight_scales
                    .iter()
                    .map(|w| in_scale * w / out_scale)
                    .collect(),
                offset: vec![],
                float_bias: vec![],
                zero_point,
                lo: 0,
                hi: 255,
            },
            ort_order: None,
            ort_fix: None,
        };
        c.ort_fix = Some(OrtFix {
            in_scale,
            in_scales: vec![],
            out_scale,
            bias_scale: weight_scales.iter().map(|w| in_scale * w).collect(),
            bias_first: false,
            float_bias: vec![],
            rows: Default::default(),
        });
        c
    }

    /// Every output in MLAS's order, straight from the definition: dequantize the patch in
    /// `[c_in][kh][kw]` order (0.0 in the padding), sum, add the float bias, quantize.
    fn reference(c: &Conv, x: &QBatch) -> Vec<u8> {
        let f = c.ort_fix.as_ref().unwrap();
        let (s, o, win) = (c.in_shape, c.out_shape, &c.window);
        let (cin_g, cout_g) = (s.c / c.group, o.c / c.group);
        let k = c.row();
        let stride_k = mlas_stride_k(o.h * o.w, k);
        let mut out = Vec::new();
        for img in x.data.chunks_exact(s.len()) {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    for co in 0..o.c {
                        let g = co / cout_g;
                        let wrow = c.weights[g].values();
                        let wrow = &wrow[(co % cout_g) * k..][..k];
                        let (mut xs, mut ws) = (vec![], vec![]);
                        for ci in 0..cin_g {
                            for ky in 0..win.kh {
                                for kx in 0..win.kw {
                                    let tap = win.tap(s, (oy, ox), (ky, kx));
                                    xs.push(match tap {
                                        Some(pix) => {
                                            let q = img[pix * s.c + g * cin_g + ci];
                                            (q as i32 - c.in_zero_point) as f32 * f.in_scale
                                        }
                                        None => 0.0,
                                    });
                                    let wi = (ky * win.kw + kx) * cin_g + ci;
                                    ws.push(wrow[wi] as f32 * c.scale_of(co));
                                }
                            }
                        }
                        let y = if cout_g == 1 {
                            m1_sum(&xs, &ws, stride_k)
                        } else {
                            fma_sum(&xs, &ws, stride_k)
                        };
                        let y = y + c.bias[co] as f32 * f.bias_scale[co];
                        let q = (y / f.out_scale).round_ties_even() + c.requant.zero_point as f32;
                        let (lo, hi) = (c.requant.lo as f32, c.requant.hi as f32);
                        out.push(q.clamp(lo, hi) as u8);
                    }
                }
            }
        }
        out
    }

    /// MLAS's SGEMM kernels, one sum at a time: each slice of `stride_k` inputs a chain of
    /// fused multiply-adds from zero, added to the output.
    fn fma_sum(x: &[f32], w: &[f32], stride_k: usize) -> f32 {
        let mut y = 0f32;
        for (first, (xs, ws)) in x.chunks(stride_k).zip(w.chunks(stride_k)).enumerate() {
            let mut acc = 0f32;
            for (&a, &b) in xs.iter().zip(ws) {
                acc = b.mul_add(a, acc);
            }
            y = if first == 0 { acc } else { acc + y };
        }
        y
    }

    #[test]
    fn lanes_sum_like_one_chain_each() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let k = 300;
        let xs: Vec<Vec<f32>> = (0..LANES)
            .map(|_| (0..k).map(|_| rng.random_range(-3.0f32..3.0)).collect())
            .collect();
        let ws: Vec<Vec<f32>> = (0..LANES)
            .map(|_| (0..k).map(|_| rng.random_range(-0.1f32..0.1)).collect())
            .collect();
        for stride_k in [7, 128, 256, 1024] {
            let idx: Vec<usize> = (0..k).collect();
            let lanes = |start| Lanes {
                x: std::array::from_fn(|l| &xs[l][..]),
                w: std::array::from_fn(|l| &ws[l][..]),
                idx: &idx,
                stride_k,
                start,
            };
            let zero = lanes([0.0; LANES]).sums();
            let b = 0.3125f32;
            let gemm = lanes([b; LANES]).sums();
            for l in 0..LANES {
                assert_eq!(
                    zero[l].to_bits(),
                    fma_sum(&xs[l], &ws[l], stride_k).to_bits()
                );
                // A Gemm's bias first: ((b + s₀) + s₁) + …
                let mut y = b;
                for (xc, wc) in xs[l].chunks(stride_k).zip(ws[l].chunks(stride_k)) {
                    y += fma_sum(xc, wc, usize::MAX);
                }
                assert_eq!(gemm[l].to_bits(), y.to_bits());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// The integer sums with the float order only near a rounding boundary give, value for
        /// value, what computing every output in MLAS's order gives: plain, strided, padded,
        /// dilated, grouped, depthwise and 1×1 convs, long K (several slices) included; the
        /// full byte range, a ReLU's (from the zero point) and a ReLU6-like narrow one.
        #[test]
        fn fix_up_equals_the_float_order_everywhere(
            n in 1usize..4, h in 3usize..10, w in 3usize..10, kind in 0usize..5,
            k in 1usize..4, stride in 1usize..3, pad in 0usize..2, zp in 0i32..256,
            clamp in 0usize..3, seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (c_in, c_out, group, kk, dil) = match kind {
                0 => (3, 8, 1, k, 1),
                1 => (8, 8, 8, 3, 1),        // depthwise: MLAS's M = 1 kernel
                2 => (8, 4, 2, k, 1),        // grouped
                3 => (40, 6, 1, 3, 1),       // K = 360: slices of K
                _ => (4, 5, 1, 2, 2),        // dilated
            };
            let win = Window {
                kh: kk, kw: kk, stride_h: stride, stride_w: stride,
                pads: [pad; 4], dil_h: dil, dil_w: dil,
            };
            let s = Shape { h, w, c: c_in };
            prop_assume!(win.output_hw(h, w, false).is_some_and(|(a, b)| a * b > 1));
            let mut c = conv(s, c_out, group, win, zp, &mut rng);
            let z = c.requant.zero_point.clamp(0, 255) as u8;
            match clamp {
                1 => c.requant.lo = z,
                2 => (c.requant.lo, c.requant.hi) = (z.min(243), z.min(243) + 12),
                _ => {}
            }
            let x = QBatch {
                n,
                shape: s,
                data: (0..n * s.len()).map(|_| rng.random::<u8>()).collect(),
            };
            prop_assert_eq!(c.forward(&x).data, reference(&c, &x));
        }
    }

    proptest! {
        /// Where [`flips`] (or the screen's [`flips32`]) says no, every value within `m` of `z`
        /// gives the same byte: checked at both ends of the interval and on both sides of every
        /// rounding boundary inside it.
        #[test]
        fn no_flip_means_one_byte(
            dz in -6f64..6.0, m in 0f64..3.0, zp in 0i32..256, lo in 0u8..=255, span in 0u8..=255,
            at_hi: bool,
        ) {
            // z within a few steps of the clamp's edge, where the decision is made.
            let hi = lo.saturating_add(span);
            let z = if at_hi { hi as f64 } else { lo as f64 } - zp as f64 + dz;
            let byte = |y: f64| rounded_byte(y as f32, zp as f32, lo as f32, hi as f32);
            let (lo_z, hi_z) = (lo as f64 - zp as f64, hi as f64 - zp as f64);
            let no_flip = !flips(z, m, (zp as f64, lo as f64, hi as f64));
            let no_flip32 = !flips32(z as f32, m as f32, ((lo_z - 1.0) as f32, (hi_z + 1.0) as f32));
            if no_flip || no_flip32 {
                let mut ys = vec![z - m, z + m];
                let mut b = (z - m - 0.5).ceil() + 0.5;
                while b <= z + m {
                    ys.extend([b - 1e-6, b + 1e-6]);
                    b += 1.0;
                }
                for y in ys {
                    prop_assert_eq!(byte(y), byte(z), "y {} z {} f64 {} f32 {}", y, z, no_flip, no_flip32);
                }
            }
        }
    }

    /// The error of MLAS's blocked sums stays within `Sums::roundings` roundings of `Σ|p|`,
    /// against the exact sum of the products in f64, on sums built to cancel (large terms of
    /// both signs, a small result). A check of the bound's form, not of its worst case (that
    /// is the analysis: Higham's blocked summation): random roundings reach about 2 % of it.
    #[test]
    fn blocked_sums_stay_within_their_roundings() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut worst = 0f64;
        for _ in 0..400 {
            let k = rng.random_range(1usize..2000);
            let stride_k = [16, 64, 128, 256][rng.random_range(0..4)];
            let x: Vec<f32> = (0..k)
                .map(|_| rng.random_range(0u8..=255) as f32 * 0.0173)
                .collect();
            let w: Vec<f32> = (0..k)
                .map(|i| {
                    let big = if i % 2 == 0 { 1.0 } else { -1.0 } * rng.random_range(0.5f32..1.0);
                    big * 0.0311 + rng.random_range(-1e-3f32..1e-3)
                })
                .collect();
            let exact: f64 = x.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs: f64 = x
                .iter()
                .zip(&w)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            for m1 in [false, true] {
                let sums = Sums { stride_k, m1 };
                let y = if m1 {
                    m1_sum(&x, &w, stride_k)
                } else {
                    fma_sum(&x, &w, stride_k)
                };
                let err = (y as f64 - exact).abs() / (U * abs);
                worst = worst.max(err / sums.roundings(k) as f64);
                assert!(
                    err <= sums.roundings(k) as f64,
                    "k {k}, slices of {stride_k}, m1 {m1}: error {err:.1} roundings of u·Σ|p|, \
                     bound {}",
                    sums.roundings(k)
                );
            }
        }
        eprintln!("largest error / bound: {worst:.3}");
    }

    #[test]
    fn mlas_slices_follow_the_output_size() {
        // Enough pixels: a short K in one slice (the K stride halves down to it), a long K in
        // slices of 128.
        assert_eq!(mlas_stride_k(784, 9), 16);
        assert_eq!(mlas_stride_k(196, 144), 128);
        // Few pixels (7×7): the K stride doubles while the N stride halves down to 64.
        assert_eq!(mlas_stride_k(49, 288), 256);
        assert_eq!(mlas_stride_k(16, 1152), 1024);
    }

    #[test]
    fn m1_kernel_rounds_each_product_and_adds_in_fours() {
        // p = [1, 2^-24, 2^-24, 2^-24, 2^-24]: ((1 + 2^-24) + 2^-24) + 2^-24 stays 1 (each add
        // a tie to even), then + 0 = 1, then the single 2^-24: 1 again. A sum in one chain of
        // FMAs gives the same here; the fifth product alone would not move it either.
        let t = 2f32.powi(-24);
        let x = [1.0, t, t, t, t];
        let w = [1.0; 5];
        assert_eq!(m1_sum(&x, &w, 128), 1.0);
        // Grouping matters: [t, t, t, t, 1]: the quad sums to 4t exactly, then 1 + 4t.
        let x = [t, t, t, t, 1.0];
        assert_eq!(m1_sum(&x, &w, 128), 1.0 + 4.0 * t);
    }

    #[test]
    fn fma_chain_is_one_rounding_per_input() {
        // a = 1 + 2^-12: a·a = 1 + 2^-11 + 2^-24 exactly; with −1 first the fused step keeps
        // 2^-11 + 2^-24, where rounding the product first would lose the 2^-24.
        let a = 1.0 + 2f32.powi(-12);
        let y = fma_sum(&[1.0, a], &[-1.0, a], 128);
        assert_eq!(y, 2f32.powi(-11) + 2f32.powi(-24));
        // Slices: the second slice is summed from zero, then added.
        let y2 = fma_sum(&[1.0, a], &[-1.0, a], 1);
        assert_eq!(y2, (a * a) + -1.0);
    }
}
