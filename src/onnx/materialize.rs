//! Turning a pending float result into an integer layer once its output parameters are known.

use crate::graph::{
    Activation, Add, AvgPool, BiasAdd, Conv, GlobalAvgPool, Layer, Linear, Op, ParamBinding,
    QParams, Requant, Shape, WeightLayout,
};
use crate::kernels::PackedWeights;
use crate::Result;

use super::value::{AddOperand, Mac, Pending};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Build the layer for `p` with output parameters `q`; returns the new activation.
    pub fn materialize(
        &mut self,
        ctx: &NodeCtx,
        p: Pending,
        q: QParams,
        out: &str,
    ) -> Result<usize> {
        match p {
            Pending::Mac(m) => self.mac_layer(ctx, *m, q, &[], out),
            Pending::Dense(d) => self.dense_layer(ctx, *d, q, out),
            Pending::Clamp { input, act } => Ok(self.requantize(ctx, input, q, act, out)),
            Pending::MaxPool {
                inner,
                window,
                ceil,
            } => {
                // `a` takes the final parameters `q`, which the pooling keeps.
                let a = self.materialize(ctx, *inner, q, &format!("{out}/pre_pool"))?;
                self.max_pool_layer(ctx, a, window, ceil, out)
            }
            Pending::Mul { a, b, act } => {
                let (sa, sb) = (self.acts[a].shape, self.acts[b].shape);
                let (lo, hi) = act.range(&q);
                let op = crate::graph::Mul {
                    a: self.acts[a].q,
                    b: self.acts[b].q,
                    out: q,
                    lo,
                    hi,
                    broadcast: sa != sb,
                    ratio: None,
                };
                Ok(self.push(ctx, Op::Mul(op), act, vec![a, b], sa, q, out, vec![]))
            }
            Pending::Pointwise { input, fns } => {
                let shape = self.acts[input].shape;
                let op = crate::graph::Pointwise::new(fns, shape.c, &self.acts[input].q, &q);
                Ok(self.push(
                    ctx,
                    Op::Pointwise(op),
                    Activation::None,
                    vec![input],
                    shape,
                    q,
                    out,
                    vec![],
                ))
            }
            Pending::Bias {
                input,
                bias,
                act,
                name,
            } => Ok(self.bias_layer(ctx, input, bias, act, name, q, out)),
            Pending::Add { a, b, act, sub } => self.add_layer(ctx, a, b, act, sub, q, out, true),
            Pending::Concat { inputs, act } => self.concat_pending(ctx, inputs, act, q, out),
            Pending::GlobalAvgPool { input, float_order } => {
                let ins = self.acts[input].shape;
                let qi = self.acts[input].q;
                let hw = (ins.h * ins.w) as f32;
                let (lo, hi) = Activation::None.range(&q);
                let op = GlobalAvgPool {
                    in_shape: ins,
                    in_zero_point: qi.zero_point,
                    requant: Requant {
                        multiplier: vec![qi.scale / hw / q.scale],
                        offset: vec![],
                        float_bias: vec![],
                        zero_point: q.zero_point,
                        lo,
                        hi,
                    },
                    float_scales: float_order.then_some([qi.scale, q.scale]),
                };
                Ok(self.push(
                    ctx,
                    Op::GlobalAvgPool(op),
                    Activation::None,
                    vec![input],
                    Shape::flat(ins.c),
                    q,
                    out,
                    vec![],
                ))
            }
            Pending::AvgPool {
                input,
                window,
                count_include_pad,
                ceil,
                columns_first,
                qdq,
            } => {
                let ins = self.acts[input].shape;
                let qi = self.acts[input].q;
                let out_shape = self.pooled_shape(ctx, &window, ins, ceil)?;
                let op = AvgPool {
                    window,
                    count_include_pad,
                    in_shape: ins,
                    out_shape,
                    in_zero_point: qi.zero_point,
                    in_scale: qi.scale,
                    out_scale: q.scale,
                    out_zero_point: q.zero_point,
                    zp_before_rounding: AvgPool::zp_before_rounding_of(qdq, &q),
                    columns_first,
                    qdq,
                };
                Ok(self.push(
                    ctx,
                    Op::AvgPool(op),
                    Activation::None,
                    vec![input],
                    out_shape,
                    q,
                    out,
                    vec![],
                ))
            }
        }
    }

    /// Register a layer and its output activation.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        ctx: &NodeCtx,
        op: Op,
        activation: Activation,
        inputs: Vec<usize>,
        shape: Shape,
        q: QParams,
        out: &str,
        params: Vec<String>,
    ) -> usize {
        let id = self.new_act(out, shape, q);
        self.layers.push(Layer {
            name: ctx.name(),
            op,
            activation,
            inputs,
            output: id,
            params,
            binding: None,
        });
        id
    }

    /// A float bias Add (and activation) between DequantizeLinear and QuantizeLinear.
    #[allow(clippy::too_many_arguments)]
    fn bias_layer(
        &mut self,
        ctx: &NodeCtx,
        input: usize,
        bias: Vec<f32>,
        act: Activation,
        name: String,
        q: QParams,
        out: &str,
    ) -> usize {
        let qi = self.acts[input].q;
        let (lo, hi) = act.range(&q);
        let op = BiasAdd {
            in_zero_point: qi.zero_point,
            in_scale: qi.scale,
            bias,
            out_scale: q.scale,
            out_zero_point: q.zero_point,
            lo,
            hi,
        };
        let shape = self.acts[input].shape;
        let id = self.push(
            ctx,
            Op::BiasAdd(op),
            act,
            vec![input],
            shape,
            q,
            out,
            vec![name.clone()]
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect(),
        );
        if let Some(l) = self.layers.last_mut().filter(|_| !name.is_empty()) {
            l.binding = Some(ParamBinding {
                weight: String::new(),
                layout: WeightLayout::OutIn,
                zero_point: vec![0],
                unsigned: false,
                bias: None,
                float_bias: Some(name),
                bits: 8,
                float_weight: None,
            });
        }
        id
    }

    /// The quantized Add (or Sub, when `sub`) of `a` and `b` with output parameters `q`.
    ///
    /// `float_order`: the QDQ form `DQ a, DQ b → Add → Q`, which onnxruntime computes in float
    /// ([`Add::float_scales`]); `false` for QLinearAdd, whose kernel uses the ratio form.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_layer(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        b: AddOperand,
        act: Activation,
        sub: bool,
        q: QParams,
        out: &str,
        float_order: bool,
    ) -> Result<usize> {
        let (qa, sa) = (self.acts[a].q, self.acts[a].shape);
        let op_name = if sub { "Sub" } else { "Add" };
        let (lo, hi) = act.range(&q);
        let (b_zp, b_scale, b_const, inputs, params) = match b {
            AddOperand::Act(b) => {
                if self.acts[b].shape != sa {
                    return Err(ctx.unsupported(format!(
                        "{op_name} of shapes {} and {} (broadcasting is not supported)",
                        sa, self.acts[b].shape
                    )));
                }
                let qb = self.acts[b].q;
                (qb.zero_point, qb.scale, None, vec![a, b], vec![])
            }
            AddOperand::Const {
                data,
                scale,
                zero_point,
                name,
            } => {
                let data = broadcast_const(&data, sa).ok_or_else(|| {
                    ctx.unsupported(format!(
                        "{op_name} of a constant with {} values and a tensor of shape {sa}",
                        data.len()
                    ))
                })?;
                (zero_point, scale, Some(data), vec![a], vec![name])
            }
        };
        let op = Add {
            a_zero_point: qa.zero_point,
            b_zero_point: b_zp,
            a_ratio: qa.scale / q.scale,
            b_ratio: b_scale / q.scale,
            out_zero_point: q.zero_point,
            lo,
            hi,
            b_const,
            sub,
            float_scales: float_order.then_some([qa.scale, b_scale, q.scale]),
        };
        Ok(self.push(ctx, Op::Add(op), act, inputs, sa, q, out, params))
    }

    /// The conv/linear layer of `m` with output parameters `q`, or, when `out_scales` is not
    /// empty, with one output scale per channel (`q` then gives the zero point and type; see
    /// `crate::graph::channel_act`).
    pub(super) fn mac_layer(
        &mut self,
        ctx: &NodeCtx,
        m: Mac,
        q: QParams,
        out_scales: &[f32],
        out: &str,
    ) -> Result<usize> {
        let s_out = |c: usize| {
            if out_scales.is_empty() {
                q.scale
            } else {
                out_scales[c]
            }
        };
        let ins = self.acts[m.input].shape;
        let qi = self.acts[m.input].q;
        // A per-channel factor folded in after the layer (a BatchNormalization or a Div/Mul by
        // a constant on its float result) is part of each weight's real step: training and the
        // backward see `(q − z)·s_w·|f|`, the integers stay the file's.
        let weight_scales = m.effective_weight_scales(&self.acts[m.input]);
        let folded = weight_scales != m.weight_scales;
        let mut weights = m.weights;
        let mut zeros = m.weight_zero;
        for (c, row) in weights.chunks_exact_mut(m.row.max(1)).enumerate() {
            if m.negated[c] {
                // −(w − z) = (−w) − (−z)
                if let Some(z) = zeros.get_mut(c) {
                    *z = -*z;
                }
                for w in row.iter_mut() {
                    *w = w.checked_neg().ok_or_else(|| {
                        ctx.unsupported("a negative BatchNormalization factor meets weight −128")
                    })?;
                }
            }
        }
        let bias = m.bias;
        let offset = if m.float_bias.iter().all(|&b| b == 0.0) {
            vec![]
        } else {
            m.float_bias
                .iter()
                .enumerate()
                .map(|(c, b)| b / s_out(c))
                .collect()
        };
        let (lo, hi) = m.act.range(&q);
        if let Some(c) = (0..out_scales.len()).find(|&c| {
            let qc = QParams {
                scale: out_scales[c],
                ..q
            };
            m.act.range(&qc) != (lo, hi)
        }) {
            return Err(ctx.unsupported(format!(
                "the {:?} clamp of output channel {c} lands on other bytes than that of channel 0 \
                 under the per-channel output scales; qforget clamps all channels alike",
                m.act
            )));
        }
        let trains_float_bias = m.binding.as_ref().is_some_and(|b| b.float_bias.is_some());
        let requant = Requant {
            multiplier: m
                .acc_scale
                .iter()
                .enumerate()
                .map(|(c, s)| s / s_out(c))
                .collect(),
            offset,
            float_bias: if trains_float_bias {
                m.float_bias.clone()
            } else {
                vec![]
            },
            zero_point: q.zero_point,
            lo,
            hi,
        };
        let (op, shape) = match m.conv {
            Some((window, group)) => {
                let cin_g = m.row / (window.kh * window.kw);
                if ins.c != cin_g * group || !m.out.is_multiple_of(group) {
                    return Err(ctx.bad(format!(
                        "weights expect {} input channels in {group} group(s), input {ins} has {}",
                        cin_g * group,
                        ins.c
                    )));
                }
                let (oh, ow) = window
                    .output_hw(ins.h, ins.w, false)
                    .ok_or_else(|| ctx.bad(format!("kernel does not fit input {ins}")))?;
                let out_shape = Shape {
                    h: oh,
                    w: ow,
                    c: m.out,
                };
                let cout_g = m.out / group;
                let kk = window.kh * window.kw;
                let packed = (0..group)
                    .map(|g| {
                        // [co][ci][kh][kw] → [co][kh][kw][ci] for the rows of group g.
                        let mut w = Vec::with_capacity(cout_g * m.row);
                        for co in g * cout_g..(g + 1) * cout_g {
                            let row = &weights[co * m.row..(co + 1) * m.row];
                            for k in 0..kk {
                                for ci in 0..cin_g {
                                    w.push(row[ci * kk + k]);
                                }
                            }
                        }
                        let z = if zeros.is_empty() {
                            vec![]
                        } else {
                            zeros[g * cout_g..(g + 1) * cout_g].to_vec()
                        };
                        PackedWeights::with_zero_points(w, cout_g, m.row, z)
                    })
                    .collect();
                let conv = Conv {
                    window,
                    group,
                    in_shape: ins,
                    out_shape,
                    in_zero_point: qi.zero_point,
                    weights: packed,
                    weight_scales,
                    weight_bits: m.weight_bits,
                    bias,
                    requant,
                    ort_order: None,
                    ort_fix: None,
                };
                let outs = (q.scale, out_scales);
                let conv = if folded {
                    // onnxruntime runs the conv and the factor as two float ops: no one order.
                    conv
                } else {
                    let conv =
                        self.with_ort_order(conv, m.input, &m.acc_scale, outs, &m.float_bias);
                    let layer = (&m.acc_scale[..], &m.float_bias[..]);
                    self.with_ort_fix(conv, m.input, layer, outs, m.float_order.as_ref())
                };
                (Op::Conv(conv), out_shape)
            }
            None => {
                if ins.h * ins.w != 1 || ins.c != m.row {
                    return Err(ctx.bad(format!(
                        "weights expect {} input features, input has shape {ins}",
                        m.row
                    )));
                }
                let lin = Linear {
                    in_features: m.row,
                    out_features: m.out,
                    in_zero_point: qi.zero_point,
                    weights: PackedWeights::with_zero_points(weights, m.out, m.row, zeros),
                    weight_scales,
                    weight_bits: m.weight_bits,
                    bias,
                    requant,
                    ort_fix: None,
                };
                let outs = (q.scale, out_scales);
                let lin = self.with_ort_fix_linear(
                    lin,
                    m.input,
                    (&m.acc_scale, &m.float_bias),
                    outs,
                    m.float_order.as_ref(),
                );
                (Op::Linear(lin), Shape::flat(m.out))
            }
        };
        let id = self.push(ctx, op, m.act, vec![m.input], shape, q, out, m.params);
        if let Some(l) = self.layers.last_mut() {
            l.binding = m.binding;
        }
        self.acts[id].channel_scales = out_scales.to_vec();
        Ok(id)
    }
}

/// Expand a constant of one sample (or one value per channel, or a scalar) to NHWC `shape`.
fn broadcast_const(data: &[u8], shape: Shape) -> Option<Vec<u8>> {
    if data.len() == shape.len() && shape.h * shape.w == 1 {
        Some(data.to_vec())
    } else if data.len() == 1 {
        Some(vec![data[0]; shape.len()])
    } else if data.len() == shape.c {
        Some(data.iter().copied().cycle().take(shape.len()).collect())
    } else {
        None
    }
}
