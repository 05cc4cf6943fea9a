//! Importing float segments (see [`crate::graph::float_seg`]): where a float op reads a value
//! that is not a dequantized activation (the model's float input, the float output of a float
//! layer, a float Relu/MaxPool that no QuantizeLinear closed), that value becomes a float
//! activation of the graph, [`Value::Float`]; float Relu/Clip, MaxPool and Flatten/Reshape of
//! one stay float, and the QuantizeLinear that ends the segment becomes a
//! [`crate::graph::Quantize`] layer.
//!
//! What stays pending as before: a float layer's output waits for its Relu, bias Add and
//! QuantizeLinear, so a float layer between two quantized tensors is still one [`Dense`]
//! layer (its bytes unchanged); only a reader that needs a float value materializes it.
//! Pending poolings, element-wise chains and Add/Mul of two tensors that a float op reads become
//! float layers too ([`super::float_ops`]). Refused, by name: other pending results (a float
//! bias Add, a quantized Conv/Gemm awaiting its QuantizeLinear) read by a float op, and a float
//! input that is also quantized.

use crate::graph::{Activation, Dense, FloatConv, InputSpec, Op, QParams, Quantize, Shape, Window};
use crate::Result;

use super::proto::ConstTensor;
use super::value::{FloatMac, Pending, Value};
use super::{Importer, NodeCtx};

/// Parameters of a float activation (placeholders: nothing quantizes it).
pub(super) const FLOAT_Q: QParams = QParams {
    scale: 1.0,
    zero_point: 0,
    signed: false,
};

impl Importer<'_> {
    /// The activation a float op reads for tensor `x`: a dequantized activation's bytes, or a
    /// float activation (made here from the float input or a pending float result).
    pub(super) fn float_operand(&mut self, ctx: &NodeCtx, x: &str) -> Result<usize> {
        match self.value(ctx, x)? {
            Value::Deq(a) | Value::Float(a) => Ok(a),
            Value::FloatInput(pre, flatten) => self.float_input(ctx, x, pre, flatten),
            Value::Pending(p, node) => {
                if let Some(a) = self.concat_on_grid(ctx, &p, x) {
                    self.values.insert(x.to_string(), Value::Deq(a));
                    return Ok(a);
                }
                let a = self.materialize_float(ctx, *p, &node, x)?;
                self.values.insert(x.to_string(), Value::Float(a));
                Ok(a)
            }
            Value::Quant(_) => Err(ctx.unsupported(format!(
                "a float op reads '{x}', a quantized tensor with no DequantizeLinear"
            ))),
            Value::DeqConst(_) => Err(ctx.unsupported(format!(
                "a float op reads the constant '{x}' as its data input"
            ))),
        }
    }

    /// A Concat of dequantized activations that share one scale and zero point (NNCF's
    /// "unified scales": it quantizes a Concat's inputs alike and puts no QuantizeLinear after
    /// it), read by a layer with no QuantizeLinear between: its values are still on that grid,
    /// so it becomes a quantized Concat with the inputs' parameters (every byte copied as it
    /// is), read dequantized. `None` for any other pending value.
    fn concat_on_grid(&mut self, ctx: &NodeCtx, p: &Pending, x: &str) -> Option<usize> {
        let Pending::Concat { inputs, act } = p else {
            return None;
        };
        let acts = inputs
            .iter()
            .map(|i| i.act())
            .collect::<Option<Vec<usize>>>()?;
        let q = self.acts[*acts.first()?].q;
        let same = acts
            .iter()
            .all(|&a| self.acts[a].q == q && !self.acts[a].per_channel() && !self.acts[a].float);
        same.then(|| self.concat_layer(ctx, acts, *act, q, x))
    }

    /// The model's float input (after its float poolings `pre`, flattened if `flatten`) as a
    /// float activation: the graph's input holds real values.
    fn float_input(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        pre: Vec<crate::graph::InputPool>,
        flatten: bool,
    ) -> Result<usize> {
        if self.input_has_fns() && !self.is_input_chain_end(x) {
            return Err(ctx.unsupported(
                "a float layer on a branch of the float input other than the end of its chain \
                 of float functions",
            ));
        }
        let (name, raw_shape) = self.input.clone().expect("input is set before nodes");
        let shape = pre.last().map_or(raw_shape, |p| p.out_shape);
        let act = match &self.input_spec {
            Some(spec) if self.acts[spec.act].float => spec.act,
            Some(_) => {
                return Err(ctx.unsupported(
                    "a float layer on the model's float input, which is also quantized",
                ))
            }
            None => {
                let act = self.new_act(&name, shape, FLOAT_Q);
                self.acts[act].float = true;
                self.input_spec = Some(InputSpec {
                    name,
                    shape: raw_shape,
                    q: FLOAT_Q,
                    act,
                    pre_pool: pre.first().cloned(),
                    norm: None,
                    fns: std::mem::take(&mut self.input_fns),
                    post_fns: std::mem::take(&mut self.input_post_fns),
                });
                act
            }
        };
        if !flatten || shape.h * shape.w == 1 {
            return Ok(act);
        }
        let out = format!("{x}/flat");
        let flat = Shape::flat(shape.len());
        let id = self.push_float(ctx, Op::Flatten, Activation::None, act, flat, &out);
        // Named after the flattened tensor, not after the float layer that reads it.
        if let Some(l) = self.layers.last_mut() {
            l.name = x.to_string();
        }
        Ok(id)
    }

    /// A pending float result of node `node` as a float activation named `out`.
    fn materialize_float(
        &mut self,
        ctx: &NodeCtx,
        p: Pending,
        node: &str,
        out: &str,
    ) -> Result<usize> {
        let first = self.layers.len();
        let id = match p {
            Pending::Dense(m) => self.float_mac_layer(ctx, *m, out)?,
            Pending::Mac(m) => {
                let fm = self.mac_in_float(ctx, *m)?;
                self.float_mac_layer(ctx, fm, out)?
            }
            Pending::Clamp { input, act } => self.float_clamp(ctx, input, act, out),
            Pending::MaxPool {
                inner,
                window,
                ceil,
            } => {
                let a = self.materialize_float(ctx, *inner, node, &format!("{out}/pre_pool"))?;
                let id = self.float_max_pool(ctx, a, window, ceil, out)?;
                // Named after its output tensor, as a MaxPool moved behind a QuantizeLinear.
                if let Some(l) = self.layers.last_mut() {
                    l.name = out.to_string();
                }
                id
            }
            other => match self.materialize_float_op(ctx, &other, out)? {
                Some(id) => id,
                None => {
                    return Err(ctx.unsupported(format!(
                        "it reads '{out}', the float result of node '{node}' ({}), which no \
                         QuantizeLinear follows; a float segment may hold float Conv/Gemm/MatMul \
                         layers, Relu/Clip, MaxPool, average pooling, element-wise functions, \
                         Add/Mul of two tensors and Flatten/Reshape",
                        pending_kind(&other)
                    )))
                }
            },
        };
        // The first layer is the pending node's.
        if let Some(l) = self.layers.get_mut(first) {
            l.name = node.to_string();
        }
        Ok(id)
    }

    /// A quantized Conv/Gemm whose float result goes on to float ops other than Relu/Clip before
    /// any QuantizeLinear: NNCF's "quantize the inputs" form, `Conv → Sigmoid, Mul → Q` (SiLU)
    /// or `Gemm → Div → Erf → …` (GELU). onnxruntime computes it as a float layer on the
    /// dequantized input and weights, so it becomes one ([`crate::graph::FloatConv`] or
    /// [`Dense`]) with the real weights `(q − zp)·s_w` in f32, exactly what DequantizeLinear
    /// gives. Its weights stay frozen: they are integers in the file, and a float layer trains
    /// float values (the layers around it train as usual). A folded per-channel factor (a
    /// BatchNormalization after the layer) has no such exact float form and is refused.
    pub(super) fn mac_in_float(&mut self, ctx: &NodeCtx, m: super::value::Mac) -> Result<FloatMac> {
        if m.negated.iter().any(|&n| n) || m.has_folded_factor(&self.acts[m.input]) {
            return Err(ctx.unsupported(
                "a quantized Conv/Gemm with a folded per-channel factor whose float result goes \
                 on to float ops other than Relu/Clip",
            ));
        }
        let wz = |c: usize| m.weight_zero.get(c).copied().unwrap_or(0);
        let row = m.row.max(1);
        let vals: Vec<f32> = m
            .weights
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = i / row;
                (q as i32 - wz(c)) as f32 * m.weight_scale(c)
            })
            .collect();
        let bias: Vec<f32> = (0..m.out)
            .map(|c| m.bias[c] as f32 * m.acc_scale[c] + m.float_bias[c])
            .collect();
        let conv = match m.conv {
            Some((window, group)) => {
                let ins = self.acts[m.input].shape;
                let (h, w) = window
                    .output_hw(ins.h, ins.w, false)
                    .ok_or_else(|| ctx.bad(format!("kernel does not fit input {ins}")))?;
                let out = Shape { h, w, c: m.out };
                Some(FloatConv::geometry(window, group, ins, out))
            }
            None => None,
        };
        let weights = match &conv {
            Some(geom) => FloatConv::from_file_order(geom, &vals),
            None => vals,
        };
        Ok(FloatMac {
            input: m.input,
            weights,
            out: m.out,
            weight_name: m.params.first().cloned().unwrap_or_default(),
            in_out: false,
            trains: false,
            has_bias: true,
            bias,
            bias_name: None,
            // A Gemm's `C` starts onnxruntime's sums (`beta = 1`); a conv's bias is added after.
            bias_first: m.float_order.as_ref().is_some_and(|o| o.1),
            // Its weights are a DequantizeLinear's output, computed at run time.
            packed: false,
            act: m.act,
            params: vec![],
            conv,
        })
    }

    /// A float layer `m` writing a float activation `out` (its fused activation applied).
    pub(super) fn float_mac_layer(
        &mut self,
        ctx: &NodeCtx,
        m: FloatMac,
        out: &str,
    ) -> Result<usize> {
        let (op, shape) = match m.conv {
            Some(geom) => {
                let shape = geom.out_shape;
                let c = FloatConv {
                    geom,
                    weights: m.weights,
                    bias: m.bias,
                };
                (Op::FloatConv(c), shape)
            }
            None => {
                let d = Dense {
                    in_features: self.acts[m.input].shape.c,
                    out_features: m.out,
                    in_zero_point: self.acts[m.input].q.zero_point,
                    in_scale: self.acts[m.input].q.scale,
                    weights: m.weights.into(),
                    block_k: Dense::block_k_for(m.packed, m.out, self.acts[m.input].shape.c),
                    bias: m.bias,
                    bias_first: m.bias_first,
                    out_scale: 1.0,
                    out_zero_point: 0,
                    lo: 0,
                    hi: 255,
                };
                (Op::Dense(d), Shape::flat(m.out))
            }
        };
        let id = self.push(ctx, op, m.act, vec![m.input], shape, FLOAT_Q, out, m.params);
        self.acts[id].float = true;
        self.bind_float(m.trains, m.weight_name, m.in_out, m.bias_name);
        Ok(id)
    }

    /// A float Relu/Clip of activation `a` (bytes dequantized, or reals) into a float one.
    pub(super) fn float_clamp(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        act: Activation,
        out: &str,
    ) -> usize {
        let shape = self.acts[a].shape;
        self.push_float(ctx, Op::Clamp, act, a, shape, out)
    }

    /// A float MaxPool of activation `a` into a float one.
    fn float_max_pool(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        window: Window,
        ceil: bool,
        out: &str,
    ) -> Result<usize> {
        let id = self.max_pool_layer(ctx, a, window, ceil, out)?;
        self.acts[id].float = true;
        Ok(id)
    }

    /// QuantizeLinear of the float activation `a` with parameters `q`.
    pub(super) fn quantize_float(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        q: QParams,
        out: &str,
    ) -> usize {
        self.quantize_float_channels(ctx, a, q, vec![], out)
    }

    /// [`Importer::quantize_float`] with one scale per channel (`channel_scales`; empty: per
    /// tensor, `q.scale`).
    pub(super) fn quantize_float_channels(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        q: QParams,
        channel_scales: Vec<f32>,
        out: &str,
    ) -> usize {
        let (lo, hi) = Activation::None.range(&q);
        let op = Op::Quantize(Quantize {
            scale: q.scale,
            zero_point: q.zero_point,
            lo,
            hi,
            channel_scales: channel_scales.clone(),
        });
        let shape = self.acts[a].shape;
        let id = self.push(ctx, op, Activation::None, vec![a], shape, q, out, vec![]);
        self.acts[id].channel_scales = channel_scales;
        id
    }

    /// A layer writing a float activation.
    fn push_float(
        &mut self,
        ctx: &NodeCtx,
        op: Op,
        act: Activation,
        input: usize,
        shape: Shape,
        out: &str,
    ) -> usize {
        let id = self.push(ctx, op, act, vec![input], shape, FLOAT_Q, out, vec![]);
        self.acts[id].float = true;
        id
    }

    /// A Conv with float weights `w` on activation `input`: pending, like a float Gemm.
    pub(super) fn float_conv(&mut self, ctx: &NodeCtx, input: usize, w: ConstTensor) -> Result<()> {
        let super::compute::MacKind::Conv(window, group) = self.conv_kind(ctx, &w)? else {
            return Err(ctx.bad("not a convolution"));
        };
        let ins = self.acts[input].shape;
        let (c_out, cin_g) = (w.dims[0], w.dims[1]);
        if ins.c != cin_g * group || !c_out.is_multiple_of(group) {
            return Err(ctx.bad(format!(
                "float weights '{}' expect {} input channels in {group} group(s), the input {ins} \
                 has {}",
                w.name,
                cin_g * group,
                ins.c
            )));
        }
        let (oh, ow) = window
            .output_hw(ins.h, ins.w, false)
            .ok_or_else(|| ctx.bad(format!("kernel does not fit input {ins}")))?;
        let vals = w.to_f32();
        if !vals.iter().all(|v| v.is_finite()) {
            return Err(ctx.unsupported(format!("float weights '{}' are not finite", w.name)));
        }
        let geom = FloatConv::geometry(
            window,
            group,
            ins,
            Shape {
                h: oh,
                w: ow,
                c: c_out,
            },
        );
        let mut m = FloatMac {
            input,
            weights: FloatConv::from_file_order(&geom, &vals),
            out: c_out,
            trains: self.trainable_float(&w),
            weight_name: w.name.clone(),
            in_out: false,
            bias: vec![0.0; c_out],
            bias_name: None,
            has_bias: false,
            bias_first: false,
            packed: false,
            act: Activation::None,
            params: vec![w.name.clone()],
            conv: Some(geom),
        };
        if ctx.input(2).is_some() {
            m = self.float_layer_bias(ctx, m, 2)?;
        }
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(Pending::Dense(Box::new(m))), ctx.name()),
        );
        Ok(())
    }
}

/// What a pending result is, for messages.
fn pending_kind(p: &Pending) -> &'static str {
    match p {
        Pending::Mac(_) => "a quantized Conv/Gemm/MatMul",
        Pending::Dense(_) => "a float layer",
        Pending::Add { sub: false, .. } => "an Add",
        Pending::Add { sub: true, .. } => "a Sub",
        Pending::GlobalAvgPool { .. } | Pending::AvgPool { .. } => "an average pooling",
        Pending::Bias { .. } => "a float bias Add",
        Pending::Clamp { .. } => "a Relu/Clip",
        Pending::Pointwise { .. } => "float element-wise functions",
        Pending::Mul { .. } => "a Mul",
        Pending::MaxPool { .. } => "a MaxPool",
        Pending::Concat { .. } => "a Concat",
    }
}
