//! Float element-wise functions on the model input, before its first QuantizeLinear.
//!
//! Two kinds, because the input reaches the engine as bytes:
//! - before any pooling, with a scalar or one constant per channel (an in-model normalisation
//!   `Sub`/`Div`): the value is a function of the byte and the channel, so it joins the
//!   input's lookup tables ([`crate::graph::InputSpec::fns`]);
//! - after a float pooling or flatten of the input, or with a constant that varies along H/W
//!   or along the features (SmoothQuant's per-input-channel pre-scale: Intel Neural
//!   Compressor puts `Mul(x, 1/s)` before the QuantizeLinear of every smoothed layer's input,
//!   and on a flattened model input that is one value per feature): evaluated per element in
//!   f32, after the pooling, in the file's order ([`crate::graph::InputSpec::post_fns`]).
//!
//! Either way the chain is one line from the input to its QuantizeLinear; a branch, a pooling
//! after a per-element function, or a constant that would broadcast the input to another shape
//! is refused by name.

use crate::graph::{FloatFn, Shape};
use crate::Result;

use super::pointwise::arith_fn;
use super::proto::ConstTensor;
use super::value::Value;
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// Whether float functions on the input were seen (the input must then be quantized at
    /// the end of their chain).
    pub(super) fn input_has_fns(&self) -> bool {
        !self.input_fns.is_empty() || !self.input_post_fns.is_empty()
    }

    /// Whether `x` is where the float chain on the model input ends (the input itself when
    /// there is no chain yet); a float function must extend that chain, never branch from it.
    pub(super) fn is_input_chain_end(&self, x: &str) -> bool {
        match &self.input_chain_end {
            Some(end) => end == x,
            None => self.input.as_ref().is_some_and(|(name, _)| name == x),
        }
    }

    /// A pooling or flatten of the float input: after a chain of float functions it must
    /// continue that chain; on the chain, it becomes its end (a function may follow it).
    pub(super) fn follow_input_chain(&mut self, ctx: &NodeCtx, x: &str) -> Result<()> {
        if !self.is_input_chain_end(x) {
            if self.input_has_fns() {
                return Err(ctx.unsupported(
                    "a second float branch of the input (the input may be quantized at one \
                     point of one chain of float functions)",
                ));
            }
            return Ok(());
        }
        self.input_chain_end = Some(ctx.output()?.to_string());
        Ok(())
    }

    /// A float function on the model's float input, before its first QuantizeLinear: into the
    /// per-byte chain while nothing has pooled or flattened the input and no per-element
    /// function came first, else per element (`f`'s constant then has one value per element).
    pub(super) fn push_input_fn(&mut self, ctx: &NodeCtx, x: &str, f: FloatFn) -> Result<()> {
        let Some(Value::FloatInput(pre, flatten)) = self.values.get(x).cloned() else {
            return Err(ctx.bad("not the float input"));
        };
        let op = &ctx.node.op_type;
        if self.input_spec.is_some() || !self.is_input_chain_end(x) {
            return Err(ctx.unsupported(format!(
                "{op} on a second float branch of the input (the input may be quantized at one \
                 point of one chain of float functions)"
            )));
        }
        if self.per_element(&pre, flatten) || f.channels() > self.input_channels() {
            self.input_post_fns.push(f);
        } else {
            self.input_fns.push(f);
        }
        let out = ctx.output()?.to_string();
        self.input_chain_end = Some(out.clone());
        self.values.insert(out, Value::FloatInput(pre, flatten));
        Ok(())
    }

    /// Whether a function of the input at this point must be evaluated per element.
    fn per_element(&self, pre: &[crate::graph::InputPool], flatten: bool) -> bool {
        !pre.is_empty() || flatten || !self.input_post_fns.is_empty()
    }

    fn input_channels(&self) -> usize {
        self.input.as_ref().map_or(1, |i| i.1.c)
    }

    /// Add/Sub/Mul/Div of the float input `t` (after the poolings whose output shape is
    /// `pooled`, flattened if `flatten`) and constant input `ci`.
    pub(super) fn input_arith(
        &mut self,
        ctx: &NodeCtx,
        t: &str,
        ci: usize,
        const_first: bool,
        pooled: Option<Shape>,
        flatten: bool,
    ) -> Result<()> {
        let raw = self
            .input
            .as_ref()
            .map(|i| i.1)
            .ok_or_else(|| ctx.bad("the model input is not set"))?;
        let shape = pooled.unwrap_or(raw);
        let c = self.konst(ctx, ci)?;
        let per_byte = pooled.is_none() && !flatten && self.input_post_fns.is_empty();
        let k = match self.channel_constant(ctx, &c, shape) {
            Ok(k) if per_byte => k,
            _ => element_constant(&c, shape, flatten).map_err(|e| ctx.unsupported(e))?,
        };
        let f = arith_fn(ctx, const_first, k, &c.name)?;
        self.push_input_fn(ctx, t, f)
    }
}

/// The values of constant `c` for every element of a per-sample tensor of `shape` (flattened
/// to features if `flatten`), in NCHW order, under ONNX broadcasting; one value for a scalar.
/// An error when broadcasting would change the tensor's shape (the constant has a dimension
/// that is neither 1 nor the tensor's, or one for the batch), or a value is not finite.
pub(super) fn element_constant(
    c: &ConstTensor,
    shape: Shape,
    flatten: bool,
) -> std::result::Result<Vec<f32>, String> {
    let v = c.to_f32();
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(format!("constant '{}' holds {x}", c.name));
    }
    if v.len() == 1 {
        return Ok(v);
    }
    // What the tensor may look like in ONNX, batch dimension left out.
    let mut forms = vec![if flatten {
        vec![shape.len()]
    } else {
        vec![shape.c, shape.h, shape.w]
    }];
    if !flatten && shape.h * shape.w == 1 {
        forms.push(vec![shape.c]);
    }
    for t in &forms {
        if let Some(e) = expand(&v, &c.dims, t) {
            return Ok(e);
        }
    }
    let n = forms[0]
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "constant '{}' with dimensions {:?} does not broadcast onto the input's shape [N, {n}] \
         without changing it (a scalar, or dimensions of 1 or the input's)",
        c.name, c.dims
    ))
}

/// `v` (dimensions `k`) broadcast onto per-sample dimensions `t`, if it fits without changing
/// them.
fn expand(v: &[f32], k: &[usize], t: &[usize]) -> Option<Vec<f32>> {
    // A leading dimension beyond the tensor's is the batch: only 1 keeps the shape.
    let (batch, k) = if k.len() > t.len() {
        k.split_at(k.len() - t.len())
    } else {
        (&k[..0], k)
    };
    if batch.iter().any(|&d| d != 1) {
        return None;
    }
    let off = t.len() - k.len();
    let kd: Vec<usize> = (0..t.len())
        .map(|i| if i < off { 1 } else { k[i - off] })
        .collect();
    if kd.iter().zip(t).any(|(&a, &b)| a != 1 && a != b) {
        return None;
    }
    // Strides of the constant, 0 along broadcast dimensions.
    let mut stride = vec![0; t.len()];
    let mut s = 1;
    for i in (0..t.len()).rev() {
        if kd[i] != 1 {
            stride[i] = s;
        }
        s *= kd[i];
    }
    let n: usize = t.iter().product();
    let out = (0..n)
        .map(|mut e| {
            let mut j = 0;
            for i in (0..t.len()).rev() {
                j += (e % t[i]) * stride[i];
                e /= t[i];
            }
            v[j]
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::ConstData;

    fn konst(dims: &[usize], v: Vec<f32>) -> ConstTensor {
        ConstTensor {
            name: "k".into(),
            dims: dims.to_vec(),
            data: ConstData::F32(v),
        }
    }

    #[test]
    fn per_feature_per_channel_and_per_row_constants_expand_in_nchw_order() {
        let s = Shape { h: 2, w: 2, c: 2 };
        // One per feature of the flattened tensor.
        let k = konst(&[8], (0..8).map(|i| i as f32).collect());
        assert_eq!(element_constant(&k, s, true).unwrap(), k.to_f32());
        // [1, C, 1, 1]: each channel's value over its 4 pixels.
        let k = konst(&[1, 2, 1, 1], vec![1.0, 2.0]);
        assert_eq!(
            element_constant(&k, s, false).unwrap(),
            vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
        );
        // [H, W] broadcast over the channels.
        let k = konst(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            element_constant(&k, s, false).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]
        );
        // A flat [N, F] tensor takes [F] and [1, F].
        let f = Shape::flat(3);
        let k = konst(&[1, 3], vec![1.0, 2.0, 3.0]);
        assert_eq!(element_constant(&k, f, false).unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn constants_that_change_the_shape_are_refused_by_name() {
        // SmoothQuant's scale for a conv with 16 output channels put on a 1-channel input
        // (what Intel Neural Compressor 1.0 writes for a first conv with one input channel).
        let s = Shape { h: 28, w: 28, c: 1 };
        let k = konst(&[1, 16, 1, 1], vec![0.5; 16]);
        let e = element_constant(&k, s, false).unwrap_err();
        assert!(
            e.contains("'k'") && e.contains("[1, 16, 1, 1]") && e.contains("[N, 1, 28, 28]"),
            "{e}"
        );
        // A batch dimension other than 1.
        let k = konst(&[2, 1, 28, 28], vec![0.5; 2 * 784]);
        assert!(element_constant(&k, s, false).is_err());
        let k = konst(&[3], vec![f32::INFINITY, 1.0, 1.0]);
        assert!(element_constant(&k, Shape::flat(3), false)
            .unwrap_err()
            .contains("inf"));
    }
}
