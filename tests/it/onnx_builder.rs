#![allow(clippy::needless_update)] // `..Default::default()` is needed for tract's protobuf types, not for pb_lite's
//! Building small quantized ONNX graphs in tests, node by node, with tract-onnx's protobuf
//! types — the same structures onnxruntime's quantizer writes — plus a dead-simple f64
//! reference of the ONNX semantics to check qforget's integer layers against.

use qforget::onnx::pb::{self, attribute_proto::AttributeType, tensor_proto::DataType};

/// Deterministic pseudo-random numbers (xorshift), so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    /// Uniform in `[lo, hi)`.
    pub fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() % 1_000_000) as f32 / 1_000_000.0
    }
}

/// An attribute value.
pub enum A {
    I(i64),
    F(f32),
    Is(Vec<i64>),
    S(&'static str),
}

/// Graph under construction: one float input `[n?, c, h, w]`.
pub struct B {
    pub nodes: Vec<pb::NodeProto>,
    pub inits: Vec<pb::TensorProto>,
    pub input_dims: Vec<i64>,
    count: usize,
}

fn tensor(name: &str, dims: &[usize], dt: DataType) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        ..Default::default()
    }
}

impl B {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        B {
            nodes: vec![],
            inits: vec![],
            input_dims: vec![c as i64, h as i64, w as i64],
            count: 0,
        }
    }

    fn fresh(&mut self, tag: &str) -> String {
        self.count += 1;
        format!("{tag}_{}", self.count)
    }

    pub fn f32s(&mut self, dims: &[usize], v: &[f32]) -> String {
        let name = self.fresh("f");
        let mut t = tensor(&name, dims, DataType::Float);
        t.float_data = v.to_vec();
        self.inits.push(t);
        name
    }

    pub fn i8s(&mut self, dims: &[usize], v: &[i8]) -> String {
        let name = self.fresh("w");
        let mut t = tensor(&name, dims, DataType::Int8);
        t.raw_data = v.iter().map(|&x| x as u8).collect();
        self.inits.push(t);
        name
    }

    pub fn u8s(&mut self, dims: &[usize], v: &[u8]) -> String {
        let name = self.fresh("u");
        let mut t = tensor(&name, dims, DataType::Uint8);
        t.int32_data = v.iter().map(|&x| x as i32).collect();
        self.inits.push(t);
        name
    }

    pub fn i32s(&mut self, dims: &[usize], v: &[i32]) -> String {
        let name = self.fresh("b");
        let mut t = tensor(&name, dims, DataType::Int32);
        t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inits.push(t);
        name
    }

    pub fn i64s(&mut self, dims: &[usize], v: &[i64]) -> String {
        let name = self.fresh("l");
        let mut t = tensor(&name, dims, DataType::Int64);
        t.int64_data = v.to_vec();
        self.inits.push(t);
        name
    }

    /// A zero-point constant of the activation type.
    pub fn zp(&mut self, zp: i32, signed: bool) -> String {
        if signed {
            self.i8s(&[], &[zp as i8])
        } else {
            self.u8s(&[], &[zp as u8])
        }
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, A)>) -> String {
        self.node_in("", op, inputs, attrs)
    }

    pub fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, A)>,
    ) -> String {
        let out = self.fresh(op);
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = pb::AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                match a {
                    A::I(i) => {
                        p.r#type = AttributeType::Int as i32;
                        p.i = i;
                    }
                    A::F(f) => {
                        p.r#type = AttributeType::Float as i32;
                        p.f = f;
                    }
                    A::Is(v) => {
                        p.r#type = AttributeType::Ints as i32;
                        p.ints = v;
                    }
                    A::S(v) => {
                        p.r#type = AttributeType::String as i32;
                        p.s = v.as_bytes().to_vec();
                    }
                }
                p
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            name: format!("node_{out}"),
            op_type: op.to_string(),
            domain: domain.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute,
            ..Default::default()
        });
        out
    }

    /// QuantizeLinear then DequantizeLinear of `x` with per-tensor parameters.
    pub fn qdq(&mut self, x: &str, scale: f32, zp: i32, signed: bool) -> String {
        let s = self.f32s(&[], &[scale]);
        let z = self.zp(zp, signed);
        let q = self.node("QuantizeLinear", &[x, &s, &z], vec![]);
        self.node("DequantizeLinear", &[&q, &s, &z], vec![])
    }

    /// DequantizeLinear of int8 weights with per-axis (or one) scales.
    pub fn dq_weights(&mut self, dims: &[usize], w: &[i8], scales: &[f32], axis: i64) -> String {
        let wn = self.i8s(dims, w);
        let s = self.f32s(&[scales.len()], scales);
        let z = self.i8s(&[scales.len()], &vec![0; scales.len()]);
        self.node(
            "DequantizeLinear",
            &[&wn, &s, &z],
            vec![("axis", A::I(axis))],
        )
    }

    /// DequantizeLinear of an int32 bias at `scales`.
    pub fn dq_bias(&mut self, b: &[i32], scales: &[f32]) -> String {
        let bn = self.i32s(&[b.len()], b);
        let s = self.f32s(&[scales.len()], scales);
        self.node("DequantizeLinear", &[&bn, &s], vec![("axis", A::I(0))])
    }

    /// The finished model, with `out` as its output.
    pub fn model(&self, out: &str) -> pb::ModelProto {
        use pb::tensor_shape_proto::{dimension::Value as DV, Dimension};
        let mut dims = vec![Dimension {
            value: Some(DV::DimParam("N".to_string())),
            ..Default::default()
        }];
        for &d in &self.input_dims {
            dims.push(Dimension {
                value: Some(DV::DimValue(d)),
                ..Default::default()
            });
        }
        let input = pb::ValueInfoProto {
            name: "x".to_string(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![
                pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: 17,
                },
                pb::OperatorSetIdProto {
                    domain: "com.microsoft".to_string(),
                    version: 1,
                },
            ],
            graph: Some(pb::GraphProto {
                name: "test".to_string(),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: vec![input],
                output: vec![pb::ValueInfoProto {
                    name: out.to_string(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// ONNX QuantizeLinear in f64: round half to even, saturate to the type.
pub fn quant(x: f64, s: f32, zp: i32, signed: bool) -> i32 {
    let v = (x / s as f64).round_ties_even() + zp as f64;
    let (lo, hi) = if signed {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    v.clamp(lo, hi) as i32
}

/// Fake-quantize: `s · (Q(x) − zp)`.
pub fn fq(x: f64, s: f32, zp: i32, signed: bool) -> f64 {
    s as f64 * (quant(x, s, zp, signed) - zp) as f64
}

/// NCHW f64 tensor of one sample.
#[derive(Clone, Debug)]
pub struct T {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub v: Vec<f64>,
}

impl T {
    pub fn at(&self, c: usize, y: isize, x: isize) -> Option<f64> {
        if y < 0 || x < 0 || y as usize >= self.h || x as usize >= self.w {
            None
        } else {
            Some(self.v[(c * self.h + y as usize) * self.w + x as usize])
        }
    }
    pub fn map(&self, f: impl Fn(f64) -> f64) -> T {
        T {
            v: self.v.iter().map(|&x| f(x)).collect(),
            ..self.clone()
        }
    }
}

/// 2-D convolution, ONNX semantics (weights `[co][ci/g][kh][kw]`, pads `[t, l, b, r]`).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    x: &T,
    w: &[f64],
    co: usize,
    k: [usize; 2],
    stride: usize,
    pads: [usize; 4],
    dil: usize,
    group: usize,
    bias: &[f64],
) -> T {
    let cig = x.c / group;
    let oh = (x.h + pads[0] + pads[2] - dil * (k[0] - 1) - 1) / stride + 1;
    let ow = (x.w + pads[1] + pads[3] - dil * (k[1] - 1) - 1) / stride + 1;
    let mut v = vec![0.0; co * oh * ow];
    for o in 0..co {
        let g = o / (co / group);
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = bias[o];
                for ci in 0..cig {
                    for ky in 0..k[0] {
                        for kx in 0..k[1] {
                            let iy = (oy * stride + ky * dil) as isize - pads[0] as isize;
                            let ix = (ox * stride + kx * dil) as isize - pads[1] as isize;
                            if let Some(xv) = x.at(g * cig + ci, iy, ix) {
                                s += xv * w[((o * cig + ci) * k[0] + ky) * k[1] + kx];
                            }
                        }
                    }
                }
                v[(o * oh + oy) * ow + ox] = s;
            }
        }
    }
    T {
        c: co,
        h: oh,
        w: ow,
        v,
    }
}

/// Pooling (max or average without padding in the count), ONNX semantics.
pub fn pool(x: &T, k: usize, stride: usize, pad: usize, max: bool) -> T {
    let oh = (x.h + 2 * pad - k) / stride + 1;
    let ow = (x.w + 2 * pad - k) / stride + 1;
    let mut v = vec![0.0; x.c * oh * ow];
    for c in 0..x.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                let mut n = 0;
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (oy * stride + ky) as isize - pad as isize;
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if let Some(xv) = x.at(c, iy, ix) {
                            acc = if max { acc.max(xv) } else { acc + xv };
                            n += 1;
                        }
                    }
                }
                v[(c * oh + oy) * ow + ox] = if max { acc } else { acc / n as f64 };
            }
        }
    }
    T {
        c: x.c,
        h: oh,
        w: ow,
        v,
    }
}
