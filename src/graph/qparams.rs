//! Quantization parameters and the rounding rules that make our integers agree with ONNX.
//!
//! Every activation is stored as unsigned bytes. A signed (int8) tensor of the model is kept
//! shifted by +128 — value and zero point alike — so `x − zp` is unchanged and one kernel
//! family serves both types; the original type is remembered for reporting and export.

use serde::Serialize;

/// Per-tensor quantization of an activation: `real = scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QParams {
    /// Step size; always finite and > 0 (checked on import).
    pub scale: f32,
    /// Zero point in the unsigned storage domain `0..=255`.
    pub zero_point: i32,
    /// Whether the model's tensor is int8 (stored shifted by +128) rather than uint8.
    pub signed: bool,
}

impl QParams {
    /// Parameters of a uint8 tensor.
    pub fn unsigned(scale: f32, zero_point: i32) -> Self {
        QParams {
            scale,
            zero_point,
            signed: false,
        }
    }

    /// Zero point as the model file states it (int8 domain for signed tensors).
    pub fn model_zero_point(&self) -> i32 {
        if self.signed {
            self.zero_point - 128
        } else {
            self.zero_point
        }
    }

    /// Convert a stored byte back to the model's integer value.
    pub fn model_value(&self, q: u8) -> i32 {
        if self.signed {
            q as i32 - 128
        } else {
            q as i32
        }
    }

    /// Real value of a stored byte.
    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * centered(q, self.zero_point) as f32
    }

    /// ONNX `QuantizeLinear`: `saturate(round_half_even(x / scale) + zero_point)`.
    pub fn quantize(&self, x: f32) -> u8 {
        saturate(round_half_even(x / self.scale) + self.zero_point as f32)
    }

    /// Stored-domain value of the real number `x`, unclamped (used for Clip thresholds).
    pub fn level_of(&self, x: f32) -> f32 {
        round_half_even(x / self.scale) + self.zero_point as f32
    }
}

/// A stored byte minus its zero point, `q − zp`.
///
/// The difference wraps instead of being checked: a zero point is a byte, so it never
/// overflows, and the test build's overflow check kept every loop over this form scalar (the
/// quantized Add, dequantizing loops).
#[inline(always)]
pub fn centered(q: u8, zp: i32) -> i32 {
    (q as i32).wrapping_sub(zp)
}

/// Round half to even, as ONNX QuantizeLinear and onnxruntime's requantization do.
///
/// Adding and subtracting ±2²³ rounds to an integer in the FPU's default mode (nearest, ties to
/// even) for |x| < 2²³; from 2²³ on every f32 already is an integer (and NaN and ±∞ stay what they
/// are). It replaces libm's `rintf`, which CPUs built without SSE4.1 run in software: a quarter
/// of the forward's time once. Both arms are plain arithmetic, so a loop over this vectorises;
/// a library call in one arm was executed for every element of a vectorised loop (5 % of an OEU
/// run's time in `rintf`, measured with perf).
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let m = TWO_23.copysign(x);
    if x.abs() < TWO_23 {
        (x + m) - m
    } else {
        x
    }
}

/// `(round_half_even(v) + zp).clamp(lo, hi) as u8` for `0 ≤ lo ≤ hi ≤ 255` and a whole `zp` in
/// `0..=255`, in a form that a loop over it vectorises (the output stage of every layer).
///
/// Rounded, shifted and clamped, every value but NaN is a whole number in `lo..=hi`, so its byte
/// is read off the bits of `c + MAGIC` (exact below 2²⁴), and NaN gives 0, as `as u8` does. The
/// rounding adds and subtracts `MAGIC` = 1.5·2²³, which rounds half to even for |v| < 2²²;
/// beyond that the value clamps to `lo` or `hi` whether it was rounded exactly or not. The same
/// bytes as the form above, but with no float-to-integer conversion: x86 has no vector one to
/// bytes, and with `as u8` (or `as i32`, whose saturation LLVM does not vectorize either) a loop
/// compiled to one scalar conversion per byte.
#[inline(always)]
pub(crate) fn rounded_byte(v: f32, zp: f32, lo: f32, hi: f32) -> u8 {
    clamped_byte(round_magic(v), zp, lo, hi)
}

/// `v` rounded half to even by adding and subtracting `MAGIC` (exact for |v| < 2²²; see
/// [`rounded_byte`]).
#[inline(always)]
pub(crate) fn round_magic(v: f32) -> f32 {
    (v + MAGIC) - MAGIC
}

/// The byte of [`rounded_byte`] from `r`, `v` already rounded by [`round_magic`].
#[inline(always)]
pub(crate) fn clamped_byte(r: f32, zp: f32, lo: f32, hi: f32) -> u8 {
    let r = r + zp;
    let c = r.max(lo).min(hi);
    let byte = (c + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as u8;
    if r.is_nan() {
        0
    } else {
        byte
    }
}

/// 1.5·2²³: added and subtracted, rounds half to even below 2²²; the bits of `c + MAGIC` hold
/// a whole `c` below 2²³ in their low bits.
const MAGIC: f32 = 12_582_912.0;

pub(crate) use super::quantize_mul::quantize_reals;

/// Clamp to the storage range and convert.
#[inline]
pub fn saturate(x: f32) -> u8 {
    x.clamp(0.0, 255.0) as u8
}

/// Output stage shared by conv, linear and pooling layers: scale an i32 accumulator to the
/// output's step, round half to even, add the zero point, clamp to `[lo, hi]` (the storage
/// range narrowed by a fused ReLU/Clip).
#[derive(Debug, Clone, Serialize)]
pub struct Requant {
    /// Per output channel (or one value for all): `s_in · s_w[c] / s_out`, computed in f32 in
    /// that order as onnxruntime does.
    pub multiplier: Vec<f32>,
    /// Per output channel offset in output steps, added before rounding (empty: none). A real-
    /// valued bias that is not a whole number of accumulator units (a BatchNormalization that
    /// could not be folded into a conv) lands here instead of being rounded twice.
    pub offset: Vec<f32>,
    /// The file's float bias (real units, per output channel) the offset was made from, when
    /// that bias trains as a float parameter (NNCF keeps Conv/Gemm biases in float); empty
    /// otherwise. Kept so an unchanged bias is written back bit for bit.
    pub float_bias: Vec<f32>,
    /// Output zero point (storage domain).
    pub zero_point: i32,
    /// Lowest allowed output byte.
    pub lo: u8,
    /// Highest allowed output byte.
    pub hi: u8,
}

impl Requant {
    /// The output stage of a layer whose output is a float activation: never applied (the
    /// layer writes reals), it only fills the field (multiplier 1, the full byte range).
    pub fn unused() -> Self {
        Requant {
            multiplier: vec![1.0],
            offset: vec![],
            float_bias: vec![],
            zero_point: 0,
            lo: 0,
            hi: 255,
        }
    }

    /// Restate the offsets (output steps) from an output whose real steps were `old` to one
    /// whose steps are `new` (each one per channel, or one for all), so that their real values
    /// stay: when the activation a layer writes is given new parameters, or the layer writes
    /// another activation.
    pub fn restate_offsets(&mut self, old: &[f32], new: &[f32]) {
        let at = |v: &[f32], c: usize| v[if v.len() > 1 { c } else { 0 }];
        for (c, o) in self.offset.iter_mut().enumerate() {
            *o *= at(old, c) / at(new, c);
        }
    }

    /// Requantize accumulator `acc` of channel `c`.
    #[inline]
    pub fn apply(&self, acc: i32, c: usize) -> u8 {
        let m = if self.multiplier.len() == 1 {
            self.multiplier[0]
        } else {
            self.multiplier[c]
        };
        let mut v = acc as f32 * m;
        if !self.offset.is_empty() {
            v += self.offset[c];
        }
        let v = round_half_even(v) + self.zero_point as f32;
        v.clamp(self.lo as f32, self.hi as f32) as u8
    }

    /// `out[j] = apply(acc[j] + bias[j], c0 + j)` for one output row of channels
    /// `c0..c0 + out.len()`, the same bytes as [`Requant::apply`] element by element.
    ///
    /// Why a row at a time: the per-element branches (one multiplier or many, an offset or
    /// none, the rounding's range check) kept the compiler from vectorizing the epilogue, which
    /// was 12 % of an OEU run's time. The range check can go: beyond ±2²² the value clamps to
    /// `lo`/`hi` whether it was rounded exactly or not.
    pub fn apply_row(&self, acc: &[i32], bias: &[i32], c0: usize, out: &mut [u8]) {
        let n = out.len();
        self.apply_rows(&acc[..n], n, bias, c0, out, n);
    }

    /// [`Requant::apply_row`] for every row of `acc` (`rows × width`, channels `c0..c0+width`)
    /// into the rows of `out` that start every `stride` bytes.
    ///
    /// On x86_64 CPUs with AVX2 the loop is compiled for AVX2 (8 lanes instead of SSE2's 4):
    /// the convolutions' epilogue was the largest item of the forward after the
    /// micro-kernel. The bytes are the same on every path: each value goes through the same
    /// IEEE operations (no fused multiply-add), only more of them at once.
    pub fn apply_rows(
        &self,
        acc: &[i32],
        width: usize,
        bias: &[i32],
        c0: usize,
        out: &mut [u8],
        stride: usize,
    ) {
        if width == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { self.rows_avx2(acc, width, bias, c0, out, stride) };
        }
        self.rows(acc, width, bias, c0, out, stride)
    }

    /// [`Requant::rows`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(
        &self,
        acc: &[i32],
        width: usize,
        bias: &[i32],
        c0: usize,
        out: &mut [u8],
        stride: usize,
    ) {
        self.rows(acc, width, bias, c0, out, stride)
    }

    #[inline(always)]
    fn rows(
        &self,
        acc: &[i32],
        width: usize,
        bias: &[i32],
        c0: usize,
        out: &mut [u8],
        stride: usize,
    ) {
        for (a, o) in acc.chunks_exact(width).zip(out.chunks_mut(stride)) {
            self.row(a, bias, c0, &mut o[..width]);
        }
    }

    #[inline(always)]
    fn row(&self, acc: &[i32], bias: &[i32], c0: usize, out: &mut [u8]) {
        let n = out.len();
        let (acc, bias) = (&acc[..n], &bias[..n]);
        let (zp, lo, hi) = (self.zero_point as f32, self.lo as f32, self.hi as f32);
        let finish = |v: f32| rounded_byte(v, zp, lo, hi);
        match (self.multiplier.len(), self.offset.is_empty()) {
            (1, true) => {
                let m = self.multiplier[0];
                for ((d, &a), &b) in out.iter_mut().zip(acc).zip(bias) {
                    *d = finish(a.saturating_add(b) as f32 * m);
                }
            }
            (1, false) => {
                let m = self.multiplier[0];
                let off = &self.offset[c0..c0 + n];
                for (((d, &a), &b), &o) in out.iter_mut().zip(acc).zip(bias).zip(off) {
                    *d = finish(a.saturating_add(b) as f32 * m + o);
                }
            }
            (_, true) => {
                let ms = &self.multiplier[c0..c0 + n];
                for (((d, &a), &b), &m) in out.iter_mut().zip(acc).zip(bias).zip(ms) {
                    *d = finish(a.saturating_add(b) as f32 * m);
                }
            }
            (_, false) => {
                let ms = &self.multiplier[c0..c0 + n];
                let off = &self.offset[c0..c0 + n];
                for ((((d, &a), &b), &m), &o) in out.iter_mut().zip(acc).zip(bias).zip(ms).zip(off)
                {
                    *d = finish(a.saturating_add(b) as f32 * m + o);
                }
            }
        }
    }
}

/// The clamp range `[lo, hi]` a fused activation imposes on an output with parameters `q`.
/// `Relu` keeps `real ≥ 0`; `Clip(min, max)` keeps `min ≤ real ≤ max`. Because quantization is
/// monotone, clamping after rounding equals rounding after clamping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Activation {
    /// No clamp beyond the storage range.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, min), max).
    Clip { min: f32, max: f32 },
}

impl Activation {
    /// Output byte range for parameters `q`.
    pub fn range(&self, q: &QParams) -> (u8, u8) {
        match *self {
            Activation::None => (0, 255),
            Activation::Relu => (saturate(q.zero_point as f32), 255),
            Activation::Clip { min, max } => (saturate(q.level_of(min)), saturate(q.level_of(max))),
        }
    }

    /// Compose two activations applied one after the other.
    pub fn then(self, next: Activation) -> Activation {
        let (a_lo, a_hi) = self.bounds();
        let (b_lo, b_hi) = next.bounds();
        let (lo, hi) = (a_lo.max(b_lo), a_hi.min(b_hi));
        if lo == f32::NEG_INFINITY && hi == f32::INFINITY {
            Activation::None
        } else if lo == 0.0 && hi == f32::INFINITY {
            Activation::Relu
        } else {
            Activation::Clip { min: lo, max: hi }
        }
    }

    /// Real-valued `(min, max)` the activation keeps (infinite when unbounded).
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Clip { min, max } => (min, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let q = QParams {
            scale: 0.5,
            zero_point: 10,
            signed: false,
        };
        assert_eq!(q.quantize(0.25), 10); // 0.5 → 0
        assert_eq!(q.quantize(0.75), 12); // 1.5 → 2
        assert_eq!(q.quantize(-100.0), 0);
        assert_eq!(q.quantize(1000.0), 255);
    }

    proptest::proptest! {
        /// The row epilogue gives the bytes of the per-element one, for every shape of
        /// `Requant` (one or many multipliers, with or without offsets) and accumulators up to
        /// the i32 extremes, where the rounding's range check matters.
        #[test]
        fn apply_row_equals_apply(
            acc in proptest::collection::vec(proptest::prelude::any::<i32>(), 1..40),
            small in proptest::collection::vec(-70_000i32..70_000, 44),
            ms in proptest::collection::vec(1e-6f32..0.5, 44),
            offs in proptest::collection::vec(-3f32..3.0, 44),
            bias in proptest::collection::vec(-5_000i32..5_000, 44),
            per_channel in proptest::prelude::any::<bool>(),
            with_offset in proptest::prelude::any::<bool>(),
            zp in 0i32..256,
            c0 in 0usize..4,
        ) {
            let n = acc.len();
            // Half the values in the range where rounding decides the byte.
            let acc: Vec<i32> = acc.iter().zip(&small).enumerate()
                .map(|(i, (&a, &s))| if i % 2 == 0 { s } else { a }).collect();
            let r = Requant {
                multiplier: if per_channel { ms[..n + c0].to_vec() } else { vec![ms[0]] },
                offset: if with_offset { offs[..n + c0].to_vec() } else { Vec::new() },
                float_bias: Vec::new(),
                zero_point: zp,
                lo: 3,
                hi: 250,
            };
            let mut row = vec![0u8; n];
            r.apply_row(&acc, &bias[c0..], c0, &mut row);
            // The portable loop (what CPUs without AVX2 run) gives the same bytes.
            let mut portable = vec![0u8; n];
            r.rows(&acc, n, &bias[c0..], c0, &mut portable, n);
            proptest::prop_assert_eq!(&portable, &row);
            // Several rows at a stride: each row as apply_row gives it, the gaps untouched.
            let mut block = vec![7u8; 3 * (n + 2)];
            let acc3: Vec<i32> = acc.iter().chain(&acc).chain(&acc).copied().collect();
            r.apply_rows(&acc3, n, &bias[c0..], c0, &mut block, n + 2);
            for rr in 0..3 {
                proptest::prop_assert_eq!(&block[rr * (n + 2)..][..n], &row[..]);
                proptest::prop_assert_eq!(&block[rr * (n + 2) + n..][..2], &[7u8, 7][..]);
            }
            for j in 0..n {
                proptest::prop_assert_eq!(
                    row[j], r.apply(acc[j].saturating_add(bias[c0 + j]), c0 + j), "j = {}", j
                );
            }
        }
    }

    #[test]
    fn apply_row_equals_apply_for_non_finite_values() {
        // NaN must give byte 0 (what `as u8` gives), ±∞ the clamp bounds, with lo ≠ 0.
        for m in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 3e38] {
            for offset in [vec![], vec![f32::NAN, 1.0, f32::INFINITY, -0.5]] {
                let r = Requant {
                    multiplier: vec![m],
                    offset,
                    float_bias: Vec::new(),
                    zero_point: 7,
                    lo: 3,
                    hi: 250,
                };
                let acc = [0, 1, -1, i32::MAX];
                let mut row = [9u8; 4];
                r.apply_row(&acc, &[0; 4], 0, &mut row);
                let want: Vec<u8> = (0..4).map(|j| r.apply(acc[j], j)).collect();
                assert_eq!(row.to_vec(), want, "m = {m}");
            }
        }
    }

    #[test]
    fn fast_rounding_equals_the_library() {
        // Halves, near-halves, negatives, both sides of 2^22 and of the 2^23 switch, huge
        // values and infinities.
        let mut xs = vec![
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            4_194_303.5,
            4_194_304.5,
            -8e6,
            8_388_607.5,
            -8_388_607.5,
            8_388_606.5,
            8_388_608.0,
            8_388_609.0,
            -8_388_609.0,
            1e30,
            -3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE / 4.0,
        ];
        // Every exponent, with a few mantissas each.
        for bits in (0u32..=0xffff_ffff).step_by(0x0001_0f01) {
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                xs.push(x);
            }
        }
        assert!(round_half_even(f32::NAN).is_nan());
        let mut v = -300.0f32;
        while v < 300.0 {
            xs.push(v);
            v += 0.0625 + f32::EPSILON * v.abs();
        }
        for x in xs {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn relu_range_is_zero_point_up() {
        let q = QParams {
            scale: 0.1,
            zero_point: 128,
            signed: true,
        };
        assert_eq!(Activation::Relu.range(&q), (128, 255));
        let six = Activation::Clip { min: 0.0, max: 6.0 };
        assert_eq!(six.range(&q), (128, 188));
        assert_eq!(Activation::Relu.then(six), six);
    }
}
