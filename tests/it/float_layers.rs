//! Float layers: Gemm/MatMul layers whose weights and bias the quantizer left in float32
//! (onnxruntime `quantize_static` with `nodes_to_exclude=[<the last Gemm>]`, the committed
//! `*_fcfloat_qdq` fixtures from `onnx-models/generate_other_quantizers.py`, and built graphs
//! where a float layer feeds a QuantizeLinear through a Relu).
//!
//! Expected values: onnxruntime 1.32.0 (ORT_DISABLE_ALL) for the fixtures — the head's logits on
//! onnxruntime's own head input (`expected/<stem>.head_input.npy`) must be the reference's bit
//! for bit; the whole-model comparison (top-1 on every test image, logits within 1e-4 where the
//! head input agrees) runs in `float_heads.rs`, which picks these fixtures up too. Built graphs:
//! the ONNX definition computed here in f64.

use std::path::Path;

use qforget::data::{IdxDataset, Split};
use qforget::graph::{Op, ParamKind, QBatch, Shadow};

use super::onnx_builder::{Rng, A, B};
use super::{dataset, model, root};

/// The committed fixtures with a float classifier, as (file stem, dataset).
const FIXTURES: [(&str, &str); 2] = [
    ("mnist_res_fcfloat_qdq", "mnist"),
    ("fmnist_cnn_fcfloat_qdq", "fashion-mnist"),
];

fn expected_logits(stem: &str) -> ndarray::Array2<f32> {
    let p = root()
        .join("onnx-models/expected")
        .join(format!("{stem}.logits.npy"));
    ndarray_npy::read_npy(p).unwrap()
}

#[test]
fn fixtures_import_their_classifier_as_a_trainable_float_layer() {
    for (stem, _) in FIXTURES {
        let g = qforget::onnx::load(model(&format!("{stem}.onnx"))).unwrap();
        assert!(g.real_output, "{stem}");
        let last = g.layers.last().unwrap();
        assert!(
            matches!(last.op, Op::Dense(_)),
            "{stem}: {}",
            last.op.kind()
        );
        let sh = Shadow::new(&g);
        let kinds: Vec<ParamKind> = sh
            .segments
            .iter()
            .filter(|s| s.layer == g.layers.len() - 1)
            .map(|s| s.kind)
            .collect();
        assert_eq!(
            kinds,
            [ParamKind::FloatWeight, ParamKind::FloatBias],
            "{stem}"
        );
        // Gradients of every parameter, the float layer's included, against finite differences
        // of the float twin (random images: real digits tie in max windows, see grads.rs).
        let n = 3;
        let mut r = Rng(0x5eed ^ stem.len() as u64);
        let images: Vec<u8> = (0..n * 784).map(|_| r.int(0, 255) as u8).collect();
        super::grads::fd_check(stem, &g, &images, n);
    }
}

#[test]
fn the_float_layer_gives_onnxruntimes_logits_bit_for_bit_on_its_input() {
    for (stem, _) in FIXTURES {
        let g = qforget::onnx::load(model(&format!("{stem}.onnx"))).unwrap();
        let last = g.layers.last().unwrap();
        let Op::Dense(d) = &last.op else {
            panic!("{stem}: no float layer")
        };
        let q = g.acts[last.inputs[0]].q;
        // onnxruntime's head input, model-domain integers → our storage bytes.
        let p = root()
            .join("onnx-models/expected")
            .join(format!("{stem}.head_input.npy"));
        let ints: ndarray::Array2<u8> = ndarray_npy::read_npy(p).unwrap();
        let store: Vec<u8> = ints
            .iter()
            .map(|&v| (0..=255u8).find(|&b| q.model_value(b) == v as i32).unwrap())
            .collect();
        let rows = ints.nrows();
        let x = QBatch {
            n: rows,
            shape: g.acts[last.inputs[0]].shape,
            data: store.into(),
        };
        let got = d.real_outputs(&g.acts[last.inputs[0]], &x);
        let want = expected_logits(stem);
        let want = want.as_slice().unwrap();
        let differ = got
            .iter()
            .zip(&want[..got.len()])
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        eprintln!(
            "{stem}: float layer on onnxruntime's input, {rows} rows: {differ} logits differ"
        );
        assert_eq!(differ, 0, "{stem}");
    }
}

#[test]
fn a_float_layer_feeding_a_quantize_linear_follows_onnx() {
    // x [N,1,3,4] → Q/DQ → Flatten → Gemm(float W [5,12], b [5], transB) → Relu → Q/DQ → Flatten.
    let mut b = B::new(1, 3, 4);
    let (s_in, s_out, z_out) = (1.0 / 255.0, 0.02, 3);
    let x = b.qdq("x", s_in, 0, false);
    let f = b.node("Flatten", &[&x], vec![]);
    let mut r = Rng(0xf10a7);
    let w: Vec<f32> = (0..60).map(|_| r.float(-0.5, 0.5)).collect();
    let bias: Vec<f32> = (0..5).map(|_| r.float(-0.3, 0.3)).collect();
    let wn = b.f32s(&[5, 12], &w);
    let bn = b.f32s(&[5], &bias);
    let gemm = b.node("Gemm", &[&f, &wn, &bn], vec![("transB", A::I(1))]);
    let relu = b.node("Relu", &[&gemm], vec![]);
    let y = b.qdq(&relu, s_out, z_out, false);
    let out = b.node("Flatten", &[&y], vec![]);
    let m = b.model(&out);
    let g = qforget::onnx::import(&m, Path::new("float_gemm_relu.onnx")).unwrap();
    assert!(!g.real_output);
    assert!(g.layers.iter().any(|l| l.op.kind() == "dense"));
    let n = 6;
    let images: Vec<u8> = (0..n * 12).map(|_| r.int(0, 255) as u8).collect();
    let got = g.forward(&images, n).unwrap();
    let mut inside = 0;
    for i in 0..n {
        let row = got.model_row(i);
        for o in 0..5 {
            let mut v = bias[o] as f64;
            for j in 0..12 {
                let px = (images[i * 12 + j] as f64 / 255.0 / s_in as f64).round();
                v += w[o * 12 + j] as f64 * px * s_in as f64;
            }
            let want = ((v.max(0.0) / s_out as f64).round_ties_even() + z_out as f64)
                .clamp(0.0, 255.0) as i32;
            // f32 sums against the definition in f64: a rounding boundary may fall between.
            assert!((row[o] - want).abs() <= 1, "image {i} output {o}");
            inside += (row[o] > z_out) as usize;
        }
    }
    assert!(inside > 0, "every output clamped by the Relu");
    // The gradient of its float weights and bias (and through it) against finite differences.
    super::grads::fd_check("float_gemm_relu", &g, &images, n);
}

#[test]
fn float_weights_export_as_float32_and_unchanged_ones_bit_for_bit() {
    use qforget::onnx::patch::{self, TensorValues};
    for (stem, _) in FIXTURES {
        let path = model(&format!("{stem}.onnx"));
        let base = std::fs::read(&path).unwrap();
        let mut g = qforget::onnx::load(&path).unwrap();
        let mut sh = Shadow::new(&g);
        sh.apply(&mut g);
        let same = patch::patch_initializers(&base, &qforget::request::updates(&sh, &g)).unwrap();
        assert!(same == base, "{stem}: an untrained export changed the file");
        let seg = sh
            .segments
            .iter()
            .find(|s| s.kind == ParamKind::FloatWeight)
            .unwrap()
            .clone();
        let k = seg.range.start + 1; // weight [0][1] in [out][in] order
        sh.theta[k] += 0.25;
        sh.apply(&mut g);
        let out = patch::patch_initializers(&base, &qforget::request::updates(&sh, &g)).unwrap();
        let (TensorValues::F32(old), TensorValues::F32(new)) = (
            patch::read_initializer(&base, &seg.initializer).unwrap(),
            patch::read_initializer(&out, &seg.initializer).unwrap(),
        ) else {
            panic!("{stem}: '{}' is not float32 in both files", seg.initializer)
        };
        let moved: Vec<usize> = (0..old.len()).filter(|&i| old[i] != new[i]).collect();
        // Gemm transB = 1 keeps [out][in]: the same position.
        assert_eq!(moved, [1], "{stem}");
        assert_eq!(new[1], old[1] + 0.25, "{stem}");
        let g2 = qforget::onnx::from_bytes(&out, &path).unwrap();
        let images: Vec<u8> = (0..2 * 784).map(|i| (i * 37 % 251) as u8).collect();
        let (a, b) = (
            g.forward(&images, 2).unwrap(),
            g2.forward(&images, 2).unwrap(),
        );
        assert_eq!(a.real, b.real, "{stem}: the export computes otherwise");
    }
}

/// A class-wise OEU request through the CLI on each fixture (seconds): the defaults reach the
/// target within the retain budget (every change kept); the float classifier trains and stays float32; the
/// exported model re-imports to the reported accuracies; `apply` rebuilds it byte for byte.
#[test]
fn forget_a_class_on_a_float_layer_model() {
    for (stem, ds) in FIXTURES {
        let dir = super::tempdir(&format!("float-layer-{stem}"));
        let (out, delta) = (dir.join("out.onnx"), dir.join("req.delta"));
        let base = model(&format!("{stem}.onnx"));
        let o = super::qforget(&[
            "forget",
            super::s(&base),
            "--dataset",
            super::s(&dataset(ds)),
            "--forget-class",
            "3",
            "--export",
            super::s(&out),
            "--out",
            super::s(&delta),
            "--journal",
            super::s(&dir.join("journal.jsonl")),
            // Every change kept: the sparser delta may give back all of the float layer's
            // changes when integer ones carry the forgetting, and this test is about the float
            // layer training.
            "--delta-goal",
            "0",
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let pct = |w: &str, k: &str| r[w][k].as_f64().unwrap();
        let (fa, ra0, ra1) = (
            pct("after", "forget_acc"),
            pct("before", "retain_acc"),
            pct("after", "retain_acc"),
        );
        eprintln!("{stem}: FA {fa:.2} %, RA {ra0:.2} % → {ra1:.2} %");
        assert!(r["target_met"].as_bool().unwrap(), "{r}");
        assert!(fa <= 1.0 && ra1 >= ra0 - 2.0, "FA {fa}, RA {ra0} → {ra1}");
        // The classifier's weights moved and stayed float32.
        use qforget::onnx::patch::{read_initializer, TensorValues};
        let g0 = qforget::onnx::load(&base).unwrap();
        let name = &g0.layers.last().unwrap().binding.as_ref().unwrap().weight;
        let (b, e) = (std::fs::read(&base).unwrap(), std::fs::read(&out).unwrap());
        let (TensorValues::F32(x), TensorValues::F32(y)) = (
            read_initializer(&b, name).unwrap(),
            read_initializer(&e, name).unwrap(),
        ) else {
            panic!("{name} is not float32 in both files")
        };
        assert!(
            x.iter().zip(&y).any(|(p, q)| p != q),
            "{stem}: {name} did not train"
        );
        // Re-imported, the export scores what the request reported.
        let g = qforget::onnx::load(&out).unwrap();
        let test = IdxDataset::load(dataset(ds), Split::Test).unwrap();
        let ev = qforget::eval::accuracy(&g, &test).unwrap();
        let (mut right, mut n) = (0, 0);
        for (p, &y) in ev.predictions.iter().zip(&test.labels) {
            if y != 3 {
                (right, n) = (right + (*p == y as usize) as usize, n + 1);
            }
        }
        let acc = 100.0 * right as f64 / n as f64;
        assert!(
            (acc - pct("after", "test_acc")).abs() < 1e-9,
            "{stem}: {acc}"
        );
        // The delta rebuilds the export exactly.
        let rebuilt = dir.join("rebuilt.onnx");
        let a = super::qforget(&[
            "apply",
            super::s(&base),
            super::s(&delta),
            "--out",
            super::s(&rebuilt),
        ]);
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        assert!(
            std::fs::read(&rebuilt).unwrap() == e,
            "{stem}: apply differs"
        );
    }
}

// The graphs this file once showed refused (a float Conv, two float layers in a row, a float
// layer on the model's float input) import since float segments; `float_runs.rs` checks them
// against the ONNX definition.
