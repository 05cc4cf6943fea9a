//! Float element-wise nodes between DequantizeLinear and QuantizeLinear (see
//! [`crate::graph::pointwise`]): Sigmoid, HardSigmoid, HardSwish, LeakyRelu, Tanh, and
//! Add/Sub/Mul/Div with a constant. They gather into one pending chain on a dequantized
//! activation; the QuantizeLinear that ends the chain makes it a lookup-table layer.
//!
//! Only what keeps the segment a function of one byte is accepted: the chain must start at a
//! dequantized activation (or at a float Relu/Clip of one), and every constant must be a scalar
//! or one value per channel. Anything else is refused by name, as everywhere in the importer.
//! The one binary case, a Mul of two dequantized activations (a squeeze-excitation gate),
//! becomes its own layer ([`crate::graph::mul`]).

use crate::graph::{Activation, FloatFn};
use crate::Result;

use super::value::{AddOperand, Pending, Value};
use super::{Importer, NodeCtx};

/// The functions an activation (Relu/Clip) stands for.
pub(super) fn act_fns(act: Activation) -> Vec<FloatFn> {
    match act {
        Activation::None => vec![],
        Activation::Relu => vec![FloatFn::Relu],
        Activation::Clip { min, max } => vec![FloatFn::Clip { min, max }],
    }
}

impl Importer<'_> {
    /// The chain `x` already is, if it can take one more float function: `(input, fns)`.
    fn chain_of(&self, v: &Value) -> Option<(usize, Vec<FloatFn>)> {
        match v {
            Value::Deq(a) => Some((*a, vec![])),
            Value::Pending(p, _) => match p.as_ref() {
                Pending::Pointwise { input, fns } => Some((*input, fns.clone())),
                Pending::Clamp { input, act } => Some((*input, act_fns(*act))),
                // A float bias followed by more float math: the bias joins the chain (and is
                // then a frozen constant, not a trainable one).
                Pending::Bias {
                    input, bias, act, ..
                } => {
                    let mut fns = vec![FloatFn::Add(bias.clone())];
                    fns.extend(act_fns(*act));
                    Some((*input, fns))
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn push_fn(&mut self, ctx: &NodeCtx, x: &str, f: FloatFn) -> Result<()> {
        let v = self.value(ctx, x)?;
        if matches!(v, Value::FloatInput(..)) {
            return self.push_input_fn(ctx, x, f);
        }
        if self.chain_of(&v).is_none() && matches!(v, Value::Float(_) | Value::Pending(..)) {
            // A float value: a float element-wise layer (see `float_ops`).
            return self.float_fn_of(ctx, x, f);
        }
        let Some((input, mut fns)) = self.chain_of(&v) else {
            return Err(ctx.unsupported(format!(
                "{} of '{x}', which is not a dequantized activation (qforget computes float \
                 element-wise functions only between a DequantizeLinear and a QuantizeLinear)",
                ctx.node.op_type
            )));
        };
        fns.push(f);
        let out = ctx.output()?.to_string();
        self.values.insert(
            out,
            Value::Pending(Box::new(Pending::Pointwise { input, fns }), ctx.name()),
        );
        Ok(())
    }

    /// Sigmoid, HardSigmoid, HardSwish, LeakyRelu, Tanh, Erf, Sqrt, and Pow by a constant
    /// scalar exponent (the square of a LayerNorm that opsets below 17 spell out).
    pub(super) fn float_unary(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let a = ctx.attrs();
        let f = match ctx.node.op_type.as_str() {
            "Sigmoid" => FloatFn::Sigmoid,
            "Tanh" => FloatFn::Tanh,
            "Erf" => FloatFn::Erf,
            "Sqrt" => FloatFn::Sqrt,
            "Pow" => {
                let name = ctx.input(1).ok_or_else(|| ctx.bad("has no exponent"))?;
                let e = self
                    .arith_constant(name)
                    .map(|c| c.to_f32())
                    .filter(|v| v.len() == 1 && v[0].is_finite())
                    .ok_or_else(|| {
                        ctx.unsupported(format!(
                            "Pow by '{name}', which is not one finite constant; qforget supports \
                             a constant scalar exponent"
                        ))
                    })?;
                FloatFn::Pow(e[0])
            }
            "HardSwish" => FloatFn::HardSwish,
            "HardSigmoid" => FloatFn::HardSigmoid {
                alpha: a.float("alpha", 0.2).map_err(|e| ctx.bad(e))?,
                beta: a.float("beta", 0.5).map_err(|e| ctx.bad(e))?,
            },
            "LeakyRelu" => FloatFn::LeakyRelu {
                alpha: a.float("alpha", 0.01).map_err(|e| ctx.bad(e))?,
            },
            "Elu" => FloatFn::Elu {
                alpha: a.float("alpha", 1.0).map_err(|e| ctx.bad(e))?,
            },
            "Selu" => FloatFn::Selu {
                alpha: a.float("alpha", 1.673_263_2).map_err(|e| ctx.bad(e))?,
                gamma: a.float("gamma", 1.050_701).map_err(|e| ctx.bad(e))?,
            },
            "Softplus" => FloatFn::Softplus,
            "Softsign" => FloatFn::Softsign,
            "PRelu" => self.prelu(ctx, x)?,
            "Gelu" => gelu(ctx)?,
            // Mish (opset 18) is `x · tanh(softplus(x))`, the chain opset 13 spells out.
            "Mish" => FloatFn::Product(vec![], vec![FloatFn::Softplus, FloatFn::Tanh]),
            other => return Err(ctx.unsupported(format!("operator {other} is not supported"))),
        };
        self.push_fn(ctx, x, f)
    }

    /// The per-sample shape of value `v` where it is known: an activation, a float chain on
    /// one, or a Conv/Gemm's pending float result (NNCF's `Conv → PRelu → QuantizeLinear`).
    fn value_shape(&self, v: &Value) -> Option<crate::graph::Shape> {
        if let Some((input, _)) = self.chain_of(v) {
            return Some(self.acts[input].shape);
        }
        match v {
            Value::Float(a) => Some(self.acts[*a].shape),
            Value::Pending(p, _) => match p.as_ref() {
                Pending::Mac(m) => {
                    let ins = self.acts[m.input].shape;
                    match m.conv {
                        Some((window, _)) => {
                            let (h, w) = window.output_hw(ins.h, ins.w, false)?;
                            Some(crate::graph::Shape { h, w, c: m.out })
                        }
                        None => Some(crate::graph::Shape::flat(m.out)),
                    }
                }
                Pending::Dense(m) => Some(match &m.conv {
                    Some(geom) => geom.out_shape,
                    None => crate::graph::Shape::flat(m.out),
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// PRelu of `x`: its slope must be a constant with one value, or one per channel of `x`.
    fn prelu(&self, ctx: &NodeCtx, x: &str) -> Result<FloatFn> {
        let name = ctx.input(1).ok_or_else(|| ctx.bad("has no slope"))?;
        let c = self.arith_constant(name).ok_or_else(|| {
            ctx.unsupported(format!(
                "PRelu with slope '{name}', which is not a constant"
            ))
        })?;
        let v = self.value(ctx, x)?;
        let shape = self.value_shape(&v);
        let slope = c.to_f32();
        let scalar = slope.len() == 1;
        let ok = scalar || shape.is_some_and(|s| super::float_const::per_channel(&c.dims, s));
        if !ok || !slope.iter().all(|s| s.is_finite()) {
            return Err(ctx.unsupported(format!(
                "PRelu with slope '{name}' of dimensions {:?} (one finite value, or one per \
                 channel, is supported)",
                c.dims
            )));
        }
        Ok(FloatFn::PRelu(slope))
    }

    /// Whether an input of the node is a pending float chain (so an arithmetic node on it with
    /// a constant is element-wise float math, not a bias or the scale of a product).
    pub(super) fn chain_operand(&self, ctx: &NodeCtx) -> bool {
        ctx.node.input.iter().any(|n| match self.values.get(n) {
            Some(Value::Pending(p, _)) => matches!(
                p.as_ref(),
                Pending::Pointwise { .. } | Pending::Clamp { .. } | Pending::Bias { .. }
            ),
            _ => false,
        })
    }

    /// Whether both inputs of the node are dequantized activations.
    pub(super) fn two_activations(&self, ctx: &NodeCtx) -> bool {
        ctx.node.input.len() == 2
            && ctx
                .node
                .input
                .iter()
                .all(|n| matches!(self.values.get(n), Some(Value::Deq(_))))
    }

    /// Mul of two dequantized activations: equal shapes, or one of them `[N, C, 1, 1]` (a
    /// squeeze-excitation gate) broadcast over the other's pixels.
    pub(super) fn mul_activations(&mut self, ctx: &NodeCtx) -> Result<()> {
        let get = |i: usize| match ctx.input(i).and_then(|n| self.values.get(n)) {
            Some(Value::Deq(a)) => Some(*a),
            _ => None,
        };
        let (Some(x), Some(y)) = (get(0), get(1)) else {
            return Err(ctx.bad("needs two dequantized inputs"));
        };
        let (a, b) = self.mul_order(ctx, x, y)?;
        let out = ctx.output()?.to_string();
        self.values.insert(
            out,
            Value::Pending(
                Box::new(Pending::Mul {
                    a,
                    b,
                    act: Activation::None,
                }),
                ctx.name(),
            ),
        );
        Ok(())
    }

    /// The operands of a product of two activations `x`, `y` as the Mul layer takes them: the
    /// one with pixels first, a per-channel gate (`[N, C, 1, 1]`) second; equal shapes as given.
    pub(super) fn mul_order(&self, ctx: &NodeCtx, x: usize, y: usize) -> Result<(usize, usize)> {
        let (sx, sy) = (self.acts[x].shape, self.acts[y].shape);
        let gate = |s: crate::graph::Shape| s.h * s.w == 1;
        if sx == sy || gate(sy) && sy.c == sx.c {
            Ok((x, y))
        } else if gate(sx) && sx.c == sy.c {
            Ok((y, x))
        } else {
            Err(ctx.unsupported(format!(
                "{} of shapes {sx} and {sy} (equal shapes, or one value per channel broadcast \
                 over the pixels, are supported)",
                ctx.node.op_type
            )))
        }
    }

    /// Whether a Mul multiplies two float chains of one dequantized activation, at least one
    /// of them pending (GELU's `x · (1 + erf(x/√2))`, SiLU's `x · sigmoid(x)`).
    pub(super) fn chains_of_one_input(&self, ctx: &NodeCtx) -> bool {
        let (Some(x), Some(y)) = (ctx.input(0), ctx.input(1)) else {
            return false;
        };
        let root = |n: &str| match self.values.get(n) {
            Some(v @ (Value::Deq(_) | Value::Pending(..))) => self.chain_of(v).map(|(a, _)| a),
            _ => None,
        };
        let pending = |n: &str| matches!(self.values.get(n), Some(Value::Pending(..)));
        ctx.node.input.len() == 2
            && (pending(x) || pending(y))
            && root(x).is_some()
            && root(x) == root(y)
    }

    /// The product of two chains of one input: one chain that starts with the product.
    pub(super) fn mul_chains(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (x, y) = ctx.two_inputs()?;
        let (vx, vy) = (self.value(ctx, x)?, self.value(ctx, y)?);
        let (Some((input, l)), Some((_, r))) = (self.chain_of(&vx), self.chain_of(&vy)) else {
            return Err(ctx.bad("needs two float chains of one input"));
        };
        let out = ctx.output()?.to_string();
        self.values.insert(
            out,
            Value::Pending(
                Box::new(Pending::Pointwise {
                    input,
                    fns: vec![FloatFn::Product(l, r)],
                }),
                ctx.name(),
            ),
        );
        Ok(())
    }

    /// Whether a Sub reads dequantized operands only, at least one of them an activation (two
    /// activations, or an activation and a dequantized constant in either order): a quantized
    /// Sub ([`Importer::sub`]).
    pub(super) fn quantized_sub(&self, ctx: &NodeCtx) -> bool {
        let get = |i: usize| ctx.input(i).and_then(|n| self.values.get(n));
        matches!(
            (get(0), get(1)),
            (
                Some(Value::Deq(_)),
                Some(Value::Deq(_) | Value::DeqConst(_))
            ) | (Some(Value::DeqConst(_)), Some(Value::Deq(_)))
        )
    }

    /// `DQ a − DQ b` (two activations of one shape) or `DQ a − DQ constant`, closed by a
    /// QuantizeLinear: the quantized Add with the second term negated, pending the
    /// QuantizeLinear that fixes its output (or a float Sub, if a float op reads it first). The
    /// reverse order `constant − activation` would negate the activation's term, which the
    /// layer does not do: it is refused by name.
    pub(super) fn sub(&mut self, ctx: &NodeCtx) -> Result<()> {
        let get = |i: usize| ctx.input(i).and_then(|n| self.values.get(n)).cloned();
        let (a, b) = match (get(0), get(1)) {
            (Some(Value::Deq(a)), Some(Value::Deq(b))) => {
                let (sa, sb) = (self.acts[a].shape, self.acts[b].shape);
                if sa != sb {
                    return Err(ctx.unsupported(format!(
                        "Sub of shapes {sa} and {sb} (qforget supports the Sub of two \
                         activations of equal shapes)"
                    )));
                }
                (a, AddOperand::Act(b))
            }
            (Some(Value::Deq(a)), Some(Value::DeqConst(c))) => (a, self.const_operand(ctx, &c)?),
            _ => {
                return Err(ctx.unsupported(
                    "Sub of a constant minus an activation (qforget supports an activation \
                     minus a constant, or the Sub of two activations)",
                ))
            }
        };
        let out = ctx.output()?.to_string();
        let p = Pending::Add {
            a,
            b,
            act: Activation::None,
            sub: true,
        };
        self.values
            .insert(out, Value::Pending(Box::new(p), ctx.name()));
        Ok(())
    }

    /// Whether an input of the node is the model's float input (before its QuantizeLinear).
    pub(super) fn input_operand(&self, ctx: &NodeCtx) -> bool {
        ctx.node
            .input
            .iter()
            .any(|n| matches!(self.values.get(n), Some(Value::FloatInput(..))))
    }

    /// Whether an input of the node is a float activation of a float segment (an Add or Mul of
    /// it and a constant is then float element-wise math, as on a float chain).
    pub(super) fn float_value_operand(&self, ctx: &NodeCtx) -> bool {
        ctx.node
            .input
            .iter()
            .any(|n| matches!(self.values.get(n), Some(Value::Float(_))))
    }

    /// Whether an input of the node is a dequantized activation.
    pub(super) fn deq_operand(&self, ctx: &NodeCtx) -> bool {
        ctx.node
            .input
            .iter()
            .any(|n| matches!(self.values.get(n), Some(Value::Deq(_))))
    }

    /// A Softmax or LogSoftmax (PyTorch's MNIST example ends in `F.log_softmax`) over the classes
    /// as the model's last node. Both are monotone along the class axis, so predictions are
    /// those of the input, and the training losses want the logits before it anyway: the graph
    /// ends at its input, and the exported file keeps the node. (A Softmax's probabilities may
    /// still be quantized, [`Self::softmax_qdq`]; a LogSoftmax's output is read by nothing.)
    pub(super) fn softmax(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let v = self.value(ctx, x)?;
        let classes_last = match &v {
            Value::Deq(a) | Value::Quant(a) => self.acts[*a].shape.h * self.acts[*a].shape.w == 1,
            Value::Pending(p, _) => {
                matches!(p.as_ref(), Pending::Mac(m) if m.conv.is_none())
                    || matches!(p.as_ref(), Pending::Bias { .. } | Pending::Dense(_))
            }
            _ => false,
        };
        let axis = ctx.attrs().int("axis", -1).map_err(|e| ctx.bad(e))?;
        let op = if ctx.node.op_type == "LogSoftmax" {
            "LogSoftmax"
        } else {
            "Softmax"
        };
        if !classes_last || !(axis == -1 || axis == 1) {
            return Err(ctx.unsupported(format!(
                "{op} other than over the classes of a [N, classes] output"
            )));
        }
        let out = ctx.output()?.to_string();
        self.softmax_out.insert(out.clone(), op);
        self.values.insert(out, v);
        Ok(())
    }

    /// QLinearSoftmax (com.microsoft) over the classes as the model's last node: the QOperator
    /// form of `DequantizeLinear → Softmax → QuantizeLinear`. The graph ends at its quantized
    /// input (the logits); the output's parameters decide top-1 ([`Self::softmax_qdq`]).
    pub(super) fn qlinear_softmax(&mut self, ctx: &NodeCtx) -> Result<()> {
        let a = self.q_input(ctx, 0, 1, 2)?;
        let axis = ctx.attrs().int("axis", -1).map_err(|e| ctx.bad(e))?;
        if self.acts[a].shape.h * self.acts[a].shape.w != 1 || !(axis == -1 || axis == 1) {
            return Err(ctx.unsupported(
                "QLinearSoftmax other than over the classes of a [N, classes] output",
            ));
        }
        if self.softmax_q.is_some() {
            return Err(ctx.unsupported("a second Softmax"));
        }
        self.softmax_q = Some(self.act_qparams(ctx, 3, 4)?);
        let out = ctx.output()?.to_string();
        self.softmax_out.insert(out.clone(), "Softmax");
        self.values.insert(out, Value::Quant(a));
        Ok(())
    }

    /// The QuantizeLinear of a final Softmax's probabilities and the DequantizeLinear after it:
    /// the graph still ends at the logits (losses want them), and the deployed output's top-1 is
    /// taken on the probabilities quantized with these parameters ([`Graph::output_probs`]).
    ///
    /// [`Graph::output_probs`]: crate::graph::Graph::output_probs
    pub(super) fn softmax_qdq(&mut self, ctx: &NodeCtx, x: &str) -> Result<()> {
        let q = self.act_qparams(ctx, 1, 2)?;
        match (ctx.node.op_type.as_str(), self.softmax_q) {
            ("QuantizeLinear", None) => self.softmax_q = Some(q),
            ("DequantizeLinear", Some(sq)) if sq == q => {}
            ("DequantizeLinear", Some(_)) => {
                return Err(ctx.unsupported(
                    "the Softmax's probabilities are dequantized with other parameters than \
                     they were quantized with",
                ))
            }
            _ => {
                return Err(ctx.unsupported(format!(
                    "'{x}' (the Softmax's probabilities) is quantized twice, or dequantized \
                     without a QuantizeLinear"
                )))
            }
        }
        let v = self.value(ctx, x)?;
        let out = ctx.output()?.to_string();
        self.softmax_out.insert(out.clone(), "Softmax");
        self.values.insert(out, v);
        Ok(())
    }

    /// Add/Sub/Mul/Div of a float chain (or a dequantized activation) and a constant.
    pub(super) fn float_arith(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (x, y) = ctx.two_inputs()?;
        let op = ctx.node.op_type.as_str();
        let (cx, cy) = (self.arith_constant(x), self.arith_constant(y));
        let const_first = cx.is_some() && cy.is_none();
        let (t, ci, c) = if const_first { (y, 0, cx) } else { (x, 1, cy) };
        let Some(c) = c else {
            return Err(ctx.unsupported(format!(
                "{op} of two computed tensors (qforget supports {op} of an activation and a \
                 constant here)"
            )));
        };
        let v = self.value(ctx, t)?;
        if let Value::FloatInput(pre, flatten) = v {
            return self.input_arith(
                ctx,
                t,
                ci,
                const_first,
                pre.last().map(|p| p.out_shape),
                flatten,
            );
        }
        if let Some(folded) = self.scale_pending_mac(ctx, &v, &c, const_first)? {
            self.values.insert(ctx.output()?.to_string(), folded);
            return Ok(());
        }
        let shape = match self.chain_of(&v) {
            Some((input, _)) => self.acts[input].shape,
            None if matches!(v, Value::Float(_) | Value::Pending(..)) => {
                let a = self.float_operand(ctx, t)?;
                self.acts[a].shape
            }
            None => {
                return Err(ctx.unsupported(format!(
                    "{op} of '{t}', which is not a dequantized activation"
                )))
            }
        };
        let k = self.channel_constant(ctx, &c, shape).map_err(|_| {
            ctx.unsupported(format!(
                "{op} by constant '{}' with dimensions {:?}: only a scalar or one value per \
                     channel keeps the segment element-wise",
                c.name, c.dims
            ))
        })?;
        let f = arith_fn(ctx, const_first, k, &c.name)?;
        self.push_fn(ctx, t, f)
    }
}

/// The function an Add/Sub/Mul/Div node computes with constant `k` (named `name`; first
/// operand when `const_first`).
pub(super) fn arith_fn(
    ctx: &NodeCtx,
    const_first: bool,
    k: Vec<f32>,
    name: &str,
) -> Result<FloatFn> {
    let op = ctx.node.op_type.as_str();
    Ok(match (op, const_first) {
        ("Add", _) => FloatFn::Add(k),
        ("Mul", _) => FloatFn::Mul(k),
        ("Sub", false) => FloatFn::Sub(k),
        ("Sub", true) => FloatFn::SubFrom(k),
        ("Div", false) => {
            if k.contains(&0.0) {
                return Err(ctx.unsupported(format!("Div by zero in '{name}'")));
            }
            FloatFn::Div(k)
        }
        _ => return Err(ctx.unsupported(format!("{op} with the constant first is not supported"))),
    })
}

/// Gelu (opset 20; PyTorch's dynamo exporter writes `nn.GELU` as it) as the chain onnxruntime's
/// kernel computes: `0.5 · x · (1 + erf(x / √2))`, or with `approximate = "tanh"`
/// `0.5 · x · (1 + tanh(x · (β·x² + α)))`, `α = √(2/π)`, `β = 0.044715 α`. (The factor 0.5 is a
/// power of two, so where it is applied does not change a value.)
fn gelu(ctx: &NodeCtx) -> Result<FloatFn> {
    let approximate = ctx.attrs().string("approximate").map_err(|e| ctx.bad(e))?;
    let mut inner = match approximate.as_deref() {
        None | Some("none") => vec![
            FloatFn::Mul(vec![std::f32::consts::FRAC_1_SQRT_2]),
            FloatFn::Erf,
        ],
        Some("tanh") => {
            let alpha = std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
            vec![
                FloatFn::Product(
                    vec![],
                    vec![
                        FloatFn::Pow(2.0),
                        FloatFn::Mul(vec![0.044715 * alpha]),
                        FloatFn::Add(vec![alpha]),
                    ],
                ),
                FloatFn::Tanh,
            ]
        }
        Some(other) => {
            return Err(ctx.unsupported(format!("Gelu with approximate = \"{other}\"")));
        }
    };
    inner.push(FloatFn::Add(vec![1.0]));
    Ok(FloatFn::Product(vec![FloatFn::Mul(vec![0.5])], inner))
}
