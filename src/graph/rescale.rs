//! Changing a graph's scales after import: the Retrain baseline trains a model from scratch, so
//! its weight scales follow the weights (per-channel max / 127) and its activation scales follow
//! the observers. Every derived integer parameter — requantization multipliers, zero points,
//! clamp ranges, Add ratios, pooling scales — is recomputed here from the activation and weight
//! scales, in one place, so no layer is left holding a stale one.

use super::qparams::QParams;
use super::{AvgPool, Graph, Op};

impl Graph {
    /// Set new per-channel weight scales of conv/linear layer `i` (integers untouched; call
    /// [`super::Shadow::apply`] afterwards) and refresh its multipliers.
    pub fn set_weight_scales(&mut self, i: usize, scales: Vec<f32>) {
        match &mut self.layers[i].op {
            Op::Conv(c) => c.weight_scales = scales,
            Op::Linear(l) => l.weight_scales = scales,
            _ => return,
        }
        self.refresh_layer(i, None);
    }

    /// Give activations new parameters (`None`: keep) and refresh every layer. Outputs of max
    /// pooling and flatten take their input's parameters (they move values, not scales); the
    /// model input keeps the file's.
    pub fn set_activation_params(&mut self, q: &[Option<QParams>]) {
        // An activation quantized per channel becomes per tensor when it is given new
        // parameters: first its producer's offsets are restated in steps of the display scale
        // `q.scale`, which `old` holds for it, so the refresh below keeps their real values.
        for i in 0..self.layers.len() {
            let a = self.layers[i].output;
            if !(self.acts[a].per_channel() && q.get(a).is_some_and(|n| n.is_some())) {
                continue;
            }
            let info = self.acts[a].clone();
            let rq = match &mut self.layers[i].op {
                Op::Conv(c) => {
                    // Per tensor from now on: the integer GEMM, as for every other conv.
                    c.ort_order = None;
                    c.ort_fix = None;
                    &mut c.requant
                }
                Op::Linear(l) => &mut l.requant,
                _ => continue,
            };
            rq.restate_offsets(&info.scales(), &[info.q.scale]);
        }
        let old: Vec<QParams> = self.acts.iter().map(|a| a.q).collect();
        for (a, nq) in q.iter().enumerate() {
            if let (Some(nq), true) = (nq, a != self.input.act) {
                self.acts[a].channel_scales.clear();
                self.acts[a].q = QParams {
                    signed: self.acts[a].q.signed,
                    ..*nq
                };
            }
        }
        for i in 0..self.layers.len() {
            let l = &self.layers[i];
            if matches!(
                l.op,
                Op::MaxPool(_) | Op::Flatten | Op::Permute(_) | Op::Pad(_)
            ) {
                let qi = self.acts[l.inputs[0]].q;
                self.acts[l.output].q = qi;
            }
            self.refresh_layer(i, Some(&old));
        }
    }

    /// Recompute layer `i`'s derived parameters from current scales (`old`: the activation
    /// parameters before a change, for values stored relative to them).
    pub(super) fn refresh_layer(&mut self, i: usize, old: Option<&[QParams]>) {
        let l = &self.layers[i];
        if self.acts[l.output].float {
            // A float segment's layer has no derived integer parameters.
            return;
        }
        let qi = self.acts[l.inputs[0]].q;
        let qo = self.acts[l.output].q;
        let qb = l.inputs.get(1).map(|&b| self.acts[b].q);
        let inputs_q: Vec<QParams> = l.inputs.iter().map(|&a| self.acts[a].q).collect();
        let old_out = old.map(|o| o[l.output]).unwrap_or(qo);
        let (lo, hi) = l.activation.range(&qo);
        let scales = ChannelScales {
            input: self.acts[l.inputs[0]].scales(),
            output: self.acts[l.output].scales(),
        };
        let l = &mut self.layers[i];
        match &mut l.op {
            Op::Conv(c) => {
                c.in_zero_point = qi.zero_point;
                // The file's float order was for the file's scales.
                c.ort_fix = None;
                let ws = c.weight_scales.clone();
                refresh_requant(&mut c.requant, &ws, &scales, qo, old_out, lo, hi);
            }
            Op::Linear(li) => {
                li.in_zero_point = qi.zero_point;
                li.ort_fix = None;
                let ws = li.weight_scales.clone();
                refresh_requant(&mut li.requant, &ws, &scales, qo, old_out, lo, hi);
            }
            Op::Add(a) => {
                let b_scale = match qb {
                    Some(qb) => {
                        a.b_zero_point = qb.zero_point;
                        qb.scale
                    }
                    None => a.b_ratio * old_out.scale,
                };
                a.a_zero_point = qi.zero_point;
                a.a_ratio = qi.scale / qo.scale;
                a.b_ratio = b_scale / qo.scale;
                if a.float_scales.is_some() {
                    a.float_scales = Some([qi.scale, b_scale, qo.scale]);
                }
                a.out_zero_point = qo.zero_point;
                (a.lo, a.hi) = (lo, hi);
            }
            Op::Concat(c) => {
                for (part, q) in c.parts.iter_mut().zip(&inputs_q) {
                    part.q = *q;
                }
                c.out = qo;
                (c.lo, c.hi) = (lo, hi);
            }
            Op::Requantize(r) => {
                r.in_zero_point = qi.zero_point;
                r.ratio = qi.scale / qo.scale;
                r.out_zero_point = qo.zero_point;
                r.identity = qi.scale == qo.scale && qi.zero_point == qo.zero_point;
                (r.lo, r.hi) = (lo, hi);
            }
            Op::AvgPool(p) => {
                p.in_zero_point = qi.zero_point;
                p.in_scale = qi.scale;
                p.out_scale = qo.scale;
                p.out_zero_point = qo.zero_point;
                p.zp_before_rounding = AvgPool::zp_before_rounding_of(p.qdq, &qo);
            }
            Op::GlobalAvgPool(p) => {
                let hw = (p.in_shape.h * p.in_shape.w) as f32;
                p.in_zero_point = qi.zero_point;
                p.requant.multiplier = vec![qi.scale / hw / qo.scale];
                if p.float_scales.is_some() {
                    p.float_scales = Some([qi.scale, qo.scale]);
                }
                p.requant.zero_point = qo.zero_point;
                (p.requant.lo, p.requant.hi) = (lo, hi);
            }
            Op::Dense(d) => {
                d.in_zero_point = qi.zero_point;
                d.in_scale = qi.scale;
                d.out_scale = qo.scale;
                d.out_zero_point = qo.zero_point;
                (d.lo, d.hi) = (lo, hi);
            }
            Op::BiasAdd(b) => {
                b.in_zero_point = qi.zero_point;
                b.in_scale = qi.scale;
                b.out_scale = qo.scale;
                b.out_zero_point = qo.zero_point;
                (b.lo, b.hi) = (lo, hi);
            }
            Op::Mul(m) => {
                m.a = qi;
                if let Some(qb) = qb {
                    m.b = qb;
                }
                m.out = qo;
                (m.lo, m.hi) = (lo, hi);
            }
            Op::Pointwise(p) => {
                let fns = std::mem::take(&mut p.fns);
                *p = super::Pointwise::new(fns, p.channels, &qi, &qo);
            }
            Op::Quantize(q) => {
                q.channel_scales = if scales.output.len() > 1 {
                    scales.output.clone()
                } else {
                    vec![]
                };
                q.scale = qo.scale;
                q.zero_point = qo.zero_point;
                (q.lo, q.hi) = (lo, hi);
            }
            Op::MaxPool(_)
            | Op::Flatten
            | Op::Permute(_)
            | Op::Pad(_)
            | Op::FloatConv(_)
            | Op::Div(_)
            | Op::LayerNorm(_)
            | Op::Clamp => {}
        }
    }
}

/// The input and output scales of a conv/linear layer: one each, or one per channel for an
/// activation quantized per channel (see `super::channel_act`).
struct ChannelScales {
    input: Vec<f32>,
    output: Vec<f32>,
}

fn refresh_requant(
    rq: &mut super::Requant,
    weight_scales: &[f32],
    s: &ChannelScales,
    qo: QParams,
    old_out: QParams,
    lo: u8,
    hi: u8,
) {
    let c_n = rq
        .multiplier
        .len()
        .max(weight_scales.len())
        .max(s.output.len());
    let pick = |v: &[f32], c: usize| v[if v.len() > 1 { c } else { 0 }];
    // An input with one scale per channel is read by a conv with one input channel per group:
    // output channel `c` reads input channel `c / (c_n / channels)`.
    let per_in = (c_n / s.input.len().max(1)).max(1);
    rq.multiplier = (0..c_n)
        .map(|c| pick(&s.input, c / per_in) * pick(weight_scales, c) / pick(&s.output, c))
        .collect();
    // Offsets are in output steps: keep their real value.
    for o in rq.offset.iter_mut() {
        *o *= old_out.scale / qo.scale;
    }
    rq.zero_point = qo.zero_point;
    rq.lo = lo;
    rq.hi = hi;
}
