//! What the importer knows about each ONNX tensor while it walks the nodes.
//!
//! QDQ and QOperator files describe the same integer network in two spellings. Rather than
//! matching fixed node patterns, the importer tracks every tensor as one of a few [`Value`]s:
//! a quantized activation, the float *view* of one (after DequantizeLinear), a dequantized
//! constant (weights, bias), or a float result still *pending* its QuantizeLinear. Compute nodes
//! on float views become pending layers; the QuantizeLinear that follows fixes the output's
//! parameters and turns them into a real integer layer. QOperator nodes carry their output
//! parameters themselves and become layers at once. Both roads end in the same layers.

use crate::graph::{ActId, Activation, Window};

use super::blocked::Blocks;
use super::proto::ConstTensor;

/// A dequantized constant: `real = scale[axis-index] · (q − zero_point)`.
#[derive(Debug, Clone)]
pub struct DeqConst {
    pub q: ConstTensor,
    /// One scale, or one per slice along `axis`.
    pub scale: Vec<f32>,
    /// One zero point, or one per slice along `axis`.
    pub zero_point: Vec<i64>,
    pub axis: usize,
    /// Blocked quantization along `axis` (`scale` then has one value per block).
    pub blocks: Option<Blocks>,
}

impl DeqConst {
    /// The same constant with one scale per output channel (along `out_axis`), when blocked
    /// quantization reduces to that (see [`super::blocked`]); an unblocked constant as it is.
    pub fn per_channel(&self, out_axis: usize) -> Result<DeqConst, String> {
        let Some(b) = &self.blocks else {
            return Ok(self.clone());
        };
        let (scale, zero_point) = b
            .per_channel(&self.q.dims, self.axis, out_axis, &self.scale, &self.zero_point)
            .ok_or_else(|| {
                format!(
                    "weights '{}' have blocked scales (block_size {} on axis {}) that differ within an output channel; the integer kernels take one scale per output channel",
                    self.q.name, b.size, self.axis
                )
            })?;
        Ok(DeqConst {
            q: self.q.clone(),
            scale,
            zero_point,
            axis: out_axis,
            blocks: None,
        })
    }

    /// Real values.
    pub fn dequantize(&self) -> Vec<f32> {
        let q = self.q.to_f32();
        if let Some(b) = &self.blocks {
            return q
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let k = b.scale_index(&self.q.dims, self.axis, i);
                    let zp = self.zero_point[if self.zero_point.len() > 1 { k } else { 0 }];
                    self.scale[k] * (v - zp as f32)
                })
                .collect();
        }
        let inner: usize = self.q.dims.iter().skip(self.axis + 1).product();
        let per = self.scale.len() > 1;
        q.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = if per {
                    (i / inner.max(1)) % self.scale.len()
                } else {
                    0
                };
                let zp = self.zero_point[if self.zero_point.len() > 1 { c } else { 0 }];
                self.scale[c] * (v - zp as f32)
            })
            .collect()
    }
}

/// A conv or linear layer being assembled: integer weights and what one accumulator unit is
/// worth in real terms.
#[derive(Debug, Clone)]
pub struct Mac {
    /// The quantized input activation.
    pub input: ActId,
    /// `Some` for a convolution.
    pub conv: Option<(Window, usize)>,
    /// Output channels.
    pub out: usize,
    /// ONNX-layout weights: conv `[out][in/g][kh][kw]`, linear `[out][in]`.
    pub weights: Vec<i8>,
    /// Elements per output row of `weights`.
    pub row: usize,
    /// The file's weight scales (one, or one per output channel), for display and export.
    pub weight_scales: Vec<f32>,
    /// Bits of the file's weights (8 or 4).
    pub weight_bits: u32,
    /// Zero point of the stored weights of each output channel (`weights` hold
    /// `w − zp + weight_zero[c]`; see `Importer::build_mac`); empty: all 0.
    pub weight_zero: Vec<i32>,
    /// Real value of one accumulator unit, per output channel (`s_in · s_w[c]`, times any
    /// later per-channel factor such as a folded BatchNormalization).
    pub acc_scale: Vec<f32>,
    /// Integer bias in accumulator units.
    pub bias: Vec<i32>,
    /// Real-valued offset still to be added (from a folded BatchNormalization or a float bias).
    pub float_bias: Vec<f32>,
    /// Whether the weights of channel `c` are negated (a negative BatchNormalization factor).
    pub negated: Vec<bool>,
    /// Fused activation so far.
    pub act: Activation,
    /// Initializer names this layer's parameters come from.
    pub params: Vec<String>,
    /// Where trained integers go back in the file (`None`: frozen, e.g. BatchNorm involved).
    pub binding: Option<crate::graph::ParamBinding>,
    /// `Some` when onnxruntime runs this layer in float (`DequantizeLinear → Conv/Gemm`, the
    /// QDQ form): the file's scale of the int32 bias, one value or one per output channel
    /// (`acc_scale` when it has none), and whether the bias is a Gemm's `C` (the sums' starting
    /// value). `None`: an integer operator (QLinearConv).
    pub float_order: Option<(Vec<f32>, bool)>,
}

impl Mac {
    /// Real step of input channel read by output channel `c`: an input quantized per channel
    /// only meets convs with one input channel per group (`check_channel_readers`), so output
    /// channel `c` reads input channel `c·C_in/C_out`.
    fn input_scale(&self, input: &crate::graph::ActInfo, c: usize) -> f32 {
        input.scale_of(c * input.shape.c / self.out.max(1))
    }

    /// The file's weight scale of output channel `c`.
    pub fn weight_scale(&self, c: usize) -> f32 {
        self.weight_scales[if self.weight_scales.len() > 1 { c } else { 0 }]
    }

    /// Whether a per-channel factor was folded in after the layer (a BatchNormalization, a Div
    /// or Mul by a constant): some channel's accumulator unit is not `s_in · s_w`.
    pub fn has_folded_factor(&self, input: &crate::graph::ActInfo) -> bool {
        (0..self.out)
            .any(|c| self.acc_scale[c] != self.input_scale(input, c) * self.weight_scale(c))
    }

    /// Per output channel, the real step of the integers: `acc_scale[c] / s_in(c)`, the file's
    /// weight scales unless a factor was folded in after the layer.
    pub fn effective_weight_scales(&self, input: &crate::graph::ActInfo) -> Vec<f32> {
        if !self.has_folded_factor(input) {
            return self.weight_scales.clone();
        }
        (0..self.out)
            .map(|c| self.acc_scale[c] / self.input_scale(input, c))
            .collect()
    }
}

/// A Gemm/MatMul with float weights on a dequantized activation (see
/// [`crate::graph::dense`]), being assembled.
#[derive(Debug, Clone)]
pub struct FloatMac {
    /// The quantized input activation.
    pub input: ActId,
    /// Real weights `[out][in]`.
    pub weights: Vec<f32>,
    pub out: usize,
    /// The weight initializer, and whether the file stores it `[in][out]` (MatMul, Gemm with
    /// transB = 0); `trains`: a float32 initializer that can take trained values back.
    pub weight_name: String,
    pub in_out: bool,
    pub trains: bool,
    /// Real bias per output (zeros: none yet) and its initializer when it trains.
    pub bias: Vec<f32>,
    pub bias_name: Option<String>,
    pub has_bias: bool,
    /// Gemm's bias (onnxruntime starts the sums from it); false for MatMul + Add.
    pub bias_first: bool,
    /// The weights are a tensor of the file read directly (onnxruntime prepacks them), not
    /// computed at run time: see [`crate::graph::Dense::block_k_for`].
    pub packed: bool,
    pub act: Activation,
    /// Initializer names of the parameters.
    pub params: Vec<String>,
    /// A float Conv: its geometry (`weights` then in the conv's graph layout, see
    /// [`crate::graph::FloatConv`]); `None` for a Gemm/MatMul.
    pub conv: Option<crate::graph::Conv>,
}

/// A float result waiting for the QuantizeLinear that fixes its parameters.
#[derive(Debug, Clone)]
pub enum Pending {
    Mac(Box<Mac>),
    /// A float layer (float weights).
    Dense(Box<FloatMac>),
    /// Sum of two quantized activations (the second may be a quantized constant), or their
    /// difference `a − b` when `sub` (an ONNX Sub).
    Add {
        a: ActId,
        b: AddOperand,
        act: Activation,
        sub: bool,
    },
    GlobalAvgPool {
        input: ActId,
        /// The QDQ form, computed in float (see [`crate::graph::GlobalAvgPool::float_scales`]);
        /// `false`: QLinearGlobalAveragePool's integer kernel.
        float_order: bool,
    },
    AvgPool {
        input: ActId,
        window: Window,
        count_include_pad: bool,
        ceil: bool,
        /// onnxruntime sums each window columns first (see [`crate::graph::AvgPool`]).
        columns_first: bool,
        /// A float AveragePool of a QDQ model (else QLinearAveragePool).
        qdq: bool,
    },
    /// A float bias (a plain float constant, one per channel or one for all) added to a
    /// dequantized activation, then an activation function.
    Bias {
        input: ActId,
        bias: Vec<f32>,
        act: Activation,
        /// The bias initializer (trains in float).
        name: String,
    },
    /// A float activation function (Relu/Clip) applied to a dequantized tensor.
    Clamp {
        input: ActId,
        act: Activation,
    },
    /// Float element-wise functions applied to a dequantized tensor (see
    /// [`crate::graph::pointwise`]).
    Pointwise {
        input: ActId,
        fns: Vec<crate::graph::FloatFn>,
    },
    /// Product of two dequantized activations (a squeeze-excitation gate), then an activation.
    Mul {
        a: ActId,
        b: ActId,
        act: Activation,
    },
    /// A float MaxPool of another pending result. QuantizeLinear is monotone, so it commutes
    /// with the maximum: the inner result is quantized with the final parameters and pooled
    /// on its bytes, exactly.
    MaxPool {
        inner: Box<Pending>,
        window: Window,
        ceil: bool,
    },
    /// Dequantized activations (or pending float results) concatenated along the channels,
    /// then an activation function.
    Concat {
        inputs: Vec<ConcatIn>,
        act: Activation,
    },
}

/// One input of a pending [`Pending::Concat`].
#[derive(Debug, Clone)]
pub enum ConcatIn {
    /// A dequantized activation: the Concat requantizes its bytes to the output's parameters.
    Act(ActId),
    /// A float result still pending, and its node (NNCF's "quantize the inputs" form:
    /// `Conv, Conv → Concat → Relu → QuantizeLinear`). A Concat only places values, and the
    /// Relu/Clip after it and the QuantizeLinear act on each element alone, so the part is
    /// computed and quantized with the Concat's final parameters and activation (exactly what
    /// onnxruntime computes for those channels) and the Concat copies its bytes.
    Pending(Box<Pending>, String),
}

impl ConcatIn {
    /// The activation, for a dequantized input.
    pub fn act(&self) -> Option<ActId> {
        match self {
            ConcatIn::Act(a) => Some(*a),
            ConcatIn::Pending(..) => None,
        }
    }
}

/// Second operand of a quantized Add.
#[derive(Debug, Clone)]
pub enum AddOperand {
    Act(ActId),
    /// A quantized constant broadcast over the batch: bytes (storage domain), scale, zero point.
    Const {
        data: Vec<u8>,
        scale: f32,
        zero_point: i32,
        name: String,
    },
}

/// The importer's knowledge of one tensor.
#[derive(Debug, Clone)]
pub enum Value {
    /// The model's float input, not yet quantized, after the float poolings listed (and a
    /// Flatten when the flag is set).
    FloatInput(Vec<crate::graph::InputPool>, bool),
    /// A quantized activation of the graph.
    Quant(ActId),
    /// DequantizeLinear of a quantized activation.
    Deq(ActId),
    /// DequantizeLinear of a constant.
    DeqConst(DeqConst),
    /// A float result of a compute node, waiting for its QuantizeLinear.
    Pending(Box<Pending>, String),
    /// A float activation of the graph (a float segment, see [`crate::graph::float_seg`]).
    Float(ActId),
}

impl Value {
    /// The activation this value is (quantized, dequantized or float), if it is one.
    pub fn act(&self) -> Option<ActId> {
        match self {
            Value::Deq(a) | Value::Quant(a) | Value::Float(a) => Some(*a),
            _ => None,
        }
    }

    /// Activation `id` in the form its input had: dequantized (`Deq`) or not (`Quant`), for
    /// ops that move values without changing them (a pooling, a Flatten).
    pub fn activation(id: ActId, dequantized: bool) -> Self {
        if dequantized {
            Value::Deq(id)
        } else {
            Value::Quant(id)
        }
    }
}
