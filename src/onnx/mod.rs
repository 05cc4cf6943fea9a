//! Importing quantized ONNX models (QDQ and QOperator forms) into a [`Graph`].
//!
//! The file is decoded with tract-onnx's protobuf types (see [`pb`]); nodes are visited in file order (ONNX
//! requires topological order) and each tensor is tracked as a [`value::Value`] (see there for
//! why). Anything the integer graph cannot represent exactly is an error that names the op,
//! the node and the file — never a guess and never a panic.

mod blocked;
mod channel_act;
mod compute;
mod concat;
mod const_fold;
mod dense;
mod float_const;
mod float_ops;
mod float_seg;
mod float_weight;
mod input_fns;
pub mod int4;
mod layer_norm;
mod materialize;
pub mod patch;
#[cfg(not(feature = "tract-engine"))]
pub mod pb_lite;
mod pointwise;
mod proto;
mod qdq;
mod qop;
mod reshape;
mod shape_fold;
mod shape_ops;
mod value;

pub use proto::{decode_model, ConstData, ConstTensor};

/// The ONNX protobuf types: tract-onnx's, or the same subset from [`pb_lite`] in a device build.
#[cfg(not(feature = "tract-engine"))]
pub use pb_lite as pb;
#[cfg(feature = "tract-engine")]
pub use tract_onnx::pb;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::graph::{ActId, ActInfo, Graph, InputSpec, Layer, QParams, Shape};
use crate::{Error, Result};
use value::Value;

/// The bytes of a model file, with initializers kept in external data files (beside it)
/// inlined as `raw_data` (see [`patch::external`]). Every reader of a base model goes through
/// here, so imports, deltas (whose base hash is of these bytes) and exports see the same
/// self-contained model; a file with no external data comes back byte for byte.
pub fn read_model_bytes(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    inline_external(bytes, path)
}

/// [`read_model_bytes`] for bytes already read from `path`.
pub fn inline_external(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match patch::external::inline_external(&bytes, dir) {
        Ok(Some(inlined)) => Ok(inlined),
        Ok(None) => Ok(bytes),
        Err(reason) => Err(Error::InvalidModel {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

/// Read and decode a model file.
pub fn read_model(path: impl AsRef<Path>) -> Result<pb::ModelProto> {
    let path = path.as_ref();
    let bytes = read_model_bytes(path)?;
    decode_model(&bytes).map_err(|reason| Error::InvalidModel {
        path: path.to_path_buf(),
        reason,
    })
}

/// Import a quantized ONNX model from a file.
pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let model = read_model(path)?;
    import(&model, path)
}

/// Import a model from its file bytes; `path` is used in messages.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Graph> {
    let model = decode_model(bytes).map_err(|reason| Error::InvalidModel {
        path: path.to_path_buf(),
        reason,
    })?;
    import(&model, path)
}

/// Import an already decoded model; `path` is used in messages.
pub fn import(model: &pb::ModelProto, path: &Path) -> Result<Graph> {
    let graph = model.graph.as_ref().ok_or_else(|| Error::InvalidModel {
        path: path.to_path_buf(),
        reason: "no graph".to_string(),
    })?;
    refuse_wide_activations(graph, path)?;
    let mut imp = Importer::new(path);
    imp.opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    for init in &graph.initializer {
        let t = proto::tensor(init).map_err(|reason| Error::InvalidModel {
            path: path.to_path_buf(),
            reason,
        })?;
        imp.consts.insert(init.name.clone(), t);
        imp.file_tensors.insert(init.name.clone());
    }
    imp.set_input(graph)?;
    for name in graph.node.iter().flat_map(|n| &n.input) {
        *imp.readers.entry(name.clone()).or_default() += 1;
    }
    for node in &graph.node {
        imp.node(node)?;
    }
    let mut g = imp.finish(graph)?;
    g.input.norm = input_normalization(model, path)?;
    Ok(g)
}

/// 16-bit activations (a QuantizeLinear/DequantizeLinear with a uint16 or int16 zero point, as
/// onnxruntime's `quantize_static` writes for `activation_type=QUInt16/QInt16`, A16W8) are
/// refused by name, before their initializers are decoded: the training graph holds 8-bit
/// activations (`QBatch` bytes) and its GEMMs take u8 inputs. 16-bit weights (such a zero point
/// on a DequantizeLinear of an initializer, `weight_type=QUInt16/QInt16`) are refused the same
/// way, and the message calls them weights.
///
/// The design such models need, measured in numpy on `mnist_res_qdq_a16`
/// (`onnx-models/a16_numpy_check.py`, README "Asymmetric uint8 weights and 16-bit
/// activations"): exact integer Conv/Gemm (the 16-bit input as two byte planes through the u8 ×
/// s8 kernels, recombined in i64) lands up to 2 LSB from onnxruntime's float reference (1 logit
/// in 100,000), f32 on dequantized values within 1 LSB; top-1 equal on 10000/10000 either way.
/// So 16-bit layers should run in f32 (as `graph::dense` and `graph::ort_order` do), with a
/// fixed summation order to keep exports identical across CPUs: the trade-off is a forward
/// that is float, not integer, arithmetic for those layers.
fn refuse_wide_activations(graph: &pb::GraphProto, path: &Path) -> Result<()> {
    use pb::tensor_proto::DataType;
    let wide =
        |name: &str| {
            graph.initializer.iter().find(|t| t.name == name).and_then(
                |t| match DataType::try_from(t.data_type) {
                    Ok(DataType::Uint16) => Some("uint16"),
                    Ok(DataType::Int16) => Some("int16"),
                    _ => None,
                },
            )
        };
    for n in &graph.node {
        if n.op_type != "QuantizeLinear" && n.op_type != "DequantizeLinear" {
            continue;
        }
        if let Some(t) = n.input.get(2).and_then(|z| wide(z).map(|t| (z, t))) {
            // A DequantizeLinear of an initializer dequantizes a weight, not an activation.
            let weight = n.op_type == "DequantizeLinear"
                && n.input
                    .first()
                    .is_some_and(|x| graph.initializer.iter().any(|i| &i.name == x));
            let detail = if weight {
                format!(
                    "16-bit weights (zero point '{}' is {}; onnxruntime's weight_type \
                     QUInt16/QInt16) are not supported: qforget's integer graph holds 8-bit \
                     and 4-bit weights",
                    t.0, t.1
                )
            } else {
                format!(
                    "16-bit activations (zero point '{}' is {}; onnxruntime's activation_type \
                     QUInt16/QInt16, A16W8) are not supported: qforget's integer graph holds \
                     8-bit activations",
                    t.0, t.1
                )
            };
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                op: n.op_type.clone(),
                node: n.name.clone(),
                detail,
            });
        }
    }
    Ok(())
}

/// The input normalisation the model's `metadata_props` carry (keys `mean`, `std`), if any.
fn input_normalization(
    model: &pb::ModelProto,
    path: &Path,
) -> Result<Option<crate::graph::Normalization>> {
    let props = model
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()));
    crate::graph::Normalization::from_metadata(props).map_err(|reason| Error::InvalidModel {
        path: path.to_path_buf(),
        reason,
    })
}

/// Where a node's problem is reported from.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a pb::NodeProto,
    pub path: &'a Path,
}

impl<'a> NodeCtx<'a> {
    fn name(&self) -> String {
        if self.node.name.is_empty() {
            self.node.output.first().cloned().unwrap_or_default()
        } else {
            self.node.name.clone()
        }
    }

    /// "unsupported" error for this node.
    pub fn unsupported(&self, detail: impl Into<String>) -> Error {
        Error::Unsupported {
            path: self.path.to_path_buf(),
            op: self.node.op_type.clone(),
            node: self.name(),
            detail: detail.into(),
        }
    }

    /// "inconsistent node" error for this node.
    pub fn bad(&self, detail: impl Into<String>) -> Error {
        Error::BadNode {
            path: self.path.to_path_buf(),
            op: self.node.op_type.clone(),
            node: self.name(),
            detail: detail.into(),
        }
    }

    /// Attributes, with errors mapped to this node.
    pub fn attrs(&self) -> proto::Attrs<'a> {
        proto::Attrs(self.node)
    }

    /// Name of input `i`, if given (ONNX marks skipped optional inputs with "").
    pub fn input(&self, i: usize) -> Option<&str> {
        self.node
            .input
            .get(i)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// Names of inputs 0 and 1 of a binary node.
    pub fn two_inputs(&self) -> Result<(&str, &str)> {
        match (self.input(0), self.input(1)) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(self.bad("needs two inputs")),
        }
    }

    /// Name of the first output.
    pub fn output(&self) -> Result<&str> {
        self.node
            .output
            .first()
            .map(|s| s.as_str())
            .ok_or_else(|| self.bad("has no output"))
    }
}

/// Walks the nodes and accumulates the graph.
pub(crate) struct Importer<'p> {
    pub path: &'p Path,
    pub consts: HashMap<String, ConstTensor>,
    pub values: HashMap<String, Value>,
    pub acts: Vec<ActInfo>,
    pub layers: Vec<Layer>,
    pub input: Option<(String, Shape)>,
    /// The model's input is `[N, F]` (not `[N, C, H, W]`).
    pub input_flat: bool,
    pub input_spec: Option<InputSpec>,
    /// Constants computed at import (folded nodes, a Constant's scalar and list forms): no
    /// tensor in the file holds them, so nothing can be written back.
    pub node_consts: std::collections::HashSet<String>,
    /// Initializers and Constant nodes' tensors: what onnxruntime holds as constant
    /// initializers (and prepacks for a Gemm/MatMul), unlike tensors computed by other nodes.
    pub file_tensors: std::collections::HashSet<String>,
    /// Float functions on the model input before its QuantizeLinear, and the tensor the chain
    /// ends at (`None`: the input itself).
    pub input_fns: Vec<crate::graph::FloatFn>,
    /// Float functions on the model input after its pooling/flatten (or with a constant per
    /// element), evaluated per element (see [`crate::graph::InputSpec::post_fns`]).
    pub input_post_fns: Vec<crate::graph::FloatFn>,
    pub input_chain_end: Option<String>,
    /// Outputs of a final Softmax (see [`Importer::softmax`]); nothing may read them.
    /// The op that made each (`Softmax` or `LogSoftmax`).
    pub softmax_out: HashMap<String, &'static str>,
    /// Quantization of the final Softmax's output (`Softmax → QuantizeLinear →
    /// DequantizeLinear`, as onnxruntime's QDQ quantizer leaves a classifier's Softmax), if any.
    pub softmax_q: Option<QParams>,
    /// Float weights quantized at run time, by the QuantizeLinear output that holds their
    /// integers: the float initializer's name and how to write integers back (see
    /// [`float_weight`]); `None` for the latter when another node reads the float initializer
    /// too (its layer is then frozen).
    pub float_weights: HashMap<
        String,
        (
            String,
            Option<std::sync::Arc<crate::graph::float_weight::FloatWeight>>,
        ),
    >,
    /// How many node inputs read each tensor name.
    pub readers: HashMap<String, usize>,
    /// Per-sample ONNX dimensions of the activations a Reshape/Transpose made (see
    /// [`reshape`]).
    pub layouts: HashMap<usize, Vec<usize>>,
    /// QuantizeLinear outputs kept as float activations (per-channel zero points, see
    /// [`channel_act`]) and the QuantizeLinear → DequantizeLinear function they carry.
    pub fake_quantized: HashMap<String, crate::graph::FloatFn>,
    /// The model's version of the default (`ai.onnx`) operator set; 0 when it names none.
    pub opset: i64,
}

impl<'p> Importer<'p> {
    fn new(path: &'p Path) -> Self {
        Importer {
            path,
            consts: HashMap::new(),
            values: HashMap::new(),
            acts: Vec::new(),
            layers: Vec::new(),
            input: None,
            input_spec: None,
            node_consts: Default::default(),
            file_tensors: Default::default(),
            softmax_out: Default::default(),
            softmax_q: None,
            input_flat: false,
            input_fns: vec![],
            input_post_fns: vec![],
            input_chain_end: None,
            float_weights: HashMap::new(),
            readers: HashMap::new(),
            layouts: HashMap::new(),
            fake_quantized: HashMap::new(),
            opset: 0,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidModel {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A readable model whose inputs or outputs qforget does not handle.
    fn unsupported_model(&self, reason: impl Into<String>) -> Error {
        Error::UnsupportedModel {
            path: self.path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The one float image input: `[N, C, H, W]` or `[N, F]`.
    fn set_input(&mut self, graph: &pb::GraphProto) -> Result<()> {
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !self.consts.contains_key(&i.name))
            .collect();
        let [inp] = inputs[..] else {
            return Err(self.unsupported_model(format!(
                "qforget needs a classifier with exactly one data input, this model has {}{}",
                inputs.len(),
                quoted_names(inputs.iter().map(|i| i.name.as_str()))
            )));
        };
        let dims = proto::value_info_dims(inp)
            .ok_or_else(|| self.invalid(format!("input '{}' has no tensor shape", inp.name)))?;
        let shown = proto::value_info_dims_text(inp);
        let known = |d: &Option<i64>| d.filter(|&v| v > 0).map(|v| v as usize);
        let shape = match dims[..] {
            [_, ref c, ref h, ref w] => match (known(c), known(h), known(w)) {
                (Some(c), Some(h), Some(w)) => Shape { h, w, c },
                _ => None.ok_or_else(|| {
                    self.unsupported_model(format!(
                        "input '{}' has shape {shown}; qforget needs fixed C, H and W \
                         dimensions in an [N, C, H, W] input",
                        inp.name
                    ))
                })?,
            },
            [_, ref f] => {
                self.input_flat = true;
                Shape::flat(known(f).ok_or_else(|| {
                    self.unsupported_model(format!(
                        "input '{}' has shape {shown}; qforget needs a fixed feature size F \
                         in an [N, F] input",
                        inp.name
                    ))
                })?)
            }
            _ => {
                return Err(self.unsupported_model(format!(
                    "input '{}' has shape {shown}; qforget needs an image input [N, C, H, W] \
                     (e.g. [N, 1, 28, 28]) or a flat input [N, F]",
                    inp.name
                )))
            }
        };
        self.values
            .insert(inp.name.clone(), Value::FloatInput(vec![], false));
        self.input = Some((inp.name.clone(), shape));
        Ok(())
    }

    /// Register a new activation and return its id.
    pub fn new_act(&mut self, name: &str, shape: Shape, q: QParams) -> ActId {
        self.acts.push(ActInfo {
            name: name.to_string(),
            shape,
            q,
            channel_scales: Vec::new(),
            float: false,
        });
        self.acts.len() - 1
    }

    /// Look up a tensor that must exist.
    pub fn value(&self, ctx: &NodeCtx, name: &str) -> Result<Value> {
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        if self.consts.contains_key(name) {
            return Err(ctx.unsupported(format!(
                "input '{name}' is a plain constant where a quantized tensor is expected"
            )));
        }
        Err(Error::MissingTensor {
            path: self.path.to_path_buf(),
            op: ctx.node.op_type.clone(),
            node: ctx.name(),
            tensor: name.to_string(),
        })
    }

    /// Look up a constant input `i` of the node.
    pub fn konst(&self, ctx: &NodeCtx, i: usize) -> Result<ConstTensor> {
        let name = ctx
            .input(i)
            .ok_or_else(|| ctx.bad(format!("input #{i} is missing")))?;
        self.consts.get(name).cloned().ok_or_else(|| {
            if self.values.contains_key(name) {
                ctx.unsupported(format!(
                    "input '{name}' is computed at run time; qforget needs it to be a constant"
                ))
            } else {
                Error::MissingTensor {
                    path: self.path.to_path_buf(),
                    op: ctx.node.op_type.clone(),
                    node: ctx.name(),
                    tensor: name.to_string(),
                }
            }
        })
    }

    fn node(&mut self, node: &pb::NodeProto) -> Result<()> {
        let ctx = NodeCtx {
            node,
            path: self.path,
        };
        let domain = node.domain.as_str();
        if !matches!(domain, "" | "ai.onnx" | "com.microsoft") {
            return Err(ctx.unsupported(format!("operator domain '{domain}' is not supported")));
        }
        if let Some((s, op)) = node
            .input
            .iter()
            .find_map(|i| self.softmax_out.get(i).map(|&op| (i.clone(), op)))
        {
            // A Softmax's probabilities may be quantized; nothing else reads either's output.
            let qdq = matches!(node.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear");
            if qdq && op == "Softmax" {
                return self.softmax_qdq(&ctx, &s);
            }
            return Err(ctx.unsupported(format!(
                "it reads '{s}', the output of a {op}; qforget supports a {op} only as the \
                 model's last node"
            )));
        }
        self.check_batch_readers(&ctx)?;
        if self.folds_shape(&ctx) {
            return self.fold_shape(&ctx);
        }
        self.check_channel_readers(&ctx)?;
        match node.op_type.as_str() {
            "Constant" => self.constant(&ctx),
            "ConstantOfShape" => self.constant_of_shape(&ctx),
            "Cast" => self.cast(&ctx),
            "Softmax" | "LogSoftmax" => self.softmax(&ctx),
            "QuantizeLinear" => self.quantize_linear(&ctx),
            "DequantizeLinear" => self.dequantize_linear(&ctx),
            "Conv" | "Gemm" | "MatMul" => self.float_mac(&ctx),
            "BatchNormalization" => self.batch_norm(&ctx),
            "LayerNormalization" => self.layer_norm(&ctx),
            "Relu" | "Clip" => self.activation(&ctx),
            "Add" | "Sub" | "Mul" if self.float_pair(&ctx) => self.float_binary(&ctx),
            "Div" if self.computed_pair(&ctx) => self.float_binary(&ctx),
            "Add"
                if self.chain_operand(&ctx)
                    || self.input_operand(&ctx)
                    || self.float_value_operand(&ctx) =>
            {
                self.float_arith(&ctx)
            }
            "Add" => self.add(&ctx),
            "Sub" if self.quantized_sub(&ctx) => self.sub(&ctx),
            "Sub" | "Div" => self.float_arith(&ctx),
            "Sigmoid" | "HardSigmoid" | "HardSwish" | "LeakyRelu" | "Tanh" | "Erf" | "Sqrt"
            | "Pow" | "Elu" | "Selu" | "Softplus" | "Softsign" | "Mish" | "Gelu" | "PRelu" => {
                self.float_unary(&ctx)
            }
            "MaxPool" => self.max_pool(&ctx),
            "AveragePool" | "GlobalAveragePool" => self.avg_pool(&ctx),
            "ReduceMean" => self.reduce_mean(&ctx),
            "ReduceMax" => self.reduce_max(&ctx),
            "Flatten" | "Reshape" => self.flatten(&ctx),
            "Transpose" => self.transpose(&ctx),
            "Identity" | "Dropout" => self.alias(&ctx),
            "Mul" if self.two_activations(&ctx) => self.mul_activations(&ctx),
            "Mul" if self.chains_of_one_input(&ctx) => self.mul_chains(&ctx),
            "Mul"
                if self.chain_operand(&ctx)
                    || self.deq_operand(&ctx)
                    || self.input_operand(&ctx)
                    || self.float_value_operand(&ctx) =>
            {
                self.float_arith(&ctx)
            }
            "Mul" => self.mul(&ctx),
            "QLinearConv" | "QLinearMatMul" | "QGemm" => self.qlinear_mac(&ctx),
            "MatMulInteger" | "ConvInteger" => self.integer_mac(&ctx),
            "QLinearAdd" => self.qlinear_add(&ctx),
            "QLinearMul" => self.qlinear_mul(&ctx),
            "Concat" => self.concat(&ctx),
            "Pad" => self.pad(&ctx),
            "Squeeze" | "Unsqueeze" => self.squeeze(&ctx),
            "QLinearConcat" => self.qlinear_concat(&ctx),
            "QLinearSoftmax" => self.qlinear_softmax(&ctx),
            "QLinearSigmoid" | "QLinearLeakyRelu" => self.qlinear_lookup(&ctx),
            "QLinearGlobalAveragePool" | "QLinearAveragePool" => self.qlinear_avg_pool(&ctx),
            other => Err(ctx.unsupported(format!("operator {other} is not supported by qforget"))),
        }
    }

    fn constant(&mut self, ctx: &NodeCtx) -> Result<()> {
        let a = ctx.attrs();
        let Some(t) = a.tensor("value") else {
            // The scalar and list forms (PyTorch's exporter writes `value_ints` for shapes).
            let bad = |e| ctx.bad(e);
            let (dims, data) = if let Some(v) = a.ints("value_ints").map_err(bad)? {
                (vec![v.len()], ConstData::I64(v))
            } else if let Some(v) = a.floats("value_floats").map_err(bad)? {
                (vec![v.len()], ConstData::F32(v))
            } else if a.has("value_int") {
                (
                    vec![],
                    ConstData::I64(vec![a.int("value_int", 0).map_err(bad)?]),
                )
            } else if a.has("value_float") {
                (
                    vec![],
                    ConstData::F32(vec![a.float("value_float", 0.0).map_err(bad)?]),
                )
            } else {
                return Err(ctx.unsupported(
                    "only Constant nodes with a tensor, integer(s) or float(s) are supported",
                ));
            };
            return self.node_constant(ctx, dims, data);
        };
        // A tensor in the file, under the node's output name: written back like an initializer
        // (`patch` rewrites Constant nodes' tensors too), so not a `node_consts` entry.
        let mut t = proto::tensor(t).map_err(|e| ctx.bad(e))?;
        let out = ctx.output()?.to_string();
        t.name = out.clone();
        self.file_tensors.insert(out.clone());
        self.consts.insert(out, t);
        Ok(())
    }

    /// Identity-like nodes: the output is the input.
    fn alias(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let v = match self.values.get(x) {
            Some(v) => v.clone(),
            None => {
                let t = self.konst(ctx, 0)?;
                let out = ctx.output()?.to_string();
                self.consts.insert(out, t);
                return Ok(());
            }
        };
        self.values.insert(ctx.output()?.to_string(), v);
        Ok(())
    }

    /// A float head: the model's output is the float result `p` of node `node` (no
    /// QuantizeLinear after it), as NNCF and `op_types_to_quantize` subsets leave classifiers.
    /// The layer is built with placeholder output parameters (scale 1, int8 zero point 0);
    /// the graph's real output is its value before requantization.
    fn float_head(
        &mut self,
        graph: &pb::GraphProto,
        p: value::Pending,
        out: &str,
        node: &str,
    ) -> Result<ActId> {
        let producer = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == out))
            .ok_or_else(|| self.invalid(format!("no node computes output '{out}'")))?;
        let ctx = NodeCtx {
            node: producer,
            path: self.path,
        };
        let head_ok = match &p {
            value::Pending::Mac(m) => m.conv.is_none() && m.act == crate::graph::Activation::None,
            value::Pending::Bias { act, .. } => *act == crate::graph::Activation::None,
            value::Pending::Dense(d) => d.act == crate::graph::Activation::None,
            _ => false,
        };
        if !head_ok {
            return Err(ctx.unsupported(format!(
                "output '{out}' is the float result of node '{node}'; qforget supports a float \
                 output only from a Gemm/MatMul (with its bias) or a bias Add, with no activation"
            )));
        }
        let q = QParams {
            scale: 1.0,
            zero_point: 128,
            signed: true,
        };
        let id = self.materialize(&ctx, p, q, out)?;
        if let Some(l) = self.layers.last_mut().filter(|l| l.output == id) {
            l.name = node.to_string();
        }
        Ok(id)
    }

    fn finish(mut self, graph: &pb::GraphProto) -> Result<Graph> {
        let [out] = &graph.output[..] else {
            return Err(self.unsupported_model(format!(
                "qforget needs a classifier with exactly one output, this model has {}{}",
                graph.output.len(),
                quoted_names(graph.output.iter().map(|o| o.name.as_str()))
            )));
        };
        let mut real_output = false;
        let output = match self.values.get(&out.name).cloned() {
            Some(Value::Deq(a)) | Some(Value::Quant(a)) => a,
            Some(Value::Pending(p, node)) => {
                real_output = true;
                self.float_head(graph, *p, &out.name, &node)?
            }
            Some(Value::Float(a)) => {
                return Err(self.invalid(format!(
                    "output '{}' is the float activation '{}' of a float segment; qforget \
                     supports a float output only from a Gemm/MatMul (with its bias) or a bias \
                     Add, with no activation",
                    out.name, self.acts[a].name
                )))
            }
            _ => {
                return Err(self.invalid(format!(
                    "output '{}' is not computed from the input by supported nodes",
                    out.name
                )))
            }
        };
        if self.acts[output].per_channel() {
            return Err(self.invalid(format!(
                "output '{}' is quantized per channel; qforget supports per-channel activation \
                 quantization only on the input of a depthwise Conv",
                out.name
            )));
        }
        let input = self.input_spec.take().ok_or_else(|| {
            self.invalid("the float input is never quantized (no QuantizeLinear on it)")
        })?;
        Ok(Graph {
            source: Some(PathBuf::from(self.path)),
            input,
            acts: self.acts,
            layers: self.layers,
            output_name: out.name.clone(),
            output,
            real_output,
            output_probs: self.softmax_q,
            batch_stats: Default::default(),
        })
    }
}

/// ` ('a', 'b')` for a message listing names; empty when there are none.
fn quoted_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("'{n}'")).collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}
