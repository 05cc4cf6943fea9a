//! Backward of [`Conv`]: weight, bias and input gradients, by f32 GEMMs on dequantized values or
//! by int8 GEMMs on the saved uint8 input and a per-tensor int8 output gradient.
//!
//! With `G` the output gradient (already masked by the output's clamp), `X` the im2col patches
//! of the real input and `W` the real weights of a group:
//! `dW = Gᵀ·X`, `db = Σ_pixels G`, `dX = col2im(G·W)`.
//! In the int8 path, `dW` accumulates `Σ_p G_q[p][c]·(x_q[p][k] − zp)` exactly in i32 (the
//! input is used as stored, no copy in f32) and `dX` uses `G·diag(s_w)` quantized, so per-channel
//! weight scales stay out of the integer product.

use std::mem::MaybeUninit;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::conv::Conv;
use super::grad::{i8_step, quantize_i8_at, quantize_i8_t, quantize_u8_scaled_and_step, LayerGrad};
use super::patches_t::im2col_t;
use super::scratch;
use super::tensor::{QBatch, Shape};
use super::zeroed::{par_written_chunks, par_zeroed_chunks};
use crate::kernels::PackedWeights;

impl Conv {
    /// `c_out × row` real weights (`row = kh·kw·c_in/g`, graph layout), groups stacked.
    pub fn real_weights(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.weight_count());
        let cout_g = self.out_shape.c / self.group;
        for (g, w) in self.weights.iter().enumerate() {
            for (j, row) in w.values().chunks_exact(w.k.max(1)).enumerate() {
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

    /// `(output pixels per image, c_out, row, c_out/g, c_in/g)`: the shapes every backward
    /// path works in.
    fn shape_of_groups(&self) -> (usize, usize, usize, usize, usize) {
        let (c_out, g) = (self.out_shape.c, self.group);
        let m = self.out_shape.h * self.out_shape.w;
        (m, c_out, self.row(), c_out / g, self.in_shape.c / g)
    }

    /// Reduction depth of one output channel: `kh·kw·c_in/g`.
    pub fn row(&self) -> usize {
        self.window.kh * self.window.kw * self.in_shape.c / self.group
    }

    /// f32 backward. `x`: real input (`n × in_len`), `gy`: masked output gradient, `w`: real
    /// weights ([`Conv::real_weights`] or shadow values). Returns the parameter gradients and,
    /// if `need_dx`, the input gradient. A depthwise conv takes the direct loops of
    /// `depthwise_f32`, every other one a GEMM per group.
    pub fn backward_f32(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        if self.is_depthwise() {
            return self.backward_f32_depthwise(x, gy, w, need_dx);
        }
        self.backward_f32_grouped(x, gy, w, need_dx)
    }

    /// [`Conv::backward_f32`] by one GEMM per group (and image).
    pub(crate) fn backward_f32_grouped(
        &self,
        x: &[f32],
        gy: &[f32],
        w: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let (il, ol) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        let (m, c_out, row, cout_g, cin_g) = self.shape_of_groups();
        let mut dx = if need_dx { vec![0f32; x.len()] } else { vec![] };
        let dx_chunks: Vec<&mut [f32]> = if need_dx {
            dx.chunks_mut(il).collect()
        } else {
            (0..x.len() / il).map(|_| &mut [][..]).collect()
        };
        let mut dx_chunks = dx_chunks;
        // One image's `dW` term (all groups), and its `dX` when asked.
        let image = |img: &[f32], g: &[f32], dxi: &mut [f32]| {
            let mut dw = vec![0f32; c_out * row];
            let mut cols = vec![0f32; m * row];
            let mut gg = vec![0f32; m * cout_g];
            let mut dcols = vec![0f32; m * row];
            for grp in 0..self.group {
                im2col_f32(self, img, grp * cin_g, cin_g, &mut cols);
                for p in 0..m {
                    let src = &g[p * c_out + grp * cout_g..][..cout_g];
                    gg[p * cout_g..][..cout_g].copy_from_slice(src);
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
                    col2im_add_f32(self, &dcols, grp * cin_g, cin_g, dxi);
                }
            }
            dw
        };
        // The images' terms are computed in parallel, a group at a time, and added to `dW` in
        // image order: the f32 sums do not depend on the number of threads or on how rayon
        // splits the work. (A parallel fold/reduce put its split points, and so the rounding,
        // wherever work stealing did: the same request gave different bytes from run to run.)
        const GROUP: usize = 16;
        let mut dw = vec![0f32; c_out * row];
        for ((xs, gs), dxs) in x
            .chunks(il * GROUP)
            .zip(gy.chunks(ol * GROUP))
            .zip(dx_chunks.chunks_mut(GROUP))
        {
            let terms: Vec<Vec<f32>> = xs
                .par_chunks(il)
                .zip(gs.par_chunks(ol))
                .zip(dxs.par_iter_mut())
                .map(|((img, g), dxi)| image(img, g, dxi))
                .collect();
            for t in &terms {
                super::grad::add_into(&mut dw, t);
            }
        }
        // `db`: every output gradient, image by image, pixel by pixel.
        let mut db = vec![0f32; c_out];
        for g in gy.chunks_exact(ol) {
            for px in g.chunks_exact(c_out.max(1)) {
                for (d, &v) in db.iter_mut().zip(px) {
                    *d += v;
                }
            }
        }
        (LayerGrad { dw, db }, need_dx.then_some(dx))
    }

    /// int8 backward on the saved quantized input `x` (real input scale `in_scales`: one, or one
    /// per input channel for an input quantized per channel, which only a conv with one input
    /// channel per group reads; see `super::channel_act`).
    ///
    /// The batch is cut into a few chunks of whole images, processed in parallel, each with
    /// its own buffers: `dW`'s i32 sums are added up over chunks (exact in any order), and each
    /// image's `dX` is scattered from its chunk's product while that is still in cache, in the
    /// same order as before, so the f32 results are unchanged.
    pub fn backward_i8(
        &self,
        x: &QBatch,
        in_scales: &[f32],
        gy: &[f32],
        need_dx: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        self.backward_i8_with(x, in_scales, gy, need_dx, false)
    }

    /// [`Conv::backward_i8`]; `force_gemm` keeps depthwise convs on the per-group GEMMs (the
    /// reference the direct loops are tested against).
    pub(crate) fn backward_i8_with(
        &self,
        x: &QBatch,
        in_scales: &[f32],
        gy: &[f32],
        need_dx: bool,
        force_gemm: bool,
    ) -> (LayerGrad, Option<Vec<f32>>) {
        let (m, c_out, row, cout_g, _) = self.shape_of_groups();
        let il = self.in_shape.len().max(1);
        let mut db = vec![0f32; c_out];
        for px in gy.chunks_exact(c_out.max(1)) {
            super::grad::add_into(&mut db, px);
        }
        let mut dw = vec![0f32; c_out * row];
        // dX uses G·diag(s_w): fold the weight scales in before quantizing.
        let ((gq_dx, s_dx), s_g) = if need_dx {
            let scales: Vec<f32> = (0..c_out).map(|c| self.scale_of(c)).collect();
            quantize_u8_scaled_and_step(gy, &scales)
        } else {
            ((vec![], 1.0), i8_step(gy))
        };
        // The real value of one `dW` sum unit, per input channel (per group when the input is
        // quantized per channel: then each group reads one channel).
        let units: Vec<f32> = in_scales.iter().map(|&s| s * s_g).collect();
        if self.is_depthwise() && !force_gemm {
            let gq = quantize_i8_at(gy, 1.0 / s_g);
            let dx = self.backward_i8_depthwise(
                x,
                &units,
                &gq,
                need_dx.then_some(&gq_dx),
                s_dx,
                &mut dw,
            );
            return (LayerGrad { dw, db }, dx);
        }
        // About two chunks per thread: enough to balance, few enough that each GEMM stays long.
        let imgs = x.n.div_ceil(2 * rayon::current_num_threads()).max(1);
        let ol = (m * c_out).max(1);
        for grp in 0..self.group {
            let acc = x
                .data
                .par_chunks(il * imgs)
                .zip(gy.par_chunks(ol * imgs))
                .map(|(xs, g)| self.dw_chunk(xs, g, 1.0 / s_g, grp))
                .reduce(
                    || vec![0i32; row * cout_g],
                    |mut s, a| {
                        for (s, a) in s.iter_mut().zip(a) {
                            *s = s.wrapping_add(a);
                        }
                        s
                    },
                );
            let unit = units[if units.len() > 1 { grp } else { 0 }];
            for k in 0..row {
                for j in 0..cout_g {
                    dw[(grp * cout_g + j) * row + k] = unit * acc[k * cout_g + j] as f32;
                }
            }
        }
        let dx = need_dx.then(|| {
            if self.is_pointwise() {
                // SAFETY: `dx_pointwise` writes every value of its chunk.
                return unsafe {
                    par_written_chunks(x.data.len(), il * imgs, |i, dxs| {
                        let g = &gq_dx[i * ol * imgs..][..dxs.len() / il * ol];
                        self.dx_pointwise(g, s_dx, dxs)
                    })
                };
            }
            // Each chunk of images is zeroed, then every group adds its input channels into it.
            par_zeroed_chunks(x.data.len(), il * imgs, |i, dxs| {
                let g = &gq_dx[i * ol * imgs..][..dxs.len() / il * ol];
                for grp in 0..self.group {
                    self.dx_chunk(g, s_dx, grp, dxs);
                }
            })
        });
        (LayerGrad { dw, db }, dx)
    }

    /// `Σ_p Gᵀ·X` (i32, `row × c_out/g`) of group `grp` over the images `xs`, from the real
    /// gradients `g` of their outputs (all channels), quantized with step `1 / inv`.
    fn dw_chunk(&self, xs: &[u8], g: &[f32], inv: f32, grp: usize) -> Vec<i32> {
        let (m, c_out, row, cout_g, cin_g) = self.shape_of_groups();
        let pixels = g.len() / c_out.max(1);
        // Gᵀ of this group, quantized: c_out/g rows of `pixels`.
        let g_t = quantize_i8_t(g, c_out, (grp * cout_g, cout_g), inv);
        let gw = PackedWeights::new(g_t, cout_g, pixels);
        let mut acc = vec![0i32; row * cout_g];
        // Patches, transposed: row k holds patch element k of every pixel of the chunk (every
        // byte written: the images' columns tile the rows).
        scratch::with_bytes(row * pixels, |cols_t| {
            for (i, img) in xs.chunks_exact(self.in_shape.len().max(1)).enumerate() {
                im2col_t(
                    img,
                    self.in_shape,
                    (self.out_shape.h, self.out_shape.w),
                    &self.window,
                    self.in_zero_point as u8,
                    (grp * cin_g, cin_g),
                    (&mut cols_t[i * m..], pixels),
                );
            }
            crate::profile::gemm(row, cols_t, self.in_zero_point, &gw, &mut acc);
        });
        acc
    }

    /// Add group `grp`'s share of `dX = col2im(G·W)` into the input gradients `dxs` of a chunk
    /// of images, from their outputs' quantized, scaled gradients `g` (step `s_dx`, all
    /// channels).
    fn dx_chunk(&self, g: &[u8], s_dx: f32, grp: usize, dxs: &mut [f32]) {
        let (m, c_out, row, cout_g, cin_g) = self.shape_of_groups();
        let pixels = g.len() / c_out.max(1);
        let a: Vec<u8>;
        let a = if self.group == 1 {
            g
        } else {
            a = g
                .chunks_exact(c_out)
                .flat_map(|px| px[grp * cout_g..][..cout_g].iter().copied())
                .collect();
            &a
        };
        let wt = self.weights[grp].transposed();
        // A few images at a time, so that the patch gradients the GEMM writes are still in L2
        // when col2im reads them back (the whole chunk's did not fit: col2im's loads missed).
        let imgs = (DX_BLOCK / (m * row).max(1)).max(1);
        let il = self.in_shape.len().max(1);
        scratch::with_ints(imgs.min(pixels / m.max(1)).max(1) * m * row, |dacc| {
            for (dxs, a) in dxs.chunks_mut(il * imgs).zip(a.chunks(m * cout_g * imgs)) {
                let px = a.len() / cout_g.max(1);
                // The GEMM writes every accumulator of these images.
                let dacc = &mut dacc[..px * row];
                crate::profile::gemm(px, a, 128, wt, dacc);
                for (dxi, d) in dxs
                    .chunks_exact_mut(il)
                    .zip(dacc.chunks_exact((m * row).max(1)))
                {
                    col2im_add(self, d, s_dx, grp * cin_g, cin_g, dxi);
                }
            }
        });
    }
}

impl Conv {
    /// The input gradients `dxs` of a chunk of images of a pointwise conv
    /// ([`Conv::is_pointwise`]), every value written: its patches are its input pixels, so
    /// `dX = G·W` times the step needs no `col2im` and no zeroed buffer to add into (the
    /// zeroing was 8 % of a MobileNetV2-style network's training, whose expand and project
    /// convs are all 1×1). The values [`Conv::dx_chunk`] adds to zeros: `0 + v·s` is `v·s`.
    fn dx_pointwise(&self, g: &[u8], s_dx: f32, dxs: &mut [MaybeUninit<f32>]) {
        let (c_in, c_out) = (self.in_shape.c.max(1), self.out_shape.c.max(1));
        let pixels = g.len() / c_out;
        let wt = self.weights[0].transposed();
        // Rows of a block: its accumulators within L2 while they are scaled.
        let rows = (DX_BLOCK / c_in).max(1);
        scratch::with_ints(rows.min(pixels).max(1) * c_in, |dacc| {
            for (d, a) in dxs.chunks_mut(rows * c_in).zip(g.chunks(rows * c_out)) {
                let px = a.len() / c_out;
                let dacc = &mut dacc[..px * c_in];
                crate::profile::gemm(px, a, 128, wt, dacc);
                scaled_into(dacc, s_dx, d);
            }
        });
    }
}

super::simd::avx2_dispatch! {
    /// `out[i] = acc[i] as f32 · step` for every `i` (8 at a time where the CPU has AVX2).
    scaled_into => scaled_into_portable(acc: &[i32], step: f32, out: &mut [MaybeUninit<f32>])
}

#[inline(always)]
fn scaled_into_portable(acc: &[i32], step: f32, out: &mut [MaybeUninit<f32>]) {
    for (o, &v) in out.iter_mut().zip(acc) {
        o.write(v as f32 * step);
    }
}

/// Patch-gradient accumulators (i32) of one GEMM of [`Conv::dx_chunk`]: 256 KB, within L2.
const DX_BLOCK: usize = 64 * 1024;

/// Visit every im2col cell of a conv in patch order: `f(column offset, input pixel offset or
/// None for padding)`, each cell `cn` values wide.
#[inline(always)]
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
fn col2im_add_f32(conv: &Conv, dcols: &[f32], c0: usize, cn: usize, dx: &mut [f32]) {
    for_each_cell(conv, c0, cn, |idx, base| {
        if let Some(b) = base {
            super::grad::add_into(&mut dx[b..b + cn], &dcols[idx..idx + cn]);
        }
    });
}

super::simd::avx2_dispatch! {
    /// [`col2im_add_f32`] of the integer patch gradients `dacc` times `step`: the same f32
    /// values added in the same order, without an f32 copy of the patches; 8 channels at a time
    /// where the CPU has AVX2 (a product then a sum, never fused: the same bits either way).
    col2im_add => col2im_add_portable(
        conv: &Conv,
        dacc: &[i32],
        step: f32,
        c0: usize,
        cn: usize,
        dx: &mut [f32],
    )
}

#[inline(always)]
fn col2im_add_portable(conv: &Conv, dacc: &[i32], step: f32, c0: usize, cn: usize, dx: &mut [f32]) {
    for_each_cell(conv, c0, cn, |idx, base| {
        if let Some(b) = base {
            for (d, &v) in dx[b..b + cn].iter_mut().zip(&dacc[idx..idx + cn]) {
                *d += v as f32 * step;
            }
        }
    });
}
