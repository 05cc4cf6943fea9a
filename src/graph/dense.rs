//! A float layer: a Gemm or MatMul (+ bias Add) whose weights and bias the quantizer left in
//! float, reading a dequantized activation.
//!
//! Why: a common way to quantize keeps the classifier precise, onnxruntime's `quantize_static`
//! with `nodes_to_exclude=[<last Gemm>]` or `op_types_to_quantize=["Conv"]`: the layer's input
//! is a DequantizeLinear (maybe through Flatten), its weights and bias are float32 initializers,
//! and its output is the model's float logits or goes on to a QuantizeLinear (maybe through a
//! Relu). There is no integer form of such a layer to fall back on, so it runs in f32, in
//! onnxruntime's order ([`super::ort_order::OrtSum`]: the same code as the 1×1 convs NNCF leaves
//! in float), and trains in f32: its weights and bias are the parameters themselves, no
//! re-quantization, and they go back into the file as float32.
//!
//! In a float segment (`super::float_seg`) the same layer reads a float activation, or writes
//! one (its output then goes on to other float ops rather than to a QuantizeLinear).
//!
//! Shapes: input `[n][k]` bytes (a flat activation) or reals, weights `[c_out][k]` (graph layout; ONNX
//! MatMul's `[k][c_out]` is transposed at import), output `[n][c_out]`.

use rayon::prelude::*;

use super::dense_weights::DenseWeights;
use super::grad::LayerGrad;
use super::ort_order::{OrtSum, PACKED_STRIDE_K};
use super::qparams::quantize_reals;
use super::tensor::{QBatch, Shape};
use super::transpose::transpose;
use super::ActInfo;

/// Rows per parallel block of the forward.
const BLOCK_ROWS: usize = 64;

/// `y = Q(act(W·x + b))` in f32, or the real `W·x + b` when the layer is the model's output.
#[derive(Debug, Clone)]
pub struct Dense {
    pub in_features: usize,
    pub out_features: usize,
    pub in_zero_point: i32,
    pub in_scale: f32,
    /// Real weights `[out][in]` (their transpose cached until they change).
    pub weights: DenseWeights,
    /// Real bias per output (zeros when the file has none).
    pub bias: Vec<f32>,
    /// onnxruntime's Gemm starts its sums from the bias; MatMul + Add adds it at the end.
    pub bias_first: bool,
    /// The slice of inputs onnxruntime's SGEMM sums on its own before adding it to the output
    /// ([`Dense::block_k_for`]).
    pub block_k: usize,
    /// The output's QuantizeLinear: step, zero point, clamp (a fused Relu's zero point).
    /// A float head has placeholder values here and is read through [`Dense::real_outputs`].
    pub out_scale: f32,
    pub out_zero_point: i32,
    pub lo: u8,
    pub hi: u8,
}

impl Dense {
    /// onnxruntime's slice of `k` inputs for a layer of `out` outputs: weights it prepacks (a
    /// constant initializer the Gemm/MatMul reads directly) are summed in slices of
    /// [`PACKED_STRIDE_K`]; weights computed at run time (a DequantizeLinear's output, with
    /// graph optimizations off) go through `MlasSgemmOperation`, whose slice follows from the
    /// output and input sizes ([`super::ort_fix::mlas_stride_k`]: 128 for NNCF's 784 → 128
    /// Gemm, where slices of 256 left 5 of 10,000 rows of the LayerNorm MLP's logits beyond
    /// 1e-4 of onnxruntime's).
    pub fn block_k_for(packed: bool, out: usize, k: usize) -> usize {
        if packed {
            PACKED_STRIDE_K
        } else {
            super::ort_fix::mlas_stride_k(out, k)
        }
    }

    /// The sums in onnxruntime's order, `[k][c_out]` weights.
    fn sum(&self) -> OrtSum<'_> {
        let (k, c_out) = (self.in_features, self.out_features);
        OrtSum {
            w_t: self.weights.transposed(c_out, k).into(),
            k,
            c_out,
            zp_in: self.in_zero_point,
            in_scale: self.in_scale,
            bias: &self.bias,
            block_k: self.block_k,
            bias_first: self.bias_first,
        }
    }

    /// Real outputs `[n][c_out]` before quantization and clamping: the model's float logits
    /// when the layer is its output. `input` says what `x` holds: bytes of a quantized
    /// activation, or the real values of a float one ([`super::float_seg`]).
    pub fn real_outputs(&self, input: &ActInfo, x: &QBatch) -> Vec<f32> {
        let (k, c_out) = (self.in_features.max(1), self.out_features.max(1));
        let sum = self.sum();
        let mut y = vec![0f32; x.n * c_out];
        if input.float {
            y.par_chunks_mut(c_out * BLOCK_ROWS)
                .zip(x.reals().par_chunks(k * BLOCK_ROWS))
                .for_each(|(dst, src)| {
                    sum.rows_real(src, |r, v| dst[r * c_out..][..c_out].copy_from_slice(v))
                });
            return y;
        }
        y.par_chunks_mut(c_out * BLOCK_ROWS)
            .zip(x.data.par_chunks(k * BLOCK_ROWS))
            .for_each(|(dst, src)| {
                sum.rows(src, |r, v| dst[r * c_out..][..c_out].copy_from_slice(v))
            });
        y
    }

    /// Run on a batch: the real outputs, divided by the output step, rounded half to even,
    /// shifted by the zero point and clamped, as QuantizeLinear (after a Relu) does.
    pub fn forward(&self, input: &ActInfo, x: &QBatch) -> QBatch {
        let (lo, hi, zp) = (self.lo as f32, self.hi as f32, self.out_zero_point as f32);
        let real = self.real_outputs(input, x);
        let mut data = vec![0u8; real.len()];
        quantize_reals(&real, self.out_scale, zp, lo, hi, &mut data);
        QBatch {
            n: x.n,
            shape: Shape::flat(self.out_features),
            data: data.into(),
        }
    }

    /// f32 backward on the real input `x` (`[n][k]`) with weights `w` (`[out][in]`):
    /// `dW = Gᵀ·X`, `db = Σ_batch G`, `dX = G·W`, as a [`super::Linear`]'s.
    pub fn backward(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        super::linear_grad::dense_backward_f32(
            (self.in_features, self.out_features),
            x,
            gy,
            w,
            need_dx,
        )
    }

    /// Weights in the file's layout: `[out][in]`, or `[in][out]` when `in_out`.
    pub fn file_order(&self, in_out: bool) -> Vec<f32> {
        if !in_out {
            return self.weights.to_vec();
        }
        transpose(&self.weights, self.out_features, self.in_features)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(bias_first: bool) -> Dense {
        Dense {
            in_features: 3,
            out_features: 2,
            in_zero_point: 10,
            in_scale: 0.5,
            weights: vec![1.0, -2.0, 0.25, 0.5, 0.0, -1.0].into(),
            bias: vec![0.125, -3.0],
            bias_first,
            block_k: PACKED_STRIDE_K,
            out_scale: 0.25,
            out_zero_point: 4,
            lo: 4,
            hi: 255,
        }
    }

    #[test]
    fn forward_is_dequantize_gemm_relu_quantize() {
        // x = 0.5·([12, 9, 14] − 10) = [1, −0.5, 2].
        // y0 = 1 + 1 + 0.5 + 0.125 = 2.625 → 10.5 steps → 10 (half to even) + 4 = 14.
        // y1 = 0.5 + 0 − 2 − 3 = −4.5 → Relu → the zero point 4.
        let x = QBatch {
            n: 1,
            shape: Shape::flat(3),
            data: vec![12, 9, 14].into(),
        };
        let info = ActInfo {
            name: "x".into(),
            shape: Shape::flat(3),
            q: crate::graph::QParams::unsigned(0.5, 10),
            channel_scales: vec![],
            float: false,
        };
        let real = ActInfo {
            float: true,
            ..info.clone()
        };
        let xr = QBatch::from_real(1, Shape::flat(3), vec![1.0, -0.5, 2.0]);
        for first in [true, false] {
            let l = layer(first);
            assert_eq!(l.real_outputs(&info, &x), vec![2.625, -4.5]);
            assert_eq!(l.forward(&info, &x).data, vec![14, 4]);
            assert_eq!(l.real_outputs(&real, &xr), vec![2.625, -4.5]);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        // L = Σ g·y on the real outputs; a linear L, so central differences are exact up to
        // f32 rounding.
        let l = layer(true);
        let x = [1.0f32, -0.5, 2.0, 0.25, 3.0, -1.0];
        let g = [0.3f32, -1.2, 0.7, 0.1];
        let loss = |w: &[f32], b: &[f32], x: &[f32]| -> f64 {
            let mut s = 0f64;
            for (i, xr) in x.chunks(3).enumerate() {
                for o in 0..2 {
                    let y: f32 = (0..3).map(|j| w[o * 3 + j] * xr[j]).sum::<f32>() + b[o];
                    s += (g[i * 2 + o] * y) as f64;
                }
            }
            s
        };
        let (lg, dx) = l.backward(&x, &g, &l.weights, true);
        let dx = dx.expect("input gradient");
        let h = 1e-2f32;
        for i in 0..6 {
            let (mut wp, mut wm) = (l.weights.to_vec(), l.weights.to_vec());
            wp[i] += h;
            wm[i] -= h;
            let fd = (loss(&wp, &l.bias, &x) - loss(&wm, &l.bias, &x)) / (2.0 * h as f64);
            assert!(
                (fd - lg.dw[i] as f64).abs() < 1e-4,
                "dw[{i}]: {fd} vs {}",
                lg.dw[i]
            );
            let (mut xp, mut xm) = (x, x);
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&l.weights, &l.bias, &xp) - loss(&l.weights, &l.bias, &xm))
                / (2.0 * h as f64);
            assert!(
                (fd - dx[i] as f64).abs() < 1e-4,
                "dx[{i}]: {fd} vs {}",
                dx[i]
            );
        }
        assert_eq!(lg.db, vec![0.3 + 0.7, -1.2 + 0.1]);
    }

    #[test]
    fn file_order_transposes_matmul_weights() {
        let l = layer(false);
        assert_eq!(l.file_order(false), l.weights.to_vec());
        assert_eq!(l.file_order(true), vec![1.0, 0.5, -2.0, 0.0, 0.25, -1.0]);
    }
}
