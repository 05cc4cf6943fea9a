//! QOperator nodes: QLinearConv, QLinearMatMul, onnxruntime's `com.microsoft` QGemm,
//! QLinearAdd, QLinearMul, QLinearGlobalAveragePool and QLinearAveragePool, and the integer-product ops
//! MatMulInteger / ConvInteger. Each carries its own input and output parameters.

use crate::graph::{Activation, Op, QParams};
use crate::Result;

use super::compute::{BiasIn, LinearLayout, MacKind};
use super::proto::ConstData;
use super::value::{AddOperand, DeqConst, Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// The quantized activation at input `i`, checked against the parameters the node states at
    /// inputs `si`/`zi`.
    pub(super) fn q_input(&self, ctx: &NodeCtx, i: usize, si: usize, zi: usize) -> Result<usize> {
        let x = ctx
            .input(i)
            .ok_or_else(|| ctx.bad(format!("input #{i} is missing")))?;
        let Value::Quant(a) = self.value(ctx, x)? else {
            return Err(ctx.unsupported(format!("input '{x}' is not a quantized activation")));
        };
        let q = self.act_qparams(ctx, si, zi)?;
        let have = self.acts[a].q;
        if (have.scale, have.zero_point) != (q.scale, q.zero_point) {
            return Err(ctx.bad(format!(
                "input '{x}' is stated with scale {} / zero point {} but was produced with {} / {}",
                q.scale,
                q.model_zero_point(),
                have.scale,
                have.model_zero_point()
            )));
        }
        Ok(a)
    }

    /// A constant quantized weight tensor from inputs `wi`, `si`, `zi`, per-channel on `axis`.
    fn q_weights(
        &self,
        ctx: &NodeCtx,
        wi: usize,
        si: usize,
        zi: usize,
        axis: usize,
    ) -> Result<DeqConst> {
        let q = self.konst(ctx, wi)?;
        let scale = self.konst(ctx, si)?;
        let ConstData::F32(scale) = scale.data else {
            return Err(ctx.bad("weight scale is not float"));
        };
        if scale.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(ctx.bad("weight scale has a non-positive or non-finite value"));
        }
        let zero_point = match ctx.input(zi) {
            None => vec![0],
            Some(_) => self
                .konst(ctx, zi)?
                .to_i64()
                .ok_or_else(|| ctx.bad("weight zero point is not an integer"))?,
        };
        Ok(DeqConst {
            q,
            scale,
            zero_point,
            axis,
            blocks: None,
        })
    }

    fn int_bias(&self, ctx: &NodeCtx, i: usize) -> Result<Option<BiasIn>> {
        if ctx.input(i).is_none() {
            return Ok(None);
        }
        let b = self.konst(ctx, i)?;
        match b.data {
            ConstData::I32(v) => Ok(Some(BiasIn::Int(v, None, b.name))),
            _ => Err(ctx.unsupported(format!(
                "bias '{}' is {}, expected int32",
                b.name,
                b.type_name()
            ))),
        }
    }

    /// QLinearConv, QLinearMatMul, QGemm.
    pub(super) fn qlinear_mac(&mut self, ctx: &NodeCtx) -> Result<()> {
        let op = ctx.node.op_type.as_str();
        let input = self.q_input(ctx, 0, 1, 2)?;
        let (mac, yq) = match op {
            "QLinearConv" => {
                let w = self.q_weights(ctx, 3, 4, 5, 0)?;
                let kind = self.conv_kind(ctx, &w.q)?;
                let bias = self.int_bias(ctx, 8)?;
                (self.build_mac(ctx, input, kind, &w, bias)?, Some((6, 7)))
            }
            "QLinearMatMul" => {
                let w = self.q_weights(ctx, 3, 4, 5, 1)?;
                let kind = MacKind::Linear(LinearLayout::InOut);
                (self.build_mac(ctx, input, kind, &w, None)?, Some((6, 7)))
            }
            _ => {
                let layout = self.gemm_layout(ctx)?;
                let axis = if layout == LinearLayout::OutIn { 0 } else { 1 };
                let w = self.q_weights(ctx, 3, 4, 5, axis)?;
                let bias = self.int_bias(ctx, 6)?;
                let yq = ctx.input(7).map(|_| (7, 8));
                (
                    self.build_mac(ctx, input, MacKind::Linear(layout), &w, bias)?,
                    yq,
                )
            }
        };
        let out = ctx.output()?.to_string();
        let v = match yq {
            Some((si, zi)) => {
                let q = self.act_qparams(ctx, si, zi)?;
                Value::Quant(self.materialize(ctx, Pending::Mac(Box::new(mac)), q, &out)?)
            }
            None => Value::Pending(Box::new(Pending::Mac(Box::new(mac))), ctx.name()),
        };
        self.values.insert(out, v);
        Ok(())
    }

    /// MatMulInteger / ConvInteger: an i32 product whose scale a later Mul supplies.
    pub(super) fn integer_mac(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let Value::Quant(input) = self.value(ctx, x)? else {
            return Err(ctx.unsupported(format!(
                "input '{x}' is not a statically quantized activation (dynamic quantization is not supported)"
            )));
        };
        let zp = match ctx.input(2) {
            None => 0,
            Some(_) => {
                let z = self.konst(ctx, 2)?;
                match z.data {
                    ConstData::U8(ref v) if v.len() == 1 => v[0] as i32,
                    ConstData::I8(ref v) if v.len() == 1 => v[0] as i32 + 128,
                    _ => {
                        return Err(ctx.unsupported("input zero point must be one uint8/int8 value"))
                    }
                }
            }
        };
        if zp != self.acts[input].q.zero_point {
            return Err(ctx.bad("input zero point differs from the producer's"));
        }
        let conv = ctx.node.op_type == "ConvInteger";
        let w = self.q_weights_unscaled(ctx, conv)?;
        let kind = if conv {
            self.conv_kind(ctx, &w.q)?
        } else {
            MacKind::Linear(LinearLayout::InOut)
        };
        let mut mac = self.build_mac(ctx, input, kind, &w, None)?;
        mac.acc_scale.iter_mut().for_each(|s| *s = 1.0);
        mac.weight_scales = vec![1.0];
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(Pending::Mac(Box::new(mac))), ctx.name()),
        );
        Ok(())
    }

    fn q_weights_unscaled(&self, ctx: &NodeCtx, conv: bool) -> Result<DeqConst> {
        let q = self.konst(ctx, 1)?;
        let zero_point = match ctx.input(3) {
            None => vec![0],
            Some(_) => self
                .konst(ctx, 3)?
                .to_i64()
                .ok_or_else(|| ctx.bad("weight zero point is not an integer"))?,
        };
        Ok(DeqConst {
            q,
            scale: vec![1.0],
            zero_point,
            axis: if conv { 0 } else { 1 },
            blocks: None,
        })
    }

    /// An operand of QLinearAdd: an activation or a quantized constant.
    fn add_operand(&self, ctx: &NodeCtx, i: usize) -> Result<AddOperand> {
        let x = ctx
            .input(i)
            .ok_or_else(|| ctx.bad(format!("input #{i} is missing")))?;
        if self.values.contains_key(x) {
            return Ok(AddOperand::Act(self.q_input(ctx, i, i + 1, i + 2)?));
        }
        let c = self.q_weights(ctx, i, i + 1, i + 2, 0)?;
        self.const_operand(ctx, &c)
    }

    /// QLinearAdd (com.microsoft).
    pub(super) fn qlinear_add(&mut self, ctx: &NodeCtx) -> Result<()> {
        let a = match self.add_operand(ctx, 0)? {
            AddOperand::Act(a) => a,
            AddOperand::Const { .. } => match self.add_operand(ctx, 3)? {
                AddOperand::Act(_) => return self.qlinear_add_swapped(ctx),
                AddOperand::Const { .. } => {
                    return Err(ctx.unsupported("QLinearAdd of two constants"))
                }
            },
        };
        let b = self.add_operand(ctx, 3)?;
        self.finish_qadd(ctx, a, b)
    }

    fn qlinear_add_swapped(&mut self, ctx: &NodeCtx) -> Result<()> {
        let AddOperand::Act(a) = self.add_operand(ctx, 3)? else {
            unreachable!("checked by the caller")
        };
        let b = self.add_operand(ctx, 0)?;
        self.finish_qadd(ctx, a, b)
    }

    fn finish_qadd(&mut self, ctx: &NodeCtx, a: usize, b: AddOperand) -> Result<()> {
        let q: QParams = self.act_qparams(ctx, 6, 7)?;
        let out = ctx.output()?.to_string();
        // onnxruntime's QLinearAdd kernel computes the ratio form, not the QDQ float sequence.
        let id = self.add_layer(ctx, a, b, Activation::None, false, q, &out, false)?;
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// QLinearMul (com.microsoft) of two activations, as QOperator quantization writes
    /// `x · sigmoid(x)` (SiLU) or a squeeze-excitation gate: the Mul layer with onnxruntime's
    /// integer-product formula ([`crate::graph::Mul::ratio`]). An operand that is a quantized
    /// constant goes to [`Importer::qlinear_mul_const`].
    pub(super) fn qlinear_mul(&mut self, ctx: &NodeCtx) -> Result<()> {
        for (i, k) in [(0, 3), (3, 0)] {
            let x = ctx
                .input(i)
                .ok_or_else(|| ctx.bad(format!("input #{i} is missing")))?;
            if !self.values.contains_key(x) {
                return self.qlinear_mul_const(ctx, k, i);
            }
        }
        let x = self.q_input(ctx, 0, 1, 2)?;
        let y = self.q_input(ctx, 3, 4, 5)?;
        let q = self.act_qparams(ctx, 6, 7)?;
        let (a, b) = self.mul_order(ctx, x, y)?;
        let (qa, qb) = (self.acts[a].q, self.acts[b].q);
        let (sa, sb) = (self.acts[a].shape, self.acts[b].shape);
        let op = crate::graph::Mul {
            a: qa,
            b: qb,
            out: q,
            lo: 0,
            hi: 255,
            broadcast: sa != sb,
            // In the order onnxruntime's kernel rounds it: (s_a · s_b) / s_y.
            ratio: Some(qa.scale * qb.scale / q.scale),
        };
        let out = ctx.output()?.to_string();
        let id = self.push(
            ctx,
            Op::Mul(op),
            Activation::None,
            vec![a, b],
            sa,
            q,
            &out,
            vec![],
        );
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// QLinearMul of the activation at input `a` by the quantized constant at input `k`, one
    /// value (GELU's `· 0.5` in QOperator form) or one per channel (a LayerNorm's γ spelled out
    /// in ops, `[F]` on a flat tensor or `[C, 1, 1]` on an image): a lookup layer whose table
    /// (one per channel) is onnxruntime's integer-product formula for each byte; its float twin
    /// and backward are `x · k`.
    fn qlinear_mul_const(&mut self, ctx: &NodeCtx, a: usize, k: usize) -> Result<()> {
        let input = self.q_input(ctx, a, a + 1, a + 2)?;
        let c = self.q_weights(ctx, k, k + 1, k + 2, 0)?;
        let shape = self.acts[input].shape;
        let per_channel = super::float_const::per_channel(&c.q.dims, shape);
        if !(c.q.len() == 1 || per_channel) || c.scale.len() != 1 || c.zero_point.len() != 1 {
            return Err(ctx.unsupported(format!(
                "QLinearMul by the constant '{}' with dimensions {:?} (an activation by one \
                 value, by one per-tensor-quantized value per channel, or two activations, are \
                 supported)",
                c.q.name, c.q.dims
            )));
        }
        let q = self.act_qparams(ctx, 6, 7)?;
        let qi = self.acts[input].q;
        let kq: Vec<i32> =
            c.q.to_f32()
                .iter()
                .map(|&v| v as i32 - c.zero_point[0] as i32)
                .collect();
        let ratio = qi.scale * c.scale[0] / q.scale;
        let mut op = crate::graph::Pointwise::new(
            vec![crate::graph::FloatFn::Mul(c.dequantize())],
            shape.c,
            &qi,
            &q,
        );
        // One table of 256 bytes per channel whose constant differs (one for a scalar).
        for (i, y) in op.lut.iter_mut().enumerate() {
            let (ch, b) = (i / 256, (i % 256) as i32);
            let p = (b - qi.zero_point) * kq[ch.min(kq.len() - 1)];
            let v = crate::graph::qparams::round_half_even(p as f32 * ratio + q.zero_point as f32);
            *y = v.clamp(0.0, 255.0) as u8;
        }
        let out = ctx.output()?.to_string();
        let id = self.push(
            ctx,
            Op::Pointwise(op),
            Activation::None,
            vec![input],
            shape,
            q,
            &out,
            vec![],
        );
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// QLinearSigmoid / QLinearLeakyRelu (com.microsoft): onnxruntime runs them by a lookup
    /// table of dequantize → function → quantize, which is what the pointwise layer is.
    pub(super) fn qlinear_lookup(&mut self, ctx: &NodeCtx) -> Result<()> {
        let input = self.q_input(ctx, 0, 1, 2)?;
        let q = self.act_qparams(ctx, 3, 4)?;
        let f = if ctx.node.op_type == "QLinearSigmoid" {
            crate::graph::FloatFn::Sigmoid
        } else {
            crate::graph::FloatFn::LeakyRelu {
                alpha: ctx.attrs().float("alpha", 0.01).map_err(|e| ctx.bad(e))?,
            }
        };
        let out = ctx.output()?.to_string();
        let p = Pending::Pointwise {
            input,
            fns: vec![f],
        };
        let id = self.materialize(ctx, p, q, &out)?;
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// QLinearGlobalAveragePool / QLinearAveragePool (com.microsoft), NCHW only.
    pub(super) fn qlinear_avg_pool(&mut self, ctx: &NodeCtx) -> Result<()> {
        if ctx
            .attrs()
            .int("channels_last", 0)
            .map_err(|e| ctx.bad(e))?
            != 0
        {
            return Err(ctx.unsupported("channels_last = 1"));
        }
        let input = self.q_input(ctx, 0, 1, 2)?;
        let q = self.act_qparams(ctx, 3, 4)?;
        let p = if ctx.node.op_type == "QLinearGlobalAveragePool" {
            Pending::GlobalAvgPool {
                input,
                float_order: false,
            }
        } else {
            let (window, ceil) = self.window(ctx, None)?;
            let cip = Self::count_include_pad(ctx)?;
            Pending::AvgPool {
                input,
                window,
                count_include_pad: cip,
                ceil,
                columns_first: false,
                qdq: false,
            }
        };
        let out = ctx.output()?.to_string();
        let id = self.materialize(ctx, p, q, &out)?;
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }
}
