//! The float twin of a graph: the same layers computed in real numbers, with given real weights
//! and biases, no rounding of activations, and only the fused activation's clamp.
//!
//! Two uses: gradient checks (the twin is differentiable, so finite differences of its loss
//! test every backward formula), and activation-range observers when a model is trained from
//! scratch (they must see the values before they are quantized to a range not yet known).

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::conv_grad::im2col_f32;
use super::pool::{for_each_window, sum_columns_first};
use super::{Graph, Op};
use crate::Result;

/// Real weights (graph layout) and biases of one conv or linear layer.
#[derive(Debug, Clone)]
pub struct RealParams {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

impl Graph {
    /// Real weights and biases of every conv/linear layer as the integers give them (`None` for
    /// other layers). The bias includes any float offset of the layer.
    pub fn real_params(&self) -> Vec<Option<RealParams>> {
        (0..self.layers.len())
            .map(|i| self.layer_real_params(i))
            .collect()
    }

    /// [`Graph::real_params`] of layer `i` alone.
    pub fn layer_real_params(&self, i: usize) -> Option<RealParams> {
        let l = &self.layers[i];
        let out = &self.acts[l.output];
        let (w, bias, rq) = match &l.op {
            Op::Conv(c) => (c.real_weights(), &c.bias, &c.requant),
            Op::Linear(li) => (li.real_weights(), &li.bias, &li.requant),
            Op::BiasAdd(b) => {
                return Some(RealParams {
                    w: vec![],
                    b: b.bias.clone(),
                })
            }
            Op::Dense(d) => {
                return Some(RealParams {
                    w: d.weights.to_vec(),
                    b: d.bias.clone(),
                })
            }
            Op::FloatConv(c) => {
                return Some(RealParams {
                    w: c.weights.clone(),
                    b: c.bias.clone(),
                })
            }
            _ => return None,
        };
        let b = bias
            .iter()
            .enumerate()
            .map(|(c, &bi)| {
                let m = rq.multiplier[if rq.multiplier.len() > 1 { c } else { 0 }];
                let off = rq.offset.get(c).copied().unwrap_or(0.0);
                (bi as f32 * m + off) * out.scale_of(c)
            })
            .collect();
        Some(RealParams { w, b })
    }

    /// Every activation of the float twin on `n` images, real values, NHWC.
    pub fn forward_float(
        &self,
        images: &[u8],
        n: usize,
        params: &[Option<RealParams>],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        // The input is quantized as in the real model (its parameters come from the file).
        let q = self.quantize_images(images, n)?;
        let x0 = super::float_seg::real_values(&self.acts[self.input.act], &q).into_owned();
        self.forward_float_input(x0, params)
    }

    /// The float twin from a real-valued input activation (NHWC, as the quantized input holds).
    pub fn forward_float_input(
        &self,
        x0: Vec<f32>,
        params: &[Option<RealParams>],
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let mut vals: Vec<Option<Vec<f32>>> = vec![None; self.acts.len()];
        vals[self.input.act] = Some(x0);
        for (i, layer) in self.layers.iter().enumerate() {
            let x = vals[layer.inputs[0]].as_ref().ok_or_else(|| {
                crate::Error::Shape(format!("layer '{}' input missing", layer.name))
            })?;
            let mut y = match &layer.op {
                Op::Conv(c) => {
                    let p = params[i].as_ref().expect("conv params");
                    conv_f32(c, x, p)
                }
                Op::FloatConv(c) => {
                    let p = params[i].as_ref().expect("float conv params");
                    conv_f32(&c.geom, x, p)
                }
                Op::Linear(super::Linear {
                    in_features: fi,
                    out_features: fo,
                    ..
                })
                | Op::Dense(super::Dense {
                    in_features: fi,
                    out_features: fo,
                    ..
                }) => {
                    let p = params[i].as_ref().expect("linear params");
                    let (fi, fo) = (*fi, *fo);
                    let nn = x.len() / fi.max(1);
                    let mut y: Vec<f32> = (0..nn).flat_map(|_| p.b.iter().copied()).collect();
                    general_mat_mul(
                        1.0,
                        &ArrayView2::from_shape((nn, fi), &x[..]).unwrap(),
                        &ArrayView2::from_shape((fo, fi), &p.w[..]).unwrap().t(),
                        1.0,
                        &mut ArrayViewMut2::from_shape((nn, fo), &mut y[..]).unwrap(),
                    );
                    y
                }
                Op::Add(a) => match layer.inputs.get(1) {
                    Some(&b) => {
                        let b = vals[b].as_ref().expect("add operand");
                        // A `b` with fewer values is broadcast (see `pairwise`).
                        let p = super::pairwise::Pairing::new(
                            self.acts[layer.inputs[0]].shape,
                            b.len() != x.len(),
                        );
                        if a.sub {
                            p.map(x, b, |p, q| p - q)
                        } else {
                            p.map(x, b, |p, q| p + q)
                        }
                    }
                    None => {
                        let c = a.b_const.as_ref().expect("add constant");
                        let s_b = a.b_sign() * a.b_ratio * self.acts[layer.output].q.scale;
                        x.iter()
                            .zip(c.iter().cycle())
                            .map(|(&p, &q)| {
                                p + s_b * super::qparams::centered(q, a.b_zero_point) as f32
                            })
                            .collect()
                    }
                },
                Op::MaxPool(p) => pool_f32(
                    x,
                    &p.window,
                    p.in_shape,
                    p.out_shape,
                    |cells, img, c, ch| {
                        cells
                            .iter()
                            .map(|&cell| img[cell * c + ch])
                            .fold(f32::NEG_INFINITY, f32::max)
                    },
                ),
                Op::AvgPool(p) => {
                    let full = p.window.kh * p.window.kw;
                    pool_f32(
                        x,
                        &p.window,
                        p.in_shape,
                        p.out_shape,
                        |cells, img, c, ch| {
                            let count = if p.count_include_pad {
                                full
                            } else {
                                cells.len()
                            };
                            let s = if p.columns_first {
                                sum_columns_first(cells, p.in_shape.w, |cell| img[cell * c + ch])
                            } else {
                                cells.iter().map(|&cell| img[cell * c + ch]).sum()
                            };
                            s / count.max(1) as f32
                        },
                    )
                }
                Op::GlobalAvgPool(p) => {
                    let c = p.in_shape.c;
                    let hw = (p.in_shape.h * p.in_shape.w).max(1) as f32;
                    x.chunks_exact(p.in_shape.len().max(1))
                        .flat_map(|img| {
                            let mut s = vec![0f32; c];
                            for px in img.chunks_exact(c) {
                                super::grad::add_into(&mut s, px);
                            }
                            s.into_iter().map(move |v| v / hw)
                        })
                        .collect()
                }
                Op::Flatten => super::eltwise::nchw_order(self.acts[layer.inputs[0]].shape, x),
                Op::Permute(p) => p.gather(x),
                Op::Pad(p) => p.fill(x, 0.0),
                Op::Requantize(_) | Op::Quantize(_) | Op::Clamp => x.clone(),
                Op::Concat(c) => {
                    let xs: Vec<&[f32]> = layer
                        .inputs
                        .iter()
                        .map(|&a| vals[a].as_deref().expect("concat operand"))
                        .collect();
                    c.forward_real(&xs)
                }
                Op::Pointwise(p) => p.forward_twin(x),
                Op::LayerNorm(l) => l.forward_real(x),
                Op::Mul(m) => {
                    let b = vals[layer.inputs[1]].as_ref().expect("mul operand");
                    m.forward_real(self.acts[layer.inputs[0]].shape, x, b)
                }
                Op::Div(d) => {
                    let b = vals[layer.inputs[1]].as_ref().expect("div operand");
                    d.forward_real(self.acts[layer.inputs[0]].shape, x, b)
                }
                Op::BiasAdd(b) => {
                    let bias = params[i].as_ref().map(|p| &p.b).unwrap_or(&b.bias);
                    let mut y = x.clone();
                    let c = self.acts[layer.output].shape.c.max(1);
                    for (k, v) in y.iter_mut().enumerate() {
                        *v += bias[if bias.len() == 1 { 0 } else { k % c }];
                    }
                    y
                }
            };
            let (lo, hi) = layer.activation.bounds();
            if lo.is_finite() || hi.is_finite() {
                for v in y.iter_mut() {
                    *v = v.clamp(lo, hi);
                }
            }
            vals[layer.output] = Some(y);
        }
        Ok(vals)
    }
}

fn conv_f32(c: &super::Conv, x: &[f32], p: &RealParams) -> Vec<f32> {
    let (il, ol) = (c.in_shape.len().max(1), c.out_shape.len().max(1));
    let (m, c_out, row) = (c.out_shape.h * c.out_shape.w, c.out_shape.c, c.row());
    let cout_g = c_out / c.group;
    let cin_g = c.in_shape.c / c.group;
    let n = x.len() / il;
    let mut y = vec![0f32; n * ol];
    y.par_chunks_mut(ol)
        .zip(x.par_chunks(il))
        .for_each(|(o, img)| {
            let mut cols = vec![0f32; m * row];
            let mut acc = vec![0f32; m * cout_g];
            for g in 0..c.group {
                im2col_f32(c, img, g * cin_g, cin_g, &mut cols);
                let wg = &p.w[g * cout_g * row..(g + 1) * cout_g * row];
                general_mat_mul(
                    1.0,
                    &ArrayView2::from_shape((m, row), &cols[..]).unwrap(),
                    &ArrayView2::from_shape((cout_g, row), wg).unwrap().t(),
                    0.0,
                    &mut ArrayViewMut2::from_shape((m, cout_g), &mut acc[..]).unwrap(),
                );
                for px in 0..m {
                    for j in 0..cout_g {
                        let co = g * cout_g + j;
                        o[px * c_out + co] = acc[px * cout_g + j] + p.b[co];
                    }
                }
            }
        });
    y
}

fn pool_f32(
    x: &[f32],
    win: &super::Window,
    ins: super::Shape,
    outs: super::Shape,
    f: impl Fn(&[usize], &[f32], usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let (il, ol, c) = (ins.len().max(1), outs.len().max(1), ins.c);
    let n = x.len() / il;
    let mut y = vec![0f32; n * ol];
    y.par_chunks_mut(ol)
        .zip(x.par_chunks(il))
        .for_each(|(o, img)| {
            for_each_window(win, ins, outs, |p, cells| {
                for ch in 0..c {
                    o[p * c + ch] = f(cells, img, c, ch);
                }
            })
        });
    y
}
