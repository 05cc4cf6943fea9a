//! Retrain, the gold standard, must train the network the file describes (issue 9, item 4).
//!
//! Regression: quantizers drop the `Relu` after a conv/add when the output range starts at 0,
//! so the graph holds those layers with no fused activation. Retrain's activation observers
//! then widened every such range to include negative values and trained a *linear* network:
//! on `mnist_res_s8` it diverged to chance (retain accuracy 11 %) on the 54k retain images and
//! stalled at 81 % on the bundled 10k.

use qforget::data::{IdxDataset, Split};
use qforget::unlearn::{method, Config, MethodName, Request, RetrainNorm, RetrainSchedule};

use super::{dataset, model};

/// Retrain `stem` on the first `n` training images without class 3 for `epochs` epochs;
/// returns the original graph, the retrained one, and the retain accuracy (percent).
fn retrain(
    stem: &str,
    data: &str,
    n: usize,
    epochs: usize,
) -> (qforget::graph::Graph, qforget::graph::Graph, f64) {
    retrain_with(stem, data, n, epochs, RetrainNorm::Kept)
}

/// A request to forget `forget` and train on `retain`, with no probe or extras.
fn request<'a>(train: &'a IdxDataset, forget: &'a [usize], retain: &'a [usize]) -> Request<'a> {
    Request {
        train,
        forget,
        retain,
        probe: &[],
        unseen: None,
        retain_anchor: None,
        forgotten_classes: &[],
        cancel: None,
    }
}

/// [`retrain`] with a choice of batch-normalized layers, on the cosine schedule over exactly
/// `epochs` (the figures below were measured so).
fn retrain_with(
    stem: &str,
    data: &str,
    n: usize,
    epochs: usize,
    norm: RetrainNorm,
) -> (qforget::graph::Graph, qforget::graph::Graph, f64) {
    let train = IdxDataset::load(dataset(data), Split::Train).unwrap();
    let (forget, retain): (Vec<usize>, Vec<usize>) =
        (0..n.min(train.labels.len())).partition(|&i| train.labels[i] == 3);
    let req = request(&train, &forget, &retain);
    let cfg = Config {
        epochs,
        retrain_norm: norm,
        retrain_schedule: RetrainSchedule::Cosine,
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

/// Retrain's default schedule trains until the retain set is fit about as well as the original
/// fits it, then a short tail at a tenth of the rate (`retrain_fit`): it is never told how long
/// the original was trained. On 2,700 images the MLP comes within 0.5 pp of the original's fit
/// (which saw all 60k) well before the cap of 60 epochs (measured: 22 epochs, then 5 tail
/// epochs, retain accuracy 97.71 % against the original's 97.97 %) and ends within 1 pp of
/// it; a cap of 1 ends phase 1 there and says so, and the tail still runs.
#[test]
fn fit_schedule_trains_until_the_retain_set_is_fit() {
    let train = IdxDataset::load(dataset("mnist"), Split::Train).unwrap();
    let (forget, retain): (Vec<usize>, Vec<usize>) = (0..3000).partition(|&i| train.labels[i] == 3);
    let req = request(&train, &forget, &retain);
    let original = qforget::onnx::load(model("mnist_mlp_matmul_qdq.onnx")).unwrap();
    let fit0 = qforget::unlearn::accuracy_on(&original, &train, &retain).unwrap();
    let run = |epochs: usize| {
        let cfg = Config {
            epochs,
            ..Config::defaults(MethodName::Retrain)
        };
        let mut g = original.clone();
        let info = method(MethodName::Retrain)
            .run(&mut g, &req, &cfg, &mut |_| {})
            .unwrap();
        let ra = qforget::unlearn::accuracy_on(&g, &train, &retain).unwrap();
        (info, ra)
    };
    let per_epoch = retain.len().div_ceil(128);
    let (info, ra) = run(60);
    eprintln!(
        "fit schedule, MLP on 2,700 images: {} steps ({} epochs), retain accuracy {ra:.2} % \
         (original {fit0:.2} %); {}",
        info.steps,
        info.epoch_seconds.len(),
        info.notes[0]
    );
    assert!(
        info.notes[0].contains("of the original's fit"),
        "{}",
        info.notes[0]
    );
    assert!(
        info.steps < 60 * per_epoch,
        "{} steps: phase 1 ran to the cap",
        info.steps
    );
    assert!(
        ra >= fit0 - 1.0,
        "retain accuracy {ra:.2} %, original {fit0:.2} %"
    );

    let (info, _) = run(1);
    assert!(info.notes[0].contains("the epoch cap"), "{}", info.notes[0]);
    // One epoch at the full rate, then a quarter to 5 tail epochs.
    assert!(
        (per_epoch + per_epoch / 4..=6 * per_epoch).contains(&info.steps),
        "{} steps",
        info.steps
    );
}

/// Every hidden activation whose file range starts at 0 (a ReLU the quantizer folded into the
/// zero point) still starts at 0 after Retrain (the old code moved all five of `mnist_res_s8`'s
/// to storage 122–140), and the residual net learns: well above chance after a small budget
/// (6 epochs over 2,700 images, 132 steps: 70.35 % measured with the f32 backward, 69.8 % with
/// the int8 one; 85.58 % with `--retrain-norm all` and int8).
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

/// Retrain scales 4-bit weights to the 4-bit grid: weight scales are max|θ| / 7, not / 127.
/// The old code put every weight but the smallest at the 4-bit clamp and `fmnist_cnn_w4` stayed
/// at chance (11.9 % retain accuracy after 6 epochs on 2,700 images, 82.3 % with the fix and the
/// int8 backward, 86.12 % with the f32 one, Retrain's default; 89.36 % with `--retrain-norm all`
/// and int8; on the full 54k retain images, 10 epochs: 11.11 %).
#[test]
fn retrain_learns_on_the_4_bit_grid() {
    let (_, g, ra) = retrain("fmnist_cnn_w4.onnx", "fashion-mnist", 3000, 6);
    let mut at_clamp = 0usize;
    let mut total = 0usize;
    for l in &g.layers {
        let (Some(b), qforget::graph::Op::Conv(c)) = (&l.binding, &l.op) else {
            continue;
        };
        assert_eq!(b.bits, 4, "'{}' is not a 4-bit layer", l.name);
        for (ch, w) in c.weights.iter().enumerate() {
            let (lo, hi) = b.range_of(ch);
            for &v in &w.data {
                let v = v as i32;
                assert!(
                    (lo..=hi).contains(&v),
                    "'{}': {v} off the 4-bit grid",
                    l.name
                );
                at_clamp += usize::from(v == lo || v == hi);
                total += 1;
            }
        }
    }
    assert!(total > 0);
    eprintln!(
        "fmnist_cnn_w4 Retrain, 6 epochs on 3000 images: retain accuracy {ra:.2} %, \
         {at_clamp} of {total} conv weights at the 4-bit clamp"
    );
    assert!(
        at_clamp * 4 < total,
        "{at_clamp} of {total} weights at the clamp"
    );
    assert!(ra >= 50.0, "retain accuracy {ra:.2} %");
}

/// Retrain trains batch norms as PyTorch does (issue 9, item 4): the BatchNormalization layers
/// the BN CNN kept normalize with each batch's statistics and end at running statistics
/// (`--retrain-norm kept`, the default); on the same CNN exported with its BatchNorms folded, a
/// batch norm is added after each conv and folded back at the end (`all`). Both learn far
/// faster than the same Retrain with the kept layers frozen at the file's factors (`none`, the
/// old behaviour) and than the folded CNN with no batch norm, and hand back the file's layers.
/// 2 epochs over 2,700 images, measured (retain accuracy, f32 backward): kept 81.40 %, none
/// 77.34 %; folded CNN: all 81.40 % (the same network from the same seed), none 58.59 %.
#[test]
fn retrain_trains_batch_norms_with_batch_statistics() {
    let (original, g, kept) = retrain_with(
        "fmnist_cnn_bn_qdq.onnx",
        "fashion-mnist",
        3000,
        2,
        RetrainNorm::Kept,
    );
    let (_, _, frozen) = retrain_with(
        "fmnist_cnn_bn_qdq.onnx",
        "fashion-mnist",
        3000,
        2,
        RetrainNorm::None,
    );
    assert!(g.batch_stats.is_empty(), "batch statistics left behind");
    assert_eq!(g.layers.len(), original.layers.len());
    // The kept BatchNorm layers were trained: their factors are no longer the file's.
    let norms = original.batch_norm_layers();
    assert_eq!(norms.len(), 2);
    for &i in &norms {
        assert_ne!(
            g.channel_affine(i).0,
            original.channel_affine(i).0,
            "'{}' kept the file's factors",
            original.layers[i].name
        );
    }
    let (folded, g2, all) = retrain_with(
        "fmnist_cnn_qdq.onnx",
        "fashion-mnist",
        3000,
        2,
        RetrainNorm::All,
    );
    let (_, _, plain) = retrain_with(
        "fmnist_cnn_qdq.onnx",
        "fashion-mnist",
        3000,
        2,
        RetrainNorm::None,
    );
    assert_eq!(g2.layers.len(), folded.layers.len());
    assert_eq!(g2.acts.len(), folded.acts.len());
    eprintln!(
        "Retrain, 2 epochs on 2,700 images: BN CNN kept {kept:.2} %, frozen {frozen:.2} %; \
         folded CNN with added norms {all:.2} %, without {plain:.2} %"
    );
    assert!(
        kept >= frozen + 2.0,
        "kept {kept:.2} % vs frozen {frozen:.2} %"
    );
    assert!(all >= plain + 10.0, "added {all:.2} % vs none {plain:.2} %");
}
