//! Rewriting chosen initializers of an .onnx file while keeping every other byte.
//!
//! Why the wire level: decoding into generated types and encoding again drops the fields those
//! types do not know (`pb_lite` keeps only what the importer reads) and may reorder or re-encode
//! the rest, so the result would no longer be "the base model with these tensors changed". Here
//! the file is walked as raw protobuf — ModelProto field 7 (graph) → GraphProto field 5
//! (initializer) → TensorProto field 8 (name), 2 (data_type), 1 (dims), 9 (raw_data), 4/5
//! (float_data/int32_data) — and only the bytes of the chosen tensors' data change. The tensors
//! of Constant nodes are read and rewritten alike, named by the node's output
//! ([`constant_nodes`]). Enclosing
//! length prefixes are re-encoded only when a size changes; replacing `raw_data` with the same
//! number of bytes (the common case) changes nothing but those bytes.
//!
//! Every length and index is checked against the buffer before use, and nothing is allocated
//! from a length field: a malformed file gives an error, never a panic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::int4;
use crate::{Error, Result};

/// ONNX TensorProto.DataType codes we read and write.
const FLOAT: u64 = 1;
const UINT8: u64 = 2;
const INT8: u64 = 3;
const INT32: u64 = 6;
const UINT4: u64 = super::int4::UINT4 as u64;
const INT4: u64 = super::int4::INT4 as u64;

/// The values of one initializer, in the element type the file stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorValues {
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    /// INT4, one element per i8 (−8..=7); packed two per byte in the file and in delta files.
    I4(#[serde(with = "packed4")] Vec<i8>),
    /// UINT4, one element per u8 (0..=15); packed likewise.
    U4(#[serde(with = "packed4")] Vec<u8>),
}

impl TensorValues {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorValues::I8(v) => v.len(),
            TensorValues::U8(v) => v.len(),
            TensorValues::I32(v) => v.len(),
            TensorValues::F32(v) => v.len(),
            TensorValues::I4(v) => v.len(),
            TensorValues::U4(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// ONNX name of the element type.
    pub fn type_name(&self) -> &'static str {
        match self {
            TensorValues::I8(_) => "int8",
            TensorValues::U8(_) => "uint8",
            TensorValues::I32(_) => "int32",
            TensorValues::F32(_) => "float",
            TensorValues::I4(_) => "int4",
            TensorValues::U4(_) => "uint4",
        }
    }

    fn onnx_type(&self) -> u64 {
        match self {
            TensorValues::I8(_) => INT8,
            TensorValues::U8(_) => UINT8,
            TensorValues::I32(_) => INT32,
            TensorValues::F32(_) => FLOAT,
            TensorValues::I4(_) => INT4,
            TensorValues::U4(_) => UINT4,
        }
    }

    /// Little-endian bytes, as `raw_data` holds them.
    fn raw_bytes(&self) -> Vec<u8> {
        match self {
            TensorValues::I8(v) => v.iter().map(|&x| x as u8).collect(),
            TensorValues::U8(v) => v.clone(),
            TensorValues::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::I4(v) => int4::pack(v.iter().map(|&x| x as u8)),
            TensorValues::U4(v) => int4::pack(v.iter().copied()),
        }
    }
}

/// Serde for 4-bit element vectors: the element count, then the packed bytes (half the size of
/// one byte per element, before any compression).
mod packed4 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::int4;

    /// An element type of a 4-bit vector.
    pub trait Nibble: Copy {
        fn to_nibble(self) -> u8;
        fn from_nibble(n: u8) -> Self;
    }
    impl Nibble for i8 {
        fn to_nibble(self) -> u8 {
            self as u8 & 0x0f
        }
        fn from_nibble(n: u8) -> Self {
            ((n << 4) as i8) >> 4
        }
    }
    impl Nibble for u8 {
        fn to_nibble(self) -> u8 {
            self & 0x0f
        }
        fn from_nibble(n: u8) -> Self {
            n
        }
    }

    pub fn serialize<T: Nibble, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        (v.len() as u64, int4::pack(v.iter().map(|x| x.to_nibble()))).serialize(s)
    }

    pub fn deserialize<'de, T: Nibble, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        let (n, bytes) = <(u64, Vec<u8>)>::deserialize(d)?;
        let n = usize::try_from(n).map_err(serde::de::Error::custom)?;
        if let Some(e) = int4::size_error(bytes.len(), n, &[n]) {
            return Err(serde::de::Error::custom(format!("4-bit vector {e}")));
        }
        Ok(int4::unpack_u4(&bytes, n)
            .into_iter()
            .map(T::from_nibble)
            .collect())
    }
}

/// One initializer to overwrite.
#[derive(Debug, Clone, PartialEq)]
pub struct InitializerUpdate {
    pub name: String,
    pub values: TensorValues,
}

/// New model bytes with each named initializer's contents replaced (same dtype and element count
/// as in the file, else a clear error naming the initializer); everything else byte-identical.
pub fn patch_initializers(model: &[u8], updates: &[InitializerUpdate]) -> Result<Vec<u8>> {
    patch_bytes(model, updates).map_err(Error::Patch)
}

/// The current contents of one initializer.
pub fn read_initializer(model: &[u8], name: &str) -> Result<TensorValues> {
    read_initializer_dims(model, name).map(|(_, v)| v)
}

/// The dims and current contents of one initializer.
pub fn read_initializer_dims(model: &[u8], name: &str) -> Result<(Vec<u64>, TensorValues)> {
    let mut found = None;
    for_each_tensor(model, &mut |t| {
        if t.name == name {
            if found.is_some() {
                return Err(format!("initializer '{name}' is defined twice"));
            }
            found = Some((t.dims.clone(), t.values()?));
        }
        Ok(())
    })
    .map_err(Error::Patch)?;
    found.ok_or_else(|| Error::Patch(format!("no initializer named '{name}' in the model")))
}

/// Every initializer of a type [`TensorValues`] can hold, in file order (others are skipped).
pub fn initializers(model: &[u8]) -> Result<Vec<(String, TensorValues)>> {
    let mut out = Vec::new();
    for_each_tensor(model, &mut |t| {
        if matches!(t.data_type, FLOAT | UINT8 | INT8 | INT32 | UINT4 | INT4) {
            out.push((t.name.clone(), t.values()?));
        }
        Ok(())
    })
    .map_err(Error::Patch)?;
    Ok(out)
}

type R<T> = std::result::Result<T, String>;

/// One field of a protobuf message: `start..value` is the tag (and length prefix for LEN
/// fields), `value..end` the value.
#[derive(Debug, Clone, Copy)]
struct Field {
    number: u64,
    wire: u8,
    start: usize,
    value: usize,
    end: usize,
}

fn varint(buf: &[u8], pos: &mut usize) -> R<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| format!("truncated varint at byte {}", *pos))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!(
        "varint longer than 10 bytes ending at byte {}",
        *pos
    ))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Split a message into its fields; `base` is the message's offset in the file (for messages).
fn fields(buf: &[u8], base: usize) -> R<Vec<Field>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos).map_err(|e| format!("{e} (offset {})", base + start))?;
        let number = key >> 3;
        let wire = (key & 7) as u8;
        if number == 0 {
            return Err(format!("field number 0 at offset {}", base + start));
        }
        let (value, end) = match wire {
            0 => {
                let v = pos;
                varint(buf, &mut pos).map_err(|e| format!("{e} (offset {})", base + v))?;
                (v, pos)
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() - pos < n {
                    return Err(format!("truncated fixed field at offset {}", base + pos));
                }
                (pos, pos + n)
            }
            2 => {
                let len =
                    varint(buf, &mut pos).map_err(|e| format!("{e} (offset {})", base + start))?;
                if len > (buf.len() - pos) as u64 {
                    return Err(format!(
                        "field {number} at offset {} claims {len} bytes, only {} remain",
                        base + start,
                        buf.len() - pos
                    ));
                }
                (pos, pos + len as usize)
            }
            w => {
                return Err(format!(
                    "unsupported protobuf wire type {w} for field {number} at offset {}",
                    base + start
                ))
            }
        };
        pos = end;
        out.push(Field {
            number,
            wire,
            start,
            value,
            end,
        });
    }
    Ok(out)
}

/// A TensorProto, parsed far enough to read or replace its data.
struct Tensor<'a> {
    bytes: &'a [u8],
    fields: Vec<Field>,
    name: String,
    data_type: u64,
    dims: Vec<u64>,
}

impl<'a> Tensor<'a> {
    fn parse(bytes: &'a [u8], base: usize) -> R<Self> {
        let fields = fields(bytes, base)?;
        let mut t = Tensor {
            bytes,
            fields: Vec::new(),
            name: String::new(),
            data_type: 0,
            dims: Vec::new(),
        };
        for f in &fields {
            let v = &bytes[f.value..f.end];
            match (f.number, f.wire) {
                (8, 2) => {
                    t.name = String::from_utf8(v.to_vec())
                        .map_err(|_| format!("initializer name at offset {base} is not UTF-8"))?
                }
                (2, 0) => t.data_type = varint(v, &mut 0)?,
                (1, 0) => t.dims.push(varint(v, &mut 0)?),
                (1, 2) => {
                    let mut p = 0;
                    while p < v.len() {
                        t.dims.push(varint(v, &mut p)?);
                    }
                }
                _ => {}
            }
        }
        t.fields = fields;
        Ok(t)
    }

    fn count(&self) -> R<usize> {
        self.dims.iter().try_fold(1usize, |a, &d| {
            if d > i64::MAX as u64 {
                return Err(format!(
                    "initializer '{}' has a negative dimension",
                    self.name
                ));
            }
            usize::try_from(d)
                .ok()
                .and_then(|d| a.checked_mul(d))
                .ok_or_else(|| format!("initializer '{}' has dimensions that overflow", self.name))
        })
    }

    fn check_location(&self) -> R<()> {
        for f in &self.fields {
            if f.number == 13 || (f.number == 14 && f.wire == 0 && self.bytes[f.value] == 1) {
                return Err(format!(
                    "initializer '{}' keeps its data in an external file, which is not supported",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// The typed field that holds this tensor's values when raw_data is not used.
    fn typed_number(&self) -> u64 {
        if self.data_type == FLOAT {
            4
        } else {
            5
        }
    }

    /// Indices of the fields holding this tensor's data (raw_data or its typed field).
    fn data_fields(&self) -> Vec<usize> {
        let typed = self.typed_number();
        (0..self.fields.len())
            .filter(|&i| matches!(self.fields[i].number, n if n == 9 || n == typed))
            .collect()
    }

    fn type_name(&self) -> R<&'static str> {
        Ok(match self.data_type {
            FLOAT => "float",
            UINT8 => "uint8",
            INT8 => "int8",
            INT32 => "int32",
            INT4 => "int4",
            UINT4 => "uint4",
            d => {
                return Err(format!(
                    "initializer '{}' has data type {d}, which cannot be patched (float, int8, uint8, int4, uint4, int32 can)",
                    self.name
                ))
            }
        })
    }

    /// Decode the values (raw_data or the typed field) and check them against the dims.
    fn values(&self) -> R<TensorValues> {
        self.type_name()?;
        self.check_location()?;
        let count = self.count()?;
        if matches!(self.data_type, INT4 | UINT4) {
            return self.values4(count);
        }
        let width = if matches!(self.data_type, FLOAT | INT32) {
            4
        } else {
            1
        };
        let raw: Vec<&Field> = self.fields.iter().filter(|f| f.number == 9).collect();
        let typed_no = self.typed_number();
        let typed: Vec<&Field> = self
            .fields
            .iter()
            .filter(|f| f.number == typed_no)
            .collect();
        let name = &self.name;
        let vals = if let Some(rf) = raw.last() {
            if !typed.is_empty() {
                return Err(format!(
                    "initializer '{name}' has both raw_data and typed data"
                ));
            }
            if rf.wire != 2 {
                return Err(format!(
                    "initializer '{name}': raw_data has the wrong wire type"
                ));
            }
            let r = &self.bytes[rf.value..rf.end];
            if !r.len().is_multiple_of(width) || r.len() / width != count {
                return Err(format!(
                    "initializer '{name}' has {} bytes of raw_data, dims {:?} need {}",
                    r.len(),
                    self.dims,
                    count.saturating_mul(width)
                ));
            }
            match self.data_type {
                FLOAT => TensorValues::F32(
                    r.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                INT32 => TensorValues::I32(
                    r.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                UINT8 => TensorValues::U8(r.to_vec()),
                _ => TensorValues::I8(r.iter().map(|&b| b as i8).collect()),
            }
        } else if self.data_type == FLOAT {
            let mut v = Vec::new();
            for f in &typed {
                let b = &self.bytes[f.value..f.end];
                if f.wire == 2 && !b.len().is_multiple_of(4) || f.wire != 2 && f.wire != 5 {
                    return Err(format!("initializer '{name}': malformed float_data"));
                }
                v.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
            TensorValues::F32(v)
        } else {
            let ints = self.int32_data(&typed)?;
            let range = |lo: i32, hi: i32| {
                ints.iter()
                    .find(|&&x| x < lo || x > hi)
                    .map(|x| format!("initializer '{name}' holds {x}, outside its type's range"))
            };
            match self.data_type {
                INT32 => TensorValues::I32(ints),
                UINT8 => {
                    if let Some(e) = range(0, 255) {
                        return Err(e);
                    }
                    TensorValues::U8(ints.iter().map(|&x| x as u8).collect())
                }
                _ => {
                    if let Some(e) = range(-128, 127) {
                        return Err(e);
                    }
                    TensorValues::I8(ints.iter().map(|&x| x as i8).collect())
                }
            }
        };
        if vals.len() != count {
            return Err(format!(
                "initializer '{name}' holds {} values, dims {:?} need {count}",
                vals.len(),
                self.dims
            ));
        }
        Ok(vals)
    }

    /// The `int32_data` entries of `typed` fields (varint, packed or not).
    fn int32_data(&self, typed: &[&Field]) -> R<Vec<i32>> {
        let mut ints = Vec::new();
        for f in typed {
            let b = &self.bytes[f.value..f.end];
            match f.wire {
                0 => ints.push(varint(b, &mut 0)? as i64 as i32),
                2 => {
                    let mut p = 0;
                    while p < b.len() {
                        ints.push(varint(b, &mut p)? as i64 as i32);
                    }
                }
                _ => return Err(format!("initializer '{}': malformed int32_data", self.name)),
            }
        }
        Ok(ints)
    }

    /// A 4-bit tensor's values: packed bytes in raw_data, or one packed byte per int32_data entry.
    fn values4(&self, count: usize) -> R<TensorValues> {
        let name = &self.name;
        let raw: Vec<&Field> = self.fields.iter().filter(|f| f.number == 9).collect();
        let typed: Vec<&Field> = self.fields.iter().filter(|f| f.number == 5).collect();
        let bytes = if let Some(rf) = raw.last() {
            if !typed.is_empty() || rf.wire != 2 {
                return Err(format!(
                    "initializer '{name}': malformed raw_data (or both raw_data and int32_data)"
                ));
            }
            self.bytes[rf.value..rf.end].to_vec()
        } else {
            let ints = self.int32_data(&typed)?;
            int4::bytes_from_int32(&ints).map_err(|e| format!("initializer '{name}': {e}"))?
        };
        let dims: Vec<usize> = self.dims.iter().map(|&d| d as usize).collect();
        if let Some(e) = int4::size_error(bytes.len(), count, &dims) {
            return Err(format!("initializer '{name}' {e}"));
        }
        Ok(if self.data_type == INT4 {
            TensorValues::I4(int4::unpack_i4(&bytes, count))
        } else {
            TensorValues::U4(int4::unpack_u4(&bytes, count))
        })
    }

    /// The tensor's bytes with its data replaced by `new` (checked against dtype and count).
    fn replaced(&self, new: &TensorValues) -> R<Vec<u8>> {
        let old = self.values()?;
        let name = &self.name;
        if new.onnx_type() != self.data_type {
            return Err(format!(
                "initializer '{name}' is {} in the model, the update gives {}",
                self.type_name()?,
                new.type_name()
            ));
        }
        if new.len() != old.len() {
            return Err(format!(
                "initializer '{name}' has {} elements in the model, the update gives {}",
                old.len(),
                new.len()
            ));
        }
        let out_of_range = match new {
            TensorValues::I4(v) => v.iter().map(|&x| x as i32).find(|x| !(-8..=7).contains(x)),
            TensorValues::U4(v) => v.iter().map(|&x| x as i32).find(|&x| x > 15),
            _ => None,
        };
        if let Some(x) = out_of_range {
            return Err(format!(
                "initializer '{name}' is {}, the update holds {x}, outside its range",
                new.type_name()
            ));
        }
        let data = self.data_fields();
        let uses_raw = data.iter().any(|&i| self.fields[i].number == 9);
        let payload = if uses_raw {
            new.raw_bytes()
        } else {
            match new {
                TensorValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                TensorValues::I8(v) => packed(v.iter().map(|&x| x as i32)),
                TensorValues::U8(v) => packed(v.iter().map(|&x| x as i32)),
                TensorValues::I32(v) => packed(v.iter().copied()),
                TensorValues::I4(_) | TensorValues::U4(_) => {
                    packed(new.raw_bytes().into_iter().map(i32::from))
                }
            }
        };
        let number = if uses_raw { 9 } else { self.typed_number() };
        // The first data field takes the new payload, later ones (unpacked repeats) go; a
        // tensor with no data field (zero elements) is already equal to the update.
        let mut repl: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
        for (k, &i) in data.iter().enumerate() {
            repl.insert(i, (k == 0).then(|| payload.clone()));
        }
        Ok(splice(
            self.bytes,
            &self.fields,
            &mut |i| match repl.remove(&i) {
                None => Keep,
                Some(None) => Drop,
                Some(Some(p)) => {
                    let f = &self.fields[i];
                    if f.number == number && f.wire == 2 {
                        Value(p)
                    } else {
                        Field(number, p)
                    }
                }
            },
        ))
    }
}

fn packed(v: impl Iterator<Item = i32>) -> Vec<u8> {
    let mut out = Vec::new();
    for x in v {
        put_varint(&mut out, x as i64 as u64);
    }
    out
}

/// What to do with one field when re-emitting a message.
enum Edit {
    Keep,
    Drop,
    /// Same field, new value bytes (length prefix re-encoded only if the size changed).
    Value(Vec<u8>),
    /// Replace the field by a LEN field with this number and value.
    Field(u64, Vec<u8>),
}
use Edit::*;

fn splice(buf: &[u8], fields: &[Field], edit: &mut dyn FnMut(usize) -> Edit) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    for (i, f) in fields.iter().enumerate() {
        match edit(i) {
            Keep => out.extend_from_slice(&buf[f.start..f.end]),
            Drop => {}
            Value(v) => {
                if v.len() == f.end - f.value {
                    out.extend_from_slice(&buf[f.start..f.value]);
                } else {
                    put_varint(&mut out, (f.number << 3) | 2);
                    put_varint(&mut out, v.len() as u64);
                }
                out.extend_from_slice(&v);
            }
            Field(n, v) => {
                put_varint(&mut out, (n << 3) | 2);
                put_varint(&mut out, v.len() as u64);
                out.extend_from_slice(&v);
            }
        }
    }
    out
}

/// The graph fields (ModelProto field 7) of a model, checked to be a protobuf message.
fn graphs(model: &[u8]) -> R<Vec<Field>> {
    if model.is_empty() {
        return Err("the model is empty".into());
    }
    let top = fields(model, 0)?;
    let g: Vec<Field> = top
        .into_iter()
        .filter(|f| f.number == 7 && f.wire == 2)
        .collect();
    if g.is_empty() {
        return Err("no graph in the ModelProto (not an ONNX model?)".into());
    }
    Ok(g)
}

/// Every initializer, then every Constant node's tensor (named by the node's output).
fn for_each_tensor(model: &[u8], f: &mut dyn FnMut(&Tensor) -> R<()>) -> R<()> {
    for g in graphs(model)? {
        let gb = &model[g.value..g.end];
        let gf = fields(gb, g.value)?;
        for tf in &gf {
            if tf.number == 5 && tf.wire == 2 {
                let t = Tensor::parse(&gb[tf.value..tf.end], g.value + tf.value)?;
                f(&t)?;
            }
        }
        for c in constant_nodes::constant_nodes(gb, &gf, g.value)? {
            f(&c.tensor)?;
        }
    }
    Ok(())
}

fn patch_bytes(model: &[u8], updates: &[InitializerUpdate]) -> R<Vec<u8>> {
    let mut by_name: HashMap<&str, (usize, bool)> = HashMap::new();
    for (i, u) in updates.iter().enumerate() {
        if by_name.insert(u.name.as_str(), (i, false)).is_some() {
            return Err(format!("initializer '{}' is updated twice", u.name));
        }
    }
    let top = fields(model, 0)?;
    graphs(model)?;
    let mut err = None;
    let out = splice(model, &top, &mut |i| {
        let g = top[i];
        if err.is_some() || g.number != 7 || g.wire != 2 {
            return Keep;
        }
        match patch_graph(&model[g.value..g.end], g.value, updates, &mut by_name) {
            Ok(Some(v)) => Value(v),
            Ok(None) => Keep,
            Err(e) => {
                err = Some(e);
                Keep
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let mut missing: Vec<&str> = by_name
        .iter()
        .filter(|(_, (_, seen))| !seen)
        .map(|(n, _)| *n)
        .collect();
    missing.sort();
    if let Some(n) = missing.first() {
        return Err(format!("no initializer named '{n}' in the model"));
    }
    Ok(out)
}

fn patch_graph(
    g: &[u8],
    base: usize,
    updates: &[InitializerUpdate],
    by_name: &mut HashMap<&str, (usize, bool)>,
) -> R<Option<Vec<u8>>> {
    let gf = fields(g, base)?;
    let mut new: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, f) in gf.iter().enumerate() {
        if f.number != 5 || f.wire != 2 {
            continue;
        }
        let t = Tensor::parse(&g[f.value..f.end], base + f.value)?;
        if let Some((k, seen)) = by_name.get_mut(t.name.as_str()) {
            if *seen {
                return Err(format!("initializer '{}' is defined twice", t.name));
            }
            *seen = true;
            new.insert(i, t.replaced(&updates[*k].values)?);
        }
    }
    for c in constant_nodes::constant_nodes(g, &gf, base)? {
        if let Some((k, seen)) = by_name.get_mut(c.tensor.name.as_str()) {
            if *seen || new.contains_key(&c.node_field) {
                return Err(format!("initializer '{}' is defined twice", c.tensor.name));
            }
            *seen = true;
            let t = c.tensor.replaced(&updates[*k].values)?;
            new.insert(c.node_field, c.with_tensor(t));
        }
    }
    if new.is_empty() {
        return Ok(None);
    }
    Ok(Some(splice(g, &gf, &mut |i| match new.remove(&i) {
        Some(v) => Value(v),
        None => Keep,
    })))
}

/// A LEN field: tag, length, value.
fn len_field(number: u64, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + 12);
    put_varint(&mut out, (number << 3) | 2);
    put_varint(&mut out, v.len() as u64);
    out.extend_from_slice(v);
    out
}

mod constant_nodes;
pub mod external;

#[cfg(test)]
mod tests;
