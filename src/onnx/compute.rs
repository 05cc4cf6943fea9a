//! Float compute nodes of a QDQ model (Conv, Gemm, MatMul, BatchNormalization, Relu/Clip, Add,
//! pools, Flatten/Reshape), and the weight handling shared with the QOperator nodes.

use crate::graph::{Activation, InputPool, MaxPool, Op, ParamBinding, Shape, WeightLayout, Window};
use crate::Result;

use super::proto::{ConstData, ConstTensor};
use super::value::{AddOperand, ConcatIn, DeqConst, Mac, Pending, Value};
use super::{Importer, NodeCtx};

/// Layout of a linear layer's weight matrix in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinearLayout {
    /// `[out][in]` (Gemm with transB = 1).
    OutIn,
    /// `[in][out]` (MatMul, Gemm with transB = 0).
    InOut,
}

/// What kind of MAC layer a node is.
#[derive(Debug, Clone, Copy)]
pub enum MacKind {
    Conv(Window, usize),
    Linear(LinearLayout),
}

/// Bias of a MAC node as the file gives it.
pub enum BiasIn {
    /// int32 values and the scale they are stored at (`None`: the implied `s_in · s_w`).
    Int(Vec<i32>, Option<Vec<f32>>, String),
    /// Real values; the flag says whether they train (a float32 initializer, written back in
    /// its own type).
    Float(Vec<f32>, String, bool),
}

impl Importer<'_> {
    /// AveragePool's `count_include_pad` attribute (default 0).
    pub fn count_include_pad(ctx: &NodeCtx) -> Result<bool> {
        Ok(ctx
            .attrs()
            .int("count_include_pad", 0)
            .map_err(|e| ctx.bad(e))?
            != 0)
    }

    /// Window attributes of Conv / pooling nodes (2-D only). `kernel` is used when the node has
    /// no `kernel_shape` attribute.
    pub fn window(&self, ctx: &NodeCtx, kernel: Option<[usize; 2]>) -> Result<(Window, bool)> {
        let a = ctx.attrs();
        let bad = |e: String| ctx.bad(e);
        let auto_pad = a.string("auto_pad").map_err(bad)?;
        if let Some(p) = auto_pad.as_deref() {
            if p != "NOTSET" && p != "VALID" {
                return Err(ctx.unsupported(format!("auto_pad = {p}")));
            }
        }
        let two = |name: &str, default: [i64; 2]| -> Result<[usize; 2]> {
            let v = a.ints(name).map_err(bad)?.unwrap_or(default.to_vec());
            match v[..] {
                [x, y] if x >= 0 && y >= 0 => Ok([x as usize, y as usize]),
                _ => {
                    Err(ctx.unsupported(format!("{name} = {v:?} (only 2-D windows are supported)")))
                }
            }
        };
        let k = match a.ints("kernel_shape").map_err(bad)? {
            Some(_) => two("kernel_shape", [1, 1])?,
            None => kernel.ok_or_else(|| ctx.bad("kernel_shape is missing"))?,
        };
        let strides = two("strides", [1, 1])?;
        let dil = two("dilations", [1, 1])?;
        let pads = a.ints("pads").map_err(bad)?.unwrap_or(vec![0; 4]);
        let pads: [usize; 4] = match pads[..] {
            [t, l, b, r] if t >= 0 && l >= 0 && b >= 0 && r >= 0 => {
                [t as usize, l as usize, b as usize, r as usize]
            }
            _ => return Err(ctx.unsupported(format!("pads = {pads:?}"))),
        };
        if k[0] == 0
            || k[1] == 0
            || strides[0] == 0
            || strides[1] == 0
            || dil[0] == 0
            || dil[1] == 0
        {
            return Err(ctx.bad("kernel, strides and dilations must be positive"));
        }
        let ceil = a.int("ceil_mode", 0).map_err(bad)? != 0;
        Ok((
            Window {
                kh: k[0],
                kw: k[1],
                stride_h: strides[0],
                stride_w: strides[1],
                pads,
                dil_h: dil[0],
                dil_w: dil[1],
            },
            ceil,
        ))
    }

    /// Conv attributes: window and group.
    pub fn conv_kind(&self, ctx: &NodeCtx, w: &ConstTensor) -> Result<MacKind> {
        if w.dims.len() != 4 {
            return Err(ctx.unsupported(format!(
                "weights '{}' have {} dimensions; only 2-D convolution is supported",
                w.name,
                w.dims.len()
            )));
        }
        let (window, _) = self.window(ctx, Some([w.dims[2], w.dims[3]]))?;
        if (window.kh, window.kw) != (w.dims[2], w.dims[3]) {
            return Err(ctx.bad("kernel_shape does not match the weights"));
        }
        let group = ctx.attrs().int("group", 1).map_err(|e| ctx.bad(e))?;
        if group < 1 {
            return Err(ctx.bad(format!("group = {group}")));
        }
        Ok(MacKind::Conv(window, group as usize))
    }

    /// Gemm attributes: the weight layout (alpha/beta/transA must be the defaults).
    pub fn gemm_layout(&self, ctx: &NodeCtx) -> Result<LinearLayout> {
        let a = ctx.attrs();
        let bad = |e: String| ctx.bad(e);
        if a.float("alpha", 1.0).map_err(bad)? != 1.0 || a.float("beta", 1.0).map_err(bad)? != 1.0 {
            return Err(ctx.unsupported("alpha/beta other than 1"));
        }
        if a.int("transA", 0).map_err(bad)? != 0 {
            return Err(ctx.unsupported("transA = 1"));
        }
        Ok(if a.int("transB", 0).map_err(bad)? != 0 {
            LinearLayout::OutIn
        } else {
            LinearLayout::InOut
        })
    }

    /// Assemble a MAC layer from quantized weights `w` (values, scales, zero points).
    pub fn build_mac(
        &self,
        ctx: &NodeCtx,
        input: usize,
        kind: MacKind,
        w: &DeqConst,
        bias: Option<BiasIn>,
    ) -> Result<Mac> {
        let dims = &w.q.dims;
        let (out, out_axis) = match kind {
            MacKind::Conv(..) => (dims[0], 0),
            MacKind::Linear(_) if dims.len() != 2 => {
                return Err(ctx.unsupported(format!(
                    "weights '{}' have dimensions {dims:?}; a 2-D matrix is expected",
                    w.q.name
                )))
            }
            MacKind::Linear(LinearLayout::OutIn) => (dims[0], 0),
            MacKind::Linear(LinearLayout::InOut) => (dims[1], 1),
        };
        let w = &w.per_channel(out_axis).map_err(|e| ctx.unsupported(e))?;
        let n = w.q.len();
        let row = n.checked_div(out).unwrap_or(0);
        let per_channel = w.scale.len() > 1;
        if per_channel && (w.axis != out_axis || w.scale.len() != out) {
            return Err(ctx.unsupported(format!(
                "weights '{}' are quantized along axis {}, not along the output channels",
                w.q.name, w.axis
            )));
        }
        // Integer weights relative to their zero point; must fit int8.
        let raw =
            w.q.to_i64()
                .ok_or_else(|| ctx.bad("weights are not integers"))?;
        let Some(bits) = w.q.bits() else {
            return Err(ctx.unsupported(format!(
                "weights '{}' are {}; 8-bit or 4-bit weights are expected",
                w.q.name,
                w.q.type_name()
            )));
        };
        // The stored int8 of a weight is `v − zp + z[c]`, and the kernels subtract the
        // channel's zero point `z[c]` again. `z[c] = 0` (the value minus its zero point) whenever
        // the file's whole grid minus its zero point fits int8: symmetric int8, uint8 around
        // 128, every 4-bit type. Otherwise (an asymmetric uint8 tensor with its zero point
        // anywhere in 0..=255, or int8 with a zero point other than 0) the stored value is the
        // file's byte re-centred on 0, `v − 128` or `v`, and `z[c] = zp − 128` or `zp`; training
        // then moves on the file's own grid.
        let (lo, hi) = if w.q.is_unsigned() {
            (0i64, (1i64 << bits) - 1)
        } else {
            (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
        };
        let centre = if w.q.is_unsigned() && bits == 8 {
            128
        } else {
            0
        };
        let zero_of = |zp: i64| -> Result<i64> {
            if !(lo..=hi).contains(&zp) {
                return Err(ctx.bad(format!(
                    "weights '{}' have zero point {zp}, outside the range {lo}..={hi} of their type",
                    w.q.name
                )));
            }
            Ok(if lo - zp >= -128 && hi - zp <= 127 {
                0
            } else {
                zp - centre
            })
        };
        let zeros: Vec<i64> = (0..out)
            .map(|c| zero_of(w.zero_point[if w.zero_point.len() > 1 { c } else { 0 }]))
            .collect::<Result<_>>()?;
        let inner: usize = dims[out_axis + 1..].iter().product();
        let mut vals = Vec::with_capacity(n);
        for (i, &v) in raw.iter().enumerate() {
            let c = (i / inner.max(1)) % dims[out_axis].max(1);
            let zp = w.zero_point[if w.zero_point.len() > 1 { c } else { 0 }];
            let d = v - zp + zeros[c];
            if !(-128..=127).contains(&d) {
                return Err(ctx.bad(format!(
                    "weights '{}' hold {v}, outside the range {lo}..={hi} of their type",
                    w.q.name
                )));
            }
            vals.push(d as i8);
        }
        let weight_zero: Vec<i32> = if zeros.iter().any(|&z| z != 0) {
            zeros.iter().map(|&z| z as i32).collect()
        } else {
            Vec::new()
        };
        let weights = if out_axis == 1 {
            // [in][out] → [out][in]
            let inn = dims[0];
            let mut t = vec![0i8; n];
            for i in 0..inn {
                for o in 0..out {
                    t[o * inn + i] = vals[i * out + o];
                }
            }
            t
        } else {
            vals
        };
        let group = match kind {
            MacKind::Conv(_, g) => Some(g),
            MacKind::Linear(_) => None,
        };
        let (s_in, per_in) = self.input_scales(ctx, input, group, out)?;
        let s_in_of = |c: usize| s_in[if s_in.len() > 1 { c / per_in } else { 0 }];
        let acc_scale: Vec<f32> = (0..out)
            .map(|c| s_in_of(c) * w.scale[if per_channel { c } else { 0 }])
            .collect();
        // A weight quantized at run time goes back to its float initializer.
        let (weight_name, float_weight, writable) = match self.float_weights.get(&w.q.name) {
            Some((init, fw)) => (init.clone(), fw.clone(), fw.is_some()),
            // Integers computed at import have no tensor to be written back to: the layer
            // runs, frozen. (A Constant node's tensor, PyTorch's converted-model export, is
            // written back like an initializer.)
            None => (
                w.q.name.clone(),
                None,
                !self.node_consts.contains(&w.q.name),
            ),
        };
        let mut params = vec![weight_name.clone()];
        let mut bias_binding = None;
        let mut float_binding = None;
        let (bias_i, float_bias) = match bias {
            None => (vec![0; out], vec![0.0; out]),
            Some(BiasIn::Int(v, scale, name)) => {
                params.push(name.clone());
                if v.len() != out {
                    return Err(ctx.bad(format!(
                        "bias '{name}' has {} values for {out} outputs",
                        v.len()
                    )));
                }
                match scale {
                    Some(s) if !scales_match(&s, &acc_scale) => {
                        let f = v
                            .iter()
                            .enumerate()
                            .map(|(c, &b)| b as f32 * s[if s.len() > 1 { c } else { 0 }])
                            .collect();
                        (vec![0; out], f)
                    }
                    _ => {
                        bias_binding = Some(name);
                        (v, vec![0.0; out])
                    }
                }
            }
            Some(BiasIn::Float(v, name, trains)) => {
                params.push(name.clone());
                if v.len() != out {
                    return Err(ctx.bad(format!(
                        "bias '{name}' has {} values for {out} outputs",
                        v.len()
                    )));
                }
                float_binding = trains.then_some(name);
                (vec![0; out], v)
            }
        };
        Ok(Mac {
            input,
            conv: match kind {
                MacKind::Conv(wd, g) => Some((wd, g)),
                MacKind::Linear(_) => None,
            },
            out,
            weights,
            row,
            weight_scales: w.scale.clone(),
            weight_bits: bits,
            weight_zero,
            acc_scale,
            bias: bias_i,
            float_bias,
            negated: vec![false; out],
            act: Activation::None,
            params,
            binding: writable.then(|| ParamBinding {
                weight: weight_name,
                layout: match kind {
                    MacKind::Conv(wd, _) => WeightLayout::Conv {
                        kh: wd.kh,
                        kw: wd.kw,
                    },
                    MacKind::Linear(LinearLayout::OutIn) => WeightLayout::OutIn,
                    MacKind::Linear(LinearLayout::InOut) => WeightLayout::InOut,
                },
                zero_point: w.zero_point.clone(),
                unsigned: w.q.is_unsigned(),
                bits,
                bias: bias_binding,
                float_bias: float_binding,
                float_weight,
            }),
            float_order: None,
        })
    }

    /// A float Relu/Clip (`act`) of the dequantized activation `input`, read as tensor `x` by a
    /// layer with quantized weights (PyTorch exports an unfused `nn.ReLU` between two quantized
    /// Linear layers as `DequantizeLinear → Relu → Gemm`). Clamped at bounds that lie on
    /// `input`'s grid, the values stay on it, so the clamp is a layer on the integers and the
    /// reader takes its output as a dequantized activation; other bounds are refused.
    fn clamp_on_grid(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
        input: usize,
        act: Activation,
    ) -> Result<usize> {
        let q = self.acts[input].q;
        let (lo, hi) = act.bounds();
        let on_grid = |b: f32| {
            let level = b / q.scale;
            !b.is_finite() || (level.fract() == 0.0 && (level * q.scale) == b)
        };
        if !(on_grid(lo) && on_grid(hi)) {
            return Err(ctx.unsupported(format!(
                "quantized weights on '{x}', a float Relu/Clip of a dequantized tensor with a \
                 bound off its quantization grid (step {}); a layer with quantized weights \
                 reads a DequantizeLinear",
                q.scale
            )));
        }
        let id = self.requantize(ctx, input, q, act, x);
        self.values.insert(x.to_string(), Value::Deq(id));
        Ok(id)
    }

    /// Conv / Gemm / MatMul on a dequantized activation and dequantized weights.
    pub(super) fn float_mac(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let wname = ctx.input(1).ok_or_else(|| ctx.bad("has no weights"))?;
        if self.consts.contains_key(wname) {
            let input = self.float_operand(ctx, x)?;
            return self.float_layer(ctx, input);
        }
        let mut float_input = false;
        let input = match self.value(ctx, x)? {
            Value::Deq(input) => input,
            Value::Pending(p, _) if matches!(*p, Pending::Clamp { .. }) => {
                let Pending::Clamp { input, act } = *p else {
                    return Err(self.float_input_refusal(ctx, x));
                };
                self.clamp_on_grid(ctx, x, input, act)?
            }
            Value::Pending(..) | Value::Float(_) | Value::FloatInput(..) => {
                // Quantized weights on a float tensor (PyTorch's eager QAT leaves the pooled
                // features before its classifier unquantized): onnxruntime multiplies the
                // float values by the dequantized weights, so this is a float layer. A
                // Concat whose values stay on its inputs' grid becomes a dequantized
                // activation here (`concat_on_grid`), and the layer an integer one.
                let a = self.float_operand(ctx, x)?;
                float_input = self.acts[a].float;
                a
            }
            _ => return Err(self.float_input_refusal(ctx, x)),
        };
        let Some(Value::DeqConst(w)) = self.values.get(wname).cloned() else {
            return Err(ctx.unsupported(format!(
                "weights '{wname}' are not quantized (no DequantizeLinear of an int8 constant)"
            )));
        };
        let kind = match ctx.node.op_type.as_str() {
            "Conv" => self.conv_kind(ctx, &w.q)?,
            "Gemm" => MacKind::Linear(self.gemm_layout(ctx)?),
            _ => MacKind::Linear(LinearLayout::InOut),
        };
        // A Gemm/MatMul applied to each row of a rank-3 tensor (a Reshape to `[N, 28, 28]`
        // before it) is refused here, by the node and the shape that make it one, rather than
        // when its result is quantized.
        let ins = self.acts[input].shape;
        if matches!(kind, MacKind::Linear(_)) && ins.h * ins.w != 1 {
            let dims: Vec<String> = self.onnx_dims(input).iter().map(usize::to_string).collect();
            return Err(ctx.unsupported(format!(
                "its input '{x}' has shape [N, {}]; qforget's Gemm and MatMul take a flat \
                 [N, F] input (a Flatten or a Reshape to [N, {}] before them), not one applied \
                 to each row of a higher-rank tensor",
                dims.join(", "),
                ins.len()
            )));
        }
        let bias = match ctx.input(2) {
            None => None,
            Some(b) => Some(match self.values.get(b) {
                Some(Value::DeqConst(d)) => match &d.q.data {
                    ConstData::I32(v) => {
                        BiasIn::Int(v.clone(), Some(d.scale.clone()), d.q.name.clone())
                    }
                    // A bias stored as 8-bit integers: its real values, frozen (the file's
                    // type cannot take a trained float).
                    _ => BiasIn::Float(d.dequantize(), d.q.name.clone(), false),
                },
                _ => {
                    let c = self.konst(ctx, 2)?;
                    let f32_init = self.trainable_float(&c);
                    BiasIn::Float(c.to_f32(), c.name, f32_init)
                }
            }),
        };
        // DequantizeLinear → Conv/Gemm: onnxruntime computes this layer in float. Its bytes are
        // reproduced (`OrtFix`) for an int32 bias with the file's scale, a float bias (NNCF's:
        // onnxruntime adds the file's values, see `Importer::ort_fix`), or none.
        let file_bias_scale = match &bias {
            Some(BiasIn::Int(_, Some(s), _)) => Some(Some(s.clone())),
            Some(BiasIn::Float(..)) | None => Some(None),
            _ => None,
        };
        let gemm_c = ctx.node.op_type == "Gemm" && ctx.input(2).is_some();
        let mut mac = self.build_mac(ctx, input, kind, &w, bias)?;
        mac.float_order =
            file_bias_scale.map(|s| (s.unwrap_or_else(|| mac.acc_scale.clone()), gemm_c));
        let out = ctx.output()?.to_string();
        let p = if float_input {
            Pending::Dense(Box::new(self.mac_in_float(ctx, mac)?))
        } else {
            Pending::Mac(Box::new(mac))
        };
        self.values
            .insert(out, Value::Pending(Box::new(p), ctx.name()));
        Ok(())
    }

    /// A float parameter vector from a constant or a dequantized constant.
    fn float_param(&self, ctx: &NodeCtx, i: usize, len: usize) -> Result<Vec<f32>> {
        let name = ctx
            .input(i)
            .ok_or_else(|| ctx.bad(format!("input #{i} is missing")))?;
        let v = match self.values.get(name) {
            Some(Value::DeqConst(d)) => d.dequantize(),
            _ => self.konst(ctx, i)?.to_f32(),
        };
        if v.len() != len {
            return Err(ctx.bad(format!(
                "'{name}' has {} values for {len} channels",
                v.len()
            )));
        }
        Ok(v)
    }

    /// BatchNormalization. Directly after a Conv (no QuantizeLinear between) it is folded into
    /// the Conv. After a quantized activation — onnxruntime's quantizer puts Q/DQ between Conv
    /// and BN when the exporter kept BN — it becomes its own per-channel layer, a depthwise 1×1
    /// conv with weight ±127 and scale |γ/√(σ²+ε)|/127, so nothing is rounded twice.
    pub(super) fn batch_norm(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let eps = ctx.attrs().float("epsilon", 1e-5).map_err(|e| ctx.bad(e))?;
        if ctx
            .attrs()
            .int("training_mode", 0)
            .map_err(|e| ctx.bad(e))?
            != 0
        {
            return Err(ctx.unsupported("training_mode = 1"));
        }
        let (mut m, folded) = match self.value(ctx, x)? {
            Value::Pending(p, _) => match *p {
                Pending::Mac(m) if m.act == Activation::None && m.conv.is_some() => (m, true),
                _ => {
                    return Err(ctx
                        .unsupported("BatchNormalization after a float result other than a Conv"))
                }
            },
            Value::Deq(a) => (Box::new(self.channel_affine_mac(a)), false),
            _ => {
                return Err(ctx.unsupported("BatchNormalization of a tensor that is not quantized"))
            }
        };
        let c_n = m.out;
        let (gamma, beta) = (
            self.float_param(ctx, 1, c_n)?,
            self.float_param(ctx, 2, c_n)?,
        );
        let (mean, var) = (
            self.float_param(ctx, 3, c_n)?,
            self.float_param(ctx, 4, c_n)?,
        );
        for c in 0..c_n {
            let f = gamma[c] / (var[c] + eps).sqrt();
            if !f.is_finite() || f == 0.0 {
                return Err(ctx.bad(format!("channel {c} has a zero or non-finite scale")));
            }
            if folded {
                scale_channel(&mut m, c, f);
                m.float_bias[c] += beta[c] - mean[c] * f;
            } else {
                m.weights[c] = if f < 0.0 { -127 } else { 127 };
                m.weight_scales[c] = f.abs() / 127.0;
                m.acc_scale[c] = self.acts[m.input].q.scale * m.weight_scales[c];
                m.float_bias[c] = beta[c] - mean[c] * f;
            }
        }
        m.params
            .extend(ctx.node.input.iter().skip(1).take(4).cloned());
        if folded {
            keep_binding_if_exportable(&mut m);
        } else {
            // Integers of a layer of its own (±127), no initializer's: frozen for training.
            m.binding = None;
        }
        let out = ctx.output()?.to_string();
        self.values
            .insert(out, Value::Pending(Box::new(Pending::Mac(m)), ctx.name()));
        Ok(())
    }

    /// An identity depthwise 1×1 conv on activation `a`, to be filled in by the caller.
    fn channel_affine_mac(&self, a: usize) -> Mac {
        let c = self.acts[a].shape.c;
        Mac {
            input: a,
            conv: Some((Window::unit(), c)),
            out: c,
            weights: vec![0; c],
            row: 1,
            weight_scales: vec![1.0; c],
            weight_bits: 8,
            weight_zero: Vec::new(),
            acc_scale: vec![1.0; c],
            bias: vec![0; c],
            float_bias: vec![0.0; c],
            negated: vec![false; c],
            act: Activation::None,
            params: vec![],
            binding: None,
            float_order: None,
        }
    }

    /// Relu / Clip.
    pub(super) fn activation(&mut self, ctx: &NodeCtx) -> Result<()> {
        let act = if ctx.node.op_type == "Relu" {
            Activation::Relu
        } else {
            let bound = |i: usize, attr: &str, default: f32| -> Result<f32> {
                match ctx.input(i) {
                    Some(_) => {
                        let t = self.konst(ctx, i)?;
                        t.to_f32()
                            .first()
                            .copied()
                            .ok_or_else(|| ctx.bad(format!("'{}' is empty", t.name)))
                    }
                    None => ctx.attrs().float(attr, default).map_err(|e| ctx.bad(e)),
                }
            };
            let min = bound(1, "min", f32::NEG_INFINITY)?;
            let max = bound(2, "max", f32::INFINITY)?;
            Activation::None.then(Activation::Clip { min, max })
        };
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let out = ctx.output()?.to_string();
        let v = match self.value(ctx, x)? {
            Value::Pending(p, n) => {
                let p = with_activation(*p, act).ok_or_else(|| {
                    ctx.unsupported("activation after a float average pooling (or a Concat of one)")
                })?;
                Value::Pending(Box::new(p), n)
            }
            Value::Deq(a) => Value::Pending(Box::new(Pending::Clamp { input: a, act }), ctx.name()),
            Value::Float(a) => Value::Float(self.float_clamp(ctx, a, act, &out)),
            Value::FloatInput(..) => {
                let a = self.float_operand(ctx, x)?;
                Value::Float(self.float_clamp(ctx, a, act, &out))
            }
            Value::Quant(a) => {
                let q = self.acts[a].q;
                let act = self.integer_clip(ctx, a)?;
                Value::Quant(self.requantize(ctx, a, q, act, &out))
            }
            _ => return Err(ctx.unsupported("activation of a constant or of the float input")),
        };
        self.values.insert(out, v);
        Ok(())
    }

    /// Mul or Div of the pending Conv result `v` (no activation yet) by constant `c`, one
    /// value per output channel, folded into its per-channel accumulator
    /// scale like a BatchNormalization: PyTorch's fake-quantized Conv+BatchNorm exports as
    /// `Conv(fake-quantized γ/σ-scaled weights) → Div(γ/σ) → BatchNormalization`. The result is
    /// the pending layer itself (its integers still the file's; see
    /// [`keep_binding_if_exportable`]). `None` when `v` is no such layer.
    pub(super) fn scale_pending_mac(
        &self,
        ctx: &NodeCtx,
        v: &Value,
        c: &ConstTensor,
        const_first: bool,
    ) -> Result<Option<Value>> {
        let Value::Pending(p, node) = v else {
            return Ok(None);
        };
        let Pending::Mac(m) = p.as_ref() else {
            return Ok(None);
        };
        let div = match ctx.node.op_type.as_str() {
            "Mul" => false,
            "Div" if !const_first => true,
            _ => return Ok(None),
        };
        // An image of any size: only the channel axis matters to the broadcast.
        let shape = Shape {
            h: 2,
            w: 2,
            c: m.out,
        };
        // Only one value per channel of a conv (PyTorch's `Div(γ/σ)`): a scalar Div or Mul after
        // a Gemm is GELU's `x / √2` or the like, which a float op follows, and a folded factor
        // has no exact float form there (`Importer::mac_in_float`).
        let k = match self.channel_constant(ctx, c, shape) {
            Ok(k) if m.act == Activation::None && m.conv.is_some() && k.len() > 1 => k,
            _ => return Ok(None),
        };
        let mut m = m.clone();
        for ch in 0..m.out {
            let k = k[if k.len() == 1 { 0 } else { ch }];
            let f = if div { 1.0 / k } else { k };
            if !f.is_finite() || f == 0.0 {
                return Err(ctx.unsupported(format!(
                    "{} by '{}' gives channel {ch} the factor {f}",
                    ctx.node.op_type, c.name
                )));
            }
            scale_channel(&mut m, ch, f);
        }
        m.params.push(c.name.clone());
        keep_binding_if_exportable(&mut m);
        Ok(Some(Value::Pending(
            Box::new(Pending::Mac(m)),
            node.clone(),
        )))
    }

    /// Relu/Clip of quantized activation `a` itself (between its QuantizeLinear and
    /// DequantizeLinear): ONNX clamps the integers, with bounds of the tensor's own integer
    /// type. PyTorch exports a fake-quantized activation of range 0..127 (`reduce_range`, the
    /// fbgemm and x86 qconfigs) as `QuantizeLinear → Clip(max = 127) → DequantizeLinear`. The
    /// bounds are stated back in real values of `a`'s grid, which land on those integers.
    fn integer_clip(&self, ctx: &NodeCtx, a: usize) -> Result<Activation> {
        let q = self.acts[a].q;
        // Stored bytes of an int8 tensor are its integers + 128.
        let offset = if q.signed { 128.0 } else { 0.0 };
        let real = |code: f32| (code + offset - q.zero_point as f32) * q.scale;
        if ctx.node.op_type == "Relu" {
            return Ok(Activation::None.then(Activation::Clip {
                min: real(0.0),
                max: f32::INFINITY,
            }));
        }
        let bound = |i: usize, default: f32| -> Result<f32> {
            let Some(_) = ctx.input(i) else {
                return Ok(default);
            };
            let t = self.konst(ctx, i)?;
            if matches!(t.data, ConstData::F32(_)) {
                return Err(ctx.bad(format!(
                    "Clip of the quantized tensor '{}' has the float bound '{}'; a Clip of                      integers takes integer bounds",
                    self.acts[a].name, t.name
                )));
            }
            let v = t.to_f32();
            v.first()
                .map(|&code| real(code))
                .ok_or_else(|| ctx.bad(format!("'{}' is empty", t.name)))
        };
        if ctx
            .node
            .attribute
            .iter()
            .any(|at| at.name == "min" || at.name == "max")
        {
            // Clip before opset 11 (bounds as attributes) is defined on floats only.
            return Err(ctx.bad(format!(
                "Clip with attribute bounds on the quantized tensor '{}'",
                self.acts[a].name
            )));
        }
        let min = bound(1, f32::NEG_INFINITY)?;
        let max = bound(2, f32::INFINITY)?;
        Ok(Activation::None.then(Activation::Clip { min, max }))
    }

    /// Add of two dequantized activations, of an activation and a quantized constant, or of a
    /// bias to a pending MatMul.
    pub(super) fn add(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (x, y) = ctx.two_inputs()?;
        let get = |n: &str| -> Option<Value> { self.values.get(n).cloned() };
        let out = ctx.output()?.to_string();
        let pend = |p: Pending| Value::Pending(Box::new(p), ctx.name());
        let v = match (get(x), get(y)) {
            (Some(Value::Deq(a)), Some(Value::Deq(b))) => pend(Pending::Add {
                a,
                b: AddOperand::Act(b),
                act: Activation::None,
                sub: false,
            }),
            (Some(Value::Deq(a)), Some(Value::DeqConst(c)))
            | (Some(Value::DeqConst(c)), Some(Value::Deq(a))) => pend(Pending::Add {
                a,
                b: self.const_operand(ctx, &c)?,
                act: Activation::None,
                sub: false,
            }),
            (Some(Value::Deq(a)), None) | (None, Some(Value::Deq(a))) => {
                let i = if self.consts.contains_key(y) { 1 } else { 0 };
                let c = self.konst(ctx, i)?;
                let bias = self.channel_constant(ctx, &c, self.acts[a].shape)?;
                let name = if self.trainable_float(&c) && bias.len() > 1 {
                    c.name.clone()
                } else {
                    String::new()
                };
                pend(Pending::Bias {
                    input: a,
                    bias,
                    act: Activation::None,
                    name,
                })
            }
            (Some(Value::Pending(p, n)), other) | (other, Some(Value::Pending(p, n)))
                if matches!(p.as_ref(), Pending::Dense(_)) =>
            {
                let Pending::Dense(d) = *p else {
                    unreachable!("matched above")
                };
                if other.is_some() {
                    return Err(ctx.unsupported(
                        "Add of a float layer's output and a tensor that is not a float constant",
                    ));
                }
                let i = if self.consts.contains_key(y) { 1 } else { 0 };
                let d = self.float_layer_bias(ctx, *d, i)?;
                Value::Pending(Box::new(Pending::Dense(Box::new(d))), n)
            }
            (Some(Value::Pending(p, _)), other) | (other, Some(Value::Pending(p, _))) => {
                let Pending::Mac(mut m) = *p else {
                    return Err(ctx.unsupported("Add of a float result other than a bias"));
                };
                let (bias, konst) = match other {
                    Some(Value::DeqConst(d)) => (d.dequantize(), None),
                    None => {
                        let i = if self.consts.contains_key(y) { 1 } else { 0 };
                        let c = self.konst(ctx, i)?;
                        (c.to_f32(), Some(c))
                    }
                    _ => return Err(ctx.unsupported("Add of two float results")),
                };
                if m.act != Activation::None || (bias.len() != m.out && bias.len() != 1) {
                    return Err(ctx.unsupported("Add of a constant that is not a bias"));
                }
                let fresh = m.float_bias.iter().all(|&b| b == 0.0);
                for c in 0..m.out {
                    m.float_bias[c] += bias[if bias.len() == 1 { 0 } else { c }];
                }
                // A float bias Add after a product with no bias of its own (NNCF's MatMul):
                // the constant trains in float. Otherwise the layer's float part stays frozen.
                if let Some(b) = m.binding.as_mut() {
                    b.float_bias = match konst {
                        Some(c)
                            if fresh
                                && b.bias.is_none()
                                && b.float_bias.is_none()
                                && bias.len() == m.out
                                && self.trainable_float(&c) =>
                        {
                            Some(c.name)
                        }
                        _ => None,
                    };
                }
                pend(Pending::Mac(m))
            }
            _ => return Err(ctx.unsupported("Add of tensors that are not dequantized activations")),
        };
        self.values.insert(out, v);
        Ok(())
    }

    /// A dequantized uint8/int8 constant as the second operand of a quantized Add.
    pub fn const_operand(&self, ctx: &NodeCtx, c: &DeqConst) -> Result<AddOperand> {
        if c.scale.len() != 1 || c.zero_point.len() != 1 {
            return Err(ctx.unsupported(format!(
                "{} of a per-channel quantized constant",
                ctx.node.op_type
            )));
        }
        let (data, zp): (Vec<u8>, i32) = match &c.q.data {
            ConstData::U8(v) => (v.clone(), c.zero_point[0] as i32),
            ConstData::I8(v) => (
                v.iter().map(|&x| (x as u8) ^ 0x80).collect(),
                c.zero_point[0] as i32 + 128,
            ),
            _ => {
                return Err(ctx.unsupported(format!(
                    "{} of a constant that is not 8-bit",
                    ctx.node.op_type
                )))
            }
        };
        Ok(AddOperand::Const {
            data,
            scale: c.scale[0],
            zero_point: zp,
            name: c.q.name.clone(),
        })
    }

    /// MaxPool runs on the bytes (max commutes with dequantization).
    pub(super) fn max_pool(&mut self, ctx: &NodeCtx) -> Result<()> {
        if ctx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(ctx.unsupported("MaxPool with an indices output"));
        }
        if ctx
            .attrs()
            .int("storage_order", 0)
            .map_err(|e| ctx.bad(e))?
            != 0
        {
            return Err(ctx.unsupported("storage_order = 1"));
        }
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let (a, deq) = match self.value(ctx, x)? {
            Value::Deq(a) => (a, true),
            Value::Quant(a) => (a, false),
            Value::Float(a) => {
                let (window, ceil) = self.pool_window(ctx, x)?;
                let out = ctx.output()?.to_string();
                let id = self.max_pool_layer(ctx, a, window, ceil, &out)?;
                self.acts[id].float = true;
                self.values.insert(out, Value::Float(id));
                return Ok(());
            }
            Value::Pending(p, n) => {
                let (window, ceil) = self.pool_window(ctx, x)?;
                let p = Pending::MaxPool {
                    inner: p,
                    window,
                    ceil,
                };
                self.values
                    .insert(ctx.output()?.to_string(), Value::Pending(Box::new(p), n));
                return Ok(());
            }
            _ => return Err(ctx.unsupported("MaxPool of a float tensor")),
        };
        let (window, ceil) = self.pool_window(ctx, x)?;
        let out = ctx.output()?.to_string();
        let id = self.max_pool_layer(ctx, a, window, ceil, &out)?;
        self.values.insert(out, Value::activation(id, deq));
        Ok(())
    }

    /// A MaxPool's window, or for a ReduceMax (see `reduce_max`) the whole image of `x`.
    fn pool_window(&self, ctx: &NodeCtx, x: &str) -> Result<(Window, bool)> {
        if ctx.node.op_type != "ReduceMax" {
            return self.window(ctx, None);
        }
        let a =
            self.values.get(x).and_then(Value::act).ok_or_else(|| {
                ctx.unsupported("ReduceMax of a tensor that is not an activation")
            })?;
        let s = self.acts[a].shape;
        Ok((
            Window {
                kh: s.h,
                kw: s.w,
                ..Window::unit()
            },
            false,
        ))
    }

    /// Output shape of pooling an activation of shape `ins` with `window`.
    pub fn pooled_shape(
        &self,
        ctx: &NodeCtx,
        window: &Window,
        ins: Shape,
        ceil: bool,
    ) -> Result<Shape> {
        let (h, w) = window
            .output_hw(ins.h, ins.w, ceil)
            .ok_or_else(|| ctx.bad(format!("pooling window does not fit input {ins}")))?;
        Ok(Shape { h, w, c: ins.c })
    }

    /// A MaxPool layer on the bytes of activation `a` (its output keeps `a`'s parameters: the
    /// maximum commutes with dequantization); returns the output activation.
    pub fn max_pool_layer(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        window: Window,
        ceil: bool,
        out: &str,
    ) -> Result<usize> {
        let ins = self.acts[a].shape;
        let out_shape = self.pooled_shape(ctx, &window, ins, ceil)?;
        let op = Op::MaxPool(MaxPool {
            window,
            in_shape: ins,
            out_shape,
        });
        let q = self.acts[a].q;
        Ok(self.push(
            ctx,
            op,
            Activation::None,
            vec![a],
            out_shape,
            q,
            out,
            vec![],
        ))
    }

    /// AveragePool / GlobalAveragePool of a dequantized activation.
    pub(super) fn avg_pool(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let input = match self.value(ctx, x)? {
            Value::Deq(a) => a,
            Value::FloatInput(pre, false) if ctx.node.op_type == "AveragePool" => {
                return self.input_avg_pool(ctx, pre)
            }
            // A float value (see `float_ops`).
            Value::Float(_) | Value::Pending(..) => return self.float_avg_pool(ctx, x),
            _ => {
                return Err(
                    ctx.unsupported("pooling of a tensor that is not a dequantized activation")
                )
            }
        };
        let p = if super::float_ops::is_global(ctx) {
            Pending::GlobalAvgPool {
                input,
                float_order: true,
            }
        } else {
            let (window, ceil) = self.window(ctx, None)?;
            let cip = Self::count_include_pad(ctx)?;
            Pending::AvgPool {
                input,
                window,
                count_include_pad: cip,
                ceil,
                columns_first: self.float_pool_columns_first(),
                qdq: true,
            }
        };
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(p), ctx.name()),
        );
        Ok(())
    }

    /// An AveragePool the quantizer left in float on the model input: done on the pixels before
    /// they are quantized.
    fn input_avg_pool(&mut self, ctx: &NodeCtx, mut pre: Vec<InputPool>) -> Result<()> {
        if !pre.is_empty() {
            return Err(ctx.unsupported("more than one float pooling on the input"));
        }
        if !self.input_post_fns.is_empty() {
            return Err(ctx.unsupported(
                "a float pooling of the input after an element-wise function with one value per \
                 element (qforget applies those after the pooling)",
            ));
        }
        let (window, ceil) = self.window(ctx, None)?;
        let cip = Self::count_include_pad(ctx)?;
        let (name, ins) = self.input.clone().expect("input is set before nodes");
        let out_shape = self.pooled_shape(ctx, &window, ins, ceil)?;
        pre.push(InputPool {
            window,
            count_include_pad: cip,
            out_shape,
        });
        self.input = Some((name, ins));
        self.follow_input_chain(ctx, ctx.input(0).unwrap_or_default())?;
        self.values
            .insert(ctx.output()?.to_string(), Value::FloatInput(pre, false));
        Ok(())
    }

    /// Flatten (axis 1) or a Reshape to `[N, features]`.
    pub(super) fn flatten(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        // `Err(pre)`: the float input (after the poolings `pre`), flattened before quantization.
        let (a, deq) = match self.value(ctx, x)? {
            Value::Deq(a) => (Ok(a), true),
            Value::Quant(a) => (Ok(a), false),
            Value::FloatInput(pre, _) => (Err(pre), false),
            Value::Float(a) => (Ok(a), false),
            Value::Pending(..) => (Ok(self.float_operand(ctx, x)?), false),
            _ => {
                return Err(ctx.unsupported("reshaping a tensor that is not a quantized activation"))
            }
        };
        let len = match &a {
            Ok(a) => self.acts[*a].shape.len(),
            Err(pre) => match pre.last() {
                Some(p) => p.out_shape.len(),
                None => self.input.as_ref().map(|i| i.1.len()).unwrap_or(0),
            },
        } as i64;
        if ctx.node.op_type == "Flatten" {
            let axis = ctx.attrs().int("axis", 1).map_err(|e| ctx.bad(e))?;
            if axis != 1 {
                return Err(ctx.unsupported(format!("Flatten with axis {axis} (only 1)")));
            }
        } else {
            let shape = self
                .konst(ctx, 1)?
                .to_i64()
                .ok_or_else(|| ctx.bad("shape is not integer"))?;
            let ok = matches!(shape[..], [_, f] if f == -1 || f == len);
            if !ok {
                return match a {
                    Ok(_) => self.reshape(ctx, &shape),
                    Err(_) => Err(ctx.unsupported(format!(
                        "Reshape of the float input to {}; qforget supports only flattening it \
                         to [N, {len}]",
                        super::reshape::shown_target(&shape)
                    ))),
                };
            }
        }
        let out = ctx.output()?.to_string();
        let a = match a {
            Ok(a) => a,
            Err(pre) => {
                // Flatten of the float input: done after its QuantizeLinear.
                self.follow_input_chain(ctx, x)?;
                self.values.insert(out, Value::FloatInput(pre, true));
                return Ok(());
            }
        };
        let s = self.acts[a].shape;
        let float = self.acts[a].float;
        let id = if s.h * s.w == 1 {
            a
        } else {
            let q = self.acts[a].q;
            self.push(
                ctx,
                Op::Flatten,
                Activation::None,
                vec![a],
                Shape::flat(s.len()),
                q,
                &out,
                vec![],
            )
        };
        self.acts[id].float = float;
        let v = if float {
            Value::Float(id)
        } else {
            Value::activation(id, deq)
        };
        self.values.insert(out, v);
        Ok(())
    }

    /// Mul of an integer product by its scale (MatMulInteger/ConvInteger → Cast → Mul).
    pub(super) fn mul(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (x, y) = ctx.two_inputs()?;
        let (p, ci) = match (self.values.get(x), self.values.get(y)) {
            (Some(Value::Pending(p, _)), None) => (p.clone(), 1),
            (None, Some(Value::Pending(p, _))) => (p.clone(), 0),
            _ => {
                return Err(
                    ctx.unsupported("Mul other than scaling an integer product by a constant")
                )
            }
        };
        let Pending::Mac(mut m) = *p else {
            return Err(ctx.unsupported("Mul of a float result other than an integer product"));
        };
        let f = self.konst(ctx, ci)?.to_f32();
        if m.act != Activation::None || (f.len() != 1 && f.len() != m.out) {
            return Err(ctx.unsupported("Mul by a constant that is not a per-channel scale"));
        }
        for c in 0..m.out {
            let v = f[if f.len() == 1 { 0 } else { c }];
            if !(v.is_finite() && v > 0.0) {
                return Err(ctx.unsupported("Mul by a non-positive scale"));
            }
            m.acc_scale[c] *= v;
            m.float_bias[c] *= v;
        }
        if let Some(b) = m.binding.as_mut() {
            b.float_bias = None;
        }
        self.values.insert(
            ctx.output()?.to_string(),
            Value::Pending(Box::new(Pending::Mac(m)), ctx.name()),
        );
        Ok(())
    }
}

/// `p` followed by the float activation `act`, or `None` where that is not representable.
fn with_activation(p: Pending, act: Activation) -> Option<Pending> {
    Some(match p {
        Pending::Mac(mut m) => {
            m.act = m.act.then(act);
            Pending::Mac(m)
        }
        Pending::Dense(mut d) => {
            d.act = d.act.then(act);
            Pending::Dense(d)
        }
        Pending::Add { a, b, act: a0, sub } => Pending::Add {
            a,
            b,
            act: a0.then(act),
            sub,
        },
        Pending::Clamp { input, act: a0 } => Pending::Clamp {
            input,
            act: a0.then(act),
        },
        Pending::Bias {
            input,
            bias,
            act: a0,
            name,
        } => Pending::Bias {
            input,
            bias,
            act: a0.then(act),
            name,
        },
        Pending::Pointwise { input, mut fns } => {
            fns.extend(super::pointwise::act_fns(act));
            Pending::Pointwise { input, fns }
        }
        // Relu and Clip are monotone, so they commute with the maximum.
        Pending::MaxPool {
            inner,
            window,
            ceil,
        } => Pending::MaxPool {
            inner: Box::new(with_activation(*inner, act)?),
            window,
            ceil,
        },
        Pending::Mul { a, b, act: a0 } => Pending::Mul {
            a,
            b,
            act: a0.then(act),
        },
        // The activation also goes into each pending part (see `ConcatIn::Pending`).
        Pending::Concat { inputs, act: a0 } => Pending::Concat {
            inputs: inputs
                .into_iter()
                .map(|i| match i {
                    ConcatIn::Pending(p, node) => {
                        Some(ConcatIn::Pending(Box::new(with_activation(*p, act)?), node))
                    }
                    other => Some(other),
                })
                .collect::<Option<Vec<_>>>()?,
            act: a0.then(act),
        },
        Pending::GlobalAvgPool { .. } | Pending::AvgPool { .. } => return None,
    })
}

/// Whether a stored bias scale equals the accumulator scale (to f32 rounding).
fn scales_match(s: &[f32], acc: &[f32]) -> bool {
    acc.iter().enumerate().all(|(c, &a)| {
        let b = s[if s.len() > 1 { c } else { 0 }];
        ((a - b) / a).abs() < 1e-5
    })
}

/// Multiply output channel `c` of the pending layer `m` by `f`: real = f·A·(acc + bias) + f·fb.
/// A negative `f` negates the weights (and so acc) and the integer bias, keeping the
/// accumulator scale positive.
fn scale_channel(m: &mut Mac, c: usize, f: f32) {
    m.float_bias[c] *= f;
    m.acc_scale[c] *= f.abs();
    if f < 0.0 {
        m.negated[c] = !m.negated[c];
        m.bias[c] = -m.bias[c];
    }
}

/// After a per-channel factor is folded into `m`, its integers are still the file's, on a grid
/// scaled by the factor (`materialize::effective_weight_scales`), so they keep training and
/// export as before, with two exceptions: a channel negated by a negative factor holds the
/// negated integers (frozen, rather than exporting them negated), and a float bias now carries
/// the factor and the folded offset, so it no longer trains (the integer bias, in accumulator
/// units, still does).
fn keep_binding_if_exportable(m: &mut Mac) {
    if m.negated.iter().any(|&n| n) {
        m.binding = None;
    } else if let Some(b) = m.binding.as_mut() {
        b.float_bias = None;
    }
}
