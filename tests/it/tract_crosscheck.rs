//! A second, independent reference: tract running the same .onnx in-process. For every
//! fixture tract can load (it lacks onnxruntime's com.microsoft ops), our int8 logits must be
//! within 1 LSB of tract's outputs requantized with the model's output parameters.

use qforget::data::{IdxDataset, Split};
use qforget::eval::tract_ref::TractModel;

use super::{dataset, fixtures, model};

const N: usize = 500;

#[test]
fn fixtures_agree_with_tract_within_one_lsb() {
    let mut checked = 0;
    for (stem, x) in fixtures() {
        let path = model(&x.model);
        let g = qforget::onnx::load(&path).unwrap();
        let data = IdxDataset::load(dataset(&x.dataset), Split::Test).unwrap();
        let t = match TractModel::load(&path, N, [1, 28, 28]) {
            Ok(t) => t,
            Err(e) => {
                let has_ms = std::fs::read(&path)
                    .map(|b| b.windows(13).any(|w| w == b"com.microsoft"))
                    .unwrap_or(false);
                // tract 0.23 cannot type a zero-pads Pad that reads a DequantizeLinear output
                // (PyTorch's AvgPool2d export, `fmnist_cat_*`): "Inconsistent pad: input of
                // rank 1". onnxruntime's references cover these models.
                let pad_rank = e.to_string().contains("Pad: Inconsistent pad");
                assert!(
                    has_ms || pad_rank,
                    "tract failed on {stem}, which uses no com.microsoft op: {e}"
                );
                eprintln!("{stem}: skipped, tract cannot run it: {e}");
                continue;
            }
        };
        let images = &data.images[..N * 784];
        let ours = g.forward(images, N).unwrap();
        let theirs = t.run(images).unwrap();
        let q = ours.q;
        let mut max_diff = 0;
        for (i, &f) in theirs.iter().enumerate() {
            let tq = q.quantize(f) as i32;
            max_diff = max_diff.max((ours.data[i] as i32 - tq).abs());
        }
        eprintln!("{stem}: tract vs qforget max |Δ| {max_diff} LSB over {N} images");
        assert!(max_diff <= 1, "{stem}: {max_diff}");
        checked += 1;
    }
    assert!(checked >= 2, "tract checked only {checked} fixtures");
}
