//! Every committed fixture model against its reference outputs (onnxruntime 1.32.0 with
//! graph optimizations disabled, see onnx-models/README.md): int8 logits within 1 LSB on the
//! full test set, identical top-1 where the reference has no near-tie, the same accuracy.

use qforget::data::{IdxDataset, Split};

use std::path::Path;

use super::{dataset, expected_logits_in, fixtures, model, root, Expected};

#[test]
fn every_fixture_matches_its_reference_within_one_lsb() {
    let dir = root().join("onnx-models").join("expected");
    let report: Vec<String> = fixtures()
        .iter()
        .map(|(stem, x)| matches_reference(&dir, stem, x))
        .collect();
    for r in report {
        eprintln!("{r}");
    }
}

/// One fixture against its reference outputs in `dir`: int8 logits within 1 LSB on the whole
/// split, identical top-1, the same accuracy (panics otherwise); returns a one-line report.
pub fn matches_reference(dir: &Path, stem: &str, x: &Expected) -> String {
    let mut report = Vec::new();
    {
        let g = qforget::onnx::load(model(&x.model)).unwrap();
        let data = IdxDataset::load(dataset(&x.dataset), Split::Test).unwrap();
        assert_eq!(data.n, x.n, "{stem}");
        let (want, classes) = expected_logits_in(dir, stem, x);
        assert_eq!(g.classes(), classes, "{stem}");
        // The graph's output parameters are the ones the reference was requantized with.
        let oq = g.acts[g.output].q;
        assert_eq!(oq.model_zero_point(), x.output_zero_point, "{stem}");
        assert_eq!(oq.scale, x.output_scale, "{stem}");

        let (mut max_diff, mut off, mut top1_diff, mut correct) = (0, 0, 0, 0);
        let mut first_bad = None;
        qforget::eval::run(&g, &data, None, |idx, logits| {
            for (r, &i) in idx.iter().enumerate() {
                let got = logits.model_row(r);
                let exp = &want[i * classes..(i + 1) * classes];
                let d = got
                    .iter()
                    .zip(exp)
                    .map(|(a, b)| (a - b).abs())
                    .max()
                    .unwrap();
                max_diff = max_diff.max(d);
                off += got.iter().zip(exp).filter(|(a, b)| a != b).count();
                let ref_top = qforget::eval::argmax(exp);
                let top = logits.top1(r);
                if top != ref_top {
                    top1_diff += 1;
                    first_bad.get_or_insert((i, got.clone(), exp.to_vec()));
                }
                correct += (top == data.labels[i] as usize) as usize;
            }
        })
        .unwrap();
        let acc = correct as f64 / data.n as f64;
        report.push(format!(
            "{stem}: max |Δ| {max_diff} LSB, {off} of {} logits off by one, {top1_diff} top-1 differences, accuracy {:.4} vs reference {:.4}",
            data.n * classes,
            acc,
            x.int8_accuracy
        ));
        assert!(max_diff <= 1, "{}", report.last().unwrap());
        assert_eq!(
            top1_diff,
            0,
            "{} first: {first_bad:?}",
            report.last().unwrap()
        );
        assert!(
            (acc - x.int8_accuracy).abs() < 1e-9,
            "{}",
            report.last().unwrap()
        );
    }
    report.pop().unwrap_or_default()
}
