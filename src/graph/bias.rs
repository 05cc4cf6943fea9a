//! A float bias added to a dequantized activation, then (maybe) an activation and a
//! QuantizeLinear: the segment quantizers leave in float when they quantize only the MatMul or
//! Conv of a layer (onnxruntime with `op_types_to_quantize=["MatMul"]`:
//! `MatMul → QuantizeLinear → DequantizeLinear → Add(float bias) → Relu → QuantizeLinear`).
//!
//! The integer product's output is already rounded to its own grid before the bias arrives, so
//! the bias cannot be folded into the product's accumulator without changing the result. This
//! layer computes exactly what onnxruntime computes with graph optimizations off, in the same
//! f32 order: `r = (q − z_in) · s_in` (DequantizeLinear), `r + b[c]` (Add), the activation's
//! clamp, `round_half_even(r / s_out) + z_out` saturated (QuantizeLinear). As the model's last
//! layer (no QuantizeLinear after it) its real values `r + b[c]` are the model's float output.
//! The bias is a trainable parameter in its own (float) type.

use super::tensor::QBatch;

/// `y = Q(act(s_in·(x − z_in) + b[c]))`, per channel `c` (the last NHWC dimension).
#[derive(Debug, Clone)]
pub struct BiasAdd {
    pub in_zero_point: i32,
    pub in_scale: f32,
    /// Real bias per channel (one value: broadcast to all).
    pub bias: Vec<f32>,
    pub out_scale: f32,
    pub out_zero_point: i32,
    pub lo: u8,
    pub hi: u8,
}

impl BiasAdd {
    fn bias_of(&self, c: usize) -> f32 {
        self.bias[if self.bias.len() == 1 { 0 } else { c }]
    }

    /// Real values before quantization (no clamp): the model's output when it ends here.
    pub fn real_outputs(&self, x: &QBatch) -> Vec<f32> {
        // Pixel by pixel against the per-channel biases (no `i % c` per value).
        let c_n = x.shape.c.max(1);
        let bias: Vec<f32> = (0..c_n).map(|c| self.bias_of(c)).collect();
        let mut y = vec![0f32; x.data.len()];
        for (ys, qs) in y.chunks_mut(c_n).zip(x.data.chunks(c_n)) {
            for ((r, &q), &b) in ys.iter_mut().zip(qs).zip(&bias) {
                *r = super::qparams::centered(q, self.in_zero_point) as f32 * self.in_scale + b;
            }
        }
        y
    }

    /// Run on a batch. Shapes: `x` and the result `[n][h][w][c]`, one bias per `c`.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let (lo, hi) = (self.lo as f32, self.hi as f32);
        let real = self.real_outputs(x);
        let mut data = vec![0u8; real.len()];
        let zp = self.out_zero_point as f32;
        super::qparams::quantize_reals(&real, self.out_scale, zp, lo, hi, &mut data);
        QBatch {
            n: x.n,
            shape: x.shape,
            data: data.into(),
        }
    }

    /// `∂L/∂b[c]` = Σ over samples and positions of `gy` (the input gradient is `gy` itself).
    pub fn bias_grad(&self, gy: &[f32], channels: usize) -> Vec<f32> {
        let c_n = channels.max(1);
        let mut db = vec![0f32; self.bias.len()];
        for (i, &g) in gy.iter().enumerate() {
            let c = if self.bias.len() == 1 { 0 } else { i % c_n };
            db[c] += g;
        }
        db
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Shape;

    fn layer() -> BiasAdd {
        BiasAdd {
            in_zero_point: 10,
            in_scale: 0.5,
            bias: vec![0.25, -1.0],
            out_scale: 0.25,
            out_zero_point: 3,
            lo: 3,
            hi: 255,
        }
    }

    #[test]
    fn forward_is_dequantize_add_relu_quantize() {
        let x = QBatch {
            n: 1,
            shape: Shape::flat(2),
            data: vec![12, 11].into(),
        };
        // channel 0: 0.5·2 + 0.25 = 1.25 → 5 + 3 = 8; channel 1: 0.5·1 − 1 = −0.5 → clamp at 3.
        let y = layer().forward(&x);
        assert_eq!(y.data, vec![8, 3]);
        assert_eq!(layer().real_outputs(&x), vec![1.25, -0.5]);
    }

    #[test]
    fn bias_grad_sums_each_channel() {
        let g = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(layer().bias_grad(&g, 2), vec![9.0, 12.0]);
    }
}
