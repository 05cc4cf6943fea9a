//! Backward through the whole graph: from the gradient of the loss w.r.t. the real logits to
//! the gradients of every conv/linear layer's real weights and biases.
//!
//! The forward that training uses is the deployed integer forward itself, run with every
//! activation kept ([`Tape::Quant`], bytes: a quarter of what f32 would hold). The
//! straight-through estimator treats rounding as identity and clamping as a gate: an output
//! byte at its clamp bound (`lo`/`hi`, which include a fused ReLU's zero) passes no gradient.
//! [`Tape::Float`] holds the float twin's activations instead, for gradient checks.

use std::borrow::Cow;

use rayon::prelude::*;

use super::float::RealParams;
use super::grad::{add_into, GradPath, LayerGrad};
use super::pool_grad::unflatten_nchw;
use super::{ActId, Graph, Layer, Op, QBatch};
use crate::{Error, Result};

/// Layer gradients, and the input gradient when asked for.
pub type FullGrads = (Vec<Option<LayerGrad>>, Option<Vec<f32>>);

/// Saved activations of one forward pass.
#[derive(Debug, Clone)]
pub enum Tape {
    /// The integer forward's activations (storage bytes).
    Quant(Vec<Option<QBatch>>),
    /// The float twin's activations (real values).
    Float(Vec<Option<Vec<f32>>>),
}

impl Op {
    /// Output byte range the op clamps to, if it has one.
    pub fn clamp_range(&self) -> Option<(u8, u8)> {
        match self {
            Op::Conv(c) => Some((c.requant.lo, c.requant.hi)),
            Op::Linear(l) => Some((l.requant.lo, l.requant.hi)),
            Op::Add(a) => Some((a.lo, a.hi)),
            Op::Requantize(r) => Some((r.lo, r.hi)),
            Op::BiasAdd(b) => Some((b.lo, b.hi)),
            Op::GlobalAvgPool(p) => Some((p.requant.lo, p.requant.hi)),
            Op::AvgPool(_) => Some((0, 255)),
            Op::MaxPool(_) | Op::Flatten | Op::Permute(_) | Op::Pad(_) => None,
            // Its derivative table is zero where the output saturates.
            Op::Pointwise(_) => None,
            Op::Mul(m) => Some((m.lo, m.hi)),
            Op::Dense(d) => Some((d.lo, d.hi)),
            Op::Quantize(q) => Some((q.lo, q.hi)),
            Op::Concat(c) => Some((c.lo, c.hi)),
            // A float output: gated by its activation's bounds (`Graph::mask`).
            Op::FloatConv(_) | Op::Div(_) | Op::LayerNorm(_) | Op::Clamp => None,
        }
    }
}

impl Graph {
    /// Integer forward of `n` images keeping every activation.
    pub fn forward_tape(&self, images: &[u8], n: usize) -> Result<Tape> {
        Ok(Tape::Quant(self.run(images, n, true)?))
    }

    /// Float-twin forward keeping every activation (see [`Graph::forward_float`]).
    pub fn forward_float_tape(
        &self,
        images: &[u8],
        n: usize,
        params: &[Option<RealParams>],
    ) -> Result<Tape> {
        Ok(Tape::Float(self.forward_float(images, n, params)?))
    }

    /// Real-valued logits (`n × classes`) of a tape.
    pub fn tape_logits(&self, tape: &Tape) -> Vec<f32> {
        match tape {
            Tape::Quant(v) => {
                let q = self.acts[self.output].q;
                v[self.output]
                    .as_ref()
                    .map(|b| b.data.iter().map(|&x| q.dequantize(x)).collect())
                    .unwrap_or_default()
            }
            Tape::Float(v) => v[self.output].clone().unwrap_or_default(),
        }
    }

    /// The logits training losses are taken on (DESIGN.md, "Losses see real logits"): where the
    /// output is a linear layer with no fused activation, its real value before requantization
    /// ([`super::Linear::real_outputs`]; so a calibrated output range narrower than what training
    /// produces never cuts the loss gradient off), else the deployed logits. The flag says
    /// which: `true` means the output clamp must not gate the gradient
    /// ([`Graph::backward_full`]'s `unclamped_output`).
    /// A float output (a float head) is real already: its values, never clamped.
    pub fn loss_logits(&self, tape: &Tape) -> (Vec<f32>, bool) {
        if let (Tape::Quant(v), true) = (tape, self.real_output) {
            if let Some(r) = self.real_logits(v) {
                return (r, true);
            }
        }
        if let (Tape::Quant(v), Some(layer)) = (tape, self.output_layer()) {
            if let (Op::Linear(l), super::Activation::None) = (&layer.op, layer.activation) {
                if let Some(x) = v[layer.inputs[0]].as_ref() {
                    return (l.real_outputs(x, self.acts[self.output].q.scale), true);
                }
            }
        }
        (self.tape_logits(tape), false)
    }

    /// The layer that computes the graph's output.
    fn output_layer(&self) -> Option<&Layer> {
        self.layers.iter().rev().find(|l| l.output == self.output)
    }

    /// Gradients of every conv/linear layer (indexed like `layers`; `None` for other layers or
    /// where no gradient arrives) given `dlogits = ∂L/∂logits` (real). `params` are the real
    /// weights the forward used ([`Graph::real_params`], or the float twin's).
    pub fn backward(
        &self,
        tape: &Tape,
        params: &[Option<RealParams>],
        dlogits: &[f32],
        path: GradPath,
    ) -> Result<Vec<Option<LayerGrad>>> {
        Ok(self
            .backward_full(tape, params, dlogits, path, false, false)?
            .0)
    }

    /// [`Graph::backward`], and also the gradient w.r.t. the (real) input activation if asked.
    /// With `unclamped_output`, `dlogits` is the gradient w.r.t. the output layer's value before
    /// requantization ([`Graph::loss_logits`]), so the output's clamp gate is not applied.
    pub fn backward_full(
        &self,
        tape: &Tape,
        params: &[Option<RealParams>],
        dlogits: &[f32],
        path: GradPath,
        input_grad: bool,
        unclamped_output: bool,
    ) -> Result<FullGrads> {
        if path == GradPath::Int8 && matches!(tape, Tape::Float(_)) {
            return Err(Error::Shape(
                "the int8 backward needs the integer forward's tape".to_string(),
            ));
        }
        let mut produced = vec![false; self.acts.len()];
        for l in &self.layers {
            produced[l.output] = true;
        }
        produced[self.input.act] = input_grad;
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.acts.len()];
        grads[self.output] = Some(dlogits.to_vec());
        let mut out: Vec<Option<LayerGrad>> = vec![None; self.layers.len()];
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let Some(mut gy) = grads[layer.output].take() else {
                continue;
            };
            if !(unclamped_output && layer.output == self.output) {
                self.mask(tape, layer, &mut gy);
            }
            let x_id = layer.inputs[0];
            let need_dx = produced[x_id];
            let gx: Option<Vec<f32>> = match &layer.op {
                Op::Conv(c) => {
                    let (g, dx) = match (path, tape) {
                        (GradPath::Int8, Tape::Quant(v)) => c.backward_i8(
                            saved_q(v, x_id)?,
                            &self.acts[x_id].scales(),
                            &gy,
                            need_dx,
                        ),
                        _ => c.backward_f32(
                            &self.real_input(tape, x_id)?,
                            &gy,
                            &weights(params, i)?.w,
                            need_dx,
                        ),
                    };
                    let dx = match (dx, self.batch_stats.get(&i), tape) {
                        (Some(mut dx), Some(stats), Tape::Quant(v)) => {
                            let x = saved_q(v, x_id)?;
                            let f = c.real_weights();
                            let info = &self.acts[x_id];
                            super::batch_norm::normalized_input_grad(
                                &mut dx, x, info, stats, &f, &g,
                            );
                            Some(dx)
                        }
                        (dx, _, _) => dx,
                    };
                    out[i] = Some(g);
                    dx
                }
                Op::Linear(l) => {
                    let (g, dx) = match (path, tape) {
                        (GradPath::Int8, Tape::Quant(v)) => {
                            l.backward_i8(saved_q(v, x_id)?, self.acts[x_id].q.scale, &gy, need_dx)
                        }
                        _ => l.backward_f32(
                            &self.real_input(tape, x_id)?,
                            &gy,
                            &weights(params, i)?.w,
                            need_dx,
                        ),
                    };
                    out[i] = Some(g);
                    dx
                }
                Op::Add(a) => {
                    if let Some(&b) = layer.inputs.get(1) {
                        if produced[b] {
                            let sign = if a.sub { -1.0 } else { 1.0 };
                            let (lx, lb) = (self.acts[x_id].shape.len(), self.acts[b].shape.len());
                            let gb = if lb == lx {
                                gy.iter().map(|g| sign * g).collect()
                            } else {
                                // A broadcast `b` (one value per sample or per channel, used
                                // at `i mod lb`): the sum of the gradients it was used for.
                                let (lx, lb) = (lx.max(1), lb.max(1));
                                let mut gb = vec![0f32; gy.len() / lx * lb];
                                for (s, g) in gy.chunks_exact(lx).enumerate() {
                                    for (i, &v) in g.iter().enumerate() {
                                        gb[s * lb + i % lb] += sign * v;
                                    }
                                }
                                gb
                            };
                            accumulate(&mut grads, b, gb);
                        }
                    }
                    Some(gy)
                }
                Op::Dense(d) => {
                    // f32 on either path: the weights are float (the int8 path passes no real
                    // weights; the layer's own are the real ones).
                    let x = self.real_input(tape, x_id)?;
                    let w = params.get(i).and_then(|p| p.as_ref());
                    let w = w.map_or(&d.weights[..], |p| &p.w[..]);
                    let (g, dx) = d.backward(&x, &gy, w, need_dx);
                    out[i] = Some(g);
                    dx
                }
                Op::FloatConv(c) => {
                    let x = self.real_input(tape, x_id)?;
                    let w = params.get(i).and_then(|p| p.as_ref());
                    let w = w.map_or(&c.weights[..], |p| &p.w[..]);
                    let (g, dx) = c.backward(&x, &gy, w, need_dx);
                    out[i] = Some(g);
                    dx
                }
                // Straight through: the gate was the mask.
                Op::Requantize(_) | Op::Quantize(_) | Op::Clamp => Some(gy),
                Op::LayerNorm(l) => Some(l.backward(&self.real_input(tape, x_id)?, &gy)),
                Op::BiasAdd(b) => {
                    let c = self.acts[layer.output].shape.c;
                    out[i] = Some(LayerGrad {
                        dw: vec![],
                        db: b.bias_grad(&gy, c),
                    });
                    Some(gy)
                }
                Op::Mul(m) => {
                    let b = layer.inputs[1];
                    let (ra, rb) = (self.real_input(tape, x_id)?, self.real_input(tape, b)?);
                    let (ga, gb) = m.backward(self.acts[x_id].shape, &ra, &rb, &gy);
                    if produced[b] {
                        accumulate(&mut grads, b, gb);
                    }
                    Some(ga)
                }
                Op::Div(d) => {
                    let b = layer.inputs[1];
                    let (ra, rb) = (self.real_input(tape, x_id)?, self.real_input(tape, b)?);
                    let (ga, gb) = d.backward(self.acts[x_id].shape, &ra, &rb, &gy);
                    if produced[b] {
                        accumulate(&mut grads, b, gb);
                    }
                    Some(ga)
                }
                Op::Pointwise(p) => Some(match tape {
                    // A float function (see `float_ops`): its derivative at the real input.
                    Tape::Quant(_) if self.acts[layer.output].float => {
                        p.backward_real(&self.real_input(tape, x_id)?, &gy)
                    }
                    Tape::Quant(v) => p.backward_q(&saved_q(v, x_id)?.data, &gy),
                    Tape::Float(v) => p.backward_real(saved_f(v, x_id)?, &gy),
                }),
                Op::Flatten => Some(unflatten_nchw(self.acts[x_id].shape, &gy)),
                Op::Permute(p) => Some(p.backward(&gy)),
                Op::Pad(p) => Some(p.backward(&gy)),
                Op::MaxPool(p) => Some(match tape {
                    Tape::Quant(v) if self.acts[x_id].float => {
                        p.backward(&saved_q(v, x_id)?.reals(), &gy)
                    }
                    Tape::Quant(v) => match &v[layer.output] {
                        // The forward's bytes for these inputs: route by them.
                        Some(y) if !self.acts[layer.output].float => {
                            p.backward_q(&saved_q(v, x_id)?.data, &y.data, &gy)
                        }
                        _ => p.backward(&saved_q(v, x_id)?.data, &gy),
                    },
                    Tape::Float(v) => p.backward(saved_f(v, x_id)?, &gy),
                }),
                Op::Concat(c) => {
                    let mut parts = c.backward(&gy).into_iter();
                    let first = parts.next();
                    for (&b, g) in layer.inputs[1..].iter().zip(parts) {
                        if produced[b] {
                            accumulate(&mut grads, b, g);
                        }
                    }
                    first
                }
                Op::AvgPool(p) => Some(p.backward(gy.len() / p.out_shape.len().max(1), &gy)),
                Op::GlobalAvgPool(p) => Some(p.backward(gy.len() / p.in_shape.c.max(1), &gy)),
            };
            if let (Some(gx), true) = (gx, need_dx) {
                accumulate(&mut grads, x_id, gx);
            }
        }
        let gin = if input_grad {
            grads[self.input.act].take()
        } else {
            None
        };
        Ok((out, gin))
    }

    /// Zero the gradient where the layer's output sat on a clamp bound.
    fn mask(&self, tape: &Tape, layer: &Layer, gy: &mut [f32]) {
        match tape {
            Tape::Quant(v) if self.acts[layer.output].float => {
                // A float activation: its fused activation's gate, as on the float twin.
                let (lo, hi) = layer.activation.bounds();
                let Some(y) = v[layer.output].as_ref() else {
                    return;
                };
                if lo.is_finite() || hi.is_finite() {
                    for (g, &r) in gy.iter_mut().zip(y.reals().iter()) {
                        if r <= lo || r >= hi {
                            *g = 0.0;
                        }
                    }
                }
            }
            Tape::Quant(v) => {
                let (Some((lo, hi)), Some(y)) = (layer.op.clamp_range(), v[layer.output].as_ref())
                else {
                    return;
                };
                // A select rather than a conditional store, so the loop vectorizes; in
                // parallel blocks, since every element is on its own (it was a tenth of the
                // backward's time, serial, in a profile of an OEU run).
                gy.par_chunks_mut(1 << 15)
                    .zip(y.data.par_chunks(1 << 15))
                    .for_each(|(gy, y)| gate(gy, y, lo, hi));
            }
            Tape::Float(v) => {
                let (lo, hi) = layer.activation.bounds();
                let Some(y) = v[layer.output].as_ref() else {
                    return;
                };
                if lo.is_finite() || hi.is_finite() {
                    for (g, &r) in gy.iter_mut().zip(y) {
                        if r <= lo || r >= hi {
                            *g = 0.0;
                        }
                    }
                }
            }
        }
    }

    /// Real values of a saved activation.
    fn real_input<'t>(&self, tape: &'t Tape, a: ActId) -> Result<Cow<'t, [f32]>> {
        match tape {
            Tape::Quant(v) => Ok(super::float_seg::real_values(&self.acts[a], saved_q(v, a)?)),
            Tape::Float(v) => Ok(Cow::Borrowed(saved_f(v, a)?)),
        }
    }
}

super::simd::avx2_dispatch! {
    /// The straight-through clamp gate: `g = 0` where the saved output byte is at or beyond a
    /// clamp bound (`q ≤ lo` or `q ≥ hi`).
    gate => gate_body(gy: &mut [f32], y: &[u8], lo: u8, hi: u8)
}

#[inline(always)]
fn gate_body(gy: &mut [f32], y: &[u8], lo: u8, hi: u8) {
    for (g, &q) in gy.iter_mut().zip(y) {
        *g = if q <= lo || q >= hi { 0.0 } else { *g };
    }
}

fn accumulate(grads: &mut [Option<Vec<f32>>], a: ActId, g: Vec<f32>) {
    match &mut grads[a] {
        Some(acc) => add_into(acc, &g),
        slot => *slot = Some(g),
    }
}

fn saved_q(v: &[Option<QBatch>], a: ActId) -> Result<&QBatch> {
    v[a].as_ref()
        .ok_or_else(|| Error::Shape(format!("activation {a} was not kept for backward")))
}

fn saved_f(v: &[Option<Vec<f32>>], a: ActId) -> Result<&Vec<f32>> {
    v[a].as_ref()
        .ok_or_else(|| Error::Shape(format!("activation {a} was not kept for backward")))
}

fn weights(params: &[Option<RealParams>], i: usize) -> Result<&RealParams> {
    params
        .get(i)
        .and_then(|p| p.as_ref())
        .ok_or_else(|| Error::Shape(format!("no real weights for layer {i}")))
}
