//! Float segments: runs of float ops between a DequantizeLinear (or the model's float input)
//! and a QuantizeLinear (or the model's float output).
//!
//! Why: quantizing only some op types (`op_types_to_quantize=["Conv"]`) or excluding nodes
//! (`nodes_to_exclude`) leaves whole stretches of a network in float: after the CNN's last conv
//! a float Relu → MaxPool → Flatten → Gemm → Relu → Gemm, a first MatMul on the float input, a
//! float Conv between quantized layers. Their values are not on any quantization grid, so they
//! cannot be bytes; such an activation is a *float activation* ([`super::ActInfo::float`]): the
//! batch holds f32 values ([`super::QBatch::from_real`]) and every op that reads one takes its
//! real values. The ops of a segment: [`super::FloatConv`] and [`super::Dense`] (float weights,
//! trained in f32), `Op::Clamp` (a float Relu/Clip, [`clamp_real`]), MaxPool and Flatten on real values, and
//! [`Quantize`] where the segment meets its QuantizeLinear. Each computes in f32 what
//! onnxruntime computes (optimizations off), so a segment agrees with it as its float ops do.
//!
//! Backward: a float activation's gradient passes its fused activation's gate (zero where a
//! Relu/Clip held the value at a bound), and [`Quantize`] is straight through with the clamp
//! gate, like every requantization of the graph.

use std::borrow::Cow;

use super::qparams::quantize_reals;
use super::tensor::{QBatch, Shape, Store};
use super::{ActInfo, Activation, Graph, Layer, MaxPool, Op};
use crate::{Error, Result};

/// A float op's first input: borrowed, or moved in when no later layer reads it, so an op
/// that keeps its input's shape (a Relu/Clip, a chain of float functions, Add/Mul/Div) writes
/// its result over its input's values instead of copying them into a new buffer (each such
/// copy, with a zeroed allocation, was a tenth of an NNCF GELU model's inference).
pub enum Input<'a> {
    Borrowed(&'a QBatch),
    Owned(QBatch),
}

impl Input<'_> {
    /// The batch.
    pub fn batch(&self) -> &QBatch {
        match self {
            Input::Borrowed(b) => b,
            Input::Owned(b) => b,
        }
    }

    /// The real values (of activation `a`) as a vector to compute in: the batch's own when it
    /// was moved in and holds reals, else a copy.
    pub fn into_reals(self, a: &ActInfo) -> Vec<f32> {
        match self {
            Input::Owned(QBatch {
                data: Store::Reals(r),
                ..
            }) if a.float => r,
            other => real_values(a, other.batch()).into_owned(),
        }
    }
}

impl Graph {
    /// Run layer `layer` of a float segment (one with a float output, or a [`Quantize`]) on
    /// `x`, its first input.
    pub fn float_op(&self, layer: &Layer, x: Input<'_>) -> Result<QBatch> {
        let info = &self.acts[layer.inputs[0]];
        let shape = self.acts[layer.output].shape;
        let n = x.batch().n;
        let mut y = match &layer.op {
            Op::Quantize(q) => return Ok(q.forward(&real_values(info, x.batch()), n, shape)),
            Op::Clamp => x.into_reals(info),
            Op::Pointwise(p) => {
                let mut y = x.into_reals(info);
                p.apply_real(&mut y);
                y
            }
            // Reads the bytes or reals itself.
            Op::Dense(d) => d.real_outputs(info, x.batch()),
            _ => {
                let r = real_values(info, x.batch());
                match &layer.op {
                    Op::FloatConv(c) => c.forward(&r),
                    Op::MaxPool(p) => p.forward_real(&r, n),
                    Op::Flatten => super::eltwise::nchw_order(info.shape, &r),
                    Op::Permute(p) => p.gather(&r),
                    Op::Pad(p) => p.fill(&r, 0.0),
                    Op::GlobalAvgPool(p) => p.forward_real(&r),
                    Op::AvgPool(p) => p.forward_real(&r),
                    Op::LayerNorm(l) => l.forward_real(&r),
                    other => {
                        return Err(Error::Shape(format!(
                            "layer '{}' ({}) cannot write a float activation",
                            layer.name,
                            other.kind()
                        )))
                    }
                }
            }
        };
        clamp_real(layer.activation, &mut y);
        Ok(QBatch::from_real(n, shape, y))
    }
}

/// QuantizeLinear of a float activation: `clamp(round_half_even(x / scale) + zp, lo, hi)`.
#[derive(Debug, Clone)]
pub struct Quantize {
    pub scale: f32,
    pub zero_point: i32,
    pub lo: u8,
    pub hi: u8,
    /// One scale per channel (NNCF quantizes a depthwise conv's input so, whatever float op made
    /// it; see [`super::channel_act`]); empty: `scale` for every element.
    pub channel_scales: Vec<f32>,
}

impl Quantize {
    /// The bytes of real values `x`, as onnxruntime's QuantizeLinear gives them.
    pub fn forward(&self, x: &[f32], n: usize, shape: Shape) -> QBatch {
        let (lo, hi, zp) = (self.lo as f32, self.hi as f32, self.zero_point as f32);
        let mut data = vec![0u8; x.len()];
        if self.channel_scales.is_empty() {
            quantize_reals(x, self.scale, zp, lo, hi, &mut data);
        } else {
            // NHWC: a run of `c` values holds one of each channel.
            let c = self.channel_scales.len();
            for (o, v) in data.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((o, &v), &s) in o.iter_mut().zip(v).zip(&self.channel_scales) {
                    *o = super::qparams::rounded_byte(v / s, zp, lo, hi);
                }
            }
        }
        QBatch {
            n,
            shape,
            data: data.into(),
        }
    }
}

/// Clamp real values to the activation's bounds (NaN stays NaN, as in onnxruntime's Relu).
pub fn clamp_real(act: Activation, y: &mut [f32]) {
    let (lo, hi) = act.bounds();
    if lo.is_finite() || hi.is_finite() {
        clamp_values(y, lo, hi);
    }
}

super::simd::avx2_dispatch! {
    /// `v` below `lo` becomes `lo`, above `hi` becomes `hi`, anything else (NaN included) stays,
    /// written as selects so the loop vectorizes (as branches it was 9 % of an inference whose
    /// head runs in float).
    clamp_values => clamp_values_portable(y: &mut [f32], lo: f32, hi: f32)
}

#[inline(always)]
fn clamp_values_portable(y: &mut [f32], lo: f32, hi: f32) {
    for v in y.iter_mut() {
        let x = *v;
        *v = if x < lo {
            lo
        } else if x > hi {
            hi
        } else {
            x
        };
    }
}

/// Real values of a batch of activation `a`: its floats, or its bytes dequantized.
/// Borrowed when the batch holds reals: a float segment's ops read their input in place.
pub fn real_values<'a>(a: &ActInfo, x: &'a QBatch) -> Cow<'a, [f32]> {
    if a.float {
        x.reals()
    } else {
        Cow::Owned(a.dequantize_all(&x.data))
    }
}

impl MaxPool {
    /// [`MaxPool::forward`] on real values (`n` samples).
    pub fn forward_real(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let mut y = vec![f32::NEG_INFINITY; n * ol];
        let table =
            super::pool_cells::WindowCells::new(&self.window, self.in_shape, self.out_shape);
        for (o, img) in y.chunks_exact_mut(ol).zip(x.chunks_exact(il)) {
            for (p, cells) in table.iter() {
                let dst = &mut o[p * c..(p + 1) * c];
                for &cell in cells {
                    for (d, &v) in dst.iter_mut().zip(&img[cell * c..(cell + 1) * c]) {
                        // A select, not a conditional store, so the channel loop vectorizes.
                        *d = if v > *d { v } else { *d };
                    }
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Window;

    #[test]
    fn quantize_rounds_half_to_even_and_clamps() {
        let q = Quantize {
            scale: 0.5,
            zero_point: 10,
            lo: 10,
            hi: 255,
            channel_scales: vec![],
        };
        let b = q.forward(&[1.25, 0.75, -3.0, 1000.0], 1, Shape::flat(4));
        // 2.5 → 2, 1.5 → 2, −6 → 4 (clamped to 10), 2000 → 255.
        assert_eq!(b.data, vec![12, 12, 10, 255]);
    }

    #[test]
    fn quantize_per_channel_takes_each_element_s_channel_scale() {
        let q = Quantize {
            scale: 1.0,
            zero_point: 10,
            lo: 0,
            hi: 255,
            channel_scales: vec![0.5, 0.25],
        };
        // NHWC, 2 pixels × 2 channels: channel 0 steps by 0.5, channel 1 by 0.25.
        let shape = Shape { h: 1, w: 2, c: 2 };
        let b = q.forward(&[1.25, 1.25, -1.0, 0.125], 1, shape);
        // 2.5 → 2, 5 → 5, −2 → −2, 0.5 → 0 (half to even); + 10.
        assert_eq!(b.data, vec![12, 15, 8, 10]);
    }

    #[test]
    fn real_batches_round_trip() {
        let v = [1.5f32, -0.0, f32::MAX, 3e-41];
        let b = QBatch::from_real(1, Shape::flat(4), v.to_vec());
        assert_eq!(&b.reals()[..], &v[..]);
    }

    #[test]
    fn max_pool_on_reals() {
        let p = MaxPool {
            window: Window {
                kh: 2,
                kw: 2,
                stride_h: 2,
                stride_w: 2,
                pads: [0; 4],
                dil_h: 1,
                dil_w: 1,
            },
            in_shape: Shape { h: 2, w: 2, c: 2 },
            out_shape: Shape { h: 1, w: 1, c: 2 },
        };
        let x = [-1.0, 5.0, -2.0, 4.0, -0.5, 3.0, -3.0, 6.0];
        assert_eq!(p.forward_real(&x, 1), vec![-0.5, 6.0]);
        let mut y = vec![-1.0, 0.5, 7.0];
        clamp_real(Activation::Clip { min: 0.0, max: 6.0 }, &mut y);
        assert_eq!(y, vec![0.0, 0.5, 6.0]);
    }
}
