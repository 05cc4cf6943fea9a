//! Retrain, the gold standard, must train the network the file describes (issue 9, item 4).
//!
//! Regression: quantizers drop the `Relu` after a conv/add when the output range starts at 0,
//! so the graph holds those layers with no fused activation. Retrain's activation observers
//! then widened every such range to include negative values and trained a *linear* network:
//! on `mnist_res_s8` it diverged to chance (retain accuracy 11 %) on the 54k retain images and
//! stalled at 81 % on the bundled 10k.

use qforget::data::{IdxDataset, Split};
use qforget::unlearn::{method, Config, MethodName, Request};

use super::{dataset, model};

/// Retrain `stem` on the first `n` training images without class 3 for `epochs` epochs;
/// returns the original graph, the retrained one, and the retain accuracy (percent).
fn retrain(
    stem: &str,
    data: &str,
    n: usize,
    epochs: usize,
) -> (qforget::graph::Graph, qforget::graph::Graph, f64) {
    let train = IdxDataset::load(dataset(data), Split::Train).unwrap();
    let (forget, retain): (Vec<usize>, Vec<usize>) =
        (0..n.min(train.labels.len())).partition(|&i| train.labels[i] == 3);
    let req = Request {
        train: &train,
        forget: &forget,
        retain: &retain,
        probe: &[],
        unseen: None,
        retain_anchor: None,
        cancel: None,
    };
    let cfg = Config {
        epochs,
        ..Config::defaults(MethodName::Retrain)
    };
    let original = qforget::onnx::load(model(stem)).unwrap();
    let mut g = original.clone();
    method(MethodName::Retrain)
        .run(&mut g, &req, &cfg, &mut |_| {})
        .unwrap();
    let ra = qforget::unlearn::accuracy_on(&g, &train, &retain).unwrap();
    (original, g, ra)
}

/// Every hidden activation whose file range starts at 0 (a ReLU the quantizer folded into the
/// zero point) still starts at 0 after Retrain (the old code moved all five of `mnist_res_s8`'s
/// to storage 122–140), and the residual net learns: well above chance after a small budget
/// (6 epochs over 2,700 images, 132 steps: 69.8 % measured).
#[test]
fn retrain_keeps_folded_relus_and_learns_the_residual_s8() {
    let (original, g, ra) = retrain("mnist_res_s8.onnx", "mnist", 3000, 6);
    let mut kept = 0;
    for l in &original.layers {
        let before = original.acts[l.output].q.zero_point;
        if l.output == original.output || before != 0 || l.op.clamp_range().is_none() {
            continue;
        }
        let after = g.acts[l.output].q;
        assert_eq!(
            after.zero_point,
            0,
            "'{}': range starts at {} after Retrain (the file's starts at 0)",
            l.name,
            after.dequantize(0)
        );
        kept += 1;
    }
    assert!(kept >= 5, "only {kept} ReLU ranges checked");
    eprintln!("mnist_res_s8 Retrain, 6 epochs on 3000 images: retain accuracy {ra:.2} %");
    assert!(ra >= 50.0, "retain accuracy {ra:.2} %");
}
