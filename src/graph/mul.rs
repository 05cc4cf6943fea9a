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
use super::qparams::{round_half_even, QParams};
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
    fn pairing(&self, shape: Shape) -> Pairing {
        Pairing::new(shape, self.broadcast)
    }

    /// Run on `a` and `b`.
    pub fn forward(&self, a: &QBatch, b: &QBatch) -> QBatch {
        let (la, lb) = (a.shape.len().max(1), b.shape.len().max(1));
        let pairing = self.pairing(a.shape);
        let zy = self.out.zero_point as f32;
        let mut data = vec![0u8; a.data.len()];
        for ((o, xa), xb) in data
            .chunks_exact_mut(la)
            .zip(a.data.chunks_exact(la))
            .zip(b.data.chunks_exact(lb))
        {
            for (i, (y, &q)) in o.iter_mut().zip(xa).enumerate() {
                let qb = xb[pairing.b_index(i)];
                let v = match self.ratio {
                    Some(k) => {
                        let p = (q as i32 - self.a.zero_point) * (qb as i32 - self.b.zero_point);
                        round_half_even(p as f32 * k + zy)
                    }
                    None => {
                        let r = self.a.dequantize(q) * self.b.dequantize(qb);
                        round_half_even(r / self.out.scale) + zy
                    }
                };
                *y = v.clamp(self.lo as f32, self.hi as f32) as u8;
            }
        }
        QBatch {
            n: a.n,
            shape: a.shape,
            data,
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
            data: vec![12, 14, 16, 8],
        };
        let b = QBatch {
            n: 1,
            shape: Shape::flat(2),
            data: vec![4, 2],
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
}
