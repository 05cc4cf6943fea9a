//! Pooling on quantized activations.
//!
//! Max pooling commutes with the (monotone) dequantization, so it runs on the bytes directly and
//! keeps the input's parameters. Global average pooling sums `q − zp` in i32 and requantizes
//! with `s_in / hw / s_out`; windowed average pooling follows onnxruntime's float formula (see
//! [`AvgPool`]). Both reproduce onnxruntime's QLinear pools bit for bit.
//! Shapes: `[n][h][w][c]` → `[n][oh][ow][c]`; global pooling → `[n][c]`.

use rayon::prelude::*;

use super::conv::Window;
use super::pool_cells::WindowCells;
use super::qparams::{rounded_byte, Requant};
use super::tensor::{QBatch, Shape};

/// Max pooling (padding never wins: padded cells are skipped).
#[derive(Debug, Clone)]
pub struct MaxPool {
    pub window: Window,
    pub in_shape: Shape,
    pub out_shape: Shape,
}

impl MaxPool {
    /// Run on a batch. Each output byte is the largest of its window's bytes, 0 for a window
    /// wholly in the padding.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let table = WindowCells::new(&self.window, self.in_shape, self.out_shape);
        out.data
            .par_chunks_mut(ol)
            .zip(x.data.par_chunks(il))
            .for_each(|(o, img)| {
                for (p, cells) in table.iter() {
                    let dst = &mut o[p * c..(p + 1) * c];
                    let Some((&first, rest)) = cells.split_first() else {
                        continue; // stays 0
                    };
                    dst.copy_from_slice(&img[first * c..(first + 1) * c]);
                    for &cell in rest {
                        for (d, &v) in dst.iter_mut().zip(&img[cell * c..(cell + 1) * c]) {
                            *d = (*d).max(v);
                        }
                    }
                }
            });
        out
    }
}

/// Average pooling over windows (`count_include_pad` decides the divisor at the borders).
#[derive(Debug, Clone)]
pub struct AvgPool {
    pub window: Window,
    pub count_include_pad: bool,
    pub in_shape: Shape,
    pub out_shape: Shape,
    pub in_zero_point: i32,
    pub in_scale: f32,
    pub out_scale: f32,
    pub out_zero_point: i32,
    /// Sum each window column by column (onnxruntime's float pooling, the QDQ form) instead of
    /// row by row (its QLinearAveragePool, the QOperator form). The order decides how exact
    /// halves round, and so whether we match the reference bit for bit.
    pub columns_first: bool,
}

impl AvgPool {
    /// Run on a batch.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let mut out = QBatch::filled(x.n, self.out_shape, 0);
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let table = WindowCells::new(&self.window, self.in_shape, self.out_shape);
        // onnxruntime's QLinearAveragePool works in float: the sum of dequantized inputs in
        // window order, divided by the count, then y/s_out + zp rounded. A byte's dequantized
        // value is one product, so it is looked up rather than formed per cell.
        let deq: [f32; 256] = std::array::from_fn(|v| {
            self.in_scale * super::qparams::centered(v as u8, self.in_zero_point) as f32
        });
        let (s_out, zp) = (self.out_scale, self.out_zero_point as f32);
        // One channel summed column by column (a pooled input image): one plane.
        let one_plane = c == 1 && self.columns_first;
        let counts: Vec<f32> = table
            .counts(self.count_include_pad)
            .map(|n| n as f32)
            .collect();
        out.data
            .par_chunks_mut(ol)
            .zip(x.data.par_chunks(il))
            .for_each_init(
                || {
                    let plane = vec![0f32; if one_plane { il } else { 0 }];
                    (vec![0f32; ol], plane, Vec::new())
                },
                |(sums, plane, cols), (o, img)| {
                    // Every window's sums first, then every output byte: no dependence between
                    // windows in either pass, and the second one vectorizes.
                    if one_plane {
                        for (v, &b) in plane.iter_mut().zip(img.iter()) {
                            *v = deq[b as usize];
                        }
                        table.column_sums(plane, sums, cols);
                        average_bytes(sums, &counts, c, s_out, zp, o);
                        return;
                    }
                    for (p, cells, ncol) in table.iter_columns() {
                        let sums = &mut sums[p * c..(p + 1) * c];
                        if self.columns_first {
                            for (ch, s) in sums.iter_mut().enumerate() {
                                *s = sum_columns(cells, ncol, |cell| {
                                    deq[img[cell * c + ch] as usize]
                                });
                            }
                        } else {
                            sums.fill(0.0);
                            for &cell in cells {
                                for (s, &v) in sums.iter_mut().zip(&img[cell * c..(cell + 1) * c]) {
                                    *s += deq[v as usize];
                                }
                            }
                        }
                    }
                    average_bytes(sums, &counts, c, s_out, zp, o);
                },
            );
        out
    }
}

super::simd::avx2_dispatch! {
    /// The output bytes of window sums `sums` (`[pixel][c]`) with each pixel's count in
    /// `counts`: `round_half_even(sum / count / s_out + zp)` clamped to a byte, as onnxruntime's
    /// QLinearAveragePool (the zero point added before rounding, so [`rounded_byte`] rounds the
    /// whole value and adds none).
    average_bytes => average_bytes_portable(
        sums: &[f32],
        counts: &[f32],
        c: usize,
        s_out: f32,
        zp: f32,
        out: &mut [u8],
    )
}

#[inline(always)]
fn average_bytes_portable(
    sums: &[f32],
    counts: &[f32],
    c: usize,
    s_out: f32,
    zp: f32,
    out: &mut [u8],
) {
    let byte = |v: f32, n: f32| rounded_byte(v / n / s_out + zp, 0.0, 0.0, 255.0);
    if c == 1 {
        // One channel (a pooled input image): one flat loop, which vectorizes.
        for ((d, &v), &n) in out.iter_mut().zip(sums).zip(counts) {
            *d = byte(v, n);
        }
        return;
    }
    for ((d, v), &n) in out
        .chunks_exact_mut(c.max(1))
        .zip(sums.chunks_exact(c.max(1)))
        .zip(counts)
    {
        for (d, &v) in d.iter_mut().zip(v) {
            *d = byte(v, n);
        }
    }
}

/// Global average pooling: `[n][h][w][c]` → `[n][c]`.
#[derive(Debug, Clone)]
pub struct GlobalAvgPool {
    pub in_shape: Shape,
    pub in_zero_point: i32,
    /// `s_in / (h · w) / s_out`, as onnxruntime's QLinearGlobalAveragePool computes it.
    pub requant: Requant,
}

impl GlobalAvgPool {
    /// Run on a batch.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let Shape { h, w, c } = self.in_shape;
        let mut out = QBatch::filled(x.n, Shape::flat(c), 0);
        let bias = -self.in_zero_point * (h * w) as i32;
        for (o, img) in out
            .data
            .chunks_exact_mut(c.max(1))
            .zip(x.data.chunks_exact(self.in_shape.len().max(1)))
        {
            let mut sums = vec![bias; c];
            for px in img.chunks_exact(c) {
                for (s, &v) in sums.iter_mut().zip(px) {
                    *s += v as i32;
                }
            }
            for (j, (d, &s)) in o.iter_mut().zip(&sums).enumerate() {
                *d = self.requant.apply(s, j);
            }
        }
        out
    }
}

/// Sum `value(cell)` over a window's cells (row-major pixel indices of an input `width` wide)
/// column by column — each column top to bottom, then the columns left to right. That is the
/// order of onnxruntime's float pooling (MLAS), and it decides which way exact halves round.
pub(super) fn sum_columns_first(
    cells: &[usize],
    width: usize,
    value: impl FnMut(usize) -> f32,
) -> f32 {
    sum_columns(cells, first_row_len(cells, width), value)
}

/// The number of a window's cells in its first row (its columns), for an input `width` wide.
pub(super) fn first_row_len(cells: &[usize], width: usize) -> usize {
    let Some(&first) = cells.first() else {
        return 0;
    };
    // The cells before the start of the next row (one division per window, not per cell).
    let next_row = (first / width + 1) * width;
    cells.iter().take_while(|&&c| c < next_row).count()
}

/// [`sum_columns_first`] of a window with `ncol` columns ([`first_row_len`]). A window clipped
/// by the borders is still a rectangle, so column `j` is every `ncol`-th cell from the `j`-th.
#[inline]
pub(super) fn sum_columns(
    cells: &[usize],
    ncol: usize,
    mut value: impl FnMut(usize) -> f32,
) -> f32 {
    let mut sum = 0f32;
    for j in 0..ncol {
        let mut col = 0f32;
        for &cell in cells[j..].iter().step_by(ncol) {
            col += value(cell);
        }
        sum += col;
    }
    sum
}

/// Call `f(output_pixel, input_cells)` for every output pixel, with the in-bounds input cells
/// (row-major pixel indices) of its window.
pub(super) fn for_each_window(
    win: &Window,
    ins: Shape,
    outs: Shape,
    mut f: impl FnMut(usize, &[usize]),
) {
    let mut cells = Vec::with_capacity(win.kh * win.kw);
    for oy in 0..outs.h {
        for ox in 0..outs.w {
            cells.clear();
            for ky in 0..win.kh {
                let iy = (oy * win.stride_h + ky * win.dil_h) as isize - win.pads[0] as isize;
                if iy < 0 || iy >= ins.h as isize {
                    continue;
                }
                for kx in 0..win.kw {
                    let ix = (ox * win.stride_w + kx * win.dil_w) as isize - win.pads[1] as isize;
                    if ix >= 0 && ix < ins.w as isize {
                        cells.push(iy as usize * ins.w + ix as usize);
                    }
                }
            }
            f(oy * outs.w + ox, &cells);
        }
    }
}
