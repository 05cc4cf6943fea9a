//! Shape arithmetic evaluated at import.
//!
//! Why: `x.view(x.size(0), -1)` exported with a dynamic batch axis (and PyTorch's newer
//! exporter without its optimizer) writes `Shape → Gather → Unsqueeze → Concat → Reshape`
//! instead of a constant target shape, and a quantizer leaves that chain in int64 beside the
//! quantized tensors. Every dimension but the batch is fixed at import, so the chain is
//! evaluated here into a constant: the batch dimension is carried as the marker [`BATCH`], which
//! only moves (Gather, Slice, Concat, Squeeze/Unsqueeze) and ends in a Reshape, where it stands
//! for "the batch size" (the Reshape accepts any first entry). Arithmetic on it, or any other
//! use of a constant that holds it, is refused by name: that would depend on the batch size.
//! Besides the marker, this is plain constant folding of the ops shape code uses, on
//! constants of any type (Add/Sub/Mul/Div on integers only).

use crate::graph::Op;
use crate::Result;

use super::proto::{ConstData, ConstTensor};
use super::value::Value;
use super::{Importer, NodeCtx};

/// The batch dimension in a shape computed at import (never a real dimension or index).
pub(super) const BATCH: i64 = i64::MIN + 7;

/// Ops that may read a constant holding [`BATCH`]: they move it, or (Reshape) consume it.
const BATCH_READERS: [&str; 6] = [
    "Gather",
    "Slice",
    "Concat",
    "Squeeze",
    "Unsqueeze",
    "Reshape",
];

impl Importer<'_> {
    /// True for a node this module evaluates: a `Shape`, or shape ops whose inputs are all
    /// constants.
    pub(super) fn folds_shape(&self, ctx: &NodeCtx) -> bool {
        let op = ctx.node.op_type.as_str();
        let mut inputs = ctx.node.input.iter().filter(|i| !i.is_empty()).peekable();
        let all_const = inputs.peek().is_some() && inputs.all(|i| self.consts.contains_key(i));
        match op {
            "Shape" => true,
            "Gather" | "Slice" | "Concat" | "Squeeze" | "Unsqueeze" | "Reshape" | "Transpose" => {
                all_const
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                all_const
                    && ctx.node.input.iter().filter(|i| !i.is_empty()).all(|i| {
                        matches!(self.consts[i].data, ConstData::I64(_) | ConstData::I32(_))
                    })
            }
            _ => false,
        }
    }

    /// Evaluate a node [`Importer::folds_shape`] accepted.
    pub(super) fn fold_shape(&mut self, ctx: &NodeCtx) -> Result<()> {
        let (dims, data) = match ctx.node.op_type.as_str() {
            "Shape" => self.shape_of(ctx)?,
            "Gather" => self.gather(ctx)?,
            "Slice" => self.slice(ctx)?,
            "Concat" => self.concat_consts(ctx)?,
            "Squeeze" | "Unsqueeze" => self.squeeze_const(ctx)?,
            "Reshape" => self.reshape_const(ctx)?,
            "Transpose" => self.transpose_const(ctx)?,
            _ => self.integer_arith(ctx)?,
        };
        self.node_constant(ctx, dims, data)
    }

    /// Refuse a constant holding [`BATCH`] as input of anything but the ops that move it.
    pub(super) fn check_batch_readers(&self, ctx: &NodeCtx) -> Result<()> {
        if BATCH_READERS.contains(&ctx.node.op_type.as_str()) {
            return Ok(());
        }
        for name in ctx.node.input.iter() {
            if let Some(t) = self.consts.get(name) {
                if holds_batch(t) {
                    return Err(ctx.unsupported(format!(
                        "input '{name}' is computed from the batch size (a Shape of a tensor); \
                         qforget evaluates shapes at import and supports the batch size only \
                         as the first entry of a Reshape's target shape"
                    )));
                }
            }
        }
        Ok(())
    }

    /// `Shape`: `[BATCH, C, H, W]` (or `[BATCH, F]`), cut by `start`/`end` (opset 15).
    fn shape_of(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let one = |s: crate::graph::Shape, flat: bool| {
            let mut d = vec![BATCH];
            if flat {
                d.push(s.len() as i64);
            } else {
                d.extend([s.c as i64, s.h as i64, s.w as i64]);
            }
            d
        };
        let full = match self.value(ctx, x)? {
            Value::Quant(a) | Value::Deq(a) | Value::Float(a) => std::iter::once(BATCH)
                .chain(self.onnx_dims(a).into_iter().map(|d| d as i64))
                .collect(),
            Value::FloatInput(pre, flat) => {
                let (_, s) = self
                    .input
                    .clone()
                    .ok_or_else(|| ctx.bad("no model input"))?;
                let s = pre.last().map_or(s, |p| p.out_shape);
                one(s, flat || (pre.is_empty() && self.input_flat))
            }
            _ => {
                return Err(ctx.unsupported(format!(
                    "Shape of '{x}', which is not an activation or the model's input"
                )))
            }
        };
        let a = ctx.attrs();
        let rank = full.len() as i64;
        let clamp = |v: i64| if v < 0 { v + rank } else { v }.clamp(0, rank) as usize;
        let start = clamp(a.int("start", 0).map_err(|e| ctx.bad(e))?);
        let end = clamp(a.int("end", rank).map_err(|e| ctx.bad(e))?);
        let d: Vec<i64> = full[start..end.max(start)].to_vec();
        Ok((vec![d.len()], ConstData::I64(d)))
    }

    /// Whether activation `a` is `[N, F]` rather than `[N, C, H, W]` in the file: only a
    /// question when `H = W = 1`, answered by the layer that made it.
    pub(super) fn is_flat(&self, mut a: usize) -> bool {
        loop {
            let s = self.acts[a].shape;
            if s.h * s.w != 1 {
                return false;
            }
            let Some(l) = self.layers.iter().find(|l| l.output == a) else {
                return self.input_flat;
            };
            match &l.op {
                Op::Flatten | Op::Linear(_) => return true,
                Op::Conv(_) | Op::MaxPool(_) | Op::AvgPool(_) | Op::GlobalAvgPool(_) => {
                    return false
                }
                _ => match l.inputs.first() {
                    Some(&x) => a = x,
                    None => return true,
                },
            }
        }
    }

    fn gather(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let data = self.konst(ctx, 0)?;
        let idx = self.konst(ctx, 1)?;
        let ids = idx
            .to_i64()
            .ok_or_else(|| ctx.bad(format!("indices '{}' are not integers", idx.name)))?;
        let axis = axis_of(ctx, "axis", 0, data.dims.len())?;
        let n = data.dims[axis] as i64;
        let mut picks = Vec::with_capacity(ids.len());
        for &i in &ids {
            let j = if i < 0 { i + n } else { i };
            if !(0..n).contains(&j) {
                return Err(ctx.bad(format!("index {i} is outside an axis of {n}")));
            }
            picks.push(j as usize);
        }
        let (outer, inner) = split(&data.dims, axis);
        let mut flat = Vec::with_capacity(outer * picks.len() * inner);
        for o in 0..outer {
            for &p in &picks {
                flat.extend((0..inner).map(|k| (o * data.dims[axis] + p) * inner + k));
            }
        }
        let mut dims = data.dims[..axis].to_vec();
        dims.extend(&idx.dims);
        dims.extend(&data.dims[axis + 1..]);
        Ok((dims, pick(&[&data.data], flat.iter().map(|&f| (0, f)))))
    }

    /// Transpose of a constant (PyTorch's exporter builds a Pad's pads with one).
    fn transpose_const(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let data = self.konst(ctx, 0)?;
        let rank = data.dims.len();
        let perm: Vec<usize> = match ctx.attrs().ints("perm").map_err(|e| ctx.bad(e))? {
            Some(p) => p
                .iter()
                .map(|&v| norm_axis(v, rank))
                .collect::<Option<_>>()
                .ok_or_else(|| ctx.bad(format!("perm {p:?} has an axis out of range")))?,
            None => (0..rank).rev().collect(),
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() {
            return Err(ctx.bad(format!("perm {perm:?} is not a permutation of {rank} axes")));
        }
        let dims = perm.iter().map(|&p| data.dims[p]).collect();
        let src = super::reshape::transposed_sources(&data.dims, &perm);
        Ok((dims, pick(&[&data.data], src.into_iter().map(|i| (0, i)))))
    }

    /// Slice (opset 10+: starts/ends/axes/steps as inputs; opset 1: as attributes).
    fn slice(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let data = self.konst(ctx, 0)?;
        let list = |name: &str, i: usize| self.ints_attr_or_input(ctx, name, i);
        let starts = list("starts", 1)?.ok_or_else(|| ctx.bad("has no starts"))?;
        let ends = list("ends", 2)?.ok_or_else(|| ctx.bad("has no ends"))?;
        let rank = data.dims.len();
        let axes = list("axes", 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = list("steps", 4)?.unwrap_or_else(|| vec![1; starts.len()]);
        if [ends.len(), axes.len(), steps.len()] != [starts.len(); 3] {
            return Err(ctx.bad("starts, ends, axes and steps differ in length"));
        }
        // Per axis, the indices kept.
        let mut keep: Vec<Vec<usize>> = data.dims.iter().map(|&d| (0..d).collect()).collect();
        for k in 0..starts.len() {
            let ax = norm_axis(axes[k], rank).ok_or_else(|| ctx.bad("axis out of range"))?;
            let n = data.dims[ax] as i64;
            let step = steps[k];
            if step == 0 {
                return Err(ctx.bad("has a step of 0"));
            }
            let fix = |v: i64, lo: i64, hi: i64| if v < 0 { v + n } else { v }.clamp(lo, hi);
            let (mut i, end) = if step > 0 {
                (fix(starts[k], 0, n), fix(ends[k], 0, n))
            } else {
                (fix(starts[k], 0, n - 1), fix(ends[k], -1, n - 1))
            };
            keep[ax].clear();
            while (step > 0 && i < end) || (step < 0 && i > end) {
                keep[ax].push(i as usize);
                i += step;
            }
        }
        let dims: Vec<usize> = keep.iter().map(|k| k.len()).collect();
        let strides = strides(&data.dims);
        let mut flat = vec![0usize];
        for (kept, &stride) in keep.iter().zip(&strides) {
            flat = flat
                .iter()
                .flat_map(|&base| kept.iter().map(move |&i| base + i * stride))
                .collect();
        }
        Ok((dims, pick(&[&data.data], flat.iter().map(|&f| (0, f)))))
    }

    fn concat_consts(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let parts: Vec<ConstTensor> = (0..ctx.node.input.len())
            .filter(|&i| ctx.input(i).is_some())
            .map(|i| self.konst(ctx, i))
            .collect::<Result<_>>()?;
        let first = &parts[0];
        let axis = axis_of(ctx, "axis", i64::MIN, first.dims.len())?;
        for p in &parts[1..] {
            let same_rest = p.dims.len() == first.dims.len()
                && (0..first.dims.len()).all(|d| d == axis || p.dims[d] == first.dims[d]);
            if !same_rest || p.type_name() != first.type_name() {
                return Err(ctx.bad(format!(
                    "concatenates '{}' ({} {:?}) and '{}' ({} {:?})",
                    first.name,
                    first.type_name(),
                    first.dims,
                    p.name,
                    p.type_name(),
                    p.dims
                )));
            }
        }
        let (outer, _) = split(&first.dims, axis);
        let mut picks = vec![];
        for o in 0..outer {
            for (k, p) in parts.iter().enumerate() {
                let chunk: usize = p.dims[axis..].iter().product();
                picks.extend((0..chunk).map(|j| (k, o * chunk + j)));
            }
        }
        let mut dims = first.dims.clone();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        let data: Vec<&ConstData> = parts.iter().map(|p| &p.data).collect();
        Ok((dims, pick(&data, picks.into_iter())))
    }

    /// Squeeze/Unsqueeze of a constant: the same values, new dimensions.
    fn squeeze_const(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let t = self.konst(ctx, 0)?;
        let axes = self.ints_attr_or_input(ctx, "axes", 1)?;
        let mut dims = t.dims.clone();
        if ctx.node.op_type == "Unsqueeze" {
            let axes = axes.ok_or_else(|| ctx.bad("has no axes"))?;
            let rank = dims.len() + axes.len();
            let mut at: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, rank).ok_or_else(|| ctx.bad(format!("axis {a}"))))
                .collect::<Result<_>>()?;
            at.sort_unstable();
            for a in at {
                dims.insert(a, 1);
            }
        } else {
            let rank = dims.len();
            let at: Vec<usize> = match axes {
                Some(axes) => axes
                    .iter()
                    .map(|&a| norm_axis(a, rank).ok_or_else(|| ctx.bad(format!("axis {a}"))))
                    .collect::<Result<_>>()?,
                None => (0..rank).filter(|&d| dims[d] == 1).collect(),
            };
            if let Some(&a) = at.iter().find(|&&a| dims[a] != 1) {
                return Err(ctx.bad(format!("squeezes axis {a} of size {}", dims[a])));
            }
            dims = (0..rank)
                .filter(|d| !at.contains(d))
                .map(|d| dims[d])
                .collect();
        }
        Ok((dims, t.data))
    }

    /// Reshape of a constant (the newer exporter turns the batch size, a scalar, into `[N]`
    /// this way): `0` copies the input's dimension unless `allowzero` is set, `-1` takes the rest.
    fn reshape_const(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let t = self.konst(ctx, 0)?;
        let target = self.konst(ctx, 1)?;
        let want = target
            .to_i64()
            .filter(|_| !holds_batch(&target))
            .ok_or_else(|| ctx.bad(format!("shape '{}' is not fixed integers", target.name)))?;
        let allow_zero = ctx.attrs().int("allowzero", 0).map_err(|e| ctx.bad(e))? != 0;
        let mut dims = Vec::with_capacity(want.len());
        let mut infer = None;
        for (i, &d) in want.iter().enumerate() {
            match d {
                -1 if infer.is_none() => {
                    infer = Some(i);
                    dims.push(1);
                }
                0 if !allow_zero => dims.push(*t.dims.get(i).ok_or_else(|| {
                    ctx.bad(format!("shape {want:?} copies a dimension the input lacks"))
                })?),
                d if d >= 0 => dims.push(d as usize),
                _ => return Err(ctx.bad(format!("shape {want:?} is not a valid target"))),
            }
        }
        let known: usize = dims.iter().product();
        if let Some(i) = infer {
            if known == 0 || t.len() % known != 0 {
                return Err(ctx.bad(format!("{} values do not fit {want:?}", t.len())));
            }
            dims[i] = t.len() / known;
        }
        if dims.iter().product::<usize>() != t.len() {
            return Err(ctx.bad(format!("{} values do not fit {want:?}", t.len())));
        }
        Ok((dims, t.data))
    }

    /// Add/Sub/Mul/Div of integer constants with broadcasting; Div truncates, as onnxruntime's.
    fn integer_arith(&self, ctx: &NodeCtx) -> Result<(Vec<usize>, ConstData)> {
        let (a, b) = (self.konst(ctx, 0)?, self.konst(ctx, 1)?);
        let va = a.to_i64().ok_or_else(|| ctx.bad("is not integer"))?;
        let vb = b.to_i64().ok_or_else(|| ctx.bad("is not integer"))?;
        let dims = broadcast(&a.dims, &b.dims).ok_or_else(|| {
            ctx.bad(format!(
                "shapes {:?} and {:?} do not broadcast",
                a.dims, b.dims
            ))
        })?;
        let (ia, ib) = (
            broadcast_index(&a.dims, &dims),
            broadcast_index(&b.dims, &dims),
        );
        let op = ctx.node.op_type.as_str();
        let mut out = Vec::with_capacity(ia.len());
        for (&i, &j) in ia.iter().zip(&ib) {
            let (x, y) = (va[i], vb[j]);
            let v = match op {
                "Add" => x.checked_add(y),
                "Sub" => x.checked_sub(y),
                "Mul" => x.checked_mul(y),
                _ => x.checked_div(y),
            };
            out.push(v.ok_or_else(|| ctx.bad(format!("{x} {op} {y} overflows or divides by 0")))?);
        }
        let data = match (&a.data, &b.data) {
            (ConstData::I32(_), ConstData::I32(_)) => ConstData::I32(
                out.iter()
                    .map(|&v| i32::try_from(v).map_err(|_| ctx.bad(format!("{v} overflows int32"))))
                    .collect::<Result<_>>()?,
            ),
            (ConstData::I64(_), ConstData::I64(_)) => ConstData::I64(out),
            _ => return Err(ctx.bad("has operands of different integer types")),
        };
        Ok((dims, data))
    }
}

/// Whether `t` holds the batch marker.
pub(super) fn holds_batch(t: &ConstTensor) -> bool {
    matches!(&t.data, ConstData::I64(v) if v.contains(&BATCH))
}

fn norm_axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

fn axis_of(ctx: &NodeCtx, name: &str, default: i64, rank: usize) -> Result<usize> {
    let a = ctx.attrs().int(name, default).map_err(|e| ctx.bad(e))?;
    if a == i64::MIN {
        return Err(ctx.bad(format!("has no '{name}' attribute")));
    }
    norm_axis(a, rank).ok_or_else(|| ctx.bad(format!("{name} {a} is outside rank {rank}")))
}

/// Products of the dimensions before and after `axis`.
fn split(dims: &[usize], axis: usize) -> (usize, usize) {
    (
        dims[..axis].iter().product(),
        dims[axis + 1..].iter().product(),
    )
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * dims[d + 1];
    }
    s
}

/// The broadcast of two shapes (numpy rules), if they broadcast.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |d: &[usize], i: usize| {
        let off = r - d.len();
        if i < off {
            1
        } else {
            d[i - off]
        }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For every element of `out`, the flat index of the element of `dims` broadcast to it.
fn broadcast_index(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let off = out.len() - dims.len();
    let own = strides(dims);
    let mut idx = vec![0usize];
    for (i, &n) in out.iter().enumerate() {
        let s = if i < off || dims[i - off] == 1 {
            0
        } else {
            own[i - off]
        };
        idx = idx
            .iter()
            .flat_map(|&base| (0..n).map(move |k| base + k * s))
            .collect();
    }
    idx
}

/// Elements `(part, index)` of `parts`, all of one type, into one constant.
fn pick(parts: &[&ConstData], at: impl Iterator<Item = (usize, usize)>) -> ConstData {
    macro_rules! each {
        ($($v:ident),*) => {
            match parts[0] {
                $(ConstData::$v(_) => ConstData::$v(
                    at.map(|(p, i)| match parts[p] {
                        ConstData::$v(v) => v[i],
                        _ => unreachable!("parts are checked to share a type"),
                    })
                    .collect(),
                ),)*
            }
        };
    }
    each!(F32, U8, I8, I32, I64, I4, U4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast(&[2, 1], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast(&[], &[4]), Some(vec![4]));
        assert_eq!(broadcast(&[2], &[3]), None);
        // [[0],[1]] + [10, 20, 30]: rows of a repeat, columns of b.
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
