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
