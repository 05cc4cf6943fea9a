//! A model that ends in `LogSoftmax`, as PyTorch's classic MNIST example does
//! (`onnx-models/generate_logsoftmax.py`, references in `expected/logsoftmax/`): onnxruntime
//! quantizes neither form, so the output is float log-probabilities of dequantized logits.
//! qforget ends the graph at those logits (the losses want them; top-1 is the same), keeps the
//! LogSoftmax in the exported file, and refuses a LogSoftmax that anything reads.

use std::path::Path;

use qforget::data::{IdxDataset, Split};

use super::onnx_builder::{A, B};
use super::{class3_request_meets_its_target, dataset, kept_class_accuracy, model, root, tempdir};

const STEMS: [&str; 2] = ["mnist_logsoftmax_qdq", "mnist_logsoftmax_qop"];

#[derive(serde::Deserialize)]
struct Reference {
    n: usize,
    logits_scale: f32,
    logits_zero_point: i32,
    int8_accuracy: f64,
}

#[test]
fn logits_within_one_lsb_and_onnxruntimes_top1() {
    let dir = root().join("onnx-models/expected/logsoftmax");
    let data = IdxDataset::load(dataset("mnist"), Split::Test).unwrap();
    for stem in STEMS {
        let x: Reference =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{stem}.json"))).unwrap())
                .unwrap();
        let g = qforget::onnx::load(model(&format!("{stem}.onnx"))).unwrap();
        let oq = g.acts[g.output].q;
        assert_eq!(
            (oq.scale, oq.model_zero_point()),
            (x.logits_scale, x.logits_zero_point)
        );
        assert!(!g.real_output && g.output_probs.is_none());
        let a: ndarray::Array2<u8> =
            ndarray_npy::read_npy(dir.join(format!("{stem}.logits.npy"))).unwrap();
        let classes = a.ncols();
        let want: Vec<i32> = a.iter().map(|&v| v as i32).collect();
        let pred: Vec<usize> = std::fs::read_to_string(dir.join(format!("{stem}.predictions.txt")))
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!((data.n, pred.len()), (x.n, x.n));
        let (mut max_d, mut top1_diff, mut correct) = (0, 0, 0);
        qforget::eval::run(&g, &data, None, |idx, logits| {
            for (r, &i) in idx.iter().enumerate() {
                let got = logits.model_row(r);
                for (a, b) in got.iter().zip(&want[i * classes..(i + 1) * classes]) {
                    max_d = max_d.max((a - b).abs());
                }
                let top = logits.top1(r);
                top1_diff += (top != pred[i]) as usize;
                correct += (top == data.labels[i] as usize) as usize;
            }
        })
        .unwrap();
        let acc = correct as f64 / data.n as f64;
        eprintln!("{stem}: logits max |Δ| {max_d} LSB, {top1_diff} top-1 differences, accuracy {acc:.4} vs {:.4}", x.int8_accuracy);
        assert!(max_d <= 1);
        assert_eq!(top1_diff, 0);
        assert!((acc - x.int8_accuracy).abs() < 1e-9);
    }
}

/// The default class-wise request meets its target within the retain budget, and the export
/// still ends in the LogSoftmax and scores what the request reported.
#[test]
fn a_class_wise_request_exports_a_model_with_its_log_softmax() {
    let dir = tempdir("logsoftmax-forget");
    let out = dir.join("forgot.onnx");
    let r = class3_request_meets_its_target(&model("mnist_logsoftmax_qdq.onnx"), "mnist", &out);
    let m = qforget::onnx::read_model(&out).unwrap();
    let last = m.graph.as_ref().unwrap().node.last().unwrap();
    assert_eq!(last.op_type, "LogSoftmax");
    let ta = kept_class_accuracy(&out, "mnist", 3);
    assert!(
        (ta - r["after"]["test_acc"].as_f64().unwrap()).abs() < 1e-9,
        "{ta}"
    );
}

#[test]
fn a_log_softmax_read_by_another_node_is_refused_by_name() {
    // `x → Q/DQ → Flatten → Gemm(float) → LogSoftmax`, then an Exp of it when `read`.
    let build = |read: bool| {
        let mut b = B::new(1, 2, 2);
        let x = b.qdq("x", 1.0 / 255.0, 0, false);
        let f = b.node("Flatten", &[&x], vec![]);
        let w = b.f32s(&[3, 4], &[0.1; 12]);
        let g = b.node("Gemm", &[&f, &w], vec![("transB", A::I(1))]);
        let l = b.node("LogSoftmax", &[&g], vec![("axis", A::I(1))]);
        let out = if read {
            b.node("Exp", &[&l], vec![])
        } else {
            l
        };
        qforget::onnx::import(&b.model(&out), Path::new("lsm.onnx"))
    };
    let err = build(true).unwrap_err().to_string();
    assert!(
        err.contains("lsm.onnx") && err.contains("Exp") && err.contains("LogSoftmax only"),
        "{err}"
    );
    // As the last node it imports: the graph ends at the Gemm's float logits.
    assert!(build(false).unwrap().real_output);
}
