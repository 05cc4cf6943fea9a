//! Tensors held by `Constant` nodes, read and rewritten like initializers.
//!
//! Why: PyTorch's export of a converted quantized model (`torch.ao.quantization.convert`, then
//! `torch.onnx.export`) has no initializers at all: every int8 weight and int32 bias is the
//! `value` attribute of a Constant node. Such a tensor is named by the node's output (its own
//! name field is empty), and it sits three messages deep — GraphProto field 1 (node) →
//! NodeProto field 5 (attribute) → AttributeProto field 5 (t) — so a rewrite re-encodes the
//! attribute's and the node's length prefixes when the size changes, and nothing else.

use super::{fields, splice, Edit, Field, Tensor, R};

/// A Constant node's `value` tensor, with where it sits in the graph's bytes.
pub(super) struct ConstantNode<'a> {
    /// Index of the node among the graph's fields.
    pub node_field: usize,
    node: &'a [u8],
    node_fields: Vec<Field>,
    attr_field: usize,
    attr: &'a [u8],
    attr_fields: Vec<Field>,
    t_field: usize,
    pub tensor: Tensor<'a>,
}

/// Every Constant node with a `value` tensor among graph fields `gf` of graph bytes `g` (at
/// file offset `base`), the tensor named by the node's first output.
pub(super) fn constant_nodes<'a>(
    g: &'a [u8],
    gf: &[Field],
    base: usize,
) -> R<Vec<ConstantNode<'a>>> {
    let mut out = Vec::new();
    for (i, f) in gf.iter().enumerate() {
        if f.number != 1 || f.wire != 2 {
            continue;
        }
        let node = &g[f.value..f.end];
        let node_base = base + f.value;
        let node_fields = fields(node, node_base)?;
        let text = |nf: &Field| std::str::from_utf8(&node[nf.value..nf.end]).ok();
        let is_constant = node_fields
            .iter()
            .any(|nf| nf.number == 4 && nf.wire == 2 && text(nf) == Some("Constant"));
        if !is_constant {
            continue;
        }
        let Some(output) = node_fields
            .iter()
            .find(|nf| nf.number == 2 && nf.wire == 2)
            .and_then(text)
        else {
            continue;
        };
        for (a, af) in node_fields.iter().enumerate() {
            if af.number != 5 || af.wire != 2 {
                continue;
            }
            let attr = &node[af.value..af.end];
            let attr_fields = fields(attr, node_base + af.value)?;
            let named_value = attr_fields
                .iter()
                .any(|x| x.number == 1 && x.wire == 2 && &attr[x.value..x.end] == b"value");
            let t = attr_fields
                .iter()
                .position(|x| x.number == 5 && x.wire == 2);
            let (true, Some(t)) = (named_value, t) else {
                continue;
            };
            let tf = attr_fields[t];
            let mut tensor =
                Tensor::parse(&attr[tf.value..tf.end], node_base + af.value + tf.value)?;
            tensor.name = output.to_string();
            out.push(ConstantNode {
                node_field: i,
                node,
                node_fields: node_fields.clone(),
                attr_field: a,
                attr,
                attr_fields,
                t_field: t,
                tensor,
            });
        }
    }
    Ok(out)
}

impl ConstantNode<'_> {
    /// The node's bytes with its tensor's bytes replaced by `tensor`.
    pub(super) fn with_tensor(&self, tensor: Vec<u8>) -> Vec<u8> {
        let mut tensor = Some(tensor);
        let attr = splice(
            self.attr,
            &self.attr_fields,
            &mut |i| match (i == self.t_field).then(|| tensor.take()).flatten() {
                Some(v) => Edit::Value(v),
                None => Edit::Keep,
            },
        );
        let mut attr = Some(attr);
        splice(
            self.node,
            &self.node_fields,
            &mut |i| match (i == self.attr_field).then(|| attr.take()).flatten() {
                Some(v) => Edit::Value(v),
                None => Edit::Keep,
            },
        )
    }
}
