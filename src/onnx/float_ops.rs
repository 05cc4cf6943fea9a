//! Importing the float segment ops of [`crate::graph::float_ops`]: a GlobalAveragePool or
//! AveragePool of a float value, the Add, Sub or Mul of two tensors when one of them is float,
//! the Div of any two computed tensors (always float, see [`crate::graph::div`]), and
//! element-wise functions of a float value.
//!
//! Why a separate road: on dequantized activations these nodes stay *pending* until the
//! QuantizeLinear that closes them fixes an integer layer (see [`super::value`]). Once an
//! operand is float (a float layer's output, a float Relu that no QuantizeLinear closed, the
//! model's float input), or a float op reads their result, there is no output grid to wait
//! for: each becomes a layer with a float output at once, its operands made float activations
//! by [`Importer::float_operand`] (a dequantized one is read as its real values).

use crate::graph::{Activation, AvgPool, FloatFn, GlobalAvgPool, Op, Pointwise, Requant, Window};
use crate::Result;

use super::value::{AddOperand, Pending, Value};
use super::{Importer, NodeCtx};

/// Whether the node averages whole planes: a GlobalAveragePool, or a ReduceMean that
/// [`Importer::reduce_mean`] accepted.
pub(super) fn is_global(ctx: &NodeCtx) -> bool {
    matches!(
        ctx.node.op_type.as_str(),
        "GlobalAveragePool" | "ReduceMean"
    )
}

impl Importer<'_> {
    /// ReduceMean over the spatial axes of an NCHW tensor (axes {2, 3} or {−2, −1}, as an
    /// attribute or, from opset 18, a constant input): a global average pooling (`keepdims`
    /// does not matter, both shapes are `[C]` per sample here). Other axes are refused.
    pub(super) fn reduce_mean(&mut self, ctx: &NodeCtx) -> Result<()> {
        let axes = self.reduce_axes(ctx)?;
        let mut sorted = axes.clone();
        sorted.sort_unstable();
        if sorted == [2, 3] || sorted == [-2, -1] {
            return self.avg_pool(ctx);
        }
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        // The mean over `L` of a `[N, C, L]` tensor (`x.view(N, C, -1).mean(-1)`): stored as `L`
        // pixels of `C` channels (see `reshape`), a global average pooling too.
        let rank2 = self
            .values
            .get(x)
            .and_then(Value::act)
            .map(|a| self.onnx_dims(a).len())
            == Some(2);
        if rank2 && (sorted == [-1] || sorted == [2]) {
            return self.avg_pool(ctx);
        }
        if sorted == [-1] || sorted == [1] {
            let a = self.float_operand(ctx, x)?;
            let s = self.acts[a].shape;
            if s.h * s.w == 1 {
                return self.feature_mean(ctx, a);
            }
        }
        Err(ctx.unsupported(format!(
            "ReduceMean over axes {axes:?}; qforget supports the mean over the spatial axes \
             [2, 3] of an NCHW tensor (a global average pooling) and over the features of a flat \
             [N, F] tensor (axis -1 or 1)"
        )))
    }

    /// The axes of a ReduceMean/ReduceMax: an attribute or, from opset 18, a constant input.
    fn reduce_axes(&self, ctx: &NodeCtx) -> Result<Vec<i64>> {
        Ok(match ctx.attrs().ints("axes").map_err(|e| ctx.bad(e))? {
            Some(a) => a,
            None if ctx.input(1).is_some() => self
                .konst(ctx, 1)?
                .to_i64()
                .ok_or_else(|| ctx.bad("axes are not integers"))?,
            None => vec![],
        })
    }

    /// ReduceMax over the pixels of an activation (PyTorch's dynamo exporter writes
    /// `AdaptiveMaxPool2d(1)` so): a MaxPool whose window is the whole image, on the bytes.
    pub(super) fn reduce_max(&mut self, ctx: &NodeCtx) -> Result<()> {
        let mut axes = self.reduce_axes(ctx)?;
        axes.sort_unstable();
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let rank = self
            .values
            .get(x)
            .and_then(Value::act)
            .map_or(0, |a| self.onnx_dims(a).len());
        let spatial = match rank {
            3 => axes == [2, 3] || axes == [-2, -1],
            2 => axes == [2] || axes == [-1],
            _ => false,
        };
        if !spatial {
            return Err(ctx.unsupported(format!(
                "ReduceMax over axes {axes:?} of a tensor of rank {}; qforget supports the \
                 maximum over the pixels of an activation (a global max pooling)",
                rank + 1
            )));
        }
        self.max_pool(ctx)
    }

    /// Whether tensor `n` is a float value a float op must read as such (a float activation,
    /// the float input, or a pending float result).
    fn is_float(&self, n: &str) -> bool {
        matches!(
            self.values.get(n),
            Some(Value::Float(_)) | Some(Value::FloatInput(..)) | Some(Value::Pending(..))
        )
    }

    /// Whether both operands of a binary node are computed tensors (not constants): a
    /// dequantized activation, a float value or a pending float result.
    pub(super) fn computed_pair(&self, ctx: &NodeCtx) -> bool {
        let (Some(x), Some(y)) = (ctx.input(0), ctx.input(1)) else {
            return false;
        };
        let computed = |n: &str| {
            matches!(
                self.values.get(n),
                Some(Value::Deq(_))
                    | Some(Value::Float(_))
                    | Some(Value::FloatInput(..))
                    | Some(Value::Pending(..))
            )
        };
        computed(x) && computed(y)
    }

    /// Whether a binary node has two computed operands, at least one of them float: a float
    /// Add/Sub/Mul of two tensors ([`Importer::float_binary`]).
    pub(super) fn float_pair(&self, ctx: &NodeCtx) -> bool {
        let (Some(x), Some(y)) = (ctx.input(0), ctx.input(1)) else {
            return false;
        };
        self.computed_pair(ctx) && (self.is_float(x) || self.is_float(y))
    }

    /// Add, Sub, Mul or Div of two tensors in float (same shape; a Mul may take one value per
    /// channel and sample for either operand, a squeeze-excitation gate, and a Div for its
    /// divisor).
    pub(super) fn float_binary(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (x, y) = ctx.two_inputs()?;
        let (mut a, mut b) = (self.float_operand(ctx, x)?, self.float_operand(ctx, y)?);
        let (mut sa, mut sb) = (self.acts[a].shape, self.acts[b].shape);
        let op_type = ctx.node.op_type.as_str();
        let (mul, div) = (op_type == "Mul", op_type == "Div");
        if (mul || op_type == "Add") && sa.len() < sb.len() {
            // The gate (or the per-sample value) may come first.
            (a, b, sa, sb) = (b, a, sb, sa);
        }
        let broadcast = sa != sb;
        // One value per sample (`[N, 1]`, e.g. the mean and deviation of a LayerNorm that
        // opsets below 17 spell out) broadcasts for any of the four; one per channel
        // (`[N, C, 1, 1]`) for Mul and Div.
        let per_sample = sb.len() == 1;
        let per_channel = (mul || div) && sb.len() == sa.c && sb.h * sb.w == 1;
        if broadcast && !(per_sample || per_channel) {
            return Err(ctx.unsupported(format!(
                "{op_type} of tensors of shapes {sa} and {sb}; qforget supports a float \
                 {op_type} of equal shapes, with one value per sample for the second{}",
                match op_type {
                    "Mul" => " or one value per channel (a squeeze-excitation gate)",
                    "Div" => " or one value per channel and sample ([N, C, 1, 1])",
                    _ => "",
                }
            )));
        }
        let op = if mul {
            let q = self.acts[a].q;
            Op::Mul(crate::graph::Mul {
                a: q,
                b: q,
                out: q,
                lo: 0,
                hi: 255,
                broadcast,
                ratio: None,
            })
        } else if div {
            Op::Div(crate::graph::Div { broadcast })
        } else {
            Op::Add(crate::graph::Add::of_reals_signed(op_type == "Sub"))
        };
        let out = ctx.output()?.to_string();
        let id = self.push_float_n(ctx, op, Activation::None, vec![a, b], sa, &out);
        self.values.insert(out, Value::Float(id));
        Ok(())
    }

    /// Whether onnxruntime sums a float AveragePool's windows columns first: through MLAS up to
    /// opset 18; from opset 19 on (dilations) its own loop goes row by row.
    pub(super) fn float_pool_columns_first(&self) -> bool {
        self.opset < 19
    }

    /// GlobalAveragePool or AveragePool of a float value (or of a pending result a float op
    /// must read): a float pooling layer.
    pub(super) fn float_avg_pool(&mut self, ctx: &NodeCtx, x: &str) -> Result<()> {
        let a = self.float_operand(ctx, x)?;
        let out = ctx.output()?.to_string();
        let id = if is_global(ctx) {
            self.float_global_pool(ctx, a, &out)
        } else {
            let (window, ceil) = self.window(ctx, None)?;
            let cip = Self::count_include_pad(ctx)?;
            let columns_first = self.float_pool_columns_first();
            self.float_window_pool(ctx, a, window, cip, ceil, columns_first, &out)?
        };
        self.values.insert(out, Value::Float(id));
        Ok(())
    }

    /// The mean over the features of flat activation `a`, one float value per sample: a float
    /// global pooling of the `F` features seen as one channel of `F` pixels.
    fn feature_mean(&mut self, ctx: &NodeCtx, a: usize) -> Result<()> {
        let f = self.acts[a].shape.c;
        let op = Op::GlobalAvgPool(GlobalAvgPool {
            in_shape: crate::graph::Shape { h: 1, w: f, c: 1 },
            in_zero_point: 0,
            requant: Requant::unused(),
            float_scales: None,
        });
        let out = ctx.output()?.to_string();
        let shape = crate::graph::Shape::flat(1);
        let id = self.push_float_n(ctx, op, Activation::None, vec![a], shape, &out);
        self.values.insert(out, Value::Float(id));
        Ok(())
    }

    /// A float GlobalAveragePool of activation `a` (its quantization fields placeholders).
    pub(super) fn float_global_pool(&mut self, ctx: &NodeCtx, a: usize, out: &str) -> usize {
        let ins = self.acts[a].shape;
        let op = Op::GlobalAvgPool(GlobalAvgPool {
            in_shape: ins,
            in_zero_point: 0,
            requant: Requant::unused(),
            float_scales: None,
        });
        let shape = crate::graph::Shape::flat(ins.c);
        self.push_float_n(ctx, op, Activation::None, vec![a], shape, out)
    }

    /// A float AveragePool of activation `a`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn float_window_pool(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        window: Window,
        count_include_pad: bool,
        ceil: bool,
        columns_first: bool,
        out: &str,
    ) -> Result<usize> {
        let ins = self.acts[a].shape;
        let out_shape = self.pooled_shape(ctx, &window, ins, ceil)?;
        let op = Op::AvgPool(AvgPool {
            window,
            count_include_pad,
            in_shape: ins,
            out_shape,
            in_zero_point: 0,
            in_scale: 1.0,
            out_scale: 1.0,
            out_zero_point: 0,
            zp_before_rounding: 0,
            columns_first,
            qdq: true,
        });
        Ok(self.push_float_n(ctx, op, Activation::None, vec![a], out_shape, out))
    }

    /// Float element-wise functions `fns` of activation `a` (no table: evaluated on reals).
    pub(super) fn float_fns(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        fns: Vec<FloatFn>,
        out: &str,
    ) -> usize {
        let shape = self.acts[a].shape;
        let op = Op::Pointwise(Pointwise {
            fns,
            channels: shape.c,
            table_channels: 1,
            lut: vec![],
            dlut: vec![],
        });
        self.push_float_n(ctx, op, Activation::None, vec![a], shape, out)
    }

    /// Function `f` of the float value `x` (or of a pending result a chain cannot take): a
    /// float element-wise layer.
    pub(super) fn float_fn_of(&mut self, ctx: &NodeCtx, x: &str, f: FloatFn) -> Result<()> {
        let a = self.float_operand(ctx, x)?;
        let out = ctx.output()?.to_string();
        let id = self.float_fns(ctx, a, vec![f], &out);
        self.values.insert(out, Value::Float(id));
        Ok(())
    }

    /// The pending results a float op may read, as float layers (`None`: not one of these).
    pub(super) fn materialize_float_op(
        &mut self,
        ctx: &NodeCtx,
        p: &Pending,
        out: &str,
    ) -> Result<Option<usize>> {
        Ok(Some(match p {
            Pending::GlobalAvgPool { input, .. } => self.float_global_pool(ctx, *input, out),
            Pending::AvgPool {
                input,
                window,
                count_include_pad,
                ceil,
                columns_first,
                ..
            } => self.float_window_pool(
                ctx,
                *input,
                *window,
                *count_include_pad,
                *ceil,
                *columns_first,
                out,
            )?,
            Pending::Pointwise { input, fns } => self.float_fns(ctx, *input, fns.clone(), out),
            Pending::Add {
                a,
                b: AddOperand::Act(b),
                act,
                sub,
            } => {
                let shape = self.acts[*a].shape;
                let op = Op::Add(crate::graph::Add::of_reals_signed(*sub));
                self.push_float_n(ctx, op, *act, vec![*a, *b], shape, out)
            }
            Pending::Mul { a, b, act } => {
                let (sa, sb) = (self.acts[*a].shape, self.acts[*b].shape);
                let q = self.acts[*a].q;
                let op = Op::Mul(crate::graph::Mul {
                    a: q,
                    b: q,
                    out: q,
                    lo: 0,
                    hi: 255,
                    broadcast: sa != sb,
                    ratio: None,
                });
                self.push_float_n(ctx, op, *act, vec![*a, *b], sa, out)
            }
            _ => return Ok(None),
        }))
    }

    /// A layer writing a float activation from `inputs`.
    pub(super) fn push_float_n(
        &mut self,
        ctx: &NodeCtx,
        op: Op,
        act: Activation,
        inputs: Vec<usize>,
        shape: crate::graph::Shape,
        out: &str,
    ) -> usize {
        let q = super::float_seg::FLOAT_Q;
        let id = self.push(ctx, op, act, inputs, shape, q, out, vec![]);
        self.acts[id].float = true;
        id
    }
}
