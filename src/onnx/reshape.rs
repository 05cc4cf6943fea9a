//! Reshape and Transpose that move values: `x.view(N, C, -1)` before a mean over the last axis,
//! `flatten(2).transpose(1, 2)` into tokens, a channel shuffle (`view(N, g, C/g, H, W) →
//! transpose(1, 2) → view(N, C, H, W)`).
//!
//! Why: ONNX tensors are row-major NCHW, ours NHWC (see [`crate::graph::tensor`]), so these nodes
//! are not free renamings here. Each activation made by one carries its ONNX per-sample
//! dimensions (`Importer::layouts`), and is stored as the shape those dimensions map to: `[C, H,
//! W]` as an image, `[C, L]` as `L` pixels of `C` channels (the layout a mean over `L` or a
//! Conv1d reads), and any other rank flat in ONNX order. A node becomes one
//! [`crate::graph::Permute`] layer from its input's storage to its output's; a chain of them (a
//! shuffle's rank-5 middle included) is a chain of such layers. The batch axis must stay axis 0:
//! anything that moves it is refused by name.

use crate::graph::{Activation, Op, Permute, Shape};
use crate::Result;

use super::shape_fold::BATCH;
use super::value::Value;
use super::{Importer, NodeCtx};

/// How a moved activation's output is named like its input: `Value::Deq`, `Value::Quant` or
/// `Value::Float`.
pub(super) type Wrap = fn(usize) -> Value;

/// For each element of a per-sample tensor of ONNX dimensions `d`, in row-major order, its
/// position in our storage of it.
fn storage_of(d: &[usize]) -> Vec<u32> {
    match *d {
        [c, h, w] => {
            let mut v = Vec::with_capacity(c * h * w);
            for ci in 0..c {
                for p in 0..h * w {
                    v.push((p * c + ci) as u32);
                }
            }
            v
        }
        [c, l] => {
            let mut v = Vec::with_capacity(c * l);
            for ci in 0..c {
                for li in 0..l {
                    v.push((li * c + ci) as u32);
                }
            }
            v
        }
        _ => (0..d.iter().product::<usize>() as u32).collect(),
    }
}

/// The shape a per-sample tensor of ONNX dimensions `d` is stored as.
fn stored_shape(d: &[usize]) -> Shape {
    match *d {
        [c, h, w] => Shape { h, w, c },
        [c, l] => Shape { h: l, w: 1, c },
        _ => Shape::flat(d.iter().product()),
    }
}

/// A Reshape's target shape as the user wrote it: the batch size (computed at import) as `N`.
pub(super) fn shown_target(target: &[i64]) -> String {
    let shown: Vec<String> = target
        .iter()
        .map(|&d| {
            if d == BATCH {
                "N".into()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// Row-major strides of `d`.
fn strides(d: &[usize]) -> Vec<usize> {
    let mut s = vec![1; d.len()];
    for i in (0..d.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * d[i + 1];
    }
    s
}

/// For each element of the transposed tensor (row-major), the row-major index of the element of
/// the input (dimensions `d`) it is (`perm` as ONNX's; per sample here, no batch axis).
pub(super) fn transposed_sources(d: &[usize], perm: &[usize]) -> Vec<usize> {
    let src = strides(d);
    let out_dims: Vec<usize> = perm.iter().map(|&p| d[p]).collect();
    let n: usize = d.iter().product();
    let mut idx = vec![0usize; d.len()];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(idx.iter().zip(perm).map(|(&i, &p)| i * src[p]).sum());
        // Next row-major multi-index of the output.
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < out_dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    v
}

/// The per-sample dimensions a Reshape to `target` (with its batch entry first) gives a tensor
/// of per-sample dimensions `dims`; `None` when it does not keep the batch as axis 0.
fn reshaped_dims(dims: &[usize], target: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let len: usize = dims.iter().product();
    let (_, rest) = target.split_first()?;
    let mut out = Vec::with_capacity(rest.len());
    let mut infer = None;
    for (i, &t) in rest.iter().enumerate() {
        match t {
            0 if !allowzero => out.push(*dims.get(i)?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            t if t > 0 && t != BATCH => out.push(t as usize),
            _ => return None,
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !len.is_multiple_of(known) {
            return None;
        }
        out[i] = len / known;
    }
    (out.iter().product::<usize>() == len).then_some(out)
}

impl Importer<'_> {
    /// The per-sample ONNX dimensions of activation `a`: those its Reshape/Transpose gave it,
    /// carried through element-wise layers, else `[C, H, W]` (or `[F]` when it is flat).
    pub(super) fn onnx_dims(&self, mut a: usize) -> Vec<usize> {
        loop {
            if let Some(d) = self.layouts.get(&a) {
                return d.clone();
            }
            let elementwise = self.layers.iter().find(|l| l.output == a).and_then(|l| {
                let same =
                    l.inputs.first().map(|&x| self.acts[x].shape) == Some(self.acts[a].shape);
                let kind = matches!(
                    l.op,
                    Op::Requantize(_) | Op::Pointwise(_) | Op::Clamp | Op::Quantize(_) | Op::Add(_)
                );
                (same && kind).then(|| l.inputs[0])
            });
            match elementwise {
                Some(x) => a = x,
                None => break,
            }
        }
        let s = self.acts[a].shape;
        if s.h * s.w == 1 && self.is_flat(a) {
            vec![s.c]
        } else {
            vec![s.c, s.h, s.w]
        }
    }

    /// A Reshape that is not a flatten: the values of `x` in the order of `target` (batch first).
    pub(super) fn reshape(&mut self, ctx: &NodeCtx, target: &[i64]) -> Result<()> {
        let (a, wrap) = self.moved_operand(ctx)?;
        let dims = self.onnx_dims(a);
        let allowzero = ctx.attrs().int("allowzero", 0).map_err(|e| ctx.bad(e))? != 0;
        let out_dims =
            reshaped_dims(&dims, target, allowzero).ok_or_else(|| {
                ctx.unsupported(format!(
                "Reshape to {} of a tensor of shape [N, {}]: qforget keeps the batch as axis 0, \
                 so the other entries must hold the {} values of one sample",
                shown_target(target),
                dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                dims.iter().product::<usize>()
            ))
            })?;
        let sources: Vec<usize> = (0..dims.iter().product()).collect();
        self.push_permute(ctx, a, wrap, &dims, out_dims, &sources)
    }

    /// A Transpose that keeps the batch as axis 0.
    pub(super) fn transpose(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (a, wrap) = self.moved_operand(ctx)?;
        let dims = self.onnx_dims(a);
        let rank = dims.len() + 1;
        let perm = ctx
            .attrs()
            .ints("perm")
            .map_err(|e| ctx.bad(e))?
            .unwrap_or_else(|| (0..rank as i64).rev().collect());
        let valid = perm.len() == rank && {
            let mut s: Vec<i64> = perm.clone();
            s.sort_unstable();
            s.iter().enumerate().all(|(i, &p)| p == i as i64)
        };
        if !valid {
            return Err(ctx.bad(format!("perm {perm:?} is not a permutation of {rank} axes")));
        }
        if perm[0] != 0 {
            return Err(ctx.unsupported(format!(
                "Transpose with perm {perm:?}, which moves the batch axis (qforget keeps it as \
                 axis 0)"
            )));
        }
        let p: Vec<usize> = perm[1..].iter().map(|&v| v as usize - 1).collect();
        let out_dims: Vec<usize> = p.iter().map(|&i| dims[i]).collect();
        let sources = transposed_sources(&dims, &p);
        self.push_permute(ctx, a, wrap, &dims, out_dims, &sources)
    }

    /// Activation `x` for an op that moves its values without changing them (a Reshape,
    /// Transpose or Pad), a pending float result made a float activation first, and how to name
    /// the op's output like `x` (dequantized, quantized or float); `None` for anything else (the
    /// float input, a constant).
    pub(super) fn value_operand(
        &mut self,
        ctx: &NodeCtx,
        x: &str,
    ) -> Result<Option<(usize, Wrap)>> {
        Ok(match self.value(ctx, x)? {
            Value::Deq(a) => Some((a, Value::Deq)),
            Value::Quant(a) => Some((a, Value::Quant)),
            Value::Float(_) | Value::Pending(..) => {
                Some((self.float_operand(ctx, x)?, Value::Float))
            }
            _ => None,
        })
    }

    /// The activation a Reshape/Transpose moves, and how to name its output like its input
    /// (dequantized, quantized or float).
    fn moved_operand(&mut self, ctx: &NodeCtx) -> Result<(usize, Wrap)> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let op = ctx.node.op_type.as_str();
        let Some((a, wrap)) = self.value_operand(ctx, x)? else {
            return Err(ctx.unsupported(format!(
                "{op} of '{x}', which is not an activation (qforget reorders activations after \
                 their first QuantizeLinear)"
            )));
        };
        if self.acts[a].per_channel() {
            return Err(ctx.unsupported(format!("{op} of '{x}', which is quantized per channel")));
        }
        Ok((a, wrap))
    }

    /// A Permute layer from activation `a` (per-sample dimensions `dims`) to a new one of
    /// dimensions `out_dims`, whose row-major element `r` is `a`'s row-major element
    /// `sources[r]`.
    fn push_permute(
        &mut self,
        ctx: &NodeCtx,
        a: usize,
        wrap: Wrap,
        dims: &[usize],
        out_dims: Vec<usize>,
        sources: &[usize],
    ) -> Result<()> {
        let (ins, outs) = (storage_of(dims), storage_of(&out_dims));
        let mut gather = vec![0u32; outs.len()];
        for (r, &o) in outs.iter().enumerate() {
            gather[o as usize] = ins[sources[r]];
        }
        let p = Permute::new(gather).ok_or_else(|| ctx.bad("does not permute its input"))?;
        let out = ctx.output()?.to_string();
        let (q, float) = (self.acts[a].q, self.acts[a].float);
        let shape = stored_shape(&out_dims);
        let id = self.push(
            ctx,
            Op::Permute(p),
            Activation::None,
            vec![a],
            shape,
            q,
            &out,
            vec![],
        );
        self.acts[id].float = float;
        self.layouts.insert(id, out_dims);
        self.values.insert(out, wrap(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_then_pixels_is_our_nhwc_storage() {
        // [C=2, H=1, W=3]: ONNX order c0p0 c0p1 c0p2 c1p0 …; storage p0c0 p0c1 p1c0 …
        assert_eq!(storage_of(&[2, 1, 3]), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(storage_of(&[2, 3]), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(storage_of(&[2, 3, 4, 5]), (0..120).collect::<Vec<u32>>());
        assert_eq!(stored_shape(&[2, 3]), Shape { h: 3, w: 1, c: 2 });
    }

    #[test]
    fn transpose_sources_follow_numpy() {
        // A 2×3 matrix transposed: out[i][j] = in[j][i].
        assert_eq!(transposed_sources(&[2, 3], &[1, 0]), vec![0, 3, 1, 4, 2, 5]);
        // Swapping the first two of three axes (a channel shuffle's middle step), 2×2×1.
        assert_eq!(transposed_sources(&[2, 2, 1], &[1, 0, 2]), vec![0, 2, 1, 3]);
    }

    #[test]
    fn reshape_targets_resolve_like_onnx() {
        let d = [32, 7, 7];
        assert_eq!(
            reshaped_dims(&d, &[BATCH, 32, -1], false),
            Some(vec![32, 49])
        );
        assert_eq!(reshaped_dims(&d, &[-1, 32, 49], false), Some(vec![32, 49]));
        assert_eq!(reshaped_dims(&d, &[1, 0, -1], false), Some(vec![32, 49]));
        assert_eq!(
            reshaped_dims(&d, &[BATCH, 4, 8, 7, 7], false),
            Some(vec![4, 8, 7, 7])
        );
        assert_eq!(reshaped_dims(&d, &[BATCH, 5, -1], false), None);
        assert_eq!(reshaped_dims(&d, &[BATCH, -1, -1], false), None);
        assert_eq!(reshaped_dims(&d, &[BATCH, 0, 49], true), None);
    }
}
