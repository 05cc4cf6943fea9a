//! A float convolution: a Conv whose weights and bias the quantizer left in float32
//! (`nodes_to_exclude`), reading a dequantized activation, the model's float input or another
//! float result, its output a float activation (see [`super::float_seg`]).
//!
//! Why a layer of its own rather than a [`super::Conv`]: there is no integer form of it to run
//! (the file has no weight scale), and onnxruntime (optimizations off) runs it as MLAS does
//! every float Conv: im2col with the patch in `[c_in][kh][kw]` order, an SGEMM that adds the
//! products with fused multiply-adds in that order, in slices of K whose length
//! `MlasConvOperation` derives from the output size ([`super::ort_fix::mlas_stride_k`]; slices
//! of 256, the packed Gemm's, left 3 of 100,000 logits 1 LSB off on the fixture whose second
//! conv is float, this order none), then the bias added to the sums. A conv with one filter
//! per group (depthwise) takes MLAS's `M = 1` kernel instead ([`super::ort_fix::m1_sum`]:
//! products rounded, added four at a time); the FMA chain there differed from onnxruntime in
//! 41 % of the outputs of an NNCF MobileNetV3's stride-1 depthwise conv, this order in none.
//! A conv with a single output pixel takes MLAS's `N = 1` kernel ([`super::mlas_gemv`]).
//! [`super::ort_order::OrtSum`] is that sum (the float Gemm's).
//!
//! Training reuses the integer conv's f32 backward: [`FloatConv::geom`] is a conv with the same
//! geometry and no integer weights, and [`FloatConv::weights`] are kept in its graph layout
//! `[c_out][kh][kw][c_in/g]`; only the forward reads a patch in onnxruntime's order.

use rayon::prelude::*;

use super::conv::{Conv, Window};
use super::depthwise_m1::DepthwiseM1;
use super::grad::LayerGrad;
use super::mlas_gemv::{m1t_sum, Fold};
use super::ort_fix::{m1_sum, mlas_stride_k};
use super::ort_order::OrtSum;
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
            ort_fix: None,
        }
    }

    /// Weights of group `g` as `[k][c_out/g]` with `k` in onnxruntime's patch order
    /// (`c_in`, then `kh`, then `kw`).
    fn ort_weights(&self, g: usize) -> Vec<f32> {
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
        w_t
    }

    /// Real outputs `[n][oh][ow][c_out]` of the real input `x` (`[n][h][w][c_in]`), before any
    /// activation. Each image is copied once into a zero-padded buffer, and the sums read every
    /// patch from it in place ([`OrtSum::rows_gathered`]): output pixel `p`'s input `k` (in
    /// onnxruntime's patch order) is `padded[base[p] + koff[k]]`, and a padding cell reads the
    /// 0.0 that onnxruntime's im2col writes there. Why: building the patches (im2col, then a
    /// permutation into onnxruntime's order) was 28 % of a model's inference whose second conv
    /// is float, as much as its sums.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let c = &self.geom;
        let (il, ol) = (c.in_shape.len().max(1), c.out_shape.len().max(1));
        let (row, c_out) = (c.row(), c.out_shape.c);
        let (cout_g, cin_g) = (c_out / c.group, c.in_shape.c / c.group);
        let (win, cin) = (&c.window, c.in_shape.c);
        // The padded image: `[hp][wp][c_in]`, the input at rows `pads[0]..`, columns `pads[1]..`.
        let (hp, wp) = (
            c.in_shape.h + win.pads[0] + win.pads[2],
            c.in_shape.w + win.pads[1] + win.pads[3],
        );
        let bases: Vec<usize> = (0..c.out_shape.h)
            .flat_map(|oy| {
                (0..c.out_shape.w).map(move |ox| (oy * win.stride_h * wp + ox * win.stride_w) * cin)
            })
            .collect();
        // One sum per group: weights `[k][c_out/g]` in onnxruntime's patch order, and each
        // `k`'s offset (`c_in/g`, then `kh`, then `kw`) from a pixel's base.
        let groups: Vec<(OrtSum, Vec<usize>)> = (0..c.group)
            .map(|g| {
                let w_t = self.ort_weights(g);
                let mut koff = Vec::with_capacity(row);
                for ci in 0..cin_g {
                    for ky in 0..win.kh {
                        for kx in 0..win.kw {
                            let tap = ky * win.dil_h * wp + kx * win.dil_w;
                            koff.push(tap * cin + g * cin_g + ci);
                        }
                    }
                }
                let sum = OrtSum {
                    w_t: w_t.into(),
                    k: row,
                    c_out: cout_g,
                    zp_in: 0,
                    in_scale: 1.0,
                    bias: &self.bias[g * cout_g..(g + 1) * cout_g],
                    block_k: mlas_stride_k(bases.len(), row),
                    bias_first: false,
                };
                (sum, koff)
            })
            .collect();
        // A depthwise conv: every channel's `M = 1` sum, eight channels side by side.
        let depthwise = (cout_g == 1 && cin_g == 1).then(|| {
            let (sum, koff) = &groups[0];
            DepthwiseM1 {
                wk: (0..row)
                    .flat_map(|k| groups.iter().map(move |(s, _)| s.w_t[k]))
                    .collect(),
                taps: koff.clone(),
                bias: self.bias.clone(),
                c: c_out,
                stride: if sum.block_k == 0 { row } else { sum.block_k },
            }
        });
        let mut y = vec![0f32; x.len() / il * ol];
        let row_len = c.in_shape.w * cin;
        // One padded buffer per task (its border stays zero; the interior is overwritten).
        y.par_chunks_mut(ol).zip(x.par_chunks(il)).for_each_init(
            || (vec![0f32; hp * wp * cin], vec![0f32; row], vec![0f32; row]),
            |(padded, patch, w_row), (o, img)| {
                for (iy, src) in img.chunks_exact(row_len.max(1)).enumerate() {
                    let at = ((iy + win.pads[0]) * wp + win.pads[1]) * cin;
                    padded[at..at + row_len].copy_from_slice(src);
                }
                if let Some(dw) = &depthwise {
                    dw.run(padded, &bases, o);
                    return;
                }
                for (g, (sum, koff)) in groups.iter().enumerate() {
                    if cout_g == 1 {
                        // One filter per group (a depthwise conv): MLAS's `M = 1` kernel.
                        let stride = if sum.block_k == 0 { row } else { sum.block_k };
                        for (p, &base) in bases.iter().enumerate() {
                            for (v, &off) in patch.iter_mut().zip(koff) {
                                *v = padded[base + off];
                            }
                            o[p * c_out + g] = m1_sum(patch, &sum.w_t, stride) + sum.bias[0];
                        }
                        continue;
                    }
                    if bases.len() == 1 {
                        // One output pixel: MLAS's `N = 1` kernel (eight lanes per output).
                        for (v, &off) in patch.iter_mut().zip(koff) {
                            *v = padded[bases[0] + off];
                        }
                        for j in 0..cout_g {
                            for (k, v) in w_row.iter_mut().enumerate() {
                                *v = sum.w_t[k * cout_g + j];
                            }
                            let fold = Fold::of(j, cout_g);
                            o[g * cout_g + j] =
                                m1t_sum(patch, w_row, fold, sum.block_k) + sum.bias[j];
                        }
                        continue;
                    }
                    sum.rows_gathered(padded, &bases, koff, |p, v| {
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

    /// The forward as it was before patches were read in place: im2col in graph order, each
    /// patch permuted into onnxruntime's order, then the sums on the stored rows.
    fn forward_by_im2col(l: &FloatConv, x: &[f32]) -> Vec<f32> {
        use crate::graph::conv_grad::im2col_f32;
        let c = &l.geom;
        let (il, ol) = (c.in_shape.len(), c.out_shape.len());
        let (m, row, c_out) = (c.out_shape.h * c.out_shape.w, c.row(), c.out_shape.c);
        let (cout_g, cin_g) = (c_out / c.group, c.in_shape.c / c.group);
        let taps = c.window.kh * c.window.kw;
        let perm: Vec<usize> = (0..row).map(|k| (k % taps) * cin_g + k / taps).collect();
        let mut y = vec![0f32; x.len() / il * ol];
        let (mut cols, mut patches) = (vec![0f32; m * row], vec![0f32; m * row]);
        for (o, img) in y.chunks_mut(ol).zip(x.chunks(il)) {
            for g in 0..c.group {
                let sum = OrtSum {
                    w_t: l.ort_weights(g).into(),
                    k: row,
                    c_out: cout_g,
                    zp_in: 0,
                    in_scale: 1.0,
                    bias: &l.bias[g * cout_g..(g + 1) * cout_g],
                    block_k: mlas_stride_k(m, row),
                    bias_first: false,
                };
                im2col_f32(c, img, g * cin_g, cin_g, &mut cols);
                for (dst, src) in patches.chunks_exact_mut(row).zip(cols.chunks_exact(row)) {
                    for (d, &p) in dst.iter_mut().zip(&perm) {
                        *d = src[p];
                    }
                }
                sum.rows_real(&patches, |p, v| {
                    o[p * c_out + g * cout_g..][..cout_g].copy_from_slice(v)
                });
            }
        }
        y
    }

    #[test]
    fn patches_read_in_place_give_the_im2col_bits() {
        // 40 output channels per group (32 for the AVX-512 path and a tail); two groups of 3
        // input channels, or one of 50 (300 inputs per sum: two of onnxruntime's slices of
        // 256); a 3×2 window at stride 2×1, dilation 2×1, unequal padding on three sides, on a
        // 7×6 input. Three images.
        let window = Window {
            kh: 3,
            kw: 2,
            stride_h: 2,
            stride_w: 1,
            pads: [2, 1, 1, 0],
            dil_h: 2,
            dil_w: 1,
        };
        for (cin, group) in [(6, 2), (50, 1)] {
            let ins = Shape { h: 7, w: 6, c: cin };
            let (oh, ow) = window.output_hw(7, 6, false).unwrap();
            let outs = Shape {
                h: oh,
                w: ow,
                c: 80 / group,
            };
            let geom = FloatConv::geometry(window, group, ins, outs);
            let n_w = outs.c * geom.row();
            let file: Vec<f32> = (0..n_w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
                .collect();
            let l = FloatConv {
                weights: FloatConv::from_file_order(&geom, &file),
                bias: (0..outs.c).map(|i| i as f32 * 0.1 - 2.0).collect(),
                geom,
            };
            let x: Vec<f32> = (0..3 * ins.len())
                .map(|i| ((i * 53 % 97) as f32 - 40.0) * 0.021)
                .collect();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let got = l.forward(&x);
            assert!(got.iter().any(|&v| v != 0.0));
            assert_eq!(
                bits(got),
                bits(forward_by_im2col(&l, &x)),
                "{cin} channels, {group} groups"
            );
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
