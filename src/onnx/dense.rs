//! Float layers: a Gemm, MatMul or Conv whose weights are a plain float32 initializer (the
//! quantizer left the layer in float), reading a dequantized activation, the model's float
//! input or another float result (a float segment, see [`super::float_seg`]). They become
//! [`crate::graph::Dense`] / [`crate::graph::FloatConv`] layers: f32 in onnxruntime's order,
//! trained in f32, written back as float32 (see there for why).
//!
//! What is refused, by name: an input quantized per channel, and weights that are not a
//! finite 2-D matrix (4-D for a Conv).

use crate::graph::{Activation, Dense, Op, ParamBinding, QParams, Shape, WeightLayout};
use crate::Result;

use super::compute::LinearLayout;
use super::value::{FloatMac, Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// A Gemm/MatMul with float weights on the dequantized activation `input`.
    pub(super) fn float_layer(&mut self, ctx: &NodeCtx, input: usize) -> Result<()> {
        let op = ctx.node.op_type.as_str();
        if self.acts[input].per_channel() {
            return Err(
                ctx.unsupported("a float layer reading an activation quantized per channel")
            );
        }
        let w = self.konst(ctx, 1)?;
        if op == "Conv" {
            return self.float_conv(ctx, input, w);
        }
        let layout = if op == "Gemm" {
            self.gemm_layout(ctx)?
        } else {
            LinearLayout::InOut
        };
        let [d0, d1] = w.dims[..] else {
            return Err(ctx.unsupported(format!(
                "float weights '{}' have dimensions {:?}; a 2-D matrix is expected",
                w.name, w.dims
            )));
        };
        let (k, out) = match layout {
            LinearLayout::OutIn => (d1, d0),
            LinearLayout::InOut => (d0, d1),
        };
        let ins = self.acts[input].shape;
        if ins.h * ins.w != 1 || ins.c != k {
            return Err(ctx.bad(format!(
                "float weights '{}' expect {k} input features, the input has shape {ins}",
                w.name
            )));
        }
        let vals = w.to_f32();
        if !vals.iter().all(|v| v.is_finite()) {
            return Err(ctx.unsupported(format!("float weights '{}' are not finite", w.name)));
        }
        let weights = match layout {
            LinearLayout::OutIn => vals,
            LinearLayout::InOut => {
                let mut t = vec![0f32; k * out];
                for (j, row) in vals.chunks_exact(out.max(1)).enumerate() {
                    for (o, &v) in row.iter().enumerate() {
                        t[o * k + j] = v;
                    }
                }
                t
            }
        };
        let mut m = FloatMac {
            input,
            weights,
            out,
            trains: self.trainable_float(&w),
            weight_name: w.name.clone(),
            in_out: layout == LinearLayout::InOut,
            bias: vec![0.0; out],
            bias_name: None,
            has_bias: false,
            bias_first: true,
            packed: ctx.input(1).is_some_and(|n| self.file_tensors.contains(n)),
            act: Activation::None,
            params: vec![w.name.clone()],
            conv: None,
        };
        if ctx.input(2).is_some() {
            m = self.float_layer_bias(ctx, m, 2)?;
            m.bias_first = true;
        }
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(Pending::Dense(Box::new(m))), ctx.name()),
        );
        Ok(())
    }

    /// The float constant input `i` of `ctx` as the bias of `m` (Gemm's third input, or the
    /// Add after a MatMul, which onnxruntime adds after the sums).
    pub(super) fn float_layer_bias(
        &self,
        ctx: &NodeCtx,
        mut m: FloatMac,
        i: usize,
    ) -> Result<FloatMac> {
        if m.has_bias || m.act != Activation::None {
            return Err(ctx.unsupported(
                "Add of a constant to a float layer that already has a bias or an activation",
            ));
        }
        let c = self.konst(ctx, i)?;
        let b = self.channel_constant(ctx, &c, Shape::flat(m.out))?;
        for (o, v) in m.bias.iter_mut().enumerate() {
            *v = b[if b.len() == 1 { 0 } else { o }];
        }
        m.has_bias = true;
        m.bias_first = false;
        m.bias_name = (self.trainable_float(&c) && b.len() == m.out).then(|| c.name.clone());
        m.params.push(c.name);
        Ok(m)
    }

    /// Why a Conv/Gemm/MatMul with quantized weights whose data input `x` is not a
    /// dequantized activation is refused.
    pub(super) fn float_input_refusal(&self, ctx: &NodeCtx, x: &str) -> crate::Error {
        match self.values.get(x) {
            Some(Value::Pending(_, n)) => ctx.unsupported(format!(
                "quantized weights on '{x}', a float result of node '{n}' that is not quantized \
                 again (a layer with quantized weights reads a DequantizeLinear)"
            )),
            Some(Value::FloatInput(..)) | Some(Value::Float(_)) => ctx.unsupported(format!(
                "quantized weights on '{x}', a float tensor that is not quantized (a layer with \
                 quantized weights reads a DequantizeLinear)"
            )),
            _ => ctx.unsupported("the data input is not a dequantized activation"),
        }
    }

    /// The [`Dense`] layer of `m` with output parameters `q` (placeholders for a float head);
    /// a float Conv writes a float activation and a [`crate::graph::Quantize`] follows it.
    pub(super) fn dense_layer(
        &mut self,
        ctx: &NodeCtx,
        m: FloatMac,
        q: QParams,
        out: &str,
    ) -> Result<usize> {
        if m.conv.is_some() {
            let a = self.float_mac_layer(ctx, m, &format!("{out}/float"))?;
            return Ok(self.quantize_float(ctx, a, q, out));
        }
        let qi = self.acts[m.input].q;
        let (lo, hi) = m.act.range(&q);
        let d = Dense {
            in_features: self.acts[m.input].shape.c,
            out_features: m.out,
            in_zero_point: qi.zero_point,
            in_scale: qi.scale,
            weights: m.weights.into(),
            block_k: Dense::block_k_for(m.packed, m.out, self.acts[m.input].shape.c),
            bias: m.bias,
            bias_first: m.bias_first,
            out_scale: q.scale,
            out_zero_point: q.zero_point,
            lo,
            hi,
        };
        let shape = Shape::flat(m.out);
        let id = self.push(
            ctx,
            Op::Dense(d),
            m.act,
            vec![m.input],
            shape,
            q,
            out,
            m.params,
        );
        self.bind_float(m.trains, m.weight_name, m.in_out, m.bias_name);
        Ok(id)
    }

    /// Bind the last layer's float weights (when they train) and float bias.
    pub(super) fn bind_float(
        &mut self,
        trains: bool,
        weight: String,
        in_out: bool,
        float_bias: Option<String>,
    ) {
        if let (Some(l), true) = (self.layers.last_mut(), trains) {
            l.binding = Some(ParamBinding {
                weight,
                layout: if in_out {
                    WeightLayout::InOut
                } else {
                    WeightLayout::OutIn
                },
                zero_point: vec![0],
                unsigned: false,
                bits: 32,
                bias: None,
                float_bias,
                float_weight: None,
            });
        }
    }
}
