//! A plain description of a graph for `qforget inspect`: layers, shapes, quantization,
//! parameter counts. Serializable so `--json` and the text view show the same facts.

use serde::Serialize;

use super::{Activation, Graph, Op, QParams};

/// Quantization of one tensor as the model file states it.
#[derive(Debug, Serialize)]
pub struct QInfo {
    pub dtype: &'static str,
    /// The largest channel scale for a tensor quantized per channel.
    pub scale: f32,
    pub zero_point: i32,
    /// One scale per channel (axis 1) when the file quantizes the tensor per channel; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_scales: Vec<f32>,
}

impl From<&QParams> for QInfo {
    fn from(q: &QParams) -> Self {
        QInfo {
            dtype: if q.signed { "int8" } else { "uint8" },
            scale: q.scale,
            zero_point: q.model_zero_point(),
            channel_scales: Vec::new(),
        }
    }
}

impl From<&super::ActInfo> for QInfo {
    /// A float activation (a float segment's) is "float32", its placeholder parameters zero.
    fn from(a: &super::ActInfo) -> Self {
        if a.float {
            return QInfo {
                dtype: "float32",
                scale: 0.0,
                zero_point: 0,
                channel_scales: Vec::new(),
            };
        }
        QInfo {
            channel_scales: a.channel_scales.clone(),
            ..(&a.q).into()
        }
    }
}

/// Weight quantization of a layer.
#[derive(Debug, Serialize)]
pub struct WeightInfo {
    /// ONNX-style weight shape.
    pub shape: Vec<usize>,
    /// 8 or 4 for integer weights, 32 for the float32 weights of a float layer.
    pub bits: u32,
    /// "per-channel", "per-tensor", or "float" (a float layer).
    pub granularity: &'static str,
    pub scale_min: f32,
    pub scale_max: f32,
    pub params: usize,
    pub bias: usize,
    /// The file keeps these trainable weights in float, quantized at run time (an export
    /// writes them back as floats).
    pub float_in_file: bool,
    /// The file's integer type is unsigned (uint8, uint4); known for trainable layers.
    pub unsigned: bool,
    /// The file's weight zero points where any is not the type's symmetric centre (0, or 128
    /// for uint8): asymmetric weights; empty otherwise (or for a frozen layer).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zero_points: Vec<i64>,
}

/// One layer.
#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub op: &'static str,
    pub activation: Activation,
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
    pub input_q: Vec<QInfo>,
    pub output_q: QInfo,
    pub weights: Option<WeightInfo>,
}

/// The whole model.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub input_name: String,
    pub input_shape: Vec<usize>,
    pub input_q: QInfo,
    /// Per-channel mean/std the input is normalised by (from the model's metadata), if any.
    pub input_normalization: Option<super::Normalization>,
    /// Float element-wise functions the model applies to its input before quantizing it: per
    /// byte (before any pooling), and per element (after it, e.g. a SmoothQuant pre-scale).
    pub input_functions: usize,
    pub input_element_functions: usize,
    pub output_name: String,
    pub classes: usize,
    /// Quantization of the final Softmax's probabilities, when the model quantizes them (top-1
    /// is then taken on them; see [`super::Graph::output_probs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_probs: Option<QInfo>,
    pub layers: Vec<LayerInfo>,
    /// Trainable parameters (weights + biases).
    pub parameters: usize,
    /// Bytes of the weights as the file packs them (8, 4 or 32 bits each) plus the 4-byte biases.
    pub int8_bytes: usize,
}

fn weight_info(
    shape: Vec<usize>,
    scales: &[f32],
    bits: u32,
    params: usize,
    bias: usize,
) -> WeightInfo {
    let (lo, hi) = scales
        .iter()
        .fold((f32::INFINITY, 0f32), |(a, b), &s| (a.min(s), b.max(s)));
    WeightInfo {
        shape,
        bits,
        granularity: if scales.len() > 1 {
            "per-channel"
        } else {
            "per-tensor"
        },
        scale_min: lo,
        scale_max: hi,
        params,
        bias,
        float_in_file: false,
        unsigned: false,
        zero_points: Vec::new(),
    }
}

impl Graph {
    /// Describe the graph.
    pub fn summary(&self) -> Summary {
        let mut parameters = 0;
        let mut int8_bytes = 0;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mut weights = match &l.op {
                    Op::Conv(c) => {
                        let w = &c.window;
                        let shape = vec![c.out_shape.c, c.in_shape.c / c.group, w.kh, w.kw];
                        Some(weight_info(
                            shape,
                            &c.weight_scales,
                            c.weight_bits,
                            c.weight_count(),
                            c.bias.len(),
                        ))
                    }
                    Op::Linear(f) => Some(weight_info(
                        vec![f.out_features, f.in_features],
                        &f.weight_scales,
                        f.weight_bits,
                        f.weights.data.len(),
                        f.bias.len(),
                    )),
                    // A float layer: 32-bit float weights and bias, no scales.
                    Op::Dense(d) => Some(WeightInfo {
                        shape: vec![d.out_features, d.in_features],
                        bits: 32,
                        granularity: "float",
                        scale_min: 0.0,
                        scale_max: 0.0,
                        params: d.weights.len(),
                        bias: d.bias.len(),
                        float_in_file: false,
                        unsigned: false,
                        zero_points: Vec::new(),
                    }),
                    Op::FloatConv(c) => {
                        let (g, w) = (&c.geom, &c.geom.window);
                        Some(WeightInfo {
                            shape: vec![g.out_shape.c, g.in_shape.c / g.group, w.kh, w.kw],
                            bits: 32,
                            granularity: "float",
                            scale_min: 0.0,
                            scale_max: 0.0,
                            params: c.weights.len(),
                            bias: c.bias.len(),
                            float_in_file: false,
                            unsigned: false,
                            zero_points: Vec::new(),
                        })
                    }
                    _ => None,
                };
                if let Some(w) = &mut weights {
                    w.float_in_file = l.binding.as_ref().is_some_and(|b| b.float_weight.is_some());
                    if let Some(b) = &l.binding {
                        w.unsigned = b.unsigned;
                        let centre = if b.unsigned { 1i64 << (b.bits - 1) } else { 0 };
                        if b.zero_point.iter().any(|&z| z != centre) {
                            w.zero_points = b.zero_point.clone();
                        }
                    }
                    parameters += w.params + w.bias;
                    int8_bytes += (w.params * w.bits as usize).div_ceil(8) + 4 * w.bias;
                }
                LayerInfo {
                    name: l.name.clone(),
                    op: l.op.kind(),
                    activation: l.activation,
                    inputs: l
                        .inputs
                        .iter()
                        .map(|&a| self.acts[a].shape.onnx_dims())
                        .collect(),
                    output: self.acts[l.output].shape.onnx_dims(),
                    input_q: l.inputs.iter().map(|&a| (&self.acts[a]).into()).collect(),
                    output_q: if self.real_output && l.output == self.output {
                        // A float head: the placeholder parameters mean nothing to a reader.
                        QInfo {
                            dtype: "float32",
                            scale: 0.0,
                            zero_point: 0,
                            channel_scales: Vec::new(),
                        }
                    } else {
                        (&self.acts[l.output]).into()
                    },
                    weights,
                }
            })
            .collect();
        Summary {
            input_name: self.input.name.clone(),
            input_shape: vec![self.input.shape.c, self.input.shape.h, self.input.shape.w],
            input_q: if self.acts[self.input.act].float {
                (&self.acts[self.input.act]).into()
            } else {
                (&self.input.q).into()
            },
            input_normalization: self.input.norm.clone(),
            input_functions: self.input.fns.len(),
            input_element_functions: self.input.post_fns.len(),
            output_name: self.output_name.clone(),
            output_probs: self.output_probs.as_ref().map(QInfo::from),
            classes: self.classes(),
            layers,
            parameters,
            int8_bytes,
        }
    }
}
