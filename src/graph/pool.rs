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
use super::qparams::{round_half_even, Requant};
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
        let (il, ol) = (self.in_shape.len().max(1), self.out_shape.len().max(1));
        let full = self.window.kh * self.window.kw;
        out.data
            .par_chunks_mut(ol)
            .zip(x.data.par_chunks(il))
            .for_each(|(o, img)| {
                let c = self.in_shape.c;
                let mut sums = vec![0f32; c];
                for_each_window(&self.window, self.in_shape, self.out_shape, |p, cells| {
                    // onnxruntime's QLinearAveragePool works in float: the sum of dequantized
                    // inputs in window order, divided by the count, then y/s_out + zp rounded.
                    sums.fill(0.0);
                    let deq = |v: u8| {
                        self.in_scale * super::qparams::centered(v, self.in_zero_point) as f32
                    };
                    if self.columns_first {
                        let w = self.in_shape.w;
                        for (ch, s) in sums.iter_mut().enumerate() {
                            *s = sum_columns_first(cells, w, |cell| deq(img[cell * c + ch]));
                        }
                    } else {
                        for &cell in cells {
                            for (s, &v) in sums.iter_mut().zip(&img[cell * c..(cell + 1) * c]) {
                                *s += deq(v);
                            }
                        }
                    }
                    let count = if self.count_include_pad {
                        full
                    } else {
                        cells.len()
                    };
                    for (d, &s) in o[p * c..(p + 1) * c].iter_mut().zip(&sums) {
                        let v = round_half_even(
                            s / count as f32 / self.out_scale + self.out_zero_point as f32,
                        );
                        *d = v.clamp(0.0, 255.0) as u8;
                    }
                })
            });
        out
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
/// A window clipped by the borders is still a rectangle, so column `j` is every `ncol`-th cell.
pub(super) fn sum_columns_first(
    cells: &[usize],
    width: usize,
    mut value: impl FnMut(usize) -> f32,
) -> f32 {
    let Some(&first) = cells.first() else {
        return 0.0;
    };
    let ncol = cells
        .iter()
        .take_while(|&&c| c / width == first / width)
        .count();
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
