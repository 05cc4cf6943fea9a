//! Nodes that only make or retype constants, and a Cast that changes nothing.
//!
//! Why: PyTorch's own quantized export (`torch.onnx.export` of a converted model) writes its
//! weights and biases as `Constant` nodes, builds a bias's zero point as `ConstantOfShape →
//! Cast(INT32)`, and puts `Cast(to=UINT8)` between every QuantizeLinear and DequantizeLinear of
//! a tensor that already is uint8. All of it is evaluated here, at import: a constant stays a
//! constant (of the type the Cast asks for), and a Cast of a quantized activation to its own
//! type is the activation itself. Any other Cast is refused by name.

use crate::Result;

use super::pb::tensor_proto::DataType;
use super::proto::{ConstData, ConstTensor};
use super::value::Value;
use super::{Importer, NodeCtx};

impl Importer<'_> {
    /// ConstantOfShape with a constant shape: a constant filled with its `value` (float 0 when
    /// the attribute is absent).
    pub(super) fn constant_of_shape(&mut self, ctx: &NodeCtx) -> Result<()> {
        let shape = self.konst(ctx, 0)?;
        let dims = shape
            .to_i64()
            .ok_or_else(|| ctx.bad(format!("shape '{}' is not integers", shape.name)))?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return Err(ctx.bad(format!("shape '{}' has the dimension {d}", shape.name)));
        }
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let n: usize = dims.iter().product();
        let fill = match ctx.attrs().tensor("value") {
            Some(t) => super::proto::tensor(t).map_err(|e| ctx.bad(e))?,
            None => ConstTensor {
                name: String::new(),
                dims: vec![1],
                data: ConstData::F32(vec![0.0]),
            },
        };
        if fill.len() != 1 {
            return Err(ctx.bad(format!("value has {} elements, not one", fill.len())));
        }
        let ty = fill.type_name();
        let data = match fill.data {
            ConstData::F32(v) => ConstData::F32(vec![v[0]; n]),
            ConstData::U8(v) => ConstData::U8(vec![v[0]; n]),
            ConstData::I8(v) => ConstData::I8(vec![v[0]; n]),
            ConstData::I32(v) => ConstData::I32(vec![v[0]; n]),
            ConstData::I64(v) => ConstData::I64(vec![v[0]; n]),
            _ => return Err(ctx.unsupported(format!("a value of type {ty}"))),
        };
        self.node_constant(ctx, dims, data)
    }

    /// Cast: of a constant, evaluated here; of a quantized activation to its own integer type,
    /// the activation itself; of a float tensor to float (an integer product's too: the
    /// MatMulInteger/ConvInteger → Cast → Mul(scale) road), the tensor itself. Anything else is
    /// refused.
    pub(super) fn cast(&mut self, ctx: &NodeCtx) -> Result<()> {
        let x = ctx.input(0).ok_or_else(|| ctx.bad("has no input"))?;
        let to = ctx.attrs().int("to", 0).map_err(|e| ctx.bad(e))?;
        let out = ctx.output()?.to_string();
        let Some(v) = self.values.get(x).cloned() else {
            let t = self.konst(ctx, 0)?;
            let data = cast_const(&t, to).map_err(|e| ctx.unsupported(e))?;
            return self.node_constant(ctx, t.dims, data);
        };
        let same_type = |signed: bool| {
            let own = if signed {
                DataType::Int8
            } else {
                DataType::Uint8
            };
            to == own as i64
        };
        match &v {
            Value::Quant(a) if same_type(self.acts[*a].q.signed) => {}
            // Already float: a float result, a dequantized tensor, the float input.
            Value::Pending(..) | Value::Deq(_) | Value::Float(_) | Value::FloatInput(..)
                if to == DataType::Float as i64 => {}
            _ => {
                return Err(ctx.unsupported(format!(
                    "Cast of '{x}' to type {to}; qforget supports a Cast of a constant, of a \
                     quantized tensor to its own type, and of a float tensor or an integer product to float"
                )))
            }
        }
        self.values.insert(out, v);
        Ok(())
    }

    /// Record the output of node `ctx` as a constant made at import.
    pub(super) fn node_constant(
        &mut self,
        ctx: &NodeCtx,
        dims: Vec<usize>,
        data: ConstData,
    ) -> Result<()> {
        let out = ctx.output()?.to_string();
        self.node_consts.insert(out.clone());
        let t = ConstTensor {
            name: out.clone(),
            dims,
            data,
        };
        self.consts.insert(out, t);
        Ok(())
    }
}

/// The values of `t` as ONNX type `to` (float, uint8, int8, int32, int64). A float becomes an
/// integer only when it is whole and in range (ONNX leaves other casts to the runtime), and an
/// integer only when it fits.
fn cast_const(t: &ConstTensor, to: i64) -> Result<ConstData, String> {
    let ints: Vec<i64> = match (&t.data, to) {
        (_, x) if x == DataType::Float as i64 => return Ok(ConstData::F32(t.to_f32())),
        (ConstData::F32(v), _) => {
            if let Some(bad) = v.iter().find(|f| f.fract() != 0.0 || !f.is_finite()) {
                return Err(format!(
                    "Cast of the float constant '{}' (holding {bad}) to an integer type",
                    t.name
                ));
            }
            v.iter().map(|&f| f as i64).collect()
        }
        _ => t.to_i64().unwrap_or_default(),
    };
    fn fit<T: TryFrom<i64>>(v: &[i64], name: &str, ty: &str) -> Result<Vec<T>, String> {
        v.iter()
            .map(|&x| {
                T::try_from(x).map_err(|_| format!("Cast of '{name}' to {ty}: {x} does not fit"))
            })
            .collect()
    }
    Ok(match to {
        x if x == DataType::Uint8 as i64 => ConstData::U8(fit(&ints, &t.name, "uint8")?),
        x if x == DataType::Int8 as i64 => ConstData::I8(fit(&ints, &t.name, "int8")?),
        x if x == DataType::Int32 as i64 => ConstData::I32(fit(&ints, &t.name, "int32")?),
        x if x == DataType::Int64 as i64 => ConstData::I64(ints),
        other => return Err(format!("Cast of the constant '{}' to type {other}", t.name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn konst(data: ConstData) -> ConstTensor {
        ConstTensor {
            name: "k".into(),
            dims: vec![2],
            data,
        }
    }

    #[test]
    fn constants_cast_when_the_values_fit() {
        let z = konst(ConstData::F32(vec![0.0, 3.0]));
        assert!(matches!(
            cast_const(&z, DataType::Int32 as i64),
            Ok(ConstData::I32(v)) if v == vec![0, 3]
        ));
        let u = konst(ConstData::U8(vec![255, 0]));
        assert!(matches!(
            cast_const(&u, DataType::Float as i64),
            Ok(ConstData::F32(v)) if v == vec![255.0, 0.0]
        ));
        let e = cast_const(&u, DataType::Int8 as i64).unwrap_err();
        assert!(e.contains("'k'") && e.contains("255"), "{e}");
        let f = konst(ConstData::F32(vec![0.5, 1.0]));
        assert!(cast_const(&f, DataType::Int32 as i64)
            .unwrap_err()
            .contains("0.5"));
        assert!(cast_const(&u, DataType::Double as i64).is_err());
    }
}
