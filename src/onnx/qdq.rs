//! QuantizeLinear and DequantizeLinear: the seams of a QDQ model, and the input/output ends of a
//! QOperator one.

use crate::graph::{Activation, Layer, Op, QParams, Requantize, Shape};
use crate::Result;

use super::blocked;
use super::proto::{ConstData, ConstTensor};
use super::value::{DeqConst, Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Per-tensor activation parameters from the node's scale input `si` and zero-point input
    /// `zi` (absent zero point: uint8 0, as ONNX says).
    pub fn act_qparams(&self, ctx: &NodeCtx, si: usize, zi: usize) -> Result<QParams> {
        let s = self.konst(ctx, si)?;
        let ConstData::F32(sv) = &s.data else {
            return Err(ctx.bad(format!(
                "scale '{}' is {}, expected float",
                s.name,
                s.type_name()
            )));
        };
        let [scale] = sv[..] else {
            return Err(ctx.unsupported(format!(
                "activation scale '{}' has {} values; only per-tensor activation quantization is supported",
                s.name,
                sv.len()
            )));
        };
        if !(scale.is_finite() && scale > 0.0) {
            return Err(ctx.bad(format!(
                "scale '{}' = {scale} is not a positive number",
                s.name
            )));
        }
        let (zero_point, signed) = match ctx.input(zi) {
            None => (0, false),
            Some(_) => {
                let z = self.konst(ctx, zi)?;
                match &z.data {
                    ConstData::U8(v) if v.len() == 1 => (v[0] as i32, false),
                    ConstData::I8(v) if v.len() == 1 => (v[0] as i32 + 128, true),
                    ConstData::U8(_) | ConstData::I8(_) => {
                        return Err(ctx.unsupported(format!(
                            "zero point '{}' has {} values; only per-tensor activation quantization is supported",
                            z.name,
                            z.len()
                        )))
                    }
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "zero point '{}' is {}; activations must be uint8 or int8",
                            z.name,
                            z.type_name()
                        )))
                    }
                }
            }
        };
        Ok(QParams {
            scale,
            zero_point,
            signed,
        })
    }

    pub(super) fn quantize_linear(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let out = ctx.output()?.to_string();
        if self.is_float_initializer(x) {
            return self.quantize_weight(ctx, x, out);
        }
        if let Some(f) = self.channel_zero_points(ctx)? {
            return self.fake_quantize(ctx, x, f, out);
        }
        let (q, channel_scales) = self.act_qparams_channels(ctx, 1, 2)?;
        if !channel_scales.is_empty() {
            return self.quantize_per_channel(ctx, x, q, channel_scales, out);
        }
        let v = match self.value(ctx, x)? {
            Value::FloatInput(pre, flatten) => {
                if self.input_has_fns() && !self.is_input_chain_end(x) {
                    return Err(ctx.unsupported(
                        "the float input is quantized at a point other than the end of its chain \
                         of float functions",
                    ));
                }
                let (name, raw_shape) = self.input.clone().expect("input is set before nodes");
                let shape = pre.last().map(|p| p.out_shape).unwrap_or(raw_shape);
                if let Some(spec) = &self.input_spec {
                    if self.acts[spec.act].float {
                        return Err(ctx.unsupported(
                            "the float input is both read by a float layer and quantized",
                        ));
                    }
                    if spec.q != q {
                        return Err(ctx.unsupported(
                            "the input is quantized twice with different parameters",
                        ));
                    }
                    Value::Quant(spec.act)
                } else {
                    let act = self.new_act(&out, shape, q);
                    self.input_spec = Some(crate::graph::InputSpec {
                        name,
                        shape: raw_shape,
                        q,
                        act,
                        pre_pool: pre.first().cloned(),
                        norm: None,
                        fns: std::mem::take(&mut self.input_fns),
                        post_fns: std::mem::take(&mut self.input_post_fns),
                    });
                    if flatten && shape.h * shape.w != 1 {
                        // The model flattened its float input before quantizing it.
                        let flat = Shape::flat(shape.len());
                        let id = self.push(
                            ctx,
                            Op::Flatten,
                            Activation::None,
                            vec![act],
                            flat,
                            q,
                            &out,
                            vec![],
                        );
                        Value::Quant(id)
                    } else {
                        Value::Quant(act)
                    }
                }
            }
            Value::Deq(a) if self.acts[a].q == q => Value::Quant(a),
            Value::Deq(a) => Value::Quant(self.requantize(ctx, a, q, Activation::None, &out)),
            Value::Pending(p, node) => {
                let first = self.layers.len();
                // A Concat's pending parts name their own layers; the Concat is the last.
                let parts_first = matches!(&*p, Pending::Concat { inputs, .. }
                    if inputs.iter().any(|i| i.act().is_none()));
                let id = self.materialize(ctx, *p, q, &out)?;
                // Name the (first) new layer after its compute node, not after the
                // QuantizeLinear; a pooling materialized behind it keeps the latter's name.
                let named = if parts_first {
                    self.layers.last_mut()
                } else {
                    self.layers.get_mut(first)
                };
                if let Some(l) = named {
                    l.name = node;
                }
                Value::Quant(id)
            }
            Value::Float(a) => Value::Quant(self.quantize_float(ctx, a, q, &out)),
            Value::Quant(_) => return Err(ctx.bad("input is already quantized")),
            Value::DeqConst(_) => {
                return Err(ctx.unsupported("quantizing a constant at run time is not supported"))
            }
        };
        self.values.insert(out, v);
        Ok(())
    }

    /// Add a layer that maps activation `a` to parameters `q` (and clamps for `act`).
    pub fn requantize(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        q: QParams,
        act: Activation,
        out: &str,
    ) -> usize {
        let qi = self.acts[a].q;
        let (lo, hi) = act.range(&q);
        let op = Requantize {
            in_zero_point: qi.zero_point,
            ratio: qi.scale / q.scale,
            out_zero_point: q.zero_point,
            lo,
            hi,
            identity: qi.scale == q.scale && qi.zero_point == q.zero_point,
        };
        let shape = self.acts[a].shape;
        let id = self.new_act(out, shape, q);
        self.layers.push(Layer {
            name: ctx.name(),
            op: Op::Requantize(op),
            activation: act,
            inputs: vec![a],
            output: id,
            params: vec![],
            binding: None,
        });
        id
    }

    pub(super) fn dequantize_linear(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let out = ctx.output()?.to_string();
        if let Some(f) = self.fake_quantized.get(x).cloned() {
            // The DequantizeLinear of a tensor kept in float: its values, if it reads them
            // with the same parameters.
            if self.channel_zero_points(ctx)?.as_ref() != Some(&f) {
                return Err(ctx.unsupported(format!(
                    "it reads '{x}' with other parameters than its QuantizeLinear wrote it with \
                     (per-channel zero points)"
                )));
            }
            let v = self
                .values
                .get(x)
                .cloned()
                .ok_or_else(|| ctx.bad("input is missing"))?;
            self.values.insert(out, v);
            return Ok(());
        }
        if let Some(v) = self.values.get(x).cloned() {
            let Value::Quant(a) = v else {
                return Err(ctx.bad("input is not a quantized tensor"));
            };
            if self.acts[a].per_channel() || self.scale_len(ctx, 1)? > 1 {
                return self.dequantize_per_channel(ctx, a, out);
            }
            let q = self.act_qparams(ctx, 1, 2)?;
            let a = if self.acts[a].q == q {
                a
            } else {
                // Same bytes read with other parameters: a copy under the new parameters.
                let copy = self.requantize(ctx, a, self.acts[a].q, Activation::None, &out);
                self.acts[copy].q = q;
                copy
            };
            self.values.insert(out, Value::Deq(a));
            return Ok(());
        }
        let q = self.konst(ctx, 0)?;
        let s = self.konst(ctx, 1)?;
        let ConstData::F32(scale) = s.data else {
            return Err(ctx.bad(format!("scale '{}' is not float", s.name)));
        };
        if scale.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(ctx.bad(format!(
                "scale '{}' has a non-positive or non-finite value",
                s.name
            )));
        }
        let zp = match ctx.input(2) {
            None => None,
            Some(_) => Some(self.konst(ctx, 2)?),
        };
        let zero_point = match &zp {
            None => vec![0],
            Some(z) => z
                .to_i64()
                .ok_or_else(|| ctx.bad(format!("zero point '{}' is not an integer", z.name)))?,
        };
        if let Some(bits) = q.bits() {
            check_zero_point(ctx, &q, bits, zp.as_ref(), &zero_point)?;
        }
        let rank = q.dims.len() as i64;
        let axis = ctx.attrs().int("axis", 1).map_err(|e| ctx.bad(e))?;
        let axis = if axis < 0 { axis + rank } else { axis };
        let block = ctx.attrs().int("block_size", 0).map_err(|e| ctx.bad(e))?;
        let blocks = if block != 0 {
            let axis = usize::try_from(axis).unwrap_or(usize::MAX);
            let b = blocked::check(
                &q.dims,
                axis,
                block,
                &s.dims,
                zp.as_ref().map(|z| z.dims.as_slice()),
            )
            .map_err(|e| ctx.bad(format!("'{}': {e}", q.name)))?;
            Some(b)
        } else {
            None
        };
        if blocks.is_none()
            && scale.len() > 1
            && (axis < 0 || axis >= rank || q.dims[axis as usize] != scale.len())
        {
            return Err(ctx.bad(format!(
                "{} scales do not match axis {axis} of '{}' with dimensions {:?}",
                scale.len(),
                q.name,
                q.dims
            )));
        }
        if zero_point.len() != 1 && zero_point.len() != scale.len() {
            return Err(ctx.bad("zero point and scale have different lengths"));
        }
        if !matches!(
            q.data,
            ConstData::I8(_)
                | ConstData::U8(_)
                | ConstData::I32(_)
                | ConstData::I4(_)
                | ConstData::U4(_)
        ) {
            return Err(ctx.unsupported(format!(
                "dequantizing a {} constant ('{}')",
                q.type_name(),
                q.name
            )));
        }
        let dq = DeqConst {
            q,
            scale,
            zero_point,
            axis: axis.max(0) as usize,
            blocks,
        };
        self.values.insert(out, Value::DeqConst(dq));
        Ok(())
    }
}

/// An 8- or 4-bit constant's zero point must be of the same type (ONNX's rule), so it lies in
/// the type's range; a wider zero point with an out-of-range value is named with the range it
/// leaves (an asymmetric uint8 weight's zero point may be anywhere in 0..=255, not beyond).
fn check_zero_point(
    ctx: &NodeCtx,
    q: &ConstTensor,
    bits: u32,
    zp: Option<&ConstTensor>,
    values: &[i64],
) -> Result<()> {
    let Some(z) = zp else {
        return Ok(());
    };
    let levels = 1i64 << bits;
    let (lo, hi) = if q.is_unsigned() {
        (0, levels - 1)
    } else {
        (-levels / 2, levels / 2 - 1)
    };
    if let Some(v) = values.iter().find(|v| !(lo..=hi).contains(*v)) {
        return Err(ctx.bad(format!(
            "zero point '{}' holds {v}, out of the {} range {lo}..={hi} of '{}'",
            z.name,
            q.type_name(),
            q.name
        )));
    }
    if z.type_name() != q.type_name() {
        return Err(ctx.bad(format!(
            "zero point '{}' is {}, the data '{}' is {} (they must be the same type)",
            z.name,
            z.type_name(),
            q.name,
            q.type_name()
        )));
    }
    Ok(())
}
