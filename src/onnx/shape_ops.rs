//! Shape-only nodes that leave the values and their NHWC storage as they are: a Pad that adds
//! nothing (PyTorch exports `nn.AvgPool2d` as `Pad(0…) → AveragePool`, and onnxruntime's
//! quantizer wraps that Pad in a Q/DQ pair of its own), and Squeeze/Unsqueeze of the size-1
//! spatial axes of a `[N, C, 1, 1]` tensor (`x.squeeze(-1).squeeze(-1)` after a global pooling,
//! `unsqueeze` before a 1×1 conv): a `[N, C]` vector and a `[N, C, 1, 1]` tensor are stored alike.

use crate::Result;

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

    /// A Pad whose pads are all zero is the identity; any other is refused by name.
    pub(super) fn pad(&mut self, ctx: &NodeCtx) -> Result<()> {
        let pads = self
            .ints_attr_or_input(ctx, "pads", 1)?
            .ok_or_else(|| ctx.bad("has no pads"))?;
        if pads.iter().any(|&p| p != 0) {
            return Err(ctx.unsupported(format!(
                "Pad with pads {pads:?}; qforget supports a Pad only when it adds nothing (a \
                 Conv's or a pooling's own padding is supported)"
            )));
        }
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let v = self.value(ctx, x)?;
        self.values.insert(ctx.output()?.to_string(), v);
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
