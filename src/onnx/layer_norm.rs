//! LayerNormalization nodes: a float layer over the features of a flat activation (see
//! [`crate::graph::layer_norm`]).
//!
//! Both forms real quantizers write are read: onnxruntime's QDQ form (`DQ x → LayerNorm(x,
//! DQ γ, DQ β) → Q`, γ quantized to int8 and β to int32 like a bias) and NNCF's (the float
//! result of a quantized Gemm straight into a LayerNorm with float γ and β, then Relu → Q). γ and
//! β are the file's values, frozen: they are read through their DequantizeLinear when they have
//! one, so nothing of theirs is written back.

use crate::graph::{Activation, LayerNorm, Op};
use crate::Result;

use super::value::Value;
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// LayerNormalization over the last axis of a flat `[N, F]` tensor.
    pub(super) fn layer_norm(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(ctx.unsupported(
                "its Mean or InvStdDev output is used; qforget computes only the normalized output",
            ));
        }
        let attrs = ctx.attrs();
        let axis = attrs.int("axis", -1).map_err(|e| ctx.bad(e))?;
        let epsilon = attrs.float("epsilon", 1e-5).map_err(|e| ctx.bad(e))?;
        let stash = attrs.int("stash_type", 1).map_err(|e| ctx.bad(e))?;
        if stash != 1 {
            return Err(ctx.unsupported(format!(
                "stash_type {stash} (only 1, statistics in float, is supported)"
            )));
        }
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(ctx.bad(format!("epsilon {epsilon} is not a finite value ≥ 0")));
        }
        let a = self.float_operand(ctx, x)?;
        let shape = self.acts[a].shape;
        if shape.h * shape.w != 1 || !(axis == -1 || axis == 1) {
            return Err(ctx.unsupported(format!(
                "LayerNormalization over axis {axis} of a tensor of shape {shape}; qforget \
                 supports it over the features of a flat [N, F] tensor (axis -1 or 1)"
            )));
        }
        let features = shape.c;
        let param = |i: usize, what: &str| -> Result<Option<Vec<f32>>> {
            let Some(name) = ctx.input(i) else {
                return Ok(None);
            };
            let c = self.arith_constant(name).ok_or_else(|| {
                ctx.unsupported(format!(
                    "its {what} '{name}' is not a constant (an initializer, or a \
                     DequantizeLinear of one)"
                ))
            })?;
            let v = c.to_f32();
            if v.len() != features || !v.iter().all(|x| x.is_finite()) {
                return Err(ctx.bad(format!(
                    "its {what} '{name}' has {} values for {features} features, or a \
                     non-finite one",
                    v.len()
                )));
            }
            Ok(Some(v))
        };
        let gamma = param(1, "scale")?.ok_or_else(|| ctx.bad("has no scale input"))?;
        let beta = param(2, "bias")?.unwrap_or_else(|| vec![0.0; features]);
        let op = Op::LayerNorm(LayerNorm {
            gamma,
            beta,
            epsilon,
        });
        let out = ctx.output()?.to_string();
        let id = self.push_float_n(ctx, op, Activation::None, vec![a], shape, &out);
        self.values.insert(out, Value::Float(id));
        Ok(())
    }
}
