//! Constants that float segments add: what a float bias may look like, and whether it can train.
//!
//! Quantizers that leave a layer's bias in float (onnxruntime with an `op_types_to_quantize`
//! subset, NNCF) add it as a plain float32 initializer between DequantizeLinear and
//! QuantizeLinear. qforget keeps such a bias as a per-channel f32 parameter, so it must be sure
//! which axis the constant broadcasts along, and that the value can be written back in its own
//! type.

use crate::graph::Shape;
use crate::Result;

use super::proto::{ConstData, ConstTensor};
use super::value::Value;
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// The constant operand `name` of float arithmetic: an initializer, or a DequantizeLinear
    /// of one (onnxruntime quantizes the `0.5` of GELU's last Mul), as f32 values.
    pub(super) fn arith_constant(&self, name: &str) -> Option<ConstTensor> {
        if let Some(c) = self.consts.get(name) {
            return Some(c.clone());
        }
        match self.values.get(name) {
            Some(Value::DeqConst(d)) => Some(ConstTensor {
                name: d.q.name.clone(),
                dims: d.q.dims.clone(),
                data: ConstData::F32(d.dequantize()),
            }),
            _ => None,
        }
    }

    /// Whether a constant can train as a float parameter: a float32 initializer (a Constant
    /// node's value has nowhere to be written back).
    pub fn trainable_float(&self, c: &ConstTensor) -> bool {
        matches!(c.data, ConstData::F32(_)) && !self.node_consts.contains(&c.name)
    }

    /// A float constant added to an activation of `shape` (NCHW broadcasting): one value, or
    /// one per channel (`[C]` for a flat tensor, `[C, 1, 1]` or `[1, C, 1, 1]` for an image,
    /// `[1, F]` for features). Anything that varies along another axis is refused.
    pub fn channel_constant(
        &self,
        ctx: &NodeCtx,
        c: &ConstTensor,
        shape: Shape,
    ) -> Result<Vec<f32>> {
        let v = c.to_f32();
        let ok = v.len() == 1 && c.dims.iter().all(|&d| d == 1) || per_channel(&c.dims, shape);
        if !ok || !v.iter().all(|x| x.is_finite()) {
            return Err(ctx.unsupported(format!(
                "Add of a constant '{}' with dimensions {:?} to a tensor of shape {shape} \
                 (only a scalar or one finite value per channel)",
                c.name, c.dims
            )));
        }
        Ok(v)
    }
}

/// Whether a constant of dimensions `dims` holds one value per channel of an activation of
/// `shape` under NCHW broadcasting: `[C]` for a flat tensor, `[C, 1, 1]` or `[1, C, 1, 1]` for
/// an image, `[1, F]` for features.
pub(super) fn per_channel(dims: &[usize], shape: Shape) -> bool {
    let nontrivial: Vec<usize> = dims.iter().copied().filter(|&d| d != 1).collect();
    match nontrivial[..] {
        [n] if n == shape.c => {
            // The channel axis is the one before H and W (or the last, for features).
            let pos = dims.iter().rposition(|&d| d == n).unwrap_or(0);
            let after = dims.len() - 1 - pos;
            // A flat shape may be an `[N, C, 1, 1]` tensor too (after a global pooling).
            after == 2 || shape.h * shape.w == 1 && after == 0
        }
        _ => false,
    }
}
