//! A float convolution: a Conv whose weights and bias the quantizer left in float32
//! (`nodes_to_exclude`), reading a dequantized activation, the model's float input or another
//! float result, its output a float activation (see [`super::float_seg`]).
//!
//! Why a layer of its own rather than a [`super::Conv`]: there is no integer form of it to run
//! (the file has no weight scale), and onnxruntime (optimizations off) runs it as MLAS does
//! every float Conv: im2col with the patch in `[c_in][kh][kw]` order, an SGEMM that adds the
//! products with fused multiply-adds in that order, in slices of 256 inputs, then the bias
//! added to the sums. [`super::ort_order::OrtSum`] is that sum (the float Gemm's), so the
//! output follows onnxruntime's bits as closely as the Gemm's do.
//!
//! Training reuses the integer conv's f32 backward: [`FloatConv::geom`] is a conv with the same
//! geometry and no integer weights, and [`FloatConv::weights`] are kept in its graph layout
//! `[c_out][kh][kw][c_in/g]`; only the forward permutes a patch into onnxruntime's order.

use rayon::prelude::*;

use super::conv::{Conv, Window};
use super::conv_grad::im2col_f32;
use super::grad::LayerGrad;
use super::ort_order::{OrtSum, PACKED_STRIDE_K};
use super::qparams::Requant;
use super::tensor::Shape;

/// `y = W * x + b` in f32, NHWC, a fused activation applied by the graph (see
/// [`super::float_seg`]).
#[derive(Debug, Clone)]
pub struct FloatConv {
    /// Geometry (window, groups, shapes) as a conv without integer weights.
    pub geom: Conv,
    /// Real weights `[c_out][kh][kw][c_in/g]` (graph layout).
    pub weights: Vec<f32>,
    /// Real bias per output channel (zeros when the file has none).
    pub bias: Vec<f32>,
}

impl FloatConv {
    /// The geometry a float conv runs and trains with: a [`Conv`] with these window, groups and
    /// shapes, and no integer weights, scales or requantization (its f32 backward reads only
    /// the geometry).
    pub fn geometry(window: Window, group: usize, in_shape: Shape, out_shape: Shape) -> Conv {
        Conv {
            window,
            group,
            in_shape,
            out_shape,
            in_zero_point: 0,
            weights: vec![],
            weight_scales: vec![],
            weight_bits: 32,
            bias: vec![],
            requant: Requant::unused(),
            ort_order: None,
        }
    }

    /// Weights of group `g` as `[k][c_out/g]` with `k` in onnxruntime's patch order
    /// (`c_in`, then `kh`, then `kw`), and for each such `k` its index in a graph-layout row.
    fn ort_weights(&self, g: usize) -> (Vec<f32>, Vec<usize>) {
        let c = &self.geom;
        let (row, cout_g) = (c.row(), c.out_shape.c / c.group);
        let cin_g = c.in_shape.c / c.group;
        let taps = c.window.kh * c.window.kw;
        let perm: Vec<usize> = (0..row).map(|k| (k % taps) * cin_g + k / taps).collect();
        let mut w_t = vec![0f32; row * cout_g];
        for j in 0..cout_g {
            let w = &self.weights[(g * cout_g + j) * row..][..row];
            for (k, &p) in perm.iter().enumerate() {
                w_t[k * cout_g + j] = w[p];
            }
        }
        (w_t, perm)
    }

    /// Real outputs `[n][oh][ow][c_out]` of the real input `x` (`[n][h][w][c_in]`), before any
    /// activation.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let c = &self.geom;
        let (il, ol) = (c.in_shape.len().max(1), c.out_shape.len().max(1));
        let (m, row, c_out) = (c.out_shape.h * c.out_shape.w, c.row(), c.out_shape.c);
        let (cout_g, cin_g) = (c_out / c.group, c.in_shape.c / c.group);
        // One sum per group: weights `[k][c_out/g]` in onnxruntime's patch order, and `perm`,
        // where each `k` sits in a graph-layout patch.
        let groups: Vec<(OrtSum, Vec<usize>)> = (0..c.group)
            .map(|g| {
                let (w_t, perm) = self.ort_weights(g);
                let sum = OrtSum {
                    w_t: w_t.into(),
                    k: row,
                    c_out: cout_g,
                    zp_in: 0,
                    in_scale: 1.0,
                    bias: &self.bias[g * cout_g..(g + 1) * cout_g],
                    block_k: PACKED_STRIDE_K,
                    bias_first: false,
                };
                (sum, perm)
            })
            .collect();
        let mut y = vec![0f32; x.len() / il * ol];
        // Patch buffers per task, not per image (two of m·row floats: 225 KB on a 14×14
        // conv of 16 channels, which the allocator maps and unmaps afresh each time).
        y.par_chunks_mut(ol).zip(x.par_chunks(il)).for_each_init(
            || (vec![0f32; m * row], vec![0f32; m * row]),
            |(cols, patches), (o, img)| {
                for (g, (sum, perm)) in groups.iter().enumerate() {
                    im2col_f32(c, img, g * cin_g, cin_g, cols);
                    for (dst, src) in patches.chunks_exact_mut(row).zip(cols.chunks_exact(row)) {
                        for (d, &p) in dst.iter_mut().zip(perm) {
                            *d = src[p];
                        }
                    }
                    sum.rows_real(patches, |p, v| {
                        o[p * c_out + g * cout_g..][..cout_g].copy_from_slice(v)
                    });
                }
            },
        );
        y
    }

    /// f32 backward on the real input `x` with weights `w` (graph layout): the integer conv's.
    pub fn backward(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        self.geom.backward_f32(x, gy, w, need_dx)
    }

    /// Weights in the file's layout `[c_out][c_in/g][kh][kw]`.
    pub fn file_order(&self) -> Vec<f32> {
        let c = &self.geom;
        let row = c.row();
        let taps = c.window.kh * c.window.kw;
        let cin_g = c.in_shape.c / c.group;
        let mut out = vec![0f32; self.weights.len()];
        for (o, w) in out
            .chunks_exact_mut(row)
            .zip(self.weights.chunks_exact(row))
        {
            for (k, v) in o.iter_mut().enumerate() {
                *v = w[(k % taps) * cin_g + k / taps];
            }
        }
        out
    }

    /// Graph-layout weights from the file's `[c_out][c_in/g][kh][kw]`.
    pub fn from_file_order(geom: &Conv, file: &[f32]) -> Vec<f32> {
        let row = geom.row();
        let taps = geom.window.kh * geom.window.kw;
        let cin_g = geom.in_shape.c / geom.group;
        let mut out = vec![0f32; file.len()];
        for (o, w) in out.chunks_exact_mut(row).zip(file.chunks_exact(row)) {
            for (k, &v) in w.iter().enumerate() {
                o[(k % taps) * cin_g + k / taps] = v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Shape, Window};

    /// A 2-input-channel 2×2 conv, stride 1, padding 1 on the top/left, on a 2×2 image.
    fn layer() -> FloatConv {
        let window = Window {
            kh: 2,
            kw: 2,
            stride_h: 1,
            stride_w: 1,
            pads: [1, 1, 0, 0],
            dil_h: 1,
            dil_w: 1,
        };
        let geom = FloatConv::geometry(
            window,
            1,
            Shape { h: 2, w: 2, c: 2 },
            Shape { h: 2, w: 2, c: 3 },
        );
        let file: Vec<f32> = (0..3 * 2 * 2 * 2)
            .map(|i| (i as f32 - 11.0) * 0.25)
            .collect();
        FloatConv {
            weights: FloatConv::from_file_order(&geom, &file),
            geom,
            bias: vec![0.5, -1.0, 0.0],
        }
    }

    #[test]
    fn forward_is_the_onnx_convolution() {
        let l = layer();
        // NHWC input; x[c][y][x] = 1 + c·4 + y·2 + x.
        let nchw = |c: usize, y: i64, x: i64| -> f32 {
            if y < 0 || x < 0 {
                0.0
            } else {
                (1 + c * 4 + y as usize * 2 + x as usize) as f32
            }
        };
        let mut img = vec![0f32; 8];
        for c in 0..2 {
            for p in 0..4 {
                img[p * 2 + c] = nchw(c, (p / 2) as i64, (p % 2) as i64);
            }
        }
        let file = l.file_order();
        let y = l.forward(&img);
        for oy in 0..2i64 {
            for ox in 0..2i64 {
                for co in 0..3 {
                    let mut want = l.bias[co] as f64;
                    for ci in 0..2 {
                        for ky in 0..2i64 {
                            for kx in 0..2i64 {
                                let w = file[co * 8 + ci * 4 + ky as usize * 2 + kx as usize];
                                want += (w * nchw(ci, oy + ky - 1, ox + kx - 1)) as f64;
                            }
                        }
                    }
                    let got = y[(oy * 2 + ox) as usize * 3 + co] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({oy},{ox},{co}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn file_order_round_trips() {
        let l = layer();
        let back = FloatConv::from_file_order(&l.geom, &l.file_order());
        assert_eq!(back, l.weights);
        assert_ne!(
            l.file_order(),
            l.weights,
            "the layouts differ for 2 input channels"
        );
    }
}
