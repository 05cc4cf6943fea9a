//! A model whose output is quantized probabilities (`… → Softmax → QuantizeLinear →
//! DequantizeLinear`, as onnxruntime's QDQ quantizer leaves a classifier exported with its
//! Softmax), exported with a fixed batch of 1 and a `view` flatten, and its QOperator twin
//! ending in `QLinearSoftmax` (`onnx-models/generate_softmax.py`, references in
//! `expected/softmax/`): the logits within
//! 1 LSB of onnxruntime's, top-1 taken on the quantized probabilities identical on the full
//! test set, and a default forget request that exports a model onnxruntime's top-1 rule agrees
//! with.

use qforget::data::{IdxDataset, Split};

use super::{dataset, model, qforget, root, tempdir};

const STEM: &str = "mnist_softmax_b1_qdq";
const STEMS: [&str; 2] = [STEM, "mnist_softmax_b1_qop"];

#[derive(serde::Deserialize)]
struct Reference {
    n: usize,
    logits_scale: f32,
    logits_zero_point: i32,
    probs_scale: f32,
    probs_zero_point: i32,
    int8_accuracy: f64,
}

fn npy_u8(stem: &str, name: &str) -> (Vec<u8>, usize) {
    let p = root()
        .join("onnx-models/expected/softmax")
        .join(format!("{stem}.{name}.npy"));
    let a: ndarray::Array2<u8> = ndarray_npy::read_npy(&p).unwrap();
    let cols = a.ncols();
    (a.iter().copied().collect(), cols)
}

#[test]
fn quantized_probabilities_give_onnxruntimes_top1() {
    for stem in STEMS {
        check_stem(stem);
    }
}

fn check_stem(stem: &str) {
    let dir = root().join("onnx-models/expected/softmax");
    let x: Reference =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{stem}.json"))).unwrap()).unwrap();
    let g = qforget::onnx::load(model(&format!("{stem}.onnx"))).unwrap();
    let probs_q = g
        .output_probs
        .expect("the Softmax's quantization is recorded");
    assert_eq!(probs_q.scale, x.probs_scale);
    assert_eq!(probs_q.model_zero_point(), x.probs_zero_point);
    let oq = g.acts[g.output].q;
    assert_eq!(
        (oq.scale, oq.model_zero_point()),
        (x.logits_scale, x.logits_zero_point)
    );

    let data = IdxDataset::load(dataset("mnist"), Split::Test).unwrap();
    assert_eq!(data.n, x.n);
    let (want_logits, classes) = npy_u8(stem, "logits");
    let (want_probs, _) = npy_u8(stem, "probs");
    let (mut max_logit, mut max_prob, mut top1_diff, mut correct) = (0, 0, 0, 0);
    qforget::eval::run(&g, &data, None, |idx, logits| {
        for (r, &i) in idx.iter().enumerate() {
            let got = logits.model_row(r);
            let exp = &want_logits[i * classes..(i + 1) * classes];
            for (a, &b) in got.iter().zip(exp) {
                max_logit = max_logit.max((a - b as i32).abs());
            }
            // The probabilities qforget's top-1 rule computes, against onnxruntime's bytes.
            let real = logits.real_row(r);
            let m = real.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = real.iter().map(|&v| (v - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            let exp_p = &want_probs[i * classes..(i + 1) * classes];
            for (v, &b) in e.iter().zip(exp_p) {
                let q = probs_q.quantize(v / sum) as i32;
                max_prob = max_prob.max((q - b as i32).abs());
            }
            let top = logits.top1(r);
            top1_diff += (top != qforget::eval::argmax(exp_p)) as usize;
            correct += (top == data.labels[i] as usize) as usize;
        }
    })
    .unwrap();
    let acc = correct as f64 / data.n as f64;
    eprintln!(
        "{stem}: logits max |Δ| {max_logit} LSB, probabilities max |Δ| {max_prob} LSB, \
         {top1_diff} top-1 differences, accuracy {acc:.4} vs {:.4}",
        x.int8_accuracy
    );
    assert!(max_logit <= 1 && max_prob <= 1);
    assert_eq!(top1_diff, 0);
    assert!((acc - x.int8_accuracy).abs() < 1e-9);
}

/// Top-1 on quantized probabilities: two classes whose probabilities round to the same level
/// go to the first, even when the second has the larger logit.
#[test]
fn a_tie_in_the_probabilities_goes_to_the_first_class() {
    let q = qforget::graph::QParams {
        scale: 1.0 / 255.0,
        zero_point: 0,
        signed: false,
    };
    // softmax ≈ [0.44434, 0.44456, 0.11110]: the first two are both level 113 of 255.
    let logits = [0.0f32, 0.0005, 0.25f32.ln()];
    assert_eq!(qforget::eval::argmax(&logits), 1);
    assert_eq!(qforget::graph::top1_of_probs(&logits, &q), 0);
    // Clearly apart: the larger one wins.
    assert_eq!(
        qforget::graph::top1_of_probs(&[0.0, 0.5, 0.25f32.ln()], &q),
        1
    );
}

#[test]
fn a_forget_request_exports_a_model_with_its_softmax() {
    let dir = tempdir("softmax-forget");
    let out = dir.join("forgot.onnx");
    let base = model(&format!("{STEM}.onnx"));
    let o = qforget(&[
        "forget",
        base.to_str().unwrap(),
        "--dataset",
        dataset("mnist").to_str().unwrap(),
        "--forget-class",
        "7",
        "--export",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["target_met"], true, "{report}");
    // The exported file still ends in its Softmax and quantized probabilities, and qforget's
    // own evaluation of it follows the same top-1 rule.
    let g = qforget::onnx::load(&out).unwrap();
    assert!(g.output_probs.is_some());
    let data = IdxDataset::load(dataset("mnist"), Split::Test).unwrap();
    let sevens: Vec<usize> = (0..data.n).filter(|&i| data.labels[i] == 7).collect();
    let mut hit = 0;
    qforget::eval::run(&g, &data, Some(&sevens), |idx, logits| {
        hit += (0..idx.len()).filter(|&r| logits.top1(r) == 7).count();
    })
    .unwrap();
    let fa = 100.0 * hit as f64 / sevens.len() as f64;
    assert!(fa <= 5.0, "test accuracy on the forgotten class {fa:.2} %");
    std::fs::remove_dir_all(&dir).unwrap();
}
