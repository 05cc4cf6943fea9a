//! Element-wise layers on quantized activations: the quantized `Add` of a residual connection
//! (or `Sub`, the same layer with the second term subtracted), and `Requantize`, which moves a
//! tensor to new parameters and/or clamps it (a ReLU or Clip on an already-quantized tensor, or
//! a QuantizeLinear to a different scale).

use super::qparams::{centered, round_half_even, rounded_byte};
use super::tensor::QBatch;

/// `y = Q((s_a(a − z_a) ± s_b(b − z_b)))`, computed as onnxruntime's QLinearAdd does:
/// `(a − z_a)·(s_a/s_y) ± (b − z_b)·(s_b/s_y)` in f32, rounded half to even; or, for the QDQ
/// form ([`Add::float_scales`]), in the float order onnxruntime runs DQ → Add → Q in.
///
/// A Sub (`sub`) negates the second term's ratio in its table: `(q − z)·(−r)` is exactly
/// `−((q − z)·r)` in f32, so the sum is the f32 difference of the same two terms. The ratios
/// themselves stay positive (the rescaling of [`super::rescale`] recomputes them from scales).
#[derive(Debug, Clone)]
pub struct Add {
    pub a_zero_point: i32,
    pub b_zero_point: i32,
    pub a_ratio: f32,
    pub b_ratio: f32,
    pub out_zero_point: i32,
    pub lo: u8,
    pub hi: u8,
    /// A constant second operand (one sample, storage bytes), broadcast over the batch.
    pub b_const: Option<Vec<u8>>,
    /// The second operand is subtracted (an ONNX Sub): `a − b`.
    pub sub: bool,
    /// `Some([s_a, s_b, s_y])` for the QDQ form `DQ a, DQ b → Add → Q`, which onnxruntime (graph
    /// optimizations off) runs in float: `((a − z_a)·s_a ± (b − z_b)·s_b) / s_y`, rounded half to
    /// even. On a grid of round scales (GELU's `erf + 1`, both on 1/127.5) half the bytes of a
    /// table fall on a tie that this and QLinearAdd's ratio form round apart. `None`:
    /// QLinearAdd's ratio form above.
    pub float_scales: Option<[f32; 3]>,
}

impl Add {
    /// The Add of two float activations: its quantization fields are placeholders (zero points
    /// 0, ratios 1), as the float path reads none of them.
    pub fn of_reals() -> Self {
        Add {
            a_zero_point: 0,
            b_zero_point: 0,
            a_ratio: 1.0,
            b_ratio: 1.0,
            out_zero_point: 0,
            lo: 0,
            hi: 255,
            b_const: None,
            sub: false,
            float_scales: None,
        }
    }

    /// [`Add::of_reals`] for the difference `a − b` when `sub`.
    pub fn of_reals_signed(sub: bool) -> Self {
        Add {
            sub,
            ..Add::of_reals()
        }
    }

    /// The sign of the second operand's term: −1 for a Sub.
    pub fn b_sign(&self) -> f32 {
        if self.sub {
            -1.0
        } else {
            1.0
        }
    }

    /// Run on two batches of the same shape, or on `a` and the constant operand.
    ///
    /// Each term `(q − z)·ratio` is the f32 product of the byte's offset and the ratio (what a
    /// table of the 256 products holds, computed in place: the table's lookups kept this loop
    /// scalar, 12 % of an inference run of a residual CNN; the arithmetic form vectorises).
    pub fn forward(&self, a: &QBatch, b: Option<&QBatch>) -> QBatch {
        let mut data = vec![0u8; a.data.len()];
        match (b, &self.b_const) {
            (Some(b), _) => self.rows(&a.data, &b.data, &mut data),
            (None, Some(c)) if c.is_empty() => {}
            (None, Some(c)) => {
                for (o, x) in data.chunks_mut(c.len()).zip(a.data.chunks(c.len())) {
                    self.rows(x, c, o);
                }
            }
            (None, None) => unreachable!("an Add layer without a second operand"),
        }
        QBatch {
            n: a.n,
            shape: a.shape,
            data: data.into(),
        }
    }

    /// `out[i] = Q(a[i] ⊕ b[i])` over the shortest of the three.
    ///
    /// On x86_64 CPUs with AVX2 the loop is compiled for AVX2, and the byte is formed by
    /// [`rounded_byte`] (no scalar float-to-byte conversion): this loop was 10 % of an inference
    /// run of the MobileNetV2-style fixture. Each value goes through the same IEEE operations
    /// (two products, one sum, no fused multiply-add) on every path.
    fn rows(&self, a: &[u8], b: &[u8], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { self.rows_avx2(a, b, out) };
        }
        self.rows_portable(a, b, out)
    }

    /// [`Add::rows_portable`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(&self, a: &[u8], b: &[u8], out: &mut [u8]) {
        self.rows_portable(a, b, out)
    }

    #[inline(always)]
    fn rows_portable(&self, a: &[u8], b: &[u8], out: &mut [u8]) {
        let (za, zb) = (self.a_zero_point, self.b_zero_point);
        if let Some([sa, sb, sy]) = self.float_scales {
            let sb = self.b_sign() * sb;
            let (zo, lo, hi) = (self.out_zero_point as f32, self.lo as f32, self.hi as f32);
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                let v = (centered(x, za) as f32 * sa + centered(y, zb) as f32 * sb) / sy;
                *o = rounded_byte(v, zo, lo, hi);
            }
            return;
        }
        let (ra, rb) = (self.a_ratio, self.b_sign() * self.b_ratio);
        let (zo, lo, hi) = (self.out_zero_point as f32, self.lo as f32, self.hi as f32);
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            let v = centered(x, za) as f32 * ra + centered(y, zb) as f32 * rb;
            *o = rounded_byte(v, zo, lo, hi);
        }
    }
}

/// `y = clamp(round((x − z_x)·s_x/s_y) + z_y, lo, hi)`, or a pure clamp when the
/// parameters are equal.
#[derive(Debug, Clone)]
pub struct Requantize {
    pub in_zero_point: i32,
    pub ratio: f32,
    pub out_zero_point: i32,
    pub lo: u8,
    pub hi: u8,
    /// True when input and output parameters match: only the clamp applies.
    pub identity: bool,
}

impl Requantize {
    /// Run on a batch.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let lut: Vec<u8> = (0..=255u8)
            .map(|q| {
                if self.identity {
                    q.clamp(self.lo, self.hi)
                } else {
                    let v = round_half_even((q as i32 - self.in_zero_point) as f32 * self.ratio)
                        + self.out_zero_point as f32;
                    v.clamp(self.lo as f32, self.hi as f32) as u8
                }
            })
            .collect();
        QBatch {
            n: x.n,
            shape: x.shape,
            data: x.data.iter().map(|&q| lut[q as usize]).collect(),
        }
    }
}

/// Flatten `[h][w][c]` (NHWC storage) into the NCHW order ONNX's Flatten/Reshape produce.
pub fn flatten_nchw(x: &QBatch) -> QBatch {
    QBatch {
        n: x.n,
        shape: super::tensor::Shape::flat(x.shape.len()),
        data: nchw_order(x.shape, &x.data).into(),
    }
}

/// Samples of shape `s` (NHWC, one after another) reordered to NCHW; the float twin's Flatten
/// uses it on real values.
pub fn nchw_order<T: Copy + Default>(s: super::tensor::Shape, x: &[T]) -> Vec<T> {
    // One pixel or one channel: the two orders are the same.
    if s.h * s.w == 1 || s.c == 1 {
        return x.to_vec();
    }
    let plane = s.h * s.w;
    let mut out = vec![T::default(); x.len()];
    for (o, img) in out
        .chunks_exact_mut(s.len().max(1))
        .zip(x.chunks_exact(s.len().max(1)))
    {
        for (p, px) in img.chunks_exact(s.c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                o[ch * plane + p] = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Add;
    use crate::graph::qparams::round_half_even;
    use proptest::prelude::*;

    /// The definition: round half to even, shift, clamp, convert.
    fn reference(add: &Add, x: u8, y: u8) -> u8 {
        let v = (x as i32 - add.a_zero_point) as f32 * add.a_ratio
            + (y as i32 - add.b_zero_point) as f32 * (add.b_sign() * add.b_ratio);
        (round_half_even(v) + add.out_zero_point as f32).clamp(add.lo as f32, add.hi as f32) as u8
    }

    /// The QDQ form follows onnxruntime's float order, which rounds a tie apart from the ratio
    /// form: GELU's `erf + 1` in `mnist_gelu_qdq` (erf on 1/127.5 with zero point 128, the
    /// constant 1 as byte 255 on 1/255, the sum on 1/127.5). At erf byte 2 the sum is 1.5 steps
    /// in the ratio form but just below in the float order: 2 against onnxruntime's 1.
    #[test]
    fn the_qdq_form_rounds_in_onnxruntimes_float_order() {
        let (sa, sb) = (0.007_843_138_f32, 0.003_921_569_f32);
        let mut add = Add {
            a_zero_point: 128,
            b_zero_point: 0,
            a_ratio: sa / sa,
            b_ratio: sb / sa,
            out_zero_point: 0,
            lo: 0,
            hi: 255,
            b_const: Some(vec![255]),
            sub: false,
            float_scales: None,
        };
        let a: Vec<u8> = (0..=255).collect();
        let one = vec![255u8; 256];
        let mut ratio = vec![0u8; 256];
        add.rows(&a, &one, &mut ratio);
        add.float_scales = Some([sa, sb, sa]);
        let mut float = vec![0u8; 256];
        add.rows(&a, &one, &mut float);
        for x in 0..=255u8 {
            let v = ((x as i32 - 128) as f32 * sa + 255.0 * sb) / sa;
            let want = round_half_even(v).clamp(0.0, 255.0) as u8;
            assert_eq!(float[x as usize], want, "byte {x}");
        }
        assert_eq!((ratio[2], float[2]), (2, 1));
        assert!(ratio.iter().zip(&float).filter(|(r, f)| r != f).count() > 50);
    }

    proptest! {
        /// Every byte of the (vectorised) rows is the definition's, for ratios from tiny to far
        /// beyond the range where the rounding is exact, ties included (ratios 0.5 and 1.5 put
        /// many sums on a half).
        #[test]
        fn rows_are_the_definition(
            a in proptest::collection::vec(any::<u8>(), 1..300),
            b_seed in any::<u64>(),
            za in 0i32..=255,
            zb in 0i32..=255,
            zo in 0i32..=255,
            ra in prop_oneof![Just(0.5f32), Just(1.5f32), 1e-3f32..4.0, 1e5f32..1e9],
            rb in prop_oneof![Just(0.5f32), Just(1.0f32), 1e-3f32..4.0, 1e5f32..1e9],
            sub in any::<bool>(),
            lo in 0u8..=128,
            span in 0u8..=127,
        ) {
            let b: Vec<u8> = (0..a.len())
                .map(|i| (b_seed.rotate_left(i as u32 % 64) as u8) ^ (i as u8).wrapping_mul(37))
                .collect();
            let add = Add {
                a_zero_point: za,
                b_zero_point: zb,
                a_ratio: ra,
                b_ratio: rb,
                out_zero_point: zo,
                lo,
                hi: lo + span,
                b_const: None,
                sub,
                float_scales: None,
            };
            let mut out = vec![0u8; a.len()];
            add.rows(&a, &b, &mut out);
            for i in 0..a.len() {
                prop_assert_eq!(out[i], reference(&add, a[i], b[i]), "at {}: {} ⊕ {}", i, a[i], b[i]);
            }
        }
    }
}
