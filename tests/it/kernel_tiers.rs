//! End to end across kernel tiers: the whole int8 forward of real fixture models gives the same
//! logits, byte for byte, under every kernel this CPU can run (each forced in turn on its own
//! rayon pool with `kernels::with_kernel`). Tiers the host cannot run are reported as skipped.
//! (Kernel-level exactness against the reference lives in `src/kernels/tests.rs`.)

use std::io::Write;

use qforget::data::{IdxDataset, Split};
use qforget::kernels;

use super::{dataset, model as model_path};

fn logits_under_every_kernel(model: &str, dataset: &str, images: usize) {
    for name in kernels::known_names() {
        if let Err(e) = kernels::by_name(name) {
            // Written past the test harness's capture so the skip is visible in CI logs.
            let _ = writeln!(std::io::stderr(), "SKIPPED kernel {name} on {model}: {e}");
        }
    }
    let graph = qforget::onnx::load(model_path(model)).unwrap();
    let data = IdxDataset::load(self::dataset(dataset), Split::Test).unwrap();
    let n = images.min(data.n);
    let bytes = &data.images[..n * data.rows * data.cols];
    let run = |k| {
        kernels::with_kernel(k, 2, || {
            assert_eq!(kernels::current(), k);
            let l = graph.forward(bytes, n).unwrap();
            (0..n).map(|i| l.row(i).to_vec()).collect::<Vec<_>>()
        })
        .unwrap()
    };
    let want = run(kernels::SCALAR);
    for k in kernels::available() {
        assert_eq!(
            run(k),
            want,
            "{model}: kernel {} differs from scalar",
            k.name
        );
    }
}

#[test]
fn fmnist_cnn_logits_identical_under_every_kernel() {
    logits_under_every_kernel("fmnist_cnn_qdq.onnx", "fashion-mnist", 300);
}

#[test]
fn mnist_residual_logits_identical_under_every_kernel() {
    logits_under_every_kernel("mnist_res_s8.onnx", "mnist", 300);
}

#[test]
fn a_whole_forget_request_exports_the_same_bytes_under_every_kernel() {
    // Same request, same bytes: training (forward, int8 backward GEMMs, re-quantization) under
    // each tier this CPU runs, forced with QFORGET_KERNEL, exports a byte-identical model, so a
    // server can recompute a device's erasure. (ARM: examples/c/run.sh aarch64 in .ci/run.)
    let dir = super::tempdir("tier-export");
    let mut first: Option<(String, Vec<u8>)> = None;
    for k in kernels::available() {
        let bytes = class3_export(&dir.join(format!("{}.onnx", k.name)), &[], Some(k.name));
        match &first {
            None => first = Some((k.name.to_string(), bytes)),
            Some((name, want)) => assert!(
                &bytes == want,
                "kernel {} exports different bytes than {name}",
                k.name
            ),
        }
    }
    assert!(first.is_some());
}

/// The bytes exported by one short class-3 request on `fmnist_cnn_qdq` (2,000 training
/// images, no metrics) to `out`, with `global` options before `forget` and the kernel forced
/// when given (its `--json` report must name that kernel); panics with qforget's stderr if it
/// fails.
fn class3_export(out: &std::path::Path, global: &[&str], kernel: Option<&str>) -> Vec<u8> {
    let m = model_path("fmnist_cnn_qdq.onnx");
    let data = dataset("fashion-mnist");
    let mut args = global.to_vec();
    args.extend([
        "forget",
        super::s(&m),
        "--dataset",
        super::s(&data),
        "--forget-class",
        "3",
        "--train-limit",
        "2000",
        "--no-metrics",
        "--json",
        "--export",
        super::s(out),
    ]);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qforget"));
    cmd.args(&args).env_remove("RUST_LOG");
    if let Some(k) = kernel {
        cmd.env(kernels::ENV_VAR, k);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{args:?} ({kernel:?}): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ran = report["kernel"].as_str().unwrap_or_default();
    match kernel {
        Some(k) => assert_eq!(
            ran, k,
            "the report names another kernel than the forced one"
        ),
        None => assert!(
            kernels::by_name(ran).is_ok(),
            "the report names no kernel this CPU runs: {ran:?}"
        ),
    }
    std::fs::read(out).unwrap()
}

#[test]
fn a_whole_forget_request_exports_the_same_bytes_at_any_thread_count() {
    // Rayon splits GEMM rows, images and batches by the pool's size; no sum may depend on how:
    // 1, 2 and 3 worker threads (more than CI's 2 cores) export the same bytes, so a device
    // and a server that recomputes its erasure agree whatever their core counts.
    let dir = super::tempdir("thread-export");
    let mut first: Option<Vec<u8>> = None;
    for threads in ["1", "2", "3"] {
        let out = dir.join(format!("t{threads}.onnx"));
        let bytes = class3_export(&out, &["--threads", threads], None);
        match &first {
            None => first = Some(bytes),
            Some(want) => assert!(
                &bytes == want,
                "--threads {threads} exports different bytes than --threads 1"
            ),
        }
    }
}
