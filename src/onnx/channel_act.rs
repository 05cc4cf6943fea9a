//! Activations quantized per channel (NNCF quantizes the input of a depthwise convolution so).
//!
//! Such a tensor is exactly representable when channel `c` only ever meets its own scale `s_c`:
//! its producer is a Conv/Gemm/MatMul, whose requantization is per output channel anyway
//! (`s_in·s_w[c]/s_out[c]`), and its only readers are convolutions with one input channel per
//! group (a depthwise conv folds `s_c` into its own per-channel multiplier). The zero point must
//! be the same for every channel: it is the depthwise conv's padding value and the producer's
//! single output zero point. Everything else is refused here, naming the node, so no layer ever
//! reads a per-channel tensor as if it had one scale (`crate::graph::channel_act`). Zero points
//! that differ between channels (NNCF's preset MIXED) keep the tensor in float instead: a
//! QuantizeLinear → DequantizeLinear function ([`FloatFn::FakeQuant`]) whose readers run in
//! float, as onnxruntime runs them.

use crate::graph::{Conv, FloatFn, Linear, OrtFix, OrtOrder, QParams, Requant};
use crate::Result;

use super::proto::ConstData;
use super::value::{Pending, Value};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Activation parameters of a QuantizeLinear/DequantizeLinear (scale input `si`, zero point
    /// `zi`): per tensor as [`Importer::act_qparams`] (empty channel scales), or per channel on
    /// axis 1 with one zero point for all channels. `q.scale` is then the largest channel scale.
    pub fn act_qparams_channels(
        &self,
        ctx: &NodeCtx,
        si: usize,
        zi: usize,
    ) -> Result<(QParams, Vec<f32>)> {
        let s = self.konst(ctx, si)?;
        let scales = match &s.data {
            ConstData::F32(v) if v.len() > 1 => v.clone(),
            _ => return Ok((self.act_qparams(ctx, si, zi)?, Vec::new())),
        };
        let axis = ctx.attrs().int("axis", 1).map_err(|e| ctx.bad(e))?;
        if axis != 1 {
            return Err(ctx.unsupported(format!(
                "activation scale '{}' has {} values along axis {axis}; per-channel activation \
                 quantization is supported only along the channel axis 1",
                s.name,
                scales.len()
            )));
        }
        positive_scales(ctx, &s.name, &scales)?;
        let (zero_point, signed) = match ctx.input(zi) {
            None => (0, false),
            Some(_) => {
                let z = self.konst(ctx, zi)?;
                let (vals, signed): (Vec<i32>, bool) = match &z.data {
                    ConstData::U8(v) => (v.iter().map(|&x| x as i32).collect(), false),
                    ConstData::I8(v) => (v.iter().map(|&x| x as i32 + 128).collect(), true),
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "zero point '{}' is {}; activations must be uint8 or int8",
                            z.name,
                            z.type_name()
                        )))
                    }
                };
                if vals.len() != 1 && vals.len() != scales.len() {
                    return Err(ctx.bad(format!(
                        "zero point '{}' has {} values for {} scales",
                        z.name,
                        vals.len(),
                        scales.len()
                    )));
                }
                if vals.iter().any(|&v| v != vals[0]) {
                    return Err(ctx.unsupported(format!(
                        "zero point '{}' differs between channels; qforget supports per-channel \
                         activation quantization with one zero point for all channels",
                        z.name
                    )));
                }
                (vals[0], signed)
            }
        };
        let scale = scales.iter().copied().fold(0.0f32, f32::max);
        let q = QParams {
            scale,
            zero_point,
            signed,
        };
        Ok((q, scales))
    }

    /// The QuantizeLinear/DequantizeLinear of node `ctx` (scale input 1, zero point input 2)
    /// as a float function, when it is per channel along axis 1 with zero points that differ
    /// between channels (NNCF's asymmetric per-channel activations, preset MIXED): no integer
    /// layer takes such a tensor, so it stays a float activation holding the dequantized
    /// values, `(clamp(round(x / s_c) + zp_c) − zp_c) · s_c`, exactly what onnxruntime passes on
    /// (its readers run in float). `None` for any other parameters.
    pub(super) fn channel_zero_points(&self, ctx: &NodeCtx) -> Result<Option<FloatFn>> {
        let (Some(si), Some(zi)) = (ctx.input(1), ctx.input(2)) else {
            return Ok(None);
        };
        let (Some(s), Some(z)) = (self.consts.get(si), self.consts.get(zi)) else {
            return Ok(None);
        };
        let (ConstData::F32(scale), Some(zps)) = (&s.data, z.to_i64()) else {
            return Ok(None);
        };
        if scale.len() < 2 || zps.len() != scale.len() || zps.iter().all(|&v| v == zps[0]) {
            return Ok(None);
        }
        let axis = ctx.attrs().int("axis", 1).map_err(|e| ctx.bad(e))?;
        if axis != 1 {
            return Ok(None);
        }
        let (lo, hi) = match &z.data {
            ConstData::U8(_) => (0.0, 255.0),
            ConstData::I8(_) => (-128.0, 127.0),
            _ => return Ok(None),
        };
        positive_scales(ctx, &s.name, scale)?;
        Ok(Some(FloatFn::FakeQuant {
            scale: scale.clone(),
            zero_point: zps.iter().map(|&v| v as f32).collect(),
            lo,
            hi,
        }))
    }

    /// QuantizeLinear of `x` with per-channel zero points (see
    /// [`Importer::channel_zero_points`]): a float layer computing the quantized values'
    /// real equivalents; the DequantizeLinear that reads it passes it on.
    pub(super) fn fake_quantize(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        f: FloatFn,
        out: String,
    ) -> Result<()> {
        let a = self.float_operand_of_channels(ctx, x, f.channels())?;
        let id = self.float_fns(ctx, a, vec![f.clone()], &out);
        self.values.insert(out.clone(), Value::Float(id));
        self.fake_quantized.insert(out, f);
        Ok(())
    }

    /// The float activation a per-channel QuantizeLinear with `scales` values reads for `x`,
    /// which must have that many channels.
    fn float_operand_of_channels(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        scales: usize,
    ) -> Result<usize> {
        let a = self.float_operand(ctx, x)?;
        let c = self.acts[a].shape.c;
        if scales != c {
            return Err(ctx.bad(format!("{scales} scales for the {c} channels of '{x}'")));
        }
        Ok(a)
    }

    /// QuantizeLinear with one scale per channel of the float result `x`: the output of a
    /// Conv/Gemm/MatMul (after its fused Relu/Clip), requantized per output channel by its
    /// layer, or a float activation (a float segment's Hardswish `x·HardSigmoid(x)`, say),
    /// quantized by a per-channel [`crate::graph::Quantize`].
    pub(super) fn quantize_per_channel(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        q: QParams,
        scales: Vec<f32>,
        out: String,
    ) -> Result<()> {
        let refuse = |what: &str| {
            ctx.unsupported(format!(
                "'{x}' is quantized per channel ({} scales), but it is {what}; qforget supports \
                 per-channel activation quantization only of the output of a Conv/Gemm/MatMul or of a \
                 float activation",
                scales.len()
            ))
        };
        let (mac, node) = match self.value(ctx, x)? {
            Value::Pending(p, node) => match *p {
                Pending::Mac(m) => (m, node),
                _ => return self.quantize_float_per_channel(ctx, x, q, scales, out),
            },
            Value::Float(_) => return self.quantize_float_per_channel(ctx, x, q, scales, out),
            Value::FloatInput(..) => return Err(refuse("the model input")),
            Value::Deq(_) => return Err(refuse("a dequantized activation")),
            _ => return Err(refuse("not a float result")),
        };
        if scales.len() != mac.out {
            return Err(ctx.bad(format!(
                "{} scales for the {} channels of '{x}'",
                scales.len(),
                mac.out
            )));
        }
        let first = self.layers.len();
        let id = self.mac_layer(ctx, *mac, q, &scales, &out)?;
        if let Some(l) = self.layers.get_mut(first) {
            l.name = node;
        }
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// `conv` set to run in onnxruntime's float order ([`OrtOrder`]) where the order covers it
    /// (a 1×1 conv of a per-tensor input whose accumulator unit is exactly `s_in·s_w[c]`: no
    /// folded BatchNormalization) and the file computes it in float: its output is quantized per
    /// channel (`out_scales`; else all channels have `s_out`), or its bias is a float
    /// initializer that trains (NNCF's float Conv; an onnxruntime-quantized conv with an int32
    /// bias keeps the integer GEMM).
    pub(super) fn with_ort_order(
        &self,
        mut conv: Conv,
        input: usize,
        acc_scale: &[f32],
        (s_out, out_scales): (f32, &[f32]),
        bias: &[f32],
    ) -> Conv {
        let s_in = self.acts[input].q.scale;
        let plain = (0..acc_scale.len()).all(|c| acc_scale[c] == s_in * conv.scale_of(c));
        let float_conv = !out_scales.is_empty() || !conv.requant.float_bias.is_empty();
        if float_conv && !self.acts[input].per_channel() && plain && OrtOrder::applies_to(&conv) {
            conv.ort_order = Some(OrtOrder {
                in_scale: s_in,
                out_scales: if out_scales.is_empty() {
                    vec![s_out; conv.out_shape.c]
                } else {
                    out_scales.to_vec()
                },
                bias: bias.to_vec(),
            });
        }
        conv
    }

    /// `conv` set to give onnxruntime's bytes where its float order rounds the other way
    /// ([`OrtFix`]): a conv onnxruntime runs in float (`float_order`: the file's bias scale) on
    /// a per-tensor input, per-tensor output, accumulator unit exactly `s_in·s_w[c]`, an
    /// integer or a float bias (`float_bias`), and not already run in that order by
    /// [`OrtOrder`].
    pub(super) fn with_ort_fix(
        &self,
        mut conv: Conv,
        input: usize,
        (acc_scale, float_bias): (&[f32], &[f32]),
        (s_out, out_scales): (f32, &[f32]),
        float_order: Option<&(Vec<f32>, bool)>,
    ) -> Conv {
        if conv.ort_order.is_none() && OrtFix::applies_to(&conv) {
            let scale_of = |c: usize| conv.scale_of(c);
            let layer = (acc_scale, float_bias, &conv.bias[..], &conv.requant);
            // A per-channel input only meets convs with one input channel per group.
            let one_channel = conv.in_shape.c == conv.group;
            let outs = (s_out, out_scales);
            conv.ort_fix = self.ort_fix(input, one_channel, layer, scale_of, outs, float_order);
        }
        conv
    }

    /// [`Importer::with_ort_fix`] for a linear layer (a QDQ Gemm or MatMul).
    pub(super) fn with_ort_fix_linear(
        &self,
        mut lin: Linear,
        input: usize,
        (acc_scale, float_bias): (&[f32], &[f32]),
        (s_out, out_scales): (f32, &[f32]),
        float_order: Option<&(Vec<f32>, bool)>,
    ) -> Linear {
        if OrtFix::applies_to_linear(&lin) {
            let ws = &lin.weight_scales;
            let scale_of = |o: usize| ws[if ws.len() > 1 { o } else { 0 }];
            let layer = (acc_scale, float_bias, &lin.bias[..], &lin.requant);
            let outs = (s_out, out_scales);
            lin.ort_fix = self.ort_fix(input, false, layer, scale_of, outs, float_order);
        }
        lin
    }

    /// The [`OrtFix`] of a layer with the given input, accumulator units, float and integer
    /// bias, requantization, weight scales and output, when it qualifies (see
    /// [`Importer::with_ort_fix`]).
    ///
    /// A float bias (NNCF keeps Conv/Gemm biases in float; a float `Add` after an
    /// onnxruntime MatMul) qualifies when it is the layer's only bias and the requantization's
    /// offset is exactly it over the output scale: onnxruntime adds the file's float values
    /// after the sums (a Gemm's `C`: before), then applies the float Relu/Clip, which the
    /// clamp to `[lo, hi]` after rounding reproduces.
    ///
    /// An input quantized per channel qualifies where each output channel reads one input
    /// channel (`one_channel`: a depthwise conv, NNCF's MobileNets): onnxruntime dequantizes
    /// each channel with its own scale before the float conv.
    fn ort_fix(
        &self,
        input: usize,
        one_channel: bool,
        (acc_scale, float_bias, bias_i, requant): (&[f32], &[f32], &[i32], &Requant),
        scale_of: impl Fn(usize) -> f32,
        (s_out, out_scales): (f32, &[f32]),
        float_order: Option<&(Vec<f32>, bool)>,
    ) -> Option<OrtFix> {
        let (bias_scale, bias_first) = float_order?;
        let info = &self.acts[input];
        let c_out = acc_scale.len();
        let s_in_of = |c: usize| info.scale_of(c * info.shape.c / c_out.max(1));
        let plain = (0..c_out).all(|c| acc_scale[c] == s_in_of(c) * scale_of(c));
        let s_in = info.q.scale;
        let has_float = float_bias.iter().any(|&b| b != 0.0);
        let bias_ok = if has_float {
            bias_i.iter().all(|&b| b == 0)
                && requant.offset.len() == float_bias.len()
                && (0..float_bias.len()).all(|c| requant.offset[c] == float_bias[c] / s_out)
        } else {
            requant.offset.is_empty()
        };
        let input_ok = !info.per_channel() || one_channel;
        (plain && bias_ok && out_scales.is_empty() && input_ok).then(|| OrtFix {
            in_scale: s_in,
            in_scales: if info.per_channel() {
                (0..c_out).map(s_in_of).collect()
            } else {
                vec![]
            },
            out_scale: s_out,
            bias_scale: bias_scale.clone(),
            bias_first: *bias_first,
            float_bias: if has_float {
                float_bias.to_vec()
            } else {
                vec![]
            },
            rows: Default::default(),
        })
    }

    /// Number of values of the float scale input `si` (1 for anything else, which
    /// [`Importer::act_qparams`] then reports).
    pub(super) fn scale_len(&self, ctx: &NodeCtx, si: usize) -> Result<usize> {
        Ok(match &self.konst(ctx, si)?.data {
            ConstData::F32(v) => v.len(),
            _ => 1,
        })
    }

    /// DequantizeLinear of a quantized activation where either side is per channel: the same
    /// parameters as the QuantizeLinear that made it, or an error.
    pub(super) fn dequantize_per_channel(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        out: String,
    ) -> Result<()> {
        let (q, scales) = self.act_qparams_channels(ctx, 1, 2)?;
        let act = &self.acts[a];
        if act.q != q || act.channel_scales != scales {
            return Err(ctx.unsupported(format!(
                "it reads '{}' with other parameters than it was quantized with, and one of \
                 them is per channel; qforget cannot requantize per channel",
                act.name
            )));
        }
        self.values.insert(out, Value::Deq(a));
        Ok(())
    }

    /// Any float result other than a Conv/Gemm/MatMul's becomes a float activation, quantized
    /// per channel by a [`crate::graph::Quantize`].
    fn quantize_float_per_channel(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        q: QParams,
        scales: Vec<f32>,
        out: String,
    ) -> Result<()> {
        let a = self.float_operand_of_channels(ctx, x, scales.len())?;
        let id = self.quantize_float_channels(ctx, a, q, scales, &out);
        self.values.insert(out, Value::Quant(id));
        Ok(())
    }

    /// Refuse a node that reads a per-channel activation other than as the data input of a
    /// DequantizeLinear (quantized form) or of a Conv (dequantized form; the conv checks its
    /// groups in [`Importer::input_scales`]).
    pub(super) fn check_channel_readers(&self, ctx: &NodeCtx) -> Result<()> {
        for (i, name) in ctx.node.input.iter().enumerate() {
            let (a, quantized) = match self.values.get(name) {
                Some(Value::Quant(a)) => (*a, true),
                Some(Value::Deq(a)) => (*a, false),
                _ => continue,
            };
            if !self.acts[a].per_channel() {
                continue;
            }
            let ok = i == 0
                && match ctx.node.op_type.as_str() {
                    "DequantizeLinear" => quantized,
                    "Conv" => !quantized,
                    _ => false,
                };
            if !ok {
                return Err(ctx.unsupported(format!(
                    "it reads '{name}', which is quantized per channel ({} scales); qforget \
                     supports per-channel activation quantization only on the input of a \
                     depthwise Conv",
                    self.acts[a].channel_scales.len()
                )));
            }
        }
        Ok(())
    }

    /// The real scale of input channel `c / per` for output channel `c` of a MAC on activation
    /// `input`, as `(scales, per)`: one scale (and `per` = `out`) for a per-tensor input; for a
    /// per-channel input, only a Conv with one input channel per group is accepted.
    pub(super) fn input_scales(
        &self,
        ctx: &NodeCtx,
        input: usize,
        group: Option<usize>,
        out: usize,
    ) -> Result<(Vec<f32>, usize)> {
        let act = &self.acts[input];
        if !act.per_channel() {
            return Ok((vec![act.q.scale], out.max(1)));
        }
        let c = act.shape.c;
        match group {
            Some(g) if g == c && g > 0 && out.is_multiple_of(g) => {
                Ok((act.channel_scales.clone(), out / g))
            }
            _ => Err(ctx.unsupported(format!(
                "its input '{}' is quantized per channel ({c} scales); qforget supports that \
                 only for a depthwise Conv (group = {c} input channels), this is {}",
                act.name,
                match group {
                    Some(g) => format!("a Conv with group = {g}"),
                    None => "a Gemm/MatMul".to_string(),
                }
            ))),
        }
    }
}

/// Every value of scale tensor `name` is a positive finite number.
fn positive_scales(ctx: &NodeCtx, name: &str, scales: &[f32]) -> Result<()> {
    match scales.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        Some(v) => Err(ctx.bad(format!("scale '{name}' holds {v}, not a positive number"))),
        None => Ok(()),
    }
}
