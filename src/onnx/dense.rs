//! Float layers: a Gemm or MatMul whose weights are a plain float32 initializer (the quantizer
//! left the layer in float), reading a dequantized activation. They become
//! [`crate::graph::Dense`] layers: f32 in onnxruntime's order, trained in f32, written back as
//! float32 (see there for why).
//!
//! What is refused, by name: a float Conv, a float layer whose input is not a dequantized
//! activation (the model's float input, or the float output of another float layer or of a
//! float activation), and an input quantized per channel.

use crate::graph::{Activation, Dense, Op, ParamBinding, QParams, Shape, WeightLayout};
use crate::Result;

use super::compute::LinearLayout;
use super::value::{FloatMac, Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// A Gemm/MatMul with float weights on the dequantized activation `input`.
    pub(super) fn float_layer(&mut self, ctx: &NodeCtx, input: usize) -> Result<()> {
        let op = ctx.node.op_type.as_str();
        if op == "Conv" {
            return Err(ctx.unsupported(
                "a Conv with float weights (a float layer): qforget runs float Gemm/MatMul \
                 layers, not float convolutions",
            ));
        }
        if self.acts[input].per_channel() {
            return Err(
                ctx.unsupported("a float layer reading an activation quantized per channel")
            );
        }
        let w = self.konst(ctx, 1)?;
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
            act: Activation::None,
            params: vec![w.name.clone()],
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

    /// Why a Conv/Gemm/MatMul whose data input `x` is not a dequantized activation is refused.
    pub(super) fn float_input_refusal(
        &self,
        ctx: &NodeCtx,
        x: &str,
        float_weights: bool,
    ) -> crate::Error {
        match self.values.get(x) {
            Some(Value::Pending(p, n)) if matches!(p.as_ref(), Pending::Dense(_)) => ctx
                .unsupported(format!(
                    "it reads '{x}', the float output of float layer '{n}': qforget runs a float \
                     layer only between a dequantized activation and a QuantizeLinear or the \
                     model output, not two float layers in a row"
                )),
            Some(Value::Pending(_, n)) if float_weights => ctx.unsupported(format!(
                "a float layer reading '{x}', a float result of node '{n}' that is not quantized \
                 again; qforget needs a float layer's input to come from a DequantizeLinear \
                 (maybe through Flatten/Reshape)"
            )),
            Some(Value::FloatInput(..)) if float_weights => ctx.unsupported(
                "a float layer on the model's float input, before its first QuantizeLinear",
            ),
            _ => ctx.unsupported(
                "the data input is not a dequantized activation (float layers are supported only \
                 on one)",
            ),
        }
    }

    /// The [`Dense`] layer of `m` with output parameters `q` (placeholders for a float head).
    pub(super) fn dense_layer(
        &mut self,
        ctx: &NodeCtx,
        m: FloatMac,
        q: QParams,
        out: &str,
    ) -> Result<usize> {
        let qi = self.acts[m.input].q;
        let (lo, hi) = m.act.range(&q);
        let d = Dense {
            in_features: self.acts[m.input].shape.c,
            out_features: m.out,
            in_zero_point: qi.zero_point,
            in_scale: qi.scale,
            weights: m.weights,
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
        if let (Some(l), true) = (self.layers.last_mut(), m.trains) {
            l.binding = Some(ParamBinding {
                weight: m.weight_name,
                layout: if m.in_out {
                    WeightLayout::InOut
                } else {
                    WeightLayout::OutIn
                },
                zero_point: vec![0],
                unsigned: false,
                bits: 32,
                bias: None,
                float_bias: m.bias_name,
                float_weight: None,
            });
        }
        Ok(id)
    }
}
