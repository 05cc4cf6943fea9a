//! Integration tests: the committed fixture models against their reference outputs, the CLI
//! end to end, and malformed inputs. One test binary, shared helpers.

mod activations;
mod asym_weights;
mod bad_input;
mod channel_acts;
mod cli;
mod crash;
mod data_formats;
mod delta_cli;
mod external_data;
mod fixtures;
mod float_heads;
mod float_layers;
mod float_ops;
mod float_runs;
mod float_segments;
mod forget;
mod grads;
mod header;
mod kernel_tiers;
mod layer_refs;
mod layers;
mod log_softmax;
mod malformed;
mod onnx_builder;
mod pads;
mod reorders;
mod retrain;
mod safe_forget;
#[cfg(unix)]
mod serve;
mod shape_chains;
mod small_deltas;
mod smooth_quant;
mod softmax_output;
mod sub_div;
#[cfg(feature = "tract-engine")]
mod torch_quantized;
mod tract_crosscheck;
mod w4;
mod weight_pairs;
mod wide_acts;

use std::path::{Path, PathBuf};

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed fixture model.
pub fn model(name: &str) -> PathBuf {
    root().join("onnx-models").join(name)
}

/// A bundled dataset directory (`fashion-mnist` or `mnist`).
pub fn dataset(name: &str) -> PathBuf {
    root().join("data").join(name)
}

/// Expected outputs of one fixture, as written by `onnx-models/generate.py`.
#[derive(Debug, serde::Deserialize)]
pub struct Expected {
    pub model: String,
    pub dataset: String,
    pub n: usize,
    pub reference: String,
    pub output_dtype: String,
    pub output_scale: f32,
    pub output_zero_point: i32,
    pub int8_accuracy: f64,
    pub float_accuracy: f64,
}

/// Every fixture with a quantized output that has expected outputs, as (model stem,
/// expectations).
pub fn fixtures() -> Vec<(String, Expected)> {
    let mut v = fixtures_in(&root().join("onnx-models").join("expected"));
    v.retain(|(_, x)| x.output_dtype != "float32");
    assert!(
        v.len() >= 3,
        "expected at least 3 quantized-output fixtures"
    );
    v
}

/// Every fixture with a float output (a float head), as (model stem, expectations).
pub fn float_fixtures() -> Vec<(String, Expected)> {
    let mut v = fixtures_in(&root().join("onnx-models").join("expected"));
    v.retain(|(_, x)| x.output_dtype == "float32");
    v
}

/// Every fixture with expected outputs in `dir` (`onnx-models/expected`, or its `w4/` folder
/// of 4-bit fixtures that tract cannot load).
pub fn fixtures_in(dir: &Path) -> Vec<(String, Expected)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("the expected-outputs folder exists") {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let has_logits = dir.join(format!("{stem}.logits.npy")).is_file();
        if p.extension().and_then(|s| s.to_str()) == Some("json") && has_logits {
            let x: Expected = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((stem, x));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 3,
        "expected at least 3 fixtures in {}",
        dir.display()
    );
    out
}

/// The reference's quantized logits as i32 in the model's integer domain, `n × classes`.
pub fn expected_logits(stem: &str, x: &Expected) -> (Vec<i32>, usize) {
    expected_logits_in(&root().join("onnx-models").join("expected"), stem, x)
}

/// [`expected_logits`] from the folder `dir`.
pub fn expected_logits_in(dir: &Path, stem: &str, x: &Expected) -> (Vec<i32>, usize) {
    let p = dir.join(format!("{stem}.logits.npy"));
    let flat: (Vec<i32>, usize) = match x.output_dtype.as_str() {
        "uint8" => {
            let a: ndarray::Array2<u8> = ndarray_npy::read_npy(&p).unwrap();
            (a.iter().map(|&v| v as i32).collect(), a.ncols())
        }
        "int8" => {
            let a: ndarray::Array2<i8> = ndarray_npy::read_npy(&p).unwrap();
            (a.iter().map(|&v| v as i32).collect(), a.ncols())
        }
        d => panic!("unknown dtype {d}"),
    };
    flat
}

/// A fresh temporary directory under the target dir.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = root()
        .join("target")
        .join("test-tmp")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the qforget binary.
pub fn qforget(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qforget"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run qforget")
}

/// Run the default class-wise request `forget MODEL --dataset DATA --forget-class 3 --export
/// OUT --json`, print its figures, and check what every class-wise request must reach: its
/// target met, forget accuracy ≤ 1 %, retain accuracy at most 2 pp below the start. Returns the
/// JSON report.
pub fn class3_request_meets_its_target(model: &Path, data: &str, out: &Path) -> serde_json::Value {
    class3_request_with(model, data, out, &[])
}

/// [`class3_request_meets_its_target`] with `extra` arguments for `forget` (e.g. `--out` for
/// the delta).
pub fn class3_request_with(
    model: &Path,
    data: &str,
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let data = dataset(data);
    let mut args = vec![
        "forget",
        s(model),
        "--dataset",
        s(&data),
        "--forget-class",
        "3",
        "--export",
        s(out),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = qforget(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (b, a) = (&r["before"], &r["after"]);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    eprintln!(
        "{}: FA {:.2} → {:.2} %, RA {:.2} → {:.2} %, TA {:.2} → {:.2} %, {} steps, {} weights changed",
        model.display(),
        f(b, "forget_acc"),
        f(a, "forget_acc"),
        f(b, "retain_acc"),
        f(a, "retain_acc"),
        f(b, "test_acc"),
        f(a, "test_acc"),
        r["steps"],
        r["changed_weights"]
    );
    assert_eq!(r["target_met"], true);
    assert!(f(a, "forget_acc") <= 1.0);
    assert!(f(b, "retain_acc") - f(a, "retain_acc") <= 2.0);
    r
}

/// Accuracy (%) of `model`, by qforget's evaluation, on the test images of `data` whose
/// label is not `class` (what a class-wise report calls test accuracy).
pub fn kept_class_accuracy(model: &Path, data: &str, class: u8) -> f64 {
    let g = qforget::onnx::load(model).unwrap();
    let test = qforget::data::IdxDataset::load(dataset(data), qforget::data::Split::Test).unwrap();
    let (mut kept, mut right) = (0, 0);
    qforget::eval::run(&g, &test, None, |idx, logits| {
        for (row, &i) in idx.iter().enumerate() {
            if test.labels[i] != class {
                kept += 1;
                right += (logits.top1(row) == test.labels[i] as usize) as usize;
            }
        }
    })
    .unwrap();
    100.0 * right as f64 / kept as f64
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The built model at `path` on `n` random images of `chw` (seeded), against tract: the largest
/// difference in LSB of our int8 outputs from tract's requantized ones, and how many distinct
/// output values tract gave (so a test can tell that the outputs vary at all).
pub fn against_tract(path: &Path, chw: [usize; 3], n: usize, seed: u64) -> (i32, usize) {
    let g = qforget::onnx::load(path).unwrap();
    let mut rng = onnx_builder::Rng(seed);
    let len = chw.iter().product::<usize>();
    let images: Vec<u8> = (0..n * len).map(|_| rng.int(0, 255) as u8).collect();
    let ours = g.forward(&images, n).unwrap();
    let theirs = qforget::eval::tract_ref::TractModel::load(path, n, chw)
        .unwrap()
        .run(&images)
        .unwrap();
    assert_eq!(theirs.len(), ours.data.len());
    let (mut max_d, mut spread) = (0, std::collections::HashSet::new());
    for (i, &f) in theirs.iter().enumerate() {
        let want = ours.q.quantize(f) as i32;
        max_d = max_d.max((ours.data[i] as i32 - want).abs());
        spread.insert(want);
    }
    (max_d, spread.len())
}
