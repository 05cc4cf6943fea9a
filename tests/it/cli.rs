//! The command line end to end on the bundled data and the default model.

use super::{dataset, fixtures, model, qforget, s, tempdir};

const DEFAULT_MODEL: &str = "fmnist_cnn_qdq.onnx";

#[test]
fn eval_json_reports_the_reference_accuracy_and_writes_predictions() {
    let x = fixtures()
        .into_iter()
        .find(|(_, x)| x.model == DEFAULT_MODEL)
        .expect("default model has expectations")
        .1;
    let dir = tempdir("cli-eval");
    let preds = dir.join("pred.txt");
    let out = qforget(&[
        "eval",
        s(&model(DEFAULT_MODEL)),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--json",
        "--predictions",
        s(&preds),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 10000);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(
        (acc - x.int8_accuracy).abs() < 1e-9,
        "{acc} vs {}",
        x.int8_accuracy
    );
    // Predictions: one label per line, in dataset order, equal to the reference's.
    let got = std::fs::read_to_string(&preds).unwrap();
    let want = std::fs::read_to_string(
        super::root()
            .join("onnx-models/expected")
            .join(DEFAULT_MODEL.replace(".onnx", ".predictions.txt")),
    )
    .unwrap();
    assert_eq!(got.lines().count(), 10000);
    assert_eq!(got, want);
}

#[test]
fn eval_train_split_runs_on_the_bundled_subset() {
    let out = qforget(&[
        "eval",
        s(&model(DEFAULT_MODEL)),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--split",
        "train",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["n"], 10000);
    // A model trained on these images fits them at least as well as unseen ones.
    assert!(v["accuracy"].as_f64().unwrap() > 0.85, "{v}");
}

#[test]
fn inspect_json_describes_layers_and_quantization() {
    let out = qforget(&["inspect", s(&model(DEFAULT_MODEL)), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["input_shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(v["classes"], 10);
    let ops: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "conv").count(), 2, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "linear").count(), 2, "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| **o == "maxpool").count(),
        2,
        "{ops:?}"
    );
    let conv = &v["layers"][0];
    assert_eq!(conv["weights"]["granularity"], "per-channel");
    assert_eq!(conv["weights"]["bits"], 8);
    assert_eq!(conv["output_q"]["dtype"], "uint8");
    // conv 1→16 3×3, conv 16→32 3×3, linear 1568→128, linear 128→10, with biases.
    let params = 16 * 9 + 16 + 32 * 16 * 9 + 32 + 1568 * 128 + 128 + 128 * 10 + 10;
    assert_eq!(v["parameters"], params);

    let text = qforget(&["inspect", s(&model(DEFAULT_MODEL))]);
    assert!(text.status.success());
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(t.contains("per-channel") && t.contains("parameters"), "{t}");
}

#[test]
fn signed_activations_are_reported_as_int8() {
    let out = qforget(&["inspect", s(&model("mnist_res_s8.onnx")), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["input_q"]["dtype"], "int8");
    let ops: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"add") && ops.contains(&"global_avgpool"),
        "{ops:?}"
    );
    assert_eq!(v["layers"][0]["weights"]["granularity"], "per-tensor");
}

/// `forget --profile`: every training phase appears with its GEMMs counted where they ran, and
/// the phases (exclusive wall times) cover the method's own time.
#[test]
fn forget_profile_accounts_for_the_run() {
    let o = qforget(&[
        "forget",
        s(&model("mnist_mlp_matmul_qdq.onnx")),
        "--dataset",
        s(&dataset("mnist")),
        "--forget-class",
        "3",
        "--profile",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("profile (kernel "), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let phases = r["profile"].as_array().expect("profile in the report");
    let get = |name: &str| {
        phases
            .iter()
            .find(|p| p["phase"] == name)
            .unwrap_or_else(|| panic!("no phase {name} in {phases:?}"))
    };
    for name in [
        "forward",
        "loss",
        "backward",
        "optimizer",
        "requantize",
        "metrics",
    ] {
        assert!(get(name)["seconds"].as_f64().unwrap() > 0.0, "{name}");
    }
    // The MLP's forward and backward are GEMMs; the loss and the optimizer run none.
    assert!(get("forward")["gemm_calls"].as_u64().unwrap() > 0);
    assert!(get("backward")["gemm_calls"].as_u64().unwrap() > 0);
    assert_eq!(get("loss")["gemm_calls"], 0);
    assert_eq!(get("optimizer")["gemm_calls"], 0);
    // The method's time is spent inside phases (other, forward, …): their sum covers it.
    let total: f64 = phases.iter().map(|p| p["seconds"].as_f64().unwrap()).sum();
    let method = r["seconds"].as_f64().unwrap();
    assert!(
        total >= method * 0.99,
        "phases {total} s < method {method} s"
    );
}

/// A reader that goes away (`qforget inspect m.onnx | head -0`) ends the command quietly: no
/// panic message, no error line. The old binary panicked in `println!` ("failed printing to
/// stdout: Broken pipe").
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_qforget"))
        .args(["inspect", s(&model(DEFAULT_MODEL))])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qforget");
    // Close the read end before the model is even read: every write hits a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "stderr: {err}");
}
