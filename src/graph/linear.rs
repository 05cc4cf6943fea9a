//! Quantized fully connected layer (ONNX Gemm / MatMul): `y = W·x + b`, requantized.
//!
//! Shapes: input `[n][f_in]` → output `[n][f_out]`; weights `[f_out][f_in]` (ONNX `MatMul`
//! weights, stored `[f_in][f_out]`, are transposed at import).

use super::qparams::Requant;
use super::tensor::{QBatch, Shape};
use crate::kernels::{self, PackedWeights};

/// A quantized linear layer.
#[derive(Debug, Clone)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub in_zero_point: i32,
    pub weights: PackedWeights,
    /// Per-output weight scales (length `f_out`, or 1 for per-tensor).
    pub weight_scales: Vec<f32>,
    /// i32 bias at scale `s_in · s_w[o]`, length `f_out`.
    pub bias: Vec<i32>,
    pub requant: Requant,
}

impl Linear {
    /// Run on a batch (the whole batch is one GEMM).
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let n = x.n;
        let f_out = self.out_features;
        let mut acc = vec![0i32; n * f_out];
        kernels::gemm_u8i8(n, &x.data, self.in_zero_point, &self.weights, &mut acc);
        let mut out = QBatch::filled(n, Shape::flat(f_out), 0);
        for (o, a) in out
            .data
            .chunks_exact_mut(f_out)
            .zip(acc.chunks_exact(f_out))
        {
            for (j, (dst, &v)) in o.iter_mut().zip(a).enumerate() {
                *dst = self.requant.apply(v + self.bias[j], j);
            }
        }
        out
    }
}
