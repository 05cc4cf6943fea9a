//! Shape arithmetic on the batch size (`x.view(x.size(0), -1)` exported with a dynamic batch
//! axis): the chains PyTorch's exporters write import as the Flatten they stand for, and what
//! would depend on the batch size is refused by name. The real-toolchain case is the fixture
//! pair `mnist_dynview_{qdq,qop}` (generate_dynview.py), checked against onnxruntime by the
//! fixture test.

use std::path::Path;

use super::onnx_builder::{Rng, A, B};

/// `x [N, 2, 3, 3]` → Q/DQ → `reshape(x)` → Gemm(float weights) → float logits, where
/// `reshape` builds its target shape from `b` and the dequantized input.
fn model_with(reshape: impl Fn(&mut B, &str) -> String) -> qforget::onnx::pb::ModelProto {
    let mut b = B::new(2, 3, 3);
    let x = b.qdq("x", 1.0 / 255.0, 0, false);
    let flat = reshape(&mut b, &x);
    let mut r = Rng(0x5a9e);
    let w: Vec<f32> = (0..4 * 18).map(|_| r.float(-0.5, 0.5)).collect();
    let (wn, bn) = (b.f32s(&[4, 18], &w), b.f32s(&[4], &[0.1, -0.2, 0.0, 0.3]));
    let out = b.node("Gemm", &[&flat, &wn, &bn], vec![("transB", A::I(1))]);
    b.model(&out)
}

/// `Gather(shape, i)` with a scalar index, unsqueezed to one entry.
fn dim(b: &mut B, shape: &str, i: i64) -> String {
    let idx = b.i64s(&[], &[i]);
    b.node("Gather", &[shape, &idx], vec![("axis", A::I(0))])
}

fn unsqueeze0(b: &mut B, x: &str) -> String {
    let axes = b.i64s(&[1], &[0]);
    b.node("Unsqueeze", &[x, &axes], vec![])
}

#[test]
fn shape_arithmetic_on_the_batch_flattens_like_flatten() {
    let plain = model_with(|b, x| b.node("Flatten", &[x], vec![]));
    // torch 1.13's exporter: x.reshape(x.size(0), x.size(1) * x.size(2) * x.size(3)).
    let gathered = model_with(|b, x| {
        let s = b.node("Shape", &[x], vec![]);
        let n = dim(b, &s, 0);
        let (c, h, w) = (dim(b, &s, 1), dim(b, &s, 2), dim(b, &s, -1));
        let ch = b.node("Mul", &[&c, &h], vec![]);
        let chw = b.node("Mul", &[&ch, &w], vec![]);
        let (n1, f1) = (unsqueeze0(b, &n), unsqueeze0(b, &chw));
        let target = b.node("Concat", &[&n1, &f1], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![])
    });
    // torch 2's exporter without its optimizer: Shape(start, end) → Squeeze → Reshape to [-1]
    // → Concat → Reshape(allowzero); and a Slice of a full Shape.
    let ranged = model_with(|b, x| {
        let n = b.node("Shape", &[x], vec![("start", A::I(0)), ("end", A::I(1))]);
        let scalar = b.node("Squeeze", &[&n], vec![]);
        let one = b.i64s(&[1], &[-1]);
        let n = b.node("Reshape", &[&scalar, &one], vec![("allowzero", A::I(0))]);
        let rest = b.i64s(&[1], &[-1]);
        let target = b.node("Concat", &[&n, &rest], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![("allowzero", A::I(1))])
    });
    let sliced = model_with(|b, x| {
        let s = b.node("Shape", &[x], vec![]);
        let (st, en) = (b.i64s(&[1], &[0]), b.i64s(&[1], &[1]));
        let n = b.node("Slice", &[&s, &st, &en], vec![]);
        let rest = b.i64s(&[1], &[18]);
        let target = b.node("Concat", &[&n, &rest], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![])
    });
    let import = |m, name: &str| qforget::onnx::import(m, Path::new(name)).unwrap();
    let want_g = import(&plain, "plain.onnx");
    let n = 6;
    let mut r = Rng(0x77);
    let images: Vec<u8> = (0..n * 18).map(|_| r.int(0, 255) as u8).collect();
    let want = want_g.forward(&images, n).unwrap();
    for (m, name) in [
        (&gathered, "gathered.onnx"),
        (&ranged, "ranged.onnx"),
        (&sliced, "sliced.onnx"),
    ] {
        let g = import(m, name);
        assert_eq!(g.layers.len(), want_g.layers.len(), "{name}");
        let got = g.forward(&images, n).unwrap();
        for i in 0..n {
            assert_eq!(got.real_row(i), want.real_row(i), "{name}, image {i}");
        }
    }
}

#[test]
fn what_depends_on_the_batch_size_is_refused_by_name() {
    let refused = |m: &qforget::onnx::pb::ModelProto, name: &str, parts: &[&str]| {
        let err = qforget::onnx::import(m, Path::new(name))
            .unwrap_err()
            .to_string();
        for part in parts {
            assert!(err.contains(part), "{err}");
        }
    };
    // Arithmetic on the batch size: its value is not known at import.
    let doubled = model_with(|b, x| {
        let s = b.node("Shape", &[x], vec![]);
        let n = dim(b, &s, 0);
        let two = b.i64s(&[], &[2]);
        let n2 = b.node("Mul", &[&n, &two], vec![]);
        let n1 = unsqueeze0(b, &n2);
        let rest = b.i64s(&[1], &[-1]);
        let target = b.node("Concat", &[&n1, &rest], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![])
    });
    refused(
        &doubled,
        "doubled.onnx",
        &["doubled.onnx", "Mul", "computed from the batch size"],
    );
    // A Reshape whose per-sample entries do not hold one sample (14 of its 18 values) names
    // the target with N (one that does, `[N, 2, 9]`, is a Permute: see `reorders`).
    let split = model_with(|b, x| {
        let s = b.node("Shape", &[x], vec![]);
        let n = dim(b, &s, 0);
        let n = unsqueeze0(b, &n);
        let rest = b.i64s(&[2], &[2, 7]);
        let target = b.node("Concat", &[&n, &rest], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![])
    });
    refused(
        &split,
        "split.onnx",
        &[
            "split.onnx",
            "Reshape to [N, 2, 7]",
            "keeps the batch as axis 0",
        ],
    );
    // A Gather outside the shape.
    let outside = model_with(|b, x| {
        let s = b.node("Shape", &[x], vec![]);
        let n = dim(b, &s, 4);
        let n = unsqueeze0(b, &n);
        let rest = b.i64s(&[1], &[-1]);
        let target = b.node("Concat", &[&n, &rest], vec![("axis", A::I(0))]);
        b.node("Reshape", &[x, &target], vec![])
    });
    refused(
        &outside,
        "outside.onnx",
        &["outside.onnx", "Gather", "index 4 is outside an axis of 4"],
    );
}
