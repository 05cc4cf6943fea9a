//! The in-memory int8 graph: our own representation of a quantized classifier, independent of
//! ONNX. The importer (`crate::onnx`) builds it; forward runs it with integer arithmetic
//! (i32 accumulation, requantization per layer), agreeing with onnxruntime/tract to 1 LSB.
//!
//! A graph is a list of layers in execution order over numbered activations. Each activation
//! has a per-sample [`Shape`] (NHWC) and [`QParams`]. The model input is float NCHW with
//! pixels = byte / 255, normalised per channel if the model asks for it ([`normalize`]); it is
//! quantized once by the first QuantizeLinear's parameters.

mod aligned;
pub mod backward;
pub mod batch_norm;
pub mod bias;
pub mod binding;
mod channel_act;
pub mod concat;
pub mod conv;
mod conv_grad;
pub mod dead;
pub mod dense;
pub mod dense_weights;
mod depthwise;
mod depthwise_f32;
mod depthwise_m1;
pub mod div;
pub mod eltwise;
pub mod float;
pub mod float_conv;
pub mod float_ops;
pub mod float_seg;
pub mod float_weight;
pub mod grad;
mod input_reals;
pub mod layer_norm;
pub mod linear;
mod linear_grad;
mod metric;
mod mlas_fns;
mod mlas_gemv;
pub mod mul;
pub mod normalize;
mod ort_fix;
mod ort_flat;
mod ort_order;
mod ort_rows;
mod ort_screen;
pub mod pad;
mod pairwise;
pub mod params;
mod patch_norms;
mod patches_t;
pub mod permute;
pub mod pointwise;
pub mod pool;
mod pool_cells;
mod pool_grad;
pub mod qparams;
mod quantize_mul;
mod rescale;
mod scratch;
mod simd;
pub mod summary;
pub mod tensor;
mod transpose;
mod zeroed;

use std::path::PathBuf;

pub use backward::Tape;
pub use bias::BiasAdd;
pub use binding::{ParamBinding, WeightLayout};
pub use concat::{Concat, ConcatPart};
pub use conv::{Conv, Window};
pub use dense::Dense;
pub use div::Div;
pub use eltwise::{Add, Requantize};
pub use float::RealParams;
pub use float_conv::FloatConv;
pub use float_seg::Quantize;
pub use grad::{GradPath, LayerGrad};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mul::Mul;
pub use normalize::Normalization;
pub use ort_fix::OrtFix;
pub use ort_order::OrtOrder;
pub use pad::Pad;
pub use params::{ParamKind, Segment, Shadow};
pub use permute::Permute;
pub use pointwise::{FloatFn, Pointwise};
pub use pool::{AvgPool, GlobalAvgPool, MaxPool};
pub use qparams::{Activation, QParams, Requant};
pub use tensor::{QBatch, Shape, Store};

use crate::{Error, Result};

/// Index of an activation in [`Graph::acts`].
pub type ActId = usize;

/// What the graph knows about one activation tensor.
#[derive(Debug, Clone)]
pub struct ActInfo {
    /// The ONNX tensor name it came from.
    pub name: String,
    pub shape: Shape,
    pub q: QParams,
    /// One scale per channel when the file quantizes the tensor per channel (see
    /// [`channel_act`]); empty: per tensor, `q.scale`.
    pub channel_scales: Vec<f32>,
    /// A float activation of a float segment ([`float_seg`]): its batches hold f32 values and
    /// `q` is a placeholder.
    pub float: bool,
}

/// The operation a layer performs.
#[derive(Debug, Clone)]
pub enum Op {
    Conv(Conv),
    Linear(Linear),
    Add(Add),
    MaxPool(MaxPool),
    AvgPool(AvgPool),
    GlobalAvgPool(GlobalAvgPool),
    /// NHWC → NCHW-ordered flat vector.
    Flatten,
    /// A Reshape/Transpose chain that moves values (see [`permute`]).
    Permute(Permute),
    /// Zero borders around each image (see [`pad`]).
    Pad(Pad),
    Requantize(Requantize),
    /// A float bias added between DequantizeLinear and QuantizeLinear (see [`bias`]).
    BiasAdd(BiasAdd),
    /// Float element-wise functions between DequantizeLinear and QuantizeLinear, by lookup
    /// (see [`pointwise`]).
    Pointwise(Pointwise),
    /// Product of two activations (a squeeze-excitation gate; see [`mul`]).
    Mul(Mul),
    /// Quotient of two tensors, always float (see [`div`]).
    Div(Div),
    /// A Gemm/MatMul with float weights, computed in f32 (see [`dense`]).
    Dense(Dense),
    /// A Conv with float weights, computed in f32 (see [`float_conv`]).
    FloatConv(FloatConv),
    /// A float Relu/Clip (the layer's activation) of a float segment (see [`float_seg`]).
    Clamp,
    /// QuantizeLinear at the end of a float segment (see [`float_seg`]).
    Quantize(Quantize),
    /// Channel concatenation of quantized activations (see [`concat`]).
    Concat(Concat),
    /// LayerNormalization over a flat activation's features, always float (see
    /// [`layer_norm`]).
    LayerNorm(LayerNorm),
}

impl Op {
    /// Short name of the operation.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::Linear(_) => "linear",
            Op::Add(a) if a.sub => "sub",
            Op::Add(_) => "add",
            Op::MaxPool(_) => "maxpool",
            Op::AvgPool(_) => "avgpool",
            Op::GlobalAvgPool(_) => "global_avgpool",
            Op::Flatten => "flatten",
            Op::Permute(_) => "permute",
            Op::Pad(_) => "pad",
            Op::Requantize(_) => "requantize",
            Op::BiasAdd(_) => "bias_add",
            Op::Pointwise(_) => "pointwise",
            Op::Mul(_) => "mul",
            Op::Div(_) => "div",
            Op::Dense(_) => "dense",
            Op::FloatConv(_) => "float_conv",
            Op::Clamp => "float_clamp",
            Op::Quantize(_) => "quantize",
            Op::Concat(_) => "concat",
            Op::LayerNorm(_) => "layer_norm",
        }
    }
}

/// One layer: an operation from input activations to one output activation.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Name of the ONNX node it came from (the main compute node of a QDQ group).
    pub name: String,
    pub op: Op,
    /// Fused activation (for display; already part of the op's clamp range).
    pub activation: Activation,
    pub inputs: Vec<ActId>,
    pub output: ActId,
    /// ONNX initializer names of the weights and bias this layer owns (for export).
    pub params: Vec<String>,
    /// Where trainable weights go back in the file; `None`: the layer is frozen.
    pub binding: Option<ParamBinding>,
}

/// An average pooling the model does in float on its input, before the first QuantizeLinear.
#[derive(Debug, Clone)]
pub struct InputPool {
    pub window: Window,
    pub count_include_pad: bool,
    pub out_shape: Shape,
}

/// How raw images enter the graph.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// ONNX input name.
    pub name: String,
    /// Per-sample shape of the model input (channels, height, width as in the NCHW input).
    pub shape: Shape,
    /// Float pooling applied to the pixels before quantization, if the model has one.
    pub pre_pool: Option<InputPool>,
    /// Quantization of the input (the first QuantizeLinear).
    pub q: QParams,
    /// The activation the quantized input is stored in.
    pub act: ActId,
    /// Per-channel mean/std applied to byte / 255 before quantization (`None`: byte / 255).
    pub norm: Option<Normalization>,
    /// Float element-wise functions the model itself applies to its float input before the
    /// first QuantizeLinear (an in-model normalisation `Sub`/`Div`, a smoothing `Mul`), after
    /// `norm` and before any input pooling.
    pub fns: Vec<FloatFn>,
    /// Float element-wise functions after the input pooling and flatten, just before the
    /// QuantizeLinear (a SmoothQuant pre-scale `Mul`), with one constant per element of the
    /// (pooled) input in NCHW order, or a scalar: evaluated per element, not per byte, since
    /// a pooled value is no longer one of 256.
    pub post_fns: Vec<FloatFn>,
}

impl InputSpec {
    /// The float value the model quantizes for byte `b` of channel `c`.
    #[inline]
    pub fn pixel(&self, c: usize, b: u8) -> f32 {
        let x = normalize::pixel_value(self.norm.as_ref(), c, b);
        self.fns.iter().fold(x, |v, f| f.eval(c, v))
    }

    /// [`InputSpec::post_fns`] on the value `x` of element `i` (NCHW index after pooling).
    #[inline]
    pub fn post(&self, i: usize, x: f32) -> f32 {
        self.post_fns.iter().fold(x, |v, f| f.eval(i, v))
    }
}

/// A quantized classifier ready to run.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The file it was imported from, if any.
    pub source: Option<PathBuf>,
    pub input: InputSpec,
    pub acts: Vec<ActInfo>,
    pub layers: Vec<Layer>,
    /// ONNX output name.
    pub output_name: String,
    pub output: ActId,
    /// The model's output is real-valued (a float head: no QuantizeLinear after the last layer).
    /// The output activation then holds that layer's value requantized with placeholder
    /// parameters; [`Graph::forward`] also returns the real values, which every metric and
    /// loss uses.
    pub real_output: bool,
    /// The model ends in `Softmax → QuantizeLinear`: its deployed output is the class
    /// probabilities quantized with these parameters, and a runtime's top-1 is taken on them
    /// (the first class on ties), which can differ from the logits' top-1 where two
    /// probabilities round to the same level. The graph itself ends at the logits.
    pub output_probs: Option<QParams>,
    /// Retrain only: the per-channel layers that normalized the last training batch with its
    /// own statistics (see [`batch_norm`]), by layer index; the backward adds the gradient
    /// through those statistics. Empty otherwise.
    pub batch_stats: std::collections::BTreeMap<usize, batch_norm::BatchStats>,
}

/// Quantized outputs of a batch, `n × classes`, in storage bytes plus their parameters.
#[derive(Debug, Clone)]
pub struct Logits {
    pub n: usize,
    pub classes: usize,
    pub data: Vec<u8>,
    pub q: QParams,
    /// Real logits (`n × classes`) of a model with a float output; `None`: the bytes are the
    /// deployed output.
    pub real: Option<Vec<f32>>,
    /// [`Graph::output_probs`]: top-1 is taken on the quantized Softmax of each row.
    pub probs: Option<QParams>,
}

impl Logits {
    /// Row `i` as stored bytes.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[i * self.classes..(i + 1) * self.classes]
    }

    /// Row `i` in the model's integer domain (int8 or uint8 values).
    pub fn model_row(&self, i: usize) -> Vec<i32> {
        self.row(i).iter().map(|&q| self.q.model_value(q)).collect()
    }

    /// Index of the largest logit of row `i` (the first one on ties, as numpy's argmax).
    pub fn top1(&self, i: usize) -> usize {
        if let Some(p) = &self.probs {
            return top1_of_probs(&self.real_row(i), p);
        }
        match &self.real {
            Some(r) => first_max(&r[i * self.classes..(i + 1) * self.classes]),
            None => crate::eval::argmax(self.row(i)),
        }
    }

    /// Row `i` in real values: the float output, or the bytes dequantized.
    pub fn real_row(&self, i: usize) -> Vec<f32> {
        match &self.real {
            Some(r) => r[i * self.classes..(i + 1) * self.classes].to_vec(),
            None => self.row(i).iter().map(|&q| self.q.dequantize(q)).collect(),
        }
    }
}

/// Top-1 of a model whose output is `QuantizeLinear(Softmax(logits))` with parameters `q`:
/// the first class whose quantized probability is the largest. The Softmax is computed in f32
/// as runtimes do (`exp(x − max) / Σ`).
pub fn top1_of_probs(logits: &[f32], q: &QParams) -> usize {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    let levels: Vec<i32> = e
        .iter()
        .map(|&v| q.model_value(q.quantize(v / sum)))
        .collect();
    crate::eval::argmax(&levels)
}

/// Index of the first largest value (NaN never wins).
fn first_max(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

impl Graph {
    /// Number of classes the model predicts.
    pub fn classes(&self) -> usize {
        self.acts[self.output].shape.len()
    }

    /// Use `norm` for the input (replacing what the model's metadata said), or none.
    pub fn set_normalization(&mut self, norm: Option<Normalization>) -> Result<()> {
        if let Some(n) = &norm {
            n.check_channels(self.input.shape.c)?;
        }
        self.input.norm = norm;
        Ok(())
    }

    /// Quantize raw image bytes (`n × c·h·w`, NCHW order, pixel = byte/255, then normalised as
    /// [`InputSpec::norm`] says) into the input batch.
    pub fn quantize_images(&self, images: &[u8], n: usize) -> Result<QBatch> {
        let s = self.input.shape;
        if images.len() != n * s.len() {
            return Err(Error::Shape(format!(
                "{} bytes for {n} images of {s}",
                images.len()
            )));
        }
        let q = self.input.q;
        let plane = s.h * s.w;
        let float = self.acts[self.input.act].float;
        if float || self.input.pre_pool.is_some() || !self.input.post_fns.is_empty() {
            // A float input, a float pooling or per-element functions before the first
            // QuantizeLinear: the reals in the model's order, then (unless the input stays
            // float) that QuantizeLinear.
            let vals = input_reals::input_reals(images, n, s, &self.input);
            let shape = self.input.pre_pool.as_ref().map_or(s, |p| p.out_shape);
            if float {
                return Ok(QBatch::from_real(n, shape, vals));
            }
            let data = vals.iter().map(|&x| q.quantize(x)).collect();
            return Ok(QBatch { n, shape, data });
        }
        let per_channel = self.input.per_channel();
        let luts: Vec<Vec<u8>> = self
            .input
            .pixel_tables()
            .iter()
            .map(|t| t.iter().map(|&x| q.quantize(x)).collect())
            .collect();
        if s.c == 1 {
            // One channel: NCHW and NHWC are the same order, one lookup per byte. An input
            // quantized with scale 1/255 and zero point 0 (pixel = byte/255, a common
            // calibration) maps every byte to itself: a copy.
            let lut = &luts[0];
            let data = if lut.iter().enumerate().all(|(i, &q)| q as usize == i) {
                images.to_vec()
            } else {
                images.iter().map(|&b| lut[b as usize]).collect()
            };
            return Ok(QBatch {
                n,
                shape: s,
                data: data.into(),
            });
        }
        let mut data = vec![0u8; images.len()];
        for (o, img) in data
            .chunks_exact_mut(s.len().max(1))
            .zip(images.chunks_exact(s.len().max(1)))
        {
            // NCHW bytes → NHWC storage.
            for ch in 0..s.c {
                let lut = &luts[if per_channel { ch } else { 0 }];
                for p in 0..plane {
                    o[p * s.c + ch] = lut[img[ch * plane + p] as usize];
                }
            }
        }
        Ok(QBatch {
            n,
            shape: s,
            data: data.into(),
        })
    }

    /// Run the graph on `n` raw images (NCHW bytes), giving onnxruntime's bytes (see
    /// [`OrtFix`]). Activations are freed after their last use.
    pub fn forward(&self, images: &[u8], n: usize) -> Result<Logits> {
        self.forward_as(images, n, true)
    }

    /// [`Graph::forward`] with the integer result everywhere: what training's own decisions
    /// (its guard's probe, its stopping rule) read, so they follow the steps' arithmetic.
    pub fn forward_integer(&self, images: &[u8], n: usize) -> Result<Logits> {
        self.forward_as(images, n, false)
    }

    fn forward_as(&self, images: &[u8], n: usize, exact: bool) -> Result<Logits> {
        let mut vals = self.run_with(images, n, false, exact)?;
        let real = self.real_logits(&vals);
        let out = vals[self.output]
            .take()
            .ok_or_else(|| Error::Shape("the graph never computes its output".to_string()))?;
        Ok(Logits {
            n,
            classes: out.shape.len(),
            data: out.data.into_bytes(),
            q: self.acts[self.output].q,
            real,
            probs: self.output_probs,
        })
    }

    /// The real output of a float-output graph from saved activations (the output layer's
    /// input must be among them); `None` for a quantized output.
    pub(crate) fn real_logits(&self, vals: &[Option<QBatch>]) -> Option<Vec<f32>> {
        if !self.real_output {
            return None;
        }
        let layer = self.layers.iter().rev().find(|l| l.output == self.output)?;
        let x = vals[layer.inputs[0]].as_ref()?;
        match &layer.op {
            Op::Linear(l) => Some(l.real_outputs(x, self.acts[self.output].q.scale)),
            Op::BiasAdd(b) => Some(b.real_outputs(x)),
            Op::Dense(d) => Some(d.real_outputs(&self.acts[layer.inputs[0]], x)),
            _ => None,
        }
    }

    /// Run the graph and return every activation (`keep`), or only those still needed; the
    /// integer result everywhere (training's tape and its own decisions), no
    /// [`OrtFix`] recomputation.
    pub(crate) fn run(&self, images: &[u8], n: usize, keep: bool) -> Result<Vec<Option<QBatch>>> {
        self.run_with(images, n, keep, false)
    }

    /// [`Graph::run`]; `exact`: onnxruntime's bytes where an [`OrtFix`] is set (what a user is
    /// shown and what the deployed file computes).
    fn run_with(
        &self,
        images: &[u8],
        n: usize,
        keep: bool,
        exact: bool,
    ) -> Result<Vec<Option<QBatch>>> {
        let mut last_use = vec![usize::MAX; self.acts.len()];
        for (i, l) in self.layers.iter().enumerate() {
            for &a in &l.inputs {
                // A float output is computed from the output layer's input after the run.
                last_use[a] = if self.real_output && l.output == self.output {
                    usize::MAX
                } else {
                    i
                };
            }
        }
        let mut vals = self.start_run(images, n)?;
        let drop = (!keep).then_some(&last_use[..]);
        self.run_layers(&mut vals, 0..self.layers.len(), exact, drop)?;
        Ok(vals)
    }

    /// The activations of a run that has computed nothing yet but the quantized input.
    pub(crate) fn start_run(&self, images: &[u8], n: usize) -> Result<Vec<Option<QBatch>>> {
        let mut vals: Vec<Option<QBatch>> = vec![None; self.acts.len()];
        vals[self.input.act] = Some(self.quantize_images(images, n)?);
        Ok(vals)
    }

    /// Run the layers `range` on the activations computed so far (the integer result, or with
    /// `exact` onnxruntime's bytes where an [`OrtFix`] is set). With `last_use` (the index of
    /// the last layer reading each activation), an activation no later layer reads is dropped.
    pub(crate) fn run_layers(
        &self,
        vals: &mut [Option<QBatch>],
        range: std::ops::Range<usize>,
        exact: bool,
        last_use: Option<&[usize]>,
    ) -> Result<()> {
        for i in range {
            let layer = &self.layers[i];
            // A float segment's layers (see [`float_seg`]).
            let float = self.acts[layer.output].float || matches!(layer.op, Op::Quantize(_));
            // A float op takes its first input over when no later layer reads it (and it is
            // not also its second input), to compute in place.
            let first = layer.inputs[0];
            let owned = match last_use {
                Some(last)
                    if float
                        && last[first] == i
                        && first != self.output
                        && !layer.inputs[1..].contains(&first) =>
                {
                    vals[first].take()
                }
                _ => None,
            };
            let get = |a: ActId| {
                vals[a].as_ref().ok_or_else(|| {
                    Error::Shape(format!(
                        "layer '{}' reads activation '{}' before it is computed",
                        layer.name, self.acts[a].name
                    ))
                })
            };
            if float {
                let x = match owned {
                    Some(b) => float_seg::Input::Owned(b),
                    None => float_seg::Input::Borrowed(get(first)?),
                };
                let y = match layer.inputs.get(1) {
                    Some(&b) => self.float_binary(layer, x, get(b)?)?,
                    None => self.float_op(layer, x)?,
                };
                self.store(vals, i, layer, y, last_use);
                continue;
            }
            let x = get(first)?;
            let y = match &layer.op {
                // Training takes the integer sums as they are: onnxruntime's float order
                // ([`OrtFix`]) moves a few outputs in a hundred thousand by one step, which no
                // gradient step notices, and about doubles a forward's time.
                Op::Conv(c) if !exact => c.forward_integer(x),
                Op::Linear(l) if !exact => l.forward_integer(x),
                Op::Conv(c) => c.forward(x),
                Op::Linear(l) => l.forward(x),
                Op::Add(a) => {
                    let b = match layer.inputs.get(1) {
                        Some(&b) => Some(get(b)?),
                        None => None,
                    };
                    a.forward(x, b)
                }
                Op::MaxPool(p) => p.forward(x),
                Op::AvgPool(p) => p.forward(x),
                Op::GlobalAvgPool(p) => p.forward(x),
                Op::Flatten => eltwise::flatten_nchw(x),
                Op::Permute(p) => p.forward(x, self.acts[layer.output].shape),
                // The borders hold the byte of real 0.
                Op::Pad(p) => p.forward(x, self.acts[layer.inputs[0]].q.zero_point as u8),
                Op::Requantize(r) => r.forward(x),
                Op::BiasAdd(b) => b.forward(x),
                Op::Pointwise(p) => p.forward(x),
                Op::Mul(m) => m.forward(x, get(layer.inputs[1])?),
                Op::Dense(d) => d.forward(&self.acts[layer.inputs[0]], x),
                Op::Concat(c) => {
                    let xs = layer
                        .inputs
                        .iter()
                        .map(|&a| get(a))
                        .collect::<Result<Vec<_>>>()?;
                    c.forward(&xs)
                }
                Op::FloatConv(_) | Op::Div(_) | Op::LayerNorm(_) | Op::Clamp | Op::Quantize(_) => {
                    return Err(Error::Shape(format!(
                        "layer '{}' must have a float output",
                        layer.name
                    )))
                }
            };
            self.store(vals, i, layer, y, last_use);
        }
        Ok(())
    }

    /// Keep layer `i`'s output `y`, and drop the inputs no later layer reads.
    fn store(
        &self,
        vals: &mut [Option<QBatch>],
        i: usize,
        layer: &Layer,
        y: QBatch,
        last_use: Option<&[usize]>,
    ) {
        debug_assert_eq!(y.shape, self.acts[layer.output].shape, "{}", layer.name);
        if let Some(last_use) = last_use {
            for &a in &layer.inputs {
                if last_use[a] == i && a != self.output {
                    vals[a] = None;
                }
            }
        }
        vals[layer.output] = Some(y);
    }
}
