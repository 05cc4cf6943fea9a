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
use super::qparams::{centered, round_half_even, rounded_byte, Requant};
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
    /// Output zero point, storage domain.
    pub out_zero_point: i32,
    /// The part of the output zero point added *before* rounding; the rest of
    /// `out_zero_point` is added after. onnxruntime's QLinearAveragePool (the QOperator form)
    /// rounds `avg / s + zp` with the file's zero point inside, so it is that zero point there;
    /// the QDQ form's QuantizeLinear rounds `avg / s` and adds the zero point after, so it is 0.
    /// (Adding the whole storage zero point first, 128 for an int8 tensor, rounded ties that
    /// `avg / s` was just off of: 15 of 10,000 top-1 differed from onnxruntime on a model with
    /// int8 activations.)
    pub zp_before_rounding: i32,
    /// Sum each window column by column (onnxruntime's float pooling through MLAS, the QDQ
    /// form up to opset 18) instead of row by row (its QLinearAveragePool, the QOperator form,
    /// and its float AveragePool from opset 19 on, a plain loop over the window's rows:
    /// measured bit for bit on opsets 17, 19 and 21). The order decides how exact halves round,
    /// and so whether we match the reference bit for bit.
    pub columns_first: bool,
    /// The QDQ form: the output is a QuantizeLinear of the float average (the zero point added
    /// after rounding), not QLinearAveragePool's (see [`AvgPool::zp_before_rounding`]).
    pub qdq: bool,
}

impl AvgPool {
    /// [`AvgPool::zp_before_rounding`] for an output quantized as `q`, in the QDQ form
    /// (`qdq`) or the QOperator form.
    pub fn zp_before_rounding_of(qdq: bool, q: &super::QParams) -> i32 {
        if qdq {
            0
        } else {
            q.model_zero_point()
        }
    }

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
        let (s_out, pre) = (self.out_scale, self.zp_before_rounding as f32);
        let post = (self.out_zero_point - self.zp_before_rounding) as f32;
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
                        average_bytes(sums, &counts, c, s_out, [pre, post], o);
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
                    average_bytes(sums, &counts, c, s_out, [pre, post], o);
                },
            );
        out
    }
}

super::simd::avx2_dispatch! {
    /// The output bytes of window sums `sums` (`[pixel][c]`) with each pixel's count in
    /// `counts`: `round_half_even(sum / count / s_out + pre) + post` clamped to a byte, with
    /// the zero point split as [`AvgPool::zp_before_rounding`] says.
    average_bytes => average_bytes_portable(
        sums: &[f32],
        counts: &[f32],
        c: usize,
        s_out: f32,
        zp: [f32; 2],
        out: &mut [u8],
    )
}

#[inline(always)]
fn average_bytes_portable(
    sums: &[f32],
    counts: &[f32],
    c: usize,
    s_out: f32,
    [pre, post]: [f32; 2],
    out: &mut [u8],
) {
    let byte = |v: f32, n: f32| rounded_byte(v / n / s_out + pre, post, 0.0, 255.0);
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
    /// `Some([s_in, s_out])` for the QDQ form (`DequantizeLinear → GlobalAveragePool →
    /// QuantizeLinear`), which onnxruntime runs in float: each dequantized value `(q − zp)·s_in`,
    /// their mean in MLAS's order ([`super::float_ops::mlas_mean`]), then `mean / s_out`
    /// rounded. An exact half in integers (a mean of 16 values on the input's own grid, when
    /// `s_out = s_in`, is one every 16th time) lands on either side of .5 in f32, and the
    /// integer form rounded all of them to even: 0.54 % of one model's pooled bytes 1 LSB off.
    pub float_scales: Option<[f32; 2]>,
}

impl GlobalAvgPool {
    /// Run on a batch.
    pub fn forward(&self, x: &QBatch) -> QBatch {
        if let Some([s_in, s_out]) = self.float_scales {
            return self.forward_qdq(x, s_in, s_out);
        }
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

    /// The QDQ form's float computation (see [`GlobalAvgPool::float_scales`]).
    fn forward_qdq(&self, x: &QBatch, s_in: f32, s_out: f32) -> QBatch {
        let Shape { h, w, c } = self.in_shape;
        let mut out = QBatch::filled(x.n, Shape::flat(c), 0);
        let rq = &self.requant;
        let (zp, lo, hi) = (rq.zero_point as f32, rq.lo as f32, rq.hi as f32);
        for (o, img) in out
            .data
            .chunks_exact_mut(c.max(1))
            .zip(x.data.chunks_exact(self.in_shape.len().max(1)))
        {
            for (ch, d) in o.iter_mut().enumerate() {
                let real = |p: usize| centered(img[p * c + ch], self.in_zero_point) as f32 * s_in;
                let mean = super::float_ops::mlas_mean(h * w, real);
                *d = (round_half_even(mean / s_out) + zp).clamp(lo, hi) as u8;
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

#[cfg(test)]
mod tests {
    use super::AvgPool;
    use crate::graph::conv::Window;
    use crate::graph::qparams::round_half_even;
    use crate::graph::tensor::{QBatch, Shape};

    /// A 2×3 average of int8 values on one step `s` in and out, in the QDQ form (`qdq`) or the
    /// QOperator form, zero point 0 (storage 128).
    fn pool(qdq: bool, s: f32) -> AvgPool {
        AvgPool {
            window: Window {
                kh: 2,
                kw: 3,
                ..Window::unit()
            },
            count_include_pad: false,
            in_shape: Shape { h: 2, w: 3, c: 1 },
            out_shape: Shape { h: 1, w: 1, c: 1 },
            in_zero_point: 128,
            in_scale: s,
            out_scale: s,
            out_zero_point: 128,
            zp_before_rounding: 0,
            columns_first: qdq,
            qdq,
        }
    }

    /// The window onnxruntime pooled to 1 on a model with int8 activations (step 0.10404082):
    /// values 0, 1, 2 over 0, 0, 0 average to 0.5 in exact arithmetic but to just above it in
    /// f32, and QuantizeLinear rounds that up. Adding the storage zero point (128) before
    /// rounding made it exactly 128.5, rounded to even: 0.
    #[test]
    fn the_zero_point_is_added_after_rounding_as_onnxruntime_does() {
        let s = 0.104_040_82f32;
        let x = QBatch {
            n: 1,
            shape: Shape { h: 2, w: 3, c: 1 },
            data: [0, 1, 2, 0, 0, 0]
                .map(|v: i32| (v + 128) as u8)
                .to_vec()
                .into(),
        };
        // onnxruntime: columns summed first (0, s, 2s), divided by the count, then by the step.
        let real = ((0.0 + s) + 2.0 * s) / 6.0;
        let want = round_half_even(real / s) as i32;
        assert_eq!(want, 1, "f32 puts this average just above a half step");
        assert_eq!(pool(true, s).forward(&x).data, vec![(want + 128) as u8]);
        // The QOperator form adds the file's zero point (0 here) before rounding: the same.
        assert_eq!(pool(false, s).forward(&x).data, vec![(want + 128) as u8]);
    }
}
