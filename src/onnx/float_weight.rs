//! A QuantizeLinear on a float constant: weights that a file keeps in float and quantizes at
//! run time (onnxruntime's `AddQDQPairToWeight`: `float W → QuantizeLinear → DequantizeLinear
//! → Conv/Gemm/MatMul`).
//!
//! The quantization is done here, once, exactly as onnxruntime does it at run time
//! ([`crate::graph::float_weight::quantize`]), and its output becomes an ordinary integer
//! constant: the DequantizeLinear that follows and the layer that reads it see the same integer
//! weights as in a file that stores them, so evaluation and training need nothing new. The
//! layer's binding remembers the float initializer, so an export writes floats back (see
//! [`crate::graph::float_weight`]).

use std::sync::Arc;

use crate::graph::float_weight::FloatWeight;
use crate::Result;

use super::proto::{ConstData, ConstTensor};
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Whether `x` is a float constant (not a computed tensor).
    pub(super) fn is_float_initializer(&self, x: &str) -> bool {
        !self.values.contains_key(x)
            && self
                .consts
                .get(x)
                .is_some_and(|c| matches!(c.data, ConstData::F32(_)))
    }

    /// QuantizeLinear of the float constant `x` into the integer constant `out`.
    pub(super) fn quantize_weight(&mut self, ctx: &NodeCtx, x: &str, out: String) -> Result<()> {
        let w = self.consts[x].clone();
        let ConstData::F32(values) = w.data else {
            return Err(ctx.bad(format!("'{x}' is not a float constant")));
        };
        if ctx.input(1).is_none() {
            return Err(ctx.bad(format!(
                "quantizes weight '{x}' but has no scale (input #1 is missing)"
            )));
        }
        let s = self.konst(ctx, 1)?;
        let ConstData::F32(scale) = s.data else {
            return Err(ctx.bad(format!(
                "scale '{}' of weight '{x}' is {}, expected float",
                s.name,
                s.type_name()
            )));
        };
        if scale.is_empty() {
            return Err(ctx.bad(format!("scale '{}' of weight '{x}' is empty", s.name)));
        }
        let (zero_point, signed) = match ctx.input(2) {
            None => (vec![0], false),
            Some(_) => {
                let z = self.konst(ctx, 2)?;
                match &z.data {
                    ConstData::I8(v) => (v.iter().map(|&v| v as i64).collect(), true),
                    ConstData::U8(v) => (v.iter().map(|&v| v as i64).collect(), false),
                    _ => {
                        return Err(ctx.unsupported(format!(
                            "weight '{x}' is quantized to {} (zero point '{}'); qforget \
                             quantizes float weights to int8 or uint8",
                            z.type_name(),
                            z.name
                        )))
                    }
                }
            }
        };
        let attrs = ctx.attrs();
        if attrs.int("block_size", 0).map_err(|e| ctx.bad(e))? != 0 {
            return Err(ctx.unsupported(format!(
                "blocked quantization of float weight '{x}' at run time"
            )));
        }
        let rank = w.dims.len() as i64;
        let axis = attrs.int("axis", 1).map_err(|e| ctx.bad(e))?;
        let axis = if axis < 0 { axis + rank } else { axis };
        if scale.len() > 1 && !(0..rank).contains(&axis) {
            return Err(ctx.bad(format!(
                "axis {axis} is outside weight '{x}' with dimensions {:?}",
                w.dims
            )));
        }
        let range = if signed { (-128, 127) } else { (0, 255) };
        let fw = FloatWeight::new(
            values,
            w.dims.clone(),
            scale,
            zero_point,
            axis.max(0) as usize,
            range,
        )
        .map_err(|e| ctx.bad(format!("weight '{x}' (scale '{}') {e}", s.name)))?;
        let data = if signed {
            ConstData::I8(fw.quantized.iter().map(|&v| v as i8).collect())
        } else {
            ConstData::U8(fw.quantized.iter().map(|&v| v as u8).collect())
        };
        self.consts.insert(
            out.clone(),
            ConstTensor {
                name: out.clone(),
                dims: w.dims,
                data,
            },
        );
        // Written back only when this QuantizeLinear is the float initializer's one reader.
        let writable = !self.node_consts.contains(x) && self.readers.get(x) == Some(&1);
        self.float_weights
            .insert(out, (x.to_string(), writable.then(|| Arc::new(fw))));
        Ok(())
    }
}
