//! An explicit constant Pad as a layer of its own (src/graph/pad.rs) and ReduceMax over the
//! pixels as a global max pooling: built models against tract, and the Pads qforget refuses.

use std::path::Path;

use prost::Message;

use super::onnx_builder::{Rng, A, B};
use super::{against_tract, tempdir};

/// `x[N,2,5,6] → Q/DQ → Pad(pads) → Q/DQ → Conv 3×3 s2 → Q/DQ → ReduceMax over H, W → Q/DQ →
/// MatMul → Q/DQ`, with the Pad's `mode`.
fn padded_net(pads: &[i64], mode: &'static str) -> qforget::onnx::pb::ModelProto {
    padded_net_with(mode, |b| b.i64s(&[8], pads))
}

/// [`padded_net`] with the pads made by `pads`.
fn padded_net_with(
    mode: &'static str,
    pads: impl Fn(&mut B) -> String,
) -> qforget::onnx::pb::ModelProto {
    let mut b = B::new(2, 5, 6);
    let s = 1.0 / 255.0;
    // Zero point 20: the borders must hold byte 20 (real 0), not byte 0.
    let x = b.qdq("x", s, 20, false);
    let p = pads(&mut b);
    let padded = b.node("Pad", &[&x, &p], vec![("mode", A::S(mode))]);
    let padded = b.qdq(&padded, s, 20, false);
    let mut rng = Rng(5);
    let w: Vec<i8> = (0..4 * 2 * 9).map(|_| rng.int(-127, 127) as i8).collect();
    let w = b.dq_weights(&[4, 2, 3, 3], &w, &[0.02; 4], 0);
    let c = b.node(
        "Conv",
        &[&padded, &w],
        vec![
            ("kernel_shape", A::Is(vec![3, 3])),
            ("strides", A::Is(vec![2, 2])),
        ],
    );
    let c = b.qdq(&c, 0.02, 0, true);
    let m = b.node(
        "ReduceMax",
        &[&c],
        vec![("axes", A::Is(vec![2, 3])), ("keepdims", A::I(0))],
    );
    let m = b.qdq(&m, 0.02, 0, true);
    let w2: Vec<i8> = (0..4 * 3).map(|_| rng.int(-127, 127) as i8).collect();
    let w2 = b.dq_weights(&[4, 3], &w2, &[0.05], 1);
    let y = b.node("MatMul", &[&m, &w2], vec![]);
    let y = b.qdq(&y, 0.05, 128, false);
    b.model(&y)
}

#[test]
fn zero_borders_and_a_global_max_match_tract() {
    let dir = tempdir("pads");
    let p = dir.join("padded.onnx");
    // One row on top, two columns on the right: the conv sees a 6×8 image.
    std::fs::write(
        &p,
        padded_net(&[0, 0, 1, 0, 0, 0, 0, 2], "constant").encode_to_vec(),
    )
    .unwrap();
    let g = qforget::onnx::load(&p).unwrap();
    let kinds: Vec<&str> = g.layers.iter().map(|l| l.op.kind()).collect();
    assert!(
        kinds.contains(&"pad") && kinds.contains(&"maxpool"),
        "{kinds:?}"
    );
    let (max_d, spread) = against_tract(&p, [2, 5, 6], 64, 3);
    assert!(spread > 10, "outputs barely vary: {spread} values");
    assert!(max_d <= 1, "max |Δ| {max_d} LSB against tract");
}

/// PyTorch's TorchScript exporter computes `F.pad`'s pads with a Transpose of a constant (and a
/// Reshape): folded at import, the same model as with the pads written out.
#[test]
fn pads_computed_by_a_transpose_of_constants_are_folded() {
    let pads = [0, 0, 1, 0, 0, 0, 0, 2];
    let direct =
        qforget::onnx::import(&padded_net(&pads, "constant"), Path::new("a.onnx")).unwrap();
    let folded = padded_net_with("constant", |b| {
        // [4, 2] whose transpose, read row by row, is `pads`.
        let m = b.i64s(&[4, 2], &[0, 0, 0, 0, 1, 0, 0, 2]);
        let t = b.node("Transpose", &[&m], vec![("perm", A::Is(vec![1, 0]))]);
        let flat = b.i64s(&[1], &[-1]);
        b.node("Reshape", &[&t, &flat], vec![])
    });
    let folded = qforget::onnx::import(&folded, Path::new("b.onnx")).unwrap();
    let mut rng = Rng(9);
    let images: Vec<u8> = (0..8 * 60).map(|_| rng.int(0, 255) as u8).collect();
    let (a, b) = (
        direct.forward(&images, 8).unwrap(),
        folded.forward(&images, 8).unwrap(),
    );
    assert_eq!(a.data, b.data);
    assert_eq!(direct.layers.len(), folded.layers.len());
}

#[test]
fn pads_qforget_cannot_run_are_refused_by_name() {
    let refused = |pads: &[i64], mode: &'static str, why: &str| {
        let err = qforget::onnx::import(&padded_net(pads, mode), Path::new("pad.onnx"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pad.onnx") && err.contains("Pad") && err.contains(why),
            "{err}"
        );
    };
    refused(&[0, 0, 1, 1, 0, 0, 1, 1], "reflect", "mode reflect");
    refused(&[0, 1, 0, 0, 0, 0, 0, 0], "constant", "H and W only");
    refused(&[0, 0, -1, 0, 0, 0, 0, 0], "constant", "a crop");
}

#[test]
fn a_pad_of_the_float_input_says_why_it_is_refused() {
    // `x → Pad(0, 1, 0, 1) → QuantizeLinear`, as onnxruntime's QOperator form places a
    // `nn.ZeroPad2d` at the start of a model: the message must not claim the Pad is unsupported
    // for being a Pad of real 0 on H and W (that one is supported), but for where it sits.
    let mut b = B::new(2, 5, 6);
    let p = b.i64s(&[8], &[0, 0, 0, 0, 0, 0, 1, 1]);
    let padded = b.node("Pad", &["x", &p], vec![("mode", A::S("constant"))]);
    let y = b.qdq(&padded, 1.0 / 255.0, 20, false);
    let err = qforget::onnx::import(&b.model(&y), Path::new("pad.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pad.onnx")
            && err.contains("of the model's float input, before its first QuantizeLinear")
            && err.contains("qforget pads quantized activations only")
            && !err.contains("qforget supports a constant Pad"),
        "{err}"
    );
}
