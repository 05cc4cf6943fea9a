//! Shape-only nodes that leave the values and their NHWC storage as they are: a Pad that adds
//! nothing (PyTorch exports `nn.AvgPool2d` as `Pad(0…) → AveragePool`, and onnxruntime's
//! quantizer wraps that Pad in a Q/DQ pair of its own; a Pad that adds zero borders becomes a
//! [`crate::graph::Pad`] layer), and Squeeze/Unsqueeze of the size-1
//! spatial axes of a `[N, C, 1, 1]` tensor (`x.squeeze(-1).squeeze(-1)` after a global pooling,
//! `unsqueeze` before a 1×1 conv): a `[N, C]` vector and a `[N, C, 1, 1]` tensor are stored alike.

use crate::graph::{Activation, Op, Shape};
use crate::Result;

use super::proto::ConstData;
use super::value::Value;
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Integers given as attribute `name` (older opsets) or as constant input `i` (newer ones);
    /// `None` when neither is there.
    pub(super) fn ints_attr_or_input(
        &self,
        ctx: &NodeCtx,
        name: &str,
        i: usize,
    ) -> Result<Option<Vec<i64>>> {
        if let Some(v) = ctx.attrs().ints(name).map_err(|e| ctx.bad(e))? {
            return Ok(Some(v));
        }
        if ctx.input(i).is_none() {
            return Ok(None);
        }
        let c = self.konst(ctx, i)?;
        c.to_i64()
            .map(Some)
            .ok_or_else(|| ctx.bad(format!("{name} '{}' are not integers", c.name)))
    }

    /// A Pad whose pads are all zero is the identity; one that adds borders of real 0 around
    /// the pixels of an image is a Pad layer; any other is refused by name.
    pub(super) fn pad(&mut self, ctx: &NodeCtx) -> Result<()> {
        let pads = self
            .ints_attr_or_input(ctx, "pads", 1)?
            .ok_or_else(|| ctx.bad("has no pads"))?;
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        if pads.iter().all(|&p| p == 0) {
            let v = self.value(ctx, x)?;
            self.values.insert(ctx.output()?.to_string(), v);
            return Ok(());
        }
        let refuse = |why: &str| {
            ctx.unsupported(format!(
                "Pad with pads {pads:?}: {why}; qforget supports a constant Pad of real 0 that adds \
                 rows and columns to an [N, C, H, W] tensor"
            ))
        };
        let mode = ctx.attrs().string("mode").map_err(|e| ctx.bad(e))?;
        if mode.as_deref().is_some_and(|m| m != "constant") {
            return Err(refuse(&format!("mode {}", mode.unwrap_or_default())));
        }
        if ctx.input(3).is_some() {
            return Err(refuse("an axes input"));
        }
        let [0, 0, top, left, 0, 0, bottom, right] = pads[..] else {
            return Err(refuse("not four rank-4 pads on H and W only"));
        };
        if [top, left, bottom, right].iter().any(|&p| p < 0) {
            return Err(refuse("a negative pad (a crop)"));
        }
        let Some((a, wrap)) = self.value_operand(ctx, x)? else {
            if matches!(self.values.get(x), Some(Value::FloatInput(..))) {
                // The float input reaches the engine as bytes already quantized; a Pad layer
                // pads quantized activations only (onnxruntime's QDQ form of the same model
                // quantizes the input first, then pads, and loads).
                return Err(ctx.unsupported(format!(
                    "Pad with pads {pads:?} of the model's float input, before its first \
                     QuantizeLinear: qforget pads quantized activations only (a Pad of real 0 \
                     after the QuantizeLinear, as onnxruntime's QDQ form places it, is supported)"
                )));
            }
            return Err(refuse("its input is not an activation"));
        };
        // The border value: real 0 (no value, or a float 0), or in QOperator form the byte of 0.
        let value = match ctx.input(2) {
            // onnxruntime's QDQ quantizer may quantize it too (a DequantizeLinear of a constant).
            Some(v) => Some(
                self.arith_constant(v)
                    .ok_or_else(|| refuse("a border value computed at run time"))?,
            ),
            None => None,
        };
        let zero = match value.as_ref().map(|c| &c.data) {
            None => true,
            Some(ConstData::F32(v)) => v.iter().all(|&v| v == 0.0),
            Some(ConstData::U8(v)) => v
                .iter()
                .all(|&v| v as i32 == self.acts[a].q.model_zero_point()),
            Some(ConstData::I8(v)) => v
                .iter()
                .all(|&v| v as i32 == self.acts[a].q.model_zero_point()),
            Some(_) => false,
        } && ctx.attrs().float("value", 0.0).map_err(|e| ctx.bad(e))? == 0.0;
        if !zero {
            return Err(refuse("a border value other than 0"));
        }
        let s = self.acts[a].shape;
        if self.onnx_dims(a).len() != 3 {
            return Err(refuse(&format!("an input of shape {s}, not an image")));
        }
        let [top, left, bottom, right] = [top, left, bottom, right].map(|p| p as usize);
        let out_shape = Shape {
            h: s.h + top + bottom,
            w: s.w + left + right,
            c: s.c,
        };
        let op = Op::Pad(crate::graph::Pad {
            in_shape: s,
            out_shape,
            top,
            left,
        });
        let out = ctx.output()?.to_string();
        let (q, float) = (self.acts[a].q, self.acts[a].float);
        let id = self.push(
            ctx,
            op,
            Activation::None,
            vec![a],
            out_shape,
            q,
            &out,
            vec![],
        );
        self.acts[id].float = float;
        self.values.insert(out, wrap(id));
        Ok(())
    }

    /// Squeeze/Unsqueeze of size-1 spatial axes: the same value under a new name.
    pub(super) fn squeeze(&mut self, ctx: &NodeCtx) -> Result<()> {
        let op = ctx.node.op_type.as_str();
        let axes = self.ints_attr_or_input(ctx, "axes", 1)?;
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let v = self.value(ctx, x)?;
        let a = match &v {
            Value::Deq(a) | Value::Quant(a) | Value::Float(a) => *a,
            _ => return Err(ctx.unsupported(format!("{op} of '{x}', which is not an activation"))),
        };
        let s = self.acts[a].shape;
        let spatial_only = axes
            .as_ref()
            .is_none_or(|ax| ax.iter().all(|&d| d >= 2 || d == -1 || d == -2));
        if s.h * s.w != 1 || !spatial_only {
            return Err(ctx.unsupported(format!(
                "{op} with axes {axes:?} of a tensor of shape {s}; qforget supports {op} only of \
                 the size-1 spatial axes of a [N, C, 1, 1] tensor"
            )));
        }
        self.values.insert(ctx.output()?.to_string(), v);
        Ok(())
    }
}
