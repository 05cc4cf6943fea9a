//! Quantized fully connected layer (ONNX Gemm / MatMul): `y = W·x + b`, requantized.
//!
//! Shapes: input `[n][f_in]` → output `[n][f_out]`; weights `[f_out][f_in]` (ONNX `MatMul`
//! weights, stored `[f_in][f_out]`, are transposed at import).

use super::ort_fix::Patches;
use super::qparams::Requant;
use super::tensor::{QBatch, Shape};
use crate::kernels::PackedWeights;

/// A quantized linear layer.
#[derive(Debug, Clone)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub in_zero_point: i32,
    pub weights: PackedWeights,
    /// Per-output weight scales (length `f_out`, or 1 for per-tensor).
    pub weight_scales: Vec<f32>,
    /// Bits of the file's weights (8, or 4 for INT4/UINT4; the values are i8 either way).
    pub weight_bits: u32,
    /// i32 bias at scale `s_in · s_w[o]`, length `f_out`.
    pub bias: Vec<i32>,
    pub requant: Requant,
    /// Give onnxruntime's bytes where its float order rounds the other way (a QDQ Gemm or
    /// MatMul; see [`super::OrtFix`]).
    pub ort_fix: Option<super::OrtFix>,
}

impl Linear {
    /// Run on a batch (the whole batch is one GEMM), giving onnxruntime's bytes where an
    /// [`super::OrtFix`] is set.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        self.forward_with(x, true)
    }

    /// [`Linear::forward`] with the integer result everywhere: what training's tape runs.
    pub fn forward_integer(&self, x: &QBatch) -> QBatch {
        self.forward_with(x, false)
    }

    fn forward_with(&self, x: &QBatch, fix: bool) -> QBatch {
        let n = x.n;
        let f_out = self.out_features;
        let mut acc = vec![0i32; n * f_out];
        crate::profile::gemm(n, &x.data, self.in_zero_point, &self.weights, &mut acc);
        let mut out = QBatch::filled(n, Shape::flat(f_out), 0);
        match self.ort_fix.as_ref().filter(|_| fix) {
            Some(f) => f.prepare_linear(self).finish_rows(
                &acc,
                f_out,
                0,
                &mut out.data,
                f_out,
                Patches::Rows(&x.data),
            ),
            None => self
                .requant
                .apply_rows(&acc, f_out, &self.bias, 0, &mut out.data, f_out),
        }
        out
    }

    /// Real outputs before requantization and clamping, `s_out · (m[o]·(acc + bias) + offset[o])`
    /// (`= (acc + bias)·s_in·s_w[o]` without an offset), for an output of step `s_out`: the
    /// logits training losses are taken on.
    pub fn real_outputs(&self, x: &QBatch, s_out: f32) -> Vec<f32> {
        let f_out = self.out_features;
        let mut acc = vec![0i32; x.n * f_out];
        crate::profile::gemm(x.n, &x.data, self.in_zero_point, &self.weights, &mut acc);
        let rq = &self.requant;
        let pick = |v: &[f32], o: usize| match v.len() {
            0 => 0.0,
            1 => v[0],
            _ => v[o],
        };
        acc.chunks_exact(f_out.max(1))
            .flat_map(|row| {
                row.iter().enumerate().map(move |(o, &a)| {
                    let m = pick(&rq.multiplier, o);
                    s_out * (m * a.saturating_add(self.bias[o]) as f32 + pick(&rq.offset, o))
                })
            })
            .collect()
    }
}
