//! Reshape and Transpose that move values (src/onnx/reshape.rs): a chain of them on a built
//! model against tract, the ShuffleNet-style fixture (`onnx-models/generate_shuffle.py`: PReLU, a
//! channel shuffle, `x.view(N, C, -1).mean(-1)`; its outputs against onnxruntime are checked
//! with every fixture) through a class-wise request and its export, and a Transpose that moves
//! the batch axis refused by name.

use std::path::Path;

use prost::Message;

use super::onnx_builder::{Rng, A, B};
use super::{against_tract, class3_request_meets_its_target, kept_class_accuracy, model, tempdir};

/// `x[N,2,3,4] → Q/DQ → Transpose(H, W) → Reshape [N, 2, 12] → Transpose → Reshape [N, 4, 3, 2]
/// → Transpose (rank 4) → Flatten → MatMul → Q/DQ`, or with `perm` for the first Transpose.
fn reorder_chain(perm: &[i64]) -> qforget::onnx::pb::ModelProto {
    let mut b = B::new(2, 3, 4);
    let s = 1.0 / 255.0;
    let x = b.qdq("x", s, 0, false);
    let t = b.node("Transpose", &[&x], vec![("perm", A::Is(perm.to_vec()))]);
    let t = b.qdq(&t, s, 0, false);
    let shape = b.i64s(&[3], &[-1, 2, 12]);
    let r = b.node("Reshape", &[&t, &shape], vec![]);
    let r = b.qdq(&r, s, 0, false);
    let t = b.node("Transpose", &[&r], vec![("perm", A::Is(vec![0, 2, 1]))]);
    let t = b.qdq(&t, s, 0, false);
    let shape = b.i64s(&[4], &[-1, 4, 3, 2]);
    let r = b.node("Reshape", &[&t, &shape], vec![]);
    let r = b.qdq(&r, s, 0, false);
    let t = b.node("Transpose", &[&r], vec![("perm", A::Is(vec![0, 3, 1, 2]))]);
    let t = b.qdq(&t, s, 0, false);
    let f = b.node("Flatten", &[&t], vec![]);
    let mut rng = Rng(7);
    let w: Vec<i8> = (0..24 * 5).map(|_| rng.int(-127, 127) as i8).collect();
    let w = b.dq_weights(&[24, 5], &w, &[0.01], 1);
    let y = b.node("MatMul", &[&f, &w], vec![]);
    let y = b.qdq(&y, 0.05, 128, false);
    b.model(&y)
}

#[test]
fn a_chain_of_reorders_matches_tract() {
    let dir = tempdir("reorders");
    let p = dir.join("chain.onnx");
    std::fs::write(&p, reorder_chain(&[0, 1, 3, 2]).encode_to_vec()).unwrap();
    let g = qforget::onnx::load(&p).unwrap();
    let permutes = g.layers.iter().filter(|l| l.op.kind() == "permute").count();
    assert_eq!(permutes, 5, "one Permute layer per Reshape/Transpose");
    let (max_d, spread) = against_tract(&p, [2, 3, 4], 64, 11);
    // The weights mix all 24 positions, so a misplaced value changes the outputs; they vary.
    assert!(spread > 20, "outputs barely vary: {spread} values");
    assert!(max_d <= 1, "max |Δ| {max_d} LSB against tract");
}

#[test]
fn a_transpose_of_the_batch_axis_is_refused_by_name() {
    let err = qforget::onnx::import(&reorder_chain(&[1, 0, 2, 3]), Path::new("batchswap.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchswap.onnx")
            && err.contains("Transpose")
            && err.contains("moves the batch axis"),
        "{err}"
    );
}

/// The default class-wise request on the ShuffleNet-style fixture, both formats: the target
/// within the retain budget, and the export (Permute layers have nothing to write) scoring what
/// the request reported.
#[test]
fn the_shuffle_fixture_forgets_a_class_and_exports() {
    let dir = tempdir("shuffle-forget");
    for stem in ["fmnist_shuffle_qdq", "fmnist_shuffle_qop"] {
        let out = dir.join(format!("{stem}.onnx"));
        let r =
            class3_request_meets_its_target(&model(&format!("{stem}.onnx")), "fashion-mnist", &out);
        let ta = kept_class_accuracy(&out, "fashion-mnist", 3);
        let reported = r["after"]["test_acc"].as_f64().unwrap();
        assert!((ta - reported).abs() < 1e-9, "{stem}: {ta} vs {reported}");
    }
}
