//! Backward of [`Linear`]: `dW = Gᵀ·X`, `db = Σ_batch G`, `dX = G·W`, by f32 GEMMs or by int8
//! GEMMs on the saved uint8 input and a per-tensor int8 output gradient (see `conv_grad`).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::grad::{quantize_i8, quantize_u8_scaled, LayerGrad};
use super::linear::Linear;
use super::tensor::QBatch;
use super::transpose::transpose;
use crate::kernels::PackedWeights;

impl Linear {
    /// Weight scale of output `o`.
    pub fn scale_of(&self, o: usize) -> f32 {
        self.weight_scales[if self.weight_scales.len() > 1 { o } else { 0 }]
    }

    /// `out × in` real weights.
    pub fn real_weights(&self) -> Vec<f32> {
        let k = self.in_features.max(1);
        self.weights
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| self.scale_of(i / k) * v as f32)
            .collect()
    }

    /// f32 backward; see [`crate::graph::Conv::backward_f32`].
    pub fn backward_f32(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        dense_backward_f32((self.in_features, self.out_features), x, gy, w, need_dx)
    }

    /// int8 backward on the saved quantized input (real input scale `in_scale`).
    pub fn backward_i8(
        &self,
        x: &QBatch,
        in_scale: f32,
        gy: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let (fi, fo, n) = (self.in_features, self.out_features, x.n);
        let mut db = vec![0f32; fo];
        for row in gy.chunks_exact(fo.max(1)) {
            super::grad::add_into(&mut db, row);
        }
        // dW: Xᵀ (fi rows of n) against Gᵀ (fo rows of n) → fi × fo.
        let x_t = transpose(&x.data, n, fi);
        let (gq, s_g) = quantize_i8(gy);
        let g_t = transpose(&gq, n, fo);
        let mut acc = vec![0i32; fi * fo];
        crate::profile::gemm(
            fi,
            &x_t,
            self.in_zero_point,
            &PackedWeights::new(g_t, fo, n),
            &mut acc,
        );
        let unit = in_scale * s_g;
        let mut dw = vec![0f32; fo * fi];
        for i in 0..fi {
            for o in 0..fo {
                dw[o * fi + i] = unit * acc[i * fo + o] as f32;
            }
        }
        let dx = need_dx.then(|| {
            let scales: Vec<f32> = (0..fo).map(|o| self.scale_of(o)).collect();
            let (a, s) = quantize_u8_scaled(gy, &scales);
            let mut dacc = vec![0i32; n * fi];
            crate::profile::gemm(n, &a, 128, self.weights.transposed(), &mut dacc);
            dacc.iter().map(|&v| v as f32 * s).collect()
        });
        (LayerGrad { dw, db }, dx)
    }
}

/// f32 backward of a fully connected layer with `(in, out)` features, on the real input `x`
/// (`[n][in]`) and real weights `w` (`[out][in]`): `dW = Gᵀ·X`, `db = Σ_batch G` and, if
/// `need_dx`, `dX = G·W`. Shared by [`Linear`] and the float layer ([`super::Dense`]).
pub(crate) fn dense_backward_f32(
    (fi, fo): (usize, usize),
    x: &[f32],
    gy: &[f32],
    w: &[f32],
    need_dx: bool,
) -> (LayerGrad, Option<Vec<f32>>) {
    let n = x.len() / fi.max(1);
    let xv = ArrayView2::from_shape((n, fi), x).expect("input rows");
    let gv = ArrayView2::from_shape((n, fo), gy).expect("gradient rows");
    let mut dw = vec![0f32; fo * fi];
    general_mat_mul(
        1.0,
        &gv.t(),
        &xv,
        0.0,
        &mut ArrayViewMut2::from_shape((fo, fi), &mut dw[..]).expect("dw"),
    );
    let mut db = vec![0f32; fo];
    for row in gy.chunks_exact(fo.max(1)) {
        super::grad::add_into(&mut db, row);
    }
    let dx = need_dx.then(|| {
        let wv = ArrayView2::from_shape((fo, fi), w).expect("weights");
        let mut dx = vec![0f32; n * fi];
        general_mat_mul(
            1.0,
            &gv,
            &wv,
            0.0,
            &mut ArrayViewMut2::from_shape((n, fi), &mut dx[..]).expect("dx"),
        );
        dx
    });
    (LayerGrad { dw, db }, dx)
}
