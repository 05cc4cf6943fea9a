//! Concat along channels: of dequantized activations in a QDQ model (each branch keeps its own
//! parameters, the QuantizeLinear after the Concat sets the output's), and onnxruntime's
//! QOperator `QLinearConcat`. Both become one [`crate::graph::Concat`] layer.

use crate::graph::{Activation, Concat, ConcatPart, Op, QParams, Shape};
use crate::Result;

use super::value::{ConcatIn, Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// The Concat's axis must be the channels (NCHW axis 1).
    fn channel_axis(ctx: &NodeCtx) -> Result<()> {
        let axis = ctx.attrs().int("axis", i64::MIN).map_err(|e| ctx.bad(e))?;
        match axis {
            1 | -3 => Ok(()),
            i64::MIN => Err(ctx.bad("has no 'axis' attribute")),
            other => Err(ctx.unsupported(format!(
                "Concat along axis {other}; qforget concatenates along the channels (axis 1) only"
            ))),
        }
    }

    /// The inputs' common height and width.
    fn concat_shapes(&self, ctx: &NodeCtx, inputs: &[usize]) -> Result<()> {
        let Some((&first, rest)) = inputs.split_first() else {
            return Ok(());
        };
        let s0 = self.acts[first].shape;
        for &a in rest {
            let s = self.acts[a].shape;
            if (s.h, s.w) != (s0.h, s0.w) {
                return Err(ctx.bad(format!(
                    "concatenates tensors of different sizes ({s0} and {s}) along the channels"
                )));
            }
        }
        Ok(())
    }

    /// ONNX Concat of dequantized activations, or of float results still pending their
    /// QuantizeLinear (see [`ConcatIn::Pending`]): pending until its QuantizeLinear.
    pub(super) fn concat(&mut self, ctx: &NodeCtx) -> Result<()> {
        Self::channel_axis(ctx)?;
        let mut inputs = Vec::with_capacity(ctx.node.input.len());
        for x in ctx.node.input.iter().filter(|x| !x.is_empty()) {
            match self.value(ctx, x)? {
                Value::Deq(a) if !self.acts[a].per_channel() => inputs.push(ConcatIn::Act(a)),
                // Read by this Concat alone: it is computed once, as this Concat's part.
                Value::Pending(p, node) if self.readers.get(x.as_str()) == Some(&1) => {
                    inputs.push(ConcatIn::Pending(p, node))
                }
                _ => {
                    return Err(ctx.unsupported(format!(
                        "Concat of '{x}', which is neither a dequantized activation quantized per \
                         tensor nor the float result of a layer read by this Concat alone \
                         (qforget concatenates DequantizeLinear outputs and float results whose \
                         QuantizeLinear follows the Concat)"
                    )))
                }
            }
        }
        if inputs.is_empty() {
            return Err(ctx.bad("has no input"));
        }
        let acts: Vec<usize> = inputs.iter().filter_map(ConcatIn::act).collect();
        self.concat_shapes(ctx, &acts)?;
        let p = Pending::Concat {
            inputs,
            act: Activation::None,
        };
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(p), ctx.name()),
        );
        Ok(())
    }

    /// A pending Concat with output parameters `q`: its pending parts become layers quantized
    /// with `q` (each named after its node), then the Concat layer (named `node`).
    pub(super) fn concat_pending(
        &mut self,
        ctx: &NodeCtx,
        inputs: Vec<ConcatIn>,
        act: Activation,
        q: QParams,
        out: &str,
    ) -> Result<usize> {
        let mut acts = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            match input {
                ConcatIn::Act(a) => acts.push(a),
                ConcatIn::Pending(p, node) => {
                    let first = self.layers.len();
                    acts.push(self.materialize(ctx, *p, q, &format!("{out}/part{i}"))?);
                    if let Some(l) = self.layers.get_mut(first) {
                        l.name = node;
                    }
                }
            }
        }
        self.concat_shapes(ctx, &acts)?;
        Ok(self.concat_layer(ctx, acts, act, q, out))
    }

    /// QLinearConcat (com.microsoft): `Y_scale, Y_zero_point, (X, X_scale, X_zero_point)…`.
    pub(super) fn qlinear_concat(&mut self, ctx: &NodeCtx) -> Result<()> {
        Self::channel_axis(ctx)?;
        let n = ctx.node.input.len();
        if n < 5 || !(n - 2).is_multiple_of(3) {
            return Err(ctx.bad(format!(
                "has {n} inputs; QLinearConcat takes Y_scale, Y_zero_point and then triples of \
                 X, X_scale, X_zero_point"
            )));
        }
        let inputs = (2..n)
            .step_by(3)
            .map(|i| self.q_input(ctx, i, i + 1, i + 2))
            .collect::<Result<Vec<_>>>()?;
        self.concat_shapes(ctx, &inputs)?;
        let q = self.act_qparams(ctx, 0, 1)?;
        let out = ctx.output()?.to_string();
        let id = self.concat_layer(ctx, inputs, Activation::None, q, &out);
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// The layer of a concat of `inputs` with output parameters `q`.
    pub(super) fn concat_layer(
        &mut self,
        ctx: &NodeCtx,
        inputs: Vec<usize>,
        act: Activation,
        q: QParams,
        out: &str,
    ) -> usize {
        let parts: Vec<ConcatPart> = inputs
            .iter()
            .map(|&a| ConcatPart {
                channels: self.acts[a].shape.c,
                q: self.acts[a].q,
            })
            .collect();
        let (lo, hi) = act.range(&q);
        let s0 = self.acts[inputs[0]].shape;
        let shape = Shape {
            h: s0.h,
            w: s0.w,
            c: parts.iter().map(|p| p.channels).sum(),
        };
        let op = Concat {
            parts,
            out: q,
            lo,
            hi,
        };
        self.push(ctx, Op::Concat(op), act, inputs, shape, q, out, vec![])
    }
}
