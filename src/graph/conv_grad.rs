//! Backward of [`Conv`]: weight, bias and input gradients, by f32 GEMMs on dequantized values or
//! by int8 GEMMs on the saved uint8 input and a per-tensor int8 output gradient.
//!
//! With `G` the output gradient (already masked by the output's clamp), `X` the im2col patches
//! of the real input and `W` the real weights of a group:
//! `dW = Gᵀ·X`, `db = Σ_pixels G`, `dX = col2im(G·W)`.
//! In the int8 path, `dW` accumulates `Σ_p G_q[p][c]·(x_q[p][k] − zp)` exactly in i32 (the
//! input is used as stored, no copy in f32) and `dX` uses `G·diag(s_w)` quantized, so per-channel
//! weight scales stay out of the integer product.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::conv::Conv;
use super::grad::{quantize_i8, quantize_u8, LayerGrad};
use super::tensor::{QBatch, Shape};
use crate::kernels::PackedWeights;

impl Conv {
    /// `c_out × row` real weights (`row = kh·kw·c_in/g`, graph layout), groups stacked.
    pub fn real_weights(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.weight_count());
        let cout_g = self.out_shape.c / self.group;
        for (g, w) in self.weights.iter().enumerate() {
            for (j, row) in w.data.chunks_exact(w.k.max(1)).enumerate() {
                let s = self.scale_of(g * cout_g + j);
                out.extend(row.iter().map(|&v| s * v as f32));
            }
        }
        out
    }

    /// Weight scale of output channel `c`.
    pub fn scale_of(&self, c: usize) -> f32 {
        self.weight_scales[if self.weight_scales.len() > 1 { c } else { 0 }]
    }

    /// Reduction depth of one output channel: `kh·kw·c_in/g`.
    pub fn row(&self) -> usize {
        self.window.kh * self.window.kw * self.in_shape.c / self.group
    }

    /// f32 backward. `x`: real input (`n × in_len`), `gy`: masked output gradient, `w`: real
    /// weights ([`Conv::real_weights`] or shadow values). Returns the parameter gradients and,
    /// if `need_dx`, the input gradient.
    pub fn backward_f32(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let (il, ol) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        let (m, c_out, row) = (
            self.out_shape.h * self.out_shape.w,
            self.out_shape.c,
            self.row(),
        );
        let cout_g = c_out / self.group;
        let cin_g = self.in_shape.c / self.group;
        let mut dx = if need_dx { vec![0f32; x.len()] } else { vec![] };
        let dx_chunks: Vec<&mut [f32]> = if need_dx {
            dx.chunks_mut(il).collect()
        } else {
            (0..x.len() / il).map(|_| &mut [][..]).collect()
        };
        let zero = || (vec![0f32; c_out * row], vec![0f32; c_out]);
        let (dw, db) = x
            .par_chunks(il)
            .zip(gy.par_chunks(ol))
            .zip(dx_chunks)
            .fold(zero, |(mut dw, mut db), ((img, g), dxi)| {
                let mut cols = vec![0f32; m * row];
                let mut gg = vec![0f32; m * cout_g];
                let mut dcols = vec![0f32; m * row];
                for grp in 0..self.group {
                    im2col_f32(self, img, grp * cin_g, cin_g, &mut cols);
                    for p in 0..m {
                        for j in 0..cout_g {
                            let v = g[p * c_out + grp * cout_g + j];
                            gg[p * cout_g + j] = v;
                            db[grp * cout_g + j] += v;
                        }
                    }
                    let gv = ArrayView2::from_shape((m, cout_g), &gg).unwrap();
                    let cv = ArrayView2::from_shape((m, row), &cols).unwrap();
                    let dwg = &mut dw[grp * cout_g * row..(grp + 1) * cout_g * row];
                    let mut dwv = ArrayViewMut2::from_shape((cout_g, row), dwg).unwrap();
                    general_mat_mul(1.0, &gv.t(), &cv, 1.0, &mut dwv);
                    if need_dx {
                        let wg = &w[grp * cout_g * row..(grp + 1) * cout_g * row];
                        let wv = ArrayView2::from_shape((cout_g, row), wg).unwrap();
                        let mut dcv = ArrayViewMut2::from_shape((m, row), &mut dcols[..]).unwrap();
                        general_mat_mul(1.0, &gv, &wv, 0.0, &mut dcv);
                        col2im_add(self, &dcols, grp * cin_g, cin_g, dxi);
                    }
                }
                (dw, db)
            })
            .reduce(zero, |(mut a, mut b), (c, d)| {
                super::grad::add_into(&mut a, &c);
                super::grad::add_into(&mut b, &d);
                (a, b)
            });
        (LayerGrad { dw, db }, need_dx.then_some(dx))
    }

    /// int8 backward on the saved quantized input `x` (real input scale `in_scale`).
    pub fn backward_i8(
        &self,
        x: &QBatch,
        in_scale: f32,
        gy: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let n = x.n;
        let (m, c_out, row) = (
            self.out_shape.h * self.out_shape.w,
            self.out_shape.c,
            self.row(),
        );
        let cout_g = c_out / self.group;
        let cin_g = self.in_shape.c / self.group;
        let il = self.in_shape.len().max(1);
        let mut db = vec![0f32; c_out];
        for px in gy.chunks_exact(c_out.max(1)) {
            super::grad::add_into(&mut db, px);
        }
        let mut dw = vec![0f32; c_out * row];
        // dX uses G·diag(s_w): fold the weight scales in before quantizing.
        let (gq_dx, s_dx) = if need_dx {
            let scaled: Vec<f32> = gy
                .iter()
                .enumerate()
                .map(|(i, &v)| v * self.scale_of(i % c_out))
                .collect();
            quantize_u8(&scaled)
        } else {
            (vec![], 1.0)
        };
        let (gq, s_g) = quantize_i8(gy);
        let mut dx = if need_dx {
            vec![0f32; x.data.len()]
        } else {
            vec![]
        };
        let pixels = n * m;
        for grp in 0..self.group {
            // Patches of the whole batch, transposed: row k holds patch element k of every pixel.
            let mut cols = vec![0u8; pixels * row];
            cols.par_chunks_mut((m * row).max(1))
                .zip(x.data.par_chunks(il))
                .for_each(|(c, img)| self.im2col(img, grp * cin_g, cin_g, c));
            let mut cols_t = vec![0u8; row * pixels];
            cols_t
                .par_chunks_mut(pixels.max(1))
                .enumerate()
                .for_each(|(k, dst)| {
                    for (p, d) in dst.iter_mut().enumerate() {
                        *d = cols[p * row + k];
                    }
                });
            drop(cols);
            // Gᵀ of this group: c_out/g rows of `pixels`.
            let mut g_t = vec![0i8; cout_g * pixels];
            g_t.par_chunks_mut(pixels.max(1))
                .enumerate()
                .for_each(|(j, dst)| {
                    for (p, d) in dst.iter_mut().enumerate() {
                        *d = gq[p * c_out + grp * cout_g + j];
                    }
                });
            let gw = PackedWeights::new(g_t, cout_g, pixels);
            let mut acc = vec![0i32; row * cout_g];
            crate::profile::gemm(row, &cols_t, self.in_zero_point, &gw, &mut acc);
            let unit = in_scale * s_g;
            for k in 0..row {
                for j in 0..cout_g {
                    dw[(grp * cout_g + j) * row + k] = unit * acc[k * cout_g + j] as f32;
                }
            }
            if need_dx {
                // Wᵀ of this group as `row` rows of c_out/g.
                let wd = &self.weights[grp].data;
                let mut w_t = vec![0i8; row * cout_g];
                for j in 0..cout_g {
                    for k in 0..row {
                        w_t[k * cout_g + j] = wd[j * row + k];
                    }
                }
                let wt = PackedWeights::new(w_t, row, cout_g);
                let a: Vec<u8> = if self.group == 1 {
                    gq_dx.clone()
                } else {
                    (0..pixels)
                        .flat_map(|p| {
                            gq_dx[p * c_out + grp * cout_g..p * c_out + (grp + 1) * cout_g]
                                .iter()
                                .copied()
                        })
                        .collect()
                };
                let mut dacc = vec![0i32; pixels * row];
                crate::profile::gemm(pixels, &a, 128, &wt, &mut dacc);
                dx.par_chunks_mut(il)
                    .zip(dacc.par_chunks(m * row))
                    .for_each(|(dxi, d)| {
                        let dcols: Vec<f32> = d.iter().map(|&v| v as f32 * s_dx).collect();
                        col2im_add(self, &dcols, grp * cin_g, cin_g, dxi);
                    });
            }
        }
        (LayerGrad { dw, db }, need_dx.then_some(dx))
    }
}

/// Visit every im2col cell of a conv in patch order: `f(column offset, input pixel offset or
/// None for padding)`, each cell `cn` values wide.
fn for_each_cell(conv: &Conv, c0: usize, cn: usize, mut f: impl FnMut(usize, Option<usize>)) {
    let Shape { h, w, c } = conv.in_shape;
    let win = &conv.window;
    let mut idx = 0;
    for oy in 0..conv.out_shape.h {
        for ox in 0..conv.out_shape.w {
            for ky in 0..win.kh {
                let iy = (oy * win.stride_h + ky * win.dil_h) as isize - win.pads[0] as isize;
                for kx in 0..win.kw {
                    let ix = (ox * win.stride_w + kx * win.dil_w) as isize - win.pads[1] as isize;
                    let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                    f(
                        idx,
                        inside.then(|| (iy as usize * w + ix as usize) * c + c0),
                    );
                    idx += cn;
                }
            }
        }
    }
}

/// Real-valued patches of input channels `c0..c0+cn` (padding is real 0), `[oh·ow][kh][kw][cn]`.
pub(crate) fn im2col_f32(conv: &Conv, img: &[f32], c0: usize, cn: usize, cols: &mut [f32]) {
    for_each_cell(conv, c0, cn, |idx, base| match base {
        Some(b) => cols[idx..idx + cn].copy_from_slice(&img[b..b + cn]),
        None => cols[idx..idx + cn].fill(0.0),
    });
}

/// Scatter-add patch gradients back onto the input channels `c0..c0+cn` of one image.
fn col2im_add(conv: &Conv, dcols: &[f32], c0: usize, cn: usize, dx: &mut [f32]) {
    for_each_cell(conv, c0, cn, |idx, base| {
        if let Some(b) = base {
            super::grad::add_into(&mut dx[b..b + cn], &dcols[idx..idx + cn]);
        }
    });
}
