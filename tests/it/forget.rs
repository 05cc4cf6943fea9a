//! `qforget forget` end to end: reproducibility of the exported weights, the exported model
//! evaluating (in tract, an independent engine) to the accuracy `forget` reported, and OEU's
//! projection on real gradients (class-wise forgetting with the defaults: `safe_forget`).

use qforget::graph::GradPath;
use qforget::train::{project_out, TrainState};

use super::{dataset, model, qforget, s, tempdir};

/// A small random-forgetting request on the default model (seconds, not minutes), measured
/// before and after only when `metrics`.
fn small_request(seed: &str, out: &std::path::Path, metrics: bool) -> serde_json::Value {
    let (mp, dp) = (model("fmnist_cnn_qdq.onnx"), dataset("fashion-mnist"));
    let mut args = vec![
        "forget",
        s(&mp),
        "--dataset",
        s(&dp),
        "--train-limit",
        "3000",
        "--forget-random",
        "0.05",
        "--seed",
        seed,
        "--epochs",
        "1",
        "--no-stop",
        "--export",
        s(out),
        "--json",
    ];
    if !metrics {
        args.push("--no-metrics");
    }
    let o = qforget(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn same_seed_gives_identical_exported_weights() {
    let dir = tempdir("forget-seed");
    let (a, b, c) = (dir.join("a.onnx"), dir.join("b.onnx"), dir.join("c.onnx"));
    let ra = small_request("7", &a, false);
    small_request("7", &b, false);
    small_request("8", &c, false);
    let (ba, bb, bc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert!(
        ra["changed_weights"].as_u64().unwrap() > 0,
        "nothing changed"
    );
    assert_eq!(ba, bb, "same seed, different exports");
    assert_ne!(ba, bc, "a different seed gave the same export");
    // Same size as the input: only initializer contents changed.
    let base = std::fs::read(model("fmnist_cnn_qdq.onnx")).unwrap();
    assert_eq!(ba.len(), base.len());
}

#[cfg(feature = "tract-engine")]
#[test]
fn exported_model_evaluates_to_the_reported_accuracy_in_tract() {
    let dir = tempdir("forget-export");
    let out = dir.join("oeu.onnx");
    let r = small_request("3", &out, true);
    let reported = r["after"]["test_acc"].as_f64().unwrap();
    let before = r["before"]["test_acc"].as_f64().unwrap();
    let o = qforget(&[
        "eval",
        s(&out),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--engine",
        "tract",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tract = v["accuracy"].as_f64().unwrap() * 100.0;
    eprintln!("test accuracy: before {before:.2} %, forget reported {reported:.2} %, tract on the export {tract:.2} %");
    assert!((tract - reported).abs() <= 0.1, "{tract} vs {reported}");
}

// Class-wise forgetting with the defaults is covered, per fixture, by `safe_forget`.

#[test]
fn oeu_projection_is_orthogonal_to_the_retain_gradient() {
    let g = qforget::onnx::load(model("fmnist_cnn_qdq.onnx")).unwrap();
    let d = qforget::data::IdxDataset::load(dataset("fashion-mnist"), qforget::data::Split::Train)
        .unwrap();
    let st = TrainState::new(g, qforget::train::Sgd::new(0.01, 0.9, 0.0), GradPath::Int8);
    let f: Vec<usize> = (0..64).collect();
    let r: Vec<usize> = (64..128).collect();
    let mut gf = st.grad(&d, &f, true, None).unwrap().grad;
    let gr = st.grad(&d, &r, false, None).unwrap().grad;
    let before = qforget::train::dot(&gf, &gr);
    let p = project_out(&mut gf, &gr, 1e-12, false);
    let after = qforget::train::dot(&gf, &gr);
    let norms = (qforget::train::norm_sq(&gf) * qforget::train::norm_sq(&gr)).sqrt();
    eprintln!("⟨g_f,g_r⟩ {before:.3e} → {after:.3e}; ‖g_f⊥‖‖g_r‖ = {norms:.3e}");
    assert!(p.projected && before.abs() > 1e-3 * norms);
    assert!(after.abs() <= 1e-5 * norms, "{after} vs {norms}");
}
