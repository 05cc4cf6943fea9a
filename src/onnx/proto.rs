//! Reading the ONNX protobuf through tract-onnx's generated types (`tract_onnx::pb`; in a
//! device build without tract, the same subset from `pb_lite`), and turning initializers and
//! attributes into plain Rust values.
//!
//! Only decoding is used here — not tract's inference engine. Tensor data is read from
//! `raw_data` (little-endian) or from the typed fields (`float_data`, `int32_data` — where ONNX
//! keeps int8/uint8/int32 —, `int64_data`). 4-bit tensors are unpacked here, one element per
//! byte (see [`super::int4`]), so the rest of the importer sees plain small integers.

use super::int4;
use super::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};
use prost::Message;

/// Constant tensor values we know how to use.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// INT4, unpacked: −8..=7.
    I4(Vec<i8>),
    /// UINT4, unpacked: 0..=15.
    U4(Vec<u8>),
}

/// A constant (initializer or `Constant` node output).
#[derive(Debug, Clone, PartialEq)]
pub struct ConstTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: ConstData,
}

impl ConstTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::U8(v) => v.len(),
            ConstData::I8(v) => v.len(),
            ConstData::I32(v) => v.len(),
            ConstData::I64(v) => v.len(),
            ConstData::I4(v) => v.len(),
            ConstData::U4(v) => v.len(),
        }
    }

    /// True when it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// ONNX name of the element type.
    pub fn type_name(&self) -> &'static str {
        match &self.data {
            ConstData::F32(_) => "float",
            ConstData::U8(_) => "uint8",
            ConstData::I8(_) => "int8",
            ConstData::I32(_) => "int32",
            ConstData::I64(_) => "int64",
            ConstData::I4(_) => "int4",
            ConstData::U4(_) => "uint4",
        }
    }

    /// Values as f32 (lossless for every type but large i32/i64).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::I4(v) => v.iter().map(|&x| x as f32).collect(),
            ConstData::U4(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as i64 for integer types.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
            ConstData::F32(_) => return None,
            ConstData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::I64(v) => v.clone(),
            ConstData::I4(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::U4(v) => v.iter().map(|&x| x as i64).collect(),
        })
    }

    /// Bits per element of an integer type that can hold weights or zero points (8 or 4).
    pub fn bits(&self) -> Option<u32> {
        match &self.data {
            ConstData::I8(_) | ConstData::U8(_) => Some(8),
            ConstData::I4(_) | ConstData::U4(_) => Some(4),
            _ => None,
        }
    }

    /// Whether the element type is unsigned (uint8, uint4).
    pub fn is_unsigned(&self) -> bool {
        matches!(self.data, ConstData::U8(_) | ConstData::U4(_))
    }
}

/// Decode a whole ModelProto from bytes.
pub fn decode_model(bytes: &[u8]) -> Result<pb::ModelProto, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_string());
    }
    let model =
        pb::ModelProto::decode(bytes).map_err(|e| format!("protobuf decoding failed ({e})"))?;
    match &model.graph {
        None => Err("no graph in the ModelProto (not an ONNX model?)".to_string()),
        Some(g) if g.node.is_empty() => Err("the graph has no nodes".to_string()),
        Some(_) => Ok(model),
    }
}

fn chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// Convert a TensorProto into a [`ConstTensor`]; the error says what is unsupported or broken.
pub fn tensor(t: &pb::TensorProto) -> Result<ConstTensor, String> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err(format!(
            "initializer '{}' keeps its data in an external file, which is not supported",
            t.name
        ));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(format!(
                "initializer '{}' has a negative dimension {d}",
                t.name
            ));
        }
        dims.push(d as usize);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("initializer '{}' has dimensions that overflow", t.name))?;
    let raw = &t.raw_data;
    if t.data_type == int4::INT4 || t.data_type == int4::UINT4 {
        return four_bit(t, dims, count);
    }
    let dt = DataType::try_from(t.data_type).map_err(|_| {
        format!(
            "initializer '{}' has unknown data type {}",
            t.name, t.data_type
        )
    })?;
    let width = match dt {
        DataType::Float | DataType::Int32 => 4,
        DataType::Uint8 | DataType::Int8 => 1,
        DataType::Int64 => 8,
        other => {
            return Err(format!(
                "initializer '{}' has data type {:?}, not supported (float, int8, uint8, int4, uint4, int32, int64 are)",
                t.name, other
            ))
        }
    };
    let typed_len = match dt {
        DataType::Float => t.float_data.len(),
        DataType::Int64 => t.int64_data.len(),
        _ => t.int32_data.len(),
    };
    let have = if raw.is_empty() {
        typed_len
    } else {
        raw.len() / width
    };
    if (!raw.is_empty() && !raw.len().is_multiple_of(width)) || have != count {
        return Err(format!(
            "initializer '{}' should hold {count} values for dimensions {dims:?}, it holds {}",
            t.name,
            if raw.is_empty() {
                typed_len as f64
            } else {
                raw.len() as f64 / width as f64
            }
        ));
    }
    let from_raw = !raw.is_empty();
    let data = match dt {
        DataType::Float if from_raw => ConstData::F32(chunks(raw, f32::from_le_bytes)),
        DataType::Float => ConstData::F32(t.float_data.clone()),
        DataType::Int64 if from_raw => ConstData::I64(chunks(raw, i64::from_le_bytes)),
        DataType::Int64 => ConstData::I64(t.int64_data.clone()),
        DataType::Int32 if from_raw => ConstData::I32(chunks(raw, i32::from_le_bytes)),
        DataType::Int32 => ConstData::I32(t.int32_data.clone()),
        DataType::Uint8 if from_raw => ConstData::U8(raw.clone()),
        DataType::Uint8 => ConstData::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        DataType::Int8 if from_raw => ConstData::I8(raw.iter().map(|&v| v as i8).collect()),
        DataType::Int8 => ConstData::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
        _ => unreachable!("width match above lists the supported types"),
    };
    Ok(ConstTensor {
        name: t.name.clone(),
        dims,
        data,
    })
}

/// An INT4/UINT4 tensor, from `raw_data` or `int32_data` (one packed byte per entry).
fn four_bit(t: &pb::TensorProto, dims: Vec<usize>, count: usize) -> Result<ConstTensor, String> {
    let name = &t.name;
    let bytes = if t.raw_data.is_empty() {
        int4::bytes_from_int32(&t.int32_data).map_err(|e| format!("initializer '{name}': {e}"))?
    } else {
        if !t.int32_data.is_empty() {
            return Err(format!(
                "initializer '{name}' has both raw_data and int32_data"
            ));
        }
        t.raw_data.clone()
    };
    if let Some(e) = int4::size_error(bytes.len(), count, &dims) {
        return Err(format!("initializer '{name}' {e}"));
    }
    let data = if t.data_type == int4::INT4 {
        ConstData::I4(int4::unpack_i4(&bytes, count))
    } else {
        ConstData::U4(int4::unpack_u4(&bytes, count))
    };
    Ok(ConstTensor {
        name: name.clone(),
        dims,
        data,
    })
}

/// Typed access to a node's attributes.
pub struct Attrs<'a>(pub &'a pb::NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }

    /// Integer attribute, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == AttributeType::Int as i32 => Ok(a.i),
            Some(_) => Err(format!("attribute '{name}' should be an integer")),
        }
    }

    /// Float attribute, or `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == AttributeType::Float as i32 => Ok(a.f),
            Some(_) => Err(format!("attribute '{name}' should be a float")),
        }
    }

    /// Integer-list attribute, if present.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == AttributeType::Ints as i32 => Ok(Some(a.ints.clone())),
            Some(_) => Err(format!("attribute '{name}' should be a list of integers")),
        }
    }

    /// Float-list attribute, if present.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == AttributeType::Floats as i32 => Ok(Some(a.floats.clone())),
            Some(_) => Err(format!("attribute '{name}' should be a list of floats")),
        }
    }

    /// Whether attribute `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// String attribute, if present.
    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == AttributeType::String as i32 => {
                Ok(Some(String::from_utf8_lossy(&a.s).into_owned()))
            }
            Some(_) => Err(format!("attribute '{name}' should be a string")),
        }
    }

    /// Tensor attribute (the value of a `Constant` node), if present.
    pub fn tensor(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}

/// The dimensions of a graph input, `None` for symbolic ones (e.g. a dynamic batch).
pub fn value_info_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TV;
    let ty = v.r#type.as_ref()?.value.as_ref()?;
    let TV::TensorType(tt) = ty;
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(x)) => Some(*x),
                _ => None,
            })
            .collect(),
    )
}

/// The shape of a value as a message shows it: `[N, 28, 28]`, each dimension its number, its
/// symbolic name, or `?` when it has neither; `unknown` without a tensor shape.
pub fn value_info_dims_text(v: &pb::ValueInfoProto) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TV;
    let Some(TV::TensorType(tt)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return "unknown".into();
    };
    let Some(shape) = tt.shape.as_ref() else {
        return "unknown".into();
    };
    let dims: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(x)) => x.to_string(),
            Some(Value::DimParam(name)) if !name.is_empty() => name.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}
