//! The model's float input as reals: pixels, normalised, through the model's own float
//! functions and any float average pooling before its first QuantizeLinear (or the float
//! segment that reads it).
//!
//! Why tables: a pixel's value depends only on its channel and byte, so it is computed once
//! per channel and byte ([`InputSpec::pixel_tables`]) rather than once per pixel of every image
//! (the division by 255, the normalisation and each function were 42 % of an MLP's inference
//! whose first layer is float). The pooling windows are listed once per call
//! ([`WindowCells`]), not per image and channel. Both give the values the per-pixel code gave:
//! the same f32 operations on the same operands, in the same order.

use super::pool_cells::WindowCells;
use super::tensor::Shape;
use super::InputSpec;

impl InputSpec {
    /// Whether the pixel's value depends on its channel (per-channel normalisation or a model
    /// function with per-channel constants; a flat `[N, F]` input has F channels).
    pub(super) fn per_channel(&self) -> bool {
        self.norm
            .as_ref()
            .is_some_and(|n| n.mean.len() > 1 || n.std.len() > 1)
            || self.fns.iter().any(|f| f.channels() > 1)
    }

    /// [`InputSpec::pixel`] of every byte: one table per channel when
    /// [`InputSpec::per_channel`], else one table for all.
    pub(super) fn pixel_tables(&self) -> Vec<[f32; 256]> {
        let tables = if self.per_channel() { self.shape.c } else { 1 };
        (0..tables)
            .map(|ch| std::array::from_fn(|b| self.pixel(ch, b as u8)))
            .collect()
    }
}

/// The model's float input as its first QuantizeLinear or a float segment reads it (NHWC):
/// pixels, normalised, through its float functions and any average pooling, each value in f32
/// in the model's order.
pub(super) fn input_reals(images: &[u8], n: usize, s: Shape, input: &InputSpec) -> Vec<f32> {
    let plane = s.h * s.w;
    let tables = input.pixel_tables();
    let table = |ch: usize| &tables[if tables.len() > 1 { ch } else { 0 }];
    let img_len = s.len().max(1);
    if let Some(p) = &input.pre_pool {
        let os = p.out_shape;
        let w = &p.window;
        let windows = WindowCells::new(w, s, os);
        // Each window's divisor, then per image and channel its pooled plane
        // ([`pooled_plane`]) and the model's functions.
        let divs: Vec<f32> = windows
            .counts(p.count_include_pad)
            .map(|n| n.max(1) as f32)
            .collect();
        let mut out = vec![0f32; n * os.len()];
        let mut vals = vec![0f32; plane];
        let mut sums = vec![0f32; divs.len()];
        let mut cols = Vec::new();
        let opl = os.h * os.w;
        for (o, img) in out
            .chunks_exact_mut(os.len().max(1))
            .zip(images.chunks_exact(img_len))
        {
            for ch in 0..s.c {
                let bytes = &img[ch * plane..(ch + 1) * plane];
                pooled_plane(
                    bytes,
                    table(ch),
                    &windows,
                    &divs,
                    &mut vals,
                    &mut sums,
                    &mut cols,
                );
                if os.c == 1 && input.post_fns.is_empty() {
                    o.copy_from_slice(&sums);
                    continue;
                }
                for (px, &v) in sums.iter().enumerate() {
                    o[px * os.c + ch] = input.post(ch * opl + px, v);
                }
            }
        }
        return out;
    }
    let mut out = vec![0f32; images.len()];
    for (o, img) in out
        .chunks_exact_mut(img_len)
        .zip(images.chunks_exact(img_len))
    {
        for ch in 0..s.c {
            let t = table(ch);
            for p in 0..plane {
                let i = ch * plane + p;
                o[p * s.c + ch] = input.post(i, t[img[i] as usize]);
            }
        }
    }
    out
}

super::simd::avx2_dispatch! {
    /// One channel's plane of pooled values: each byte's value from the table `t` into `vals`,
    /// the window sums ([`WindowCells::column_sums`]), then each divided by its window's
    /// divisor, into `sums`. Three passes with no dependence between windows, so neighbouring
    /// windows' work overlaps in the CPU; the divisions on their own so they vectorize.
    pooled_plane => pooled_plane_body(
        bytes: &[u8],
        t: &[f32; 256],
        windows: &WindowCells,
        divs: &[f32],
        vals: &mut [f32],
        sums: &mut [f32],
        cols: &mut Vec<f32>,
    )
}

#[inline(always)]
fn pooled_plane_body(
    bytes: &[u8],
    t: &[f32; 256],
    windows: &WindowCells,
    divs: &[f32],
    vals: &mut [f32],
    sums: &mut [f32],
    cols: &mut Vec<f32>,
) {
    for (v, &b) in vals.iter_mut().zip(bytes) {
        *v = t[b as usize];
    }
    windows.column_sums(vals, sums, cols);
    for (sum, &div) in sums.iter_mut().zip(divs) {
        *sum /= div;
    }
}
