//! The product of two quantized activations in float between DequantizeLinear and
//! QuantizeLinear: a squeeze-excitation gate `x · s`, where `s` holds one value per channel and
//! sample (`[N, C, 1, 1]`, broadcast over the pixels of `x`), or two tensors of one shape.
//!
//! Computed as onnxruntime runs it with graph optimizations off: each operand dequantized in f32,
//! `(q − z) · s`, their f32 product, then QuantizeLinear (`round_half_even(r / s_y) + z_y`,
//! saturated, and clamped by a fused activation). The backward is the product rule on the real
//! operands (rounding is the identity under the straight-through estimator): `∂x = g · s`, and
//! `∂s = Σ g · x` over the pixels a gate value was broadcast to.

use super::pairwise::Pairing;
use super::qparams::{centered, round_half_even, QParams};
use super::tensor::{QBatch, Shape};

/// `y = Q(DQ(a) · DQ(b))`, `b` equal in shape to `a` or one value per channel.
#[derive(Debug, Clone)]
pub struct Mul {
    pub a: QParams,
    pub b: QParams,
    pub out: QParams,
    pub lo: u8,
    pub hi: u8,
    /// `b` is `[C]` per sample, broadcast over the pixels of `a`.
    pub broadcast: bool,
    /// `Some(s_a·s_b/s_y)` for com.microsoft `QLinearMul`, which onnxruntime does not run as
    /// the DQ → Mul → Q sequence above: its kernel multiplies the centred integers exactly,
    /// converts the product to f32, multiplies by this ratio (rounded to f32 in that order),
    /// adds the zero point and rounds half to even. The two sequences differ in the last bit
    /// often enough to move a byte, so each form is computed its own way.
    pub ratio: Option<f32>,
}

impl Mul {
    pub(crate) fn pairing(&self, shape: Shape) -> Pairing {
        Pairing::new(shape, self.broadcast)
    }

    /// Run on `a` and `b`.
    pub fn forward(&self, a: &QBatch, b: &QBatch) -> QBatch {
        let (la, lb) = (a.shape.len().max(1), b.shape.len().max(1));
        // `a[i]` meets `b[i mod run]`: one value per channel, or `b` of `a`'s shape.
        let run = if self.broadcast { a.shape.c.max(1) } else { la };
        let k = Consts {
            sa: self.a.scale,
            za: self.a.zero_point,
            sb: self.b.scale,
            zb: self.b.zero_point,
            s_out: self.out.scale,
            zy: self.out.zero_point as f32,
            lo: self.lo as f32,
            hi: self.hi as f32,
        };
        let mut data = vec![0u8; a.data.len()];
        for ((o, xa), xb) in data
            .chunks_exact_mut(la)
            .zip(a.data.chunks_exact(la))
            .zip(b.data.chunks_exact(lb))
        {
            let xb = &xb[..run];
            for (o, xa) in o.chunks_mut(run).zip(xa.chunks(run)) {
                match self.ratio {
                    Some(ratio) => mul_run_ratio(o, xa, xb, &k, ratio),
                    None => mul_run(o, xa, xb, &k),
                }
            }
        }
        QBatch {
            n: a.n,
            shape: a.shape,
            data: data.into(),
        }
    }

    /// Gradients of both operands from their real values `ra`, `rb` (one batch each) and the
    /// output gradient `gy` (already gated by the output clamp).
    pub fn backward(
        &self,
        shape: Shape,
        ra: &[f32],
        rb: &[f32],
        gy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        self.pairing(shape)
            .backward(ra, rb, gy, |g, a, b| (g * b, g * a))
    }

    /// The float twin: the product of real operands.
    pub fn forward_real(&self, shape: Shape, ra: &[f32], rb: &[f32]) -> Vec<f32> {
        self.pairing(shape).map(ra, rb, |a, b| a * b)
    }
}

/// The constants of a quantized Mul's element loop.
pub(crate) struct Consts {
    sa: f32,
    za: i32,
    sb: f32,
    zb: i32,
    s_out: f32,
    zy: f32,
    lo: f32,
    hi: f32,
}

super::simd::avx2_dispatch! {
    /// One run of a DQ → Mul → Q: `o[j] = Q(DQ(xa[j]) · DQ(xb[j]))`, each dequantization
    /// computed as [`QParams::dequantize`] does (so the same f32), written without tables or
    /// branches so it vectorizes (per element with a table lookup and a scalar division, it was
    /// a quarter of a QDQ GELU model's inference).
    mul_run => mul_run_portable(o: &mut [u8], xa: &[u8], xb: &[u8], k: &Consts)
}

#[inline(always)]
fn mul_run_portable(o: &mut [u8], xa: &[u8], xb: &[u8], k: &Consts) {
    for ((y, &qa), &qb) in o.iter_mut().zip(xa).zip(xb) {
        let ra = k.sa * centered(qa, k.za) as f32;
        let rb = k.sb * centered(qb, k.zb) as f32;
        let v = round_half_even(ra * rb / k.s_out) + k.zy;
        *y = v.clamp(k.lo, k.hi) as u8;
    }
}

super::simd::avx2_dispatch! {
    /// One run of a com.microsoft `QLinearMul`: the centred integers' product, times the
    /// ratio, plus the zero point, rounded half to even.
    mul_run_ratio => mul_run_ratio_portable(o: &mut [u8], xa: &[u8], xb: &[u8], k: &Consts, ratio: f32)
}

#[inline(always)]
fn mul_run_ratio_portable(o: &mut [u8], xa: &[u8], xb: &[u8], k: &Consts, ratio: f32) {
    for ((y, &qa), &qb) in o.iter_mut().zip(xa).zip(xb) {
        let p = (qa as i32 - k.za) * (qb as i32 - k.zb);
        let v = round_half_even(p as f32 * ratio + k.zy);
        *y = v.clamp(k.lo, k.hi) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(scale: f32, zero_point: i32) -> QParams {
        QParams::unsigned(scale, zero_point)
    }

    #[test]
    fn gate_broadcasts_over_pixels_and_gradients_follow_the_product_rule() {
        let m = Mul {
            a: q(0.5, 10),
            b: q(0.25, 0),
            out: q(0.1, 5),
            lo: 0,
            hi: 255,
            broadcast: true,
            ratio: None,
        };
        let s = Shape { h: 1, w: 2, c: 2 };
        let a = QBatch {
            n: 1,
            shape: s,
            data: vec![12, 14, 16, 8].into(),
        };
        let b = QBatch {
            n: 1,
            shape: Shape::flat(2),
            data: vec![4, 2].into(),
        };
        // a = [1, 2, 3, −1] (NHWC: pixel 0 = [1, 2], pixel 1 = [3, −1]); b = [1, 0.5].
        let y = m.forward(&a, &b);
        let want = [1.0f32, 1.0, 3.0, -0.5]
            .map(|r| (round_half_even(r / 0.1) + 5.0).clamp(0.0, 255.0) as u8);
        assert_eq!(y.data, want.to_vec());
        let (ga, gb) = m.backward(
            s,
            &[1.0, 2.0, 3.0, -1.0],
            &[1.0, 0.5],
            &[1.0, 1.0, 2.0, 1.0],
        );
        assert_eq!(ga, vec![1.0, 0.5, 2.0, 0.5]);
        assert_eq!(gb, vec![1.0 + 6.0, 2.0 - 1.0]);
        assert_eq!(
            m.forward_real(s, &[1.0, 2.0, 3.0, -1.0], &[1.0, 0.5]),
            vec![1.0, 1.0, 3.0, -0.5]
        );
    }

    /// Random bytes, both broadcasts, both arithmetic forms, odd sizes: the per-element
    /// definition (`DQ(a)·DQ(b)`, or the centred product times the ratio), byte for byte.
    #[test]
    fn forward_is_the_per_element_definition() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for (broadcast, ratio) in [
            (true, None),
            (false, None),
            (true, Some(0.37)),
            (false, Some(0.0123)),
        ] {
            let s = Shape { h: 3, w: 5, c: 7 };
            let m = Mul {
                a: q(0.031, 17),
                b: q(0.0077, 200),
                out: q(0.013, 3),
                lo: 9,
                hi: 250,
                broadcast,
                ratio,
            };
            let n = 20;
            let lb = if broadcast { s.c } else { s.len() };
            let mut bytes = |len: usize| -> Vec<u8> { (0..len).map(|_| rng.random()).collect() };
            let a = QBatch {
                n,
                shape: s,
                data: bytes(n * s.len()).into(),
            };
            let b = QBatch {
                n,
                shape: Shape::flat(lb),
                data: bytes(n * lb).into(),
            };
            let y = m.forward(&a, &b);
            for (i, (&got, &qa)) in y.data.iter().zip(a.data.iter()).enumerate() {
                let (sample, e) = (i / s.len(), i % s.len());
                let qb = b.data[sample * lb + if broadcast { e % s.c } else { e }];
                let v = match ratio {
                    Some(k) => {
                        let p = (qa as i32 - 17) * (qb as i32 - 200);
                        round_half_even(p as f32 * k + 3.0)
                    }
                    None => round_half_even(m.a.dequantize(qa) * m.b.dequantize(qb) / 0.013) + 3.0,
                };
                assert_eq!(got, v.clamp(9.0, 250.0) as u8, "element {i}");
            }
        }
    }
}
