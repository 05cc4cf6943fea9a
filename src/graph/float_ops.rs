//! Pooling, element-wise functions and binary ops on the real values of a float segment (see
//! [`super::float_seg`]): a float GlobalAveragePool/AveragePool/ReduceMean, a float Sigmoid,
//! Tanh, … ([`super::Pointwise`] evaluated on reals, no table), and the Add, Sub or Mul of two
//! tensors (a residual Add, a squeeze-excitation gate) when one of them is float, and the Div
//! of two tensors (see [`super::div`]).
//!
//! Why here and not in the quantized layers: those read bytes and write bytes; in a float
//! segment neither side is on a grid. The layers reuse the quantized ops' structs (their
//! geometry; the quantization fields are placeholders) so the backward, which never depended on
//! those fields, is shared: a global/window average spreads the gradient evenly, an Add copies
//! it to both operands, a Mul follows the product rule on the saved real operands, a function
//! takes its derivative at the saved real input.
//!
//! Summation order is onnxruntime's (graph optimizations off, x86): its float GlobalAveragePool
//! (MLAS's global pooling kernel) adds each plane in four lanes — lane `k` takes elements
//! `k, k + 4, …` — folds them as `(l0 + l2) + (l1 + l3)` (the SSE horizontal add), adds the
//! remaining `len mod 4` elements one by one and divides by `len`; [`mlas_mean`] does the same,
//! so the float logits after it agree to the last bit where the inputs do.

use super::float_seg::{clamp_real, real_values, Input};
use super::pairwise::Pairing;
use super::pool::sum_columns;
use super::pool_cells::WindowCells;
use super::tensor::{QBatch, Shape};
use super::{AvgPool, GlobalAvgPool, Graph, Layer, Op};
use crate::{Error, Result};

/// The mean of `len` values `value(0..len)`, added in MLAS's global pooling order (see the
/// module docs).
pub fn mlas_mean(len: usize, value: impl Fn(usize) -> f32) -> f32 {
    let blocks = len / 4;
    let mut lanes = [0f32; 4];
    for b in 0..blocks {
        for (k, l) in lanes.iter_mut().enumerate() {
            *l += value(4 * b + k);
        }
    }
    let mut s = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    for i in 4 * blocks..len {
        s += value(i);
    }
    s / len as f32
}

impl GlobalAvgPool {
    /// onnxruntime's float GlobalAveragePool of real NHWC values: `[n][h][w][c]` → `[n][c]`.
    pub fn forward_real(&self, x: &[f32]) -> Vec<f32> {
        let Shape { h, w, c } = self.in_shape;
        let il = self.in_shape.len().max(1);
        let mut y = Vec::with_capacity(x.len() / il * c);
        for img in x.chunks_exact(il) {
            for ch in 0..c {
                // The plane of channel `ch` in NCHW order is pixel order here.
                y.push(mlas_mean(h * w, |p| img[p * c + ch]));
            }
        }
        y
    }
}

impl AvgPool {
    /// onnxruntime's float AveragePool of real NHWC values (each window summed column by
    /// column, as MLAS's vector kernel does, then divided by the count).
    pub fn forward_real(&self, x: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let full = self.window.kh * self.window.kw;
        let mut y = vec![0f32; x.len() / il * ol];
        let table = WindowCells::new(&self.window, self.in_shape, self.out_shape);
        for (o, img) in y.chunks_exact_mut(ol).zip(x.chunks_exact(il)) {
            for (p, cells, ncol) in table.iter_columns() {
                let count = if self.count_include_pad {
                    full
                } else {
                    cells.len()
                };
                for ch in 0..c {
                    let s = if self.columns_first {
                        sum_columns(cells, ncol, |cell| img[cell * c + ch])
                    } else {
                        cells.iter().map(|&cell| img[cell * c + ch]).sum()
                    };
                    o[p * c + ch] = s / count.max(1) as f32;
                }
            }
        }
        y
    }
}

impl Graph {
    /// Run a float layer with two inputs (`x` = `inputs[0]`, `y` = `inputs[1]`): the Add, Sub,
    /// Mul or Div of two tensors, one of them (or the result) float.
    pub fn float_binary(&self, layer: &Layer, x: Input<'_>, y: &QBatch) -> Result<QBatch> {
        let (ia, ib) = (&self.acts[layer.inputs[0]], &self.acts[layer.inputs[1]]);
        let shape = self.acts[layer.output].shape;
        let n = x.batch().n;
        let rb = real_values(ib, y);
        // `b` of `a`'s size, or one value per sample or per channel (see `pairwise`); the
        // result is written over `a`'s values.
        let equal = n * ia.shape.len() == rb.len();
        let mut out = match &layer.op {
            Op::Add(a) => {
                let mut out = x.into_reals(ia);
                let p = Pairing::new(ia.shape, !equal);
                if a.sub {
                    p.apply(&mut out, &rb, |a, b| a - b);
                } else {
                    p.apply(&mut out, &rb, |a, b| a + b);
                }
                out
            }
            Op::Div(d) => {
                let mut out = x.into_reals(ia);
                d.pairing(ia.shape).apply(&mut out, &rb, |a, b| a / b);
                out
            }
            Op::Mul(m) => {
                let mut out = x.into_reals(ia);
                m.pairing(ia.shape).apply(&mut out, &rb, |a, b| a * b);
                out
            }
            other => {
                return Err(Error::Shape(format!(
                    "layer '{}' ({}) is not a float binary op of equal shapes",
                    layer.name,
                    other.kind()
                )))
            }
        };
        clamp_real(layer.activation, &mut out);
        Ok(QBatch::from_real(n, shape, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Requant, Window};

    #[test]
    fn the_mean_adds_in_four_lanes_then_the_tail() {
        // 1e8 + 1 + … : the order decides what survives rounding.
        let v = [1e8f32, 1.0, 1.0, 1.0, -1e8, 3.0, 3.0, 3.0, 5.0];
        let lanes = [1e8f32 + -1e8 + 0.0, 1.0 + 3.0, 1.0 + 3.0, 1.0 + 3.0];
        let want = ((lanes[0] + lanes[2]) + (lanes[1] + lanes[3]) + 5.0) / 9.0;
        assert_eq!(mlas_mean(9, |i| v[i]), want);
        assert_eq!(mlas_mean(3, |i| [1.0, 2.0, 4.0][i]), 7.0 / 3.0);
    }

    #[test]
    fn global_and_window_averages_of_reals() {
        let s = Shape { h: 2, w: 2, c: 2 };
        let g = GlobalAvgPool {
            in_shape: s,
            in_zero_point: 0,
            requant: Requant::unused(),
            float_scales: None,
        };
        // NHWC: channel 0 = 1, 2, 3, 4; channel 1 = −1, 0, 1, 8.
        let x = [1.0, -1.0, 2.0, 0.0, 3.0, 1.0, 4.0, 8.0];
        assert_eq!(g.forward_real(&x), vec![2.5, 2.0]);
        let p = AvgPool {
            window: Window {
                kh: 2,
                ..Window::unit()
            },
            count_include_pad: false,
            in_shape: s,
            out_shape: Shape { h: 1, w: 2, c: 2 },
            in_zero_point: 0,
            in_scale: 1.0,
            out_scale: 1.0,
            out_zero_point: 0,
            zp_before_rounding: 0,
            columns_first: true,
            qdq: true,
        };
        assert_eq!(p.forward_real(&x), vec![2.0, 0.0, 3.0, 4.0]);
    }
}
