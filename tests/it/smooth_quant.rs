//! SmoothQuant's float pre-scales (`mnist_mlp_inc_sq.onnx`, Intel Neural Compressor): a `Mul`
//! by one constant per input feature before each smoothed layer's QuantizeLinear, on the
//! flattened model input after its float AveragePool, and on a dequantized activation. The
//! fixture's logits against onnxruntime are checked with every other fixture (`fixtures`:
//! bit-identical); here the per-element input functions on a built model with two channels
//! (where element order matters), a class-wise request on the fixture, and the refusals.
//! Before per-element input functions existed the fixture was refused ("Mul by constant
//! '/MatMul/MatMulAddFusion_smooth_scale' with dimensions [196]").

use std::path::Path;

use prost::Message;
use qforget::onnx::pb;

use super::malformed::fails_cleanly;
use super::onnx_builder::{Rng, A, B};
use super::{class3_request_meets_its_target, model, qforget, s, tempdir};

const FIXTURE: &str = "mnist_mlp_inc_sq.onnx";

/// ONNX QuantizeLinear (int8) in f32.
fn qs8(x: f32, s: f32) -> i32 {
    (x / s).round_ties_even().clamp(-128.0, 127.0) as i32
}

/// input [N,2,4,4] → AveragePool 2×2 → Mul(k, one value per element of [2,2,2]) → Q/DQ (int8)
/// → Flatten; `mul_first` puts the Mul before the pooling instead (refused).
fn pooled_prescale(k: &[f32], dims: &[usize], mul_first: bool) -> pb::ModelProto {
    let mut b = B::new(2, 4, 4);
    let kk = b.f32s(dims, k);
    let pool = |b: &mut B, x: &str| {
        b.node(
            "AveragePool",
            &[x],
            vec![
                ("kernel_shape", A::Is(vec![2, 2])),
                ("strides", A::Is(vec![2, 2])),
            ],
        )
    };
    let t = if mul_first {
        let m = b.node("Mul", &["x", &kk], vec![]);
        pool(&mut b, &m)
    } else {
        let p = pool(&mut b, "x");
        b.node("Mul", &[&p, &kk], vec![])
    };
    let y = b.qdq(&t, 0.02, 0, true);
    let out = b.node("Flatten", &[&y], vec![]);
    b.model(&out)
}

#[test]
fn a_per_element_prescale_after_the_input_pooling_is_computed_in_onnx_order() {
    let k: Vec<f32> = (0..8).map(|i| 0.5 + 0.37 * i as f32).collect();
    let g = qforget::onnx::import(
        &pooled_prescale(&k, &[1, 2, 2, 2], false),
        Path::new("prescale.onnx"),
    )
    .unwrap();
    assert_eq!(g.input.post_fns.len(), 1);
    let mut r = Rng(0x5a0c);
    let n = 6;
    let images: Vec<u8> = (0..n * 32).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    for i in 0..n {
        let row = got.model_row(i);
        let px =
            |ch: usize, y: usize, x: usize| images[i * 32 + ch * 16 + y * 4 + x] as f32 / 255.0;
        for ch in 0..2 {
            for (oy, ox) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (y, x) = (2 * oy, 2 * ox);
                // onnxruntime sums a pooling window column by column, then divides.
                let sum =
                    (px(ch, y, x) + px(ch, y + 1, x)) + (px(ch, y, x + 1) + px(ch, y + 1, x + 1));
                let e = ch * 4 + oy * 2 + ox;
                let want = qs8(sum / 4.0 * k[e], 0.02);
                assert_eq!(row[e], want, "image {i} element {e}");
            }
        }
    }
    // The same constant before the pooling would have to be pooled with the pixels: refused.
    let err = qforget::onnx::import(
        &pooled_prescale(&[1.5; 32], &[1, 2, 4, 4], true),
        Path::new("mul_then_pool.onnx"),
    )
    .unwrap_err()
    .to_string();
    for part in [
        "mul_then_pool.onnx",
        "AveragePool",
        "after an element-wise function",
    ] {
        assert!(err.contains(part), "{err}");
    }
    // A constant that would broadcast the pooled input to another shape.
    let err = qforget::onnx::import(
        &pooled_prescale(&[0.5; 16], &[1, 4, 2, 2], false),
        Path::new("wrong_shape.onnx"),
    )
    .unwrap_err()
    .to_string();
    for part in ["wrong_shape.onnx", "Mul", "[1, 4, 2, 2]", "[N, 2, 2, 2]"] {
        assert!(err.contains(part), "{err}");
    }
}

#[test]
fn inspect_shows_the_prescale_and_the_smoothing_layer() {
    let o = qforget(&["inspect", s(&model(FIXTURE)), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["input_element_functions"], 1, "{v}");
    let ops: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    // The Mul on the dequantized hidden activation is a lookup layer between the two linears.
    assert_eq!(ops, ["flatten", "linear", "pointwise", "linear"], "{v}");
}

#[test]
fn class_wise_request_on_smoothquant_meets_its_target_and_exports() {
    let dir = tempdir("sq-forget");
    let out = dir.join("forgot.onnx");
    class3_request_meets_its_target(&model(FIXTURE), "mnist", &out);
    // The export is one self-contained file (the fixture keeps its weights in external data),
    // and the smoothing constants are untouched.
    let g = qforget::onnx::load(&out).unwrap();
    let g0 = qforget::onnx::load(model(FIXTURE)).unwrap();
    assert_eq!(g.input.post_fns, g0.input.post_fns);
}

#[test]
fn a_smoothing_constant_of_the_wrong_shape_is_refused_by_name() {
    let dir = tempdir("sq-bad");
    let mut m = pb::ModelProto::decode(&std::fs::read(model(FIXTURE)).unwrap()[..]).unwrap();
    // The input pre-scale, 196 values, given dimensions that do not fit the 196 features.
    let t = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == "/MatMul/MatMulAddFusion_smooth_scale")
        .unwrap();
    t.dims = vec![4, 49];
    let p = dir.join("sq_shape.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    std::fs::copy(
        model("mnist_mlp_inc_sq.onnx_data"),
        dir.join("mnist_mlp_inc_sq.onnx_data"),
    )
    .unwrap();
    let err = fails_cleanly(&["inspect", s(&p)], "sq_shape.onnx", "does not broadcast");
    for part in ["Mul", "smooth_scale", "[4, 49]", "[N, 196]"] {
        assert!(err.contains(part), "{err}");
    }
}
