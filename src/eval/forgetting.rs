//! Measuring a forget request: forget, retain and test accuracy and MIA-efficacy of one model
//! on one split of the data, as the unlearning literature reports them (DESIGN.md, metrics).
//!
//! The attacker's features are the true-label softmax confidences. Members are a seeded subset
//! of the retain set as large as the test set, non-members the test set; the score is the share
//! of forget samples classed as non-members. For class-wise forgetting, the test set excludes
//! the forgotten class (its accuracy is reported separately), since "test accuracy" there means
//! the classes the model should still know.

use serde::Serialize;

use super::metrics::Metrics;
use super::mia::{mia_efficacy, MiaConfig};
use crate::data::IdxDataset;
use crate::graph::Graph;
use crate::train::{gather, shuffled};
use crate::Result;

/// The data a request is measured on.
pub struct EvalSets<'a> {
    pub train: &'a IdxDataset,
    pub test: &'a IdxDataset,
    pub forget: &'a [usize],
    pub retain: &'a [usize],
    /// Leave these classes out of the test metrics (class-wise forgetting: every class the
    /// forget set covers whole).
    pub test_exclude: Vec<u8>,
    /// Seed of the retain subset the attacker uses.
    pub seed: u64,
}

/// Metrics plus the per-set counts behind them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Test accuracy on the forgotten classes alone (class-wise forgetting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_forgotten_class_acc: Option<f64>,
}

/// Predicted class and true-label confidence of every sample `idx`.
fn predict(graph: &Graph, data: &IdxDataset, idx: &[usize]) -> Result<(Vec<usize>, Vec<f32>)> {
    let c = graph.classes();
    let (mut pred, mut conf) = (Vec::with_capacity(idx.len()), Vec::with_capacity(idx.len()));
    for chunk in idx.chunks(1024) {
        let (images, labels) = gather(data, chunk);
        let l = graph.forward(&images, chunk.len())?;
        for i in 0..l.data.len() / c.max(1) {
            let z = l.real_row(i);
            let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f32> = z.iter().map(|&v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            pred.push(l.top1(i));
            conf.push(e[labels[i] as usize] / s);
        }
    }
    Ok((pred, conf))
}

fn accuracy(pred: &[usize], data: &IdxDataset, idx: &[usize]) -> f64 {
    let hits = pred
        .iter()
        .zip(idx)
        .filter(|(&p, &i)| p == data.labels[i] as usize)
        .count();
    100.0 * hits as f64 / idx.len().max(1) as f64
}

/// Measure `graph` on `sets`.
pub fn measure(graph: &Graph, sets: &EvalSets) -> Result<Measured> {
    let test_idx: Vec<usize> = (0..sets.test.n)
        .filter(|&i| !sets.test_exclude.contains(&sets.test.labels[i]))
        .collect();
    let (pf, cf) = predict(graph, sets.train, sets.forget)?;
    let (pr, cr) = predict(graph, sets.train, sets.retain)?;
    let (pt, ct) = predict(graph, sets.test, &test_idx)?;
    // Members for the attacker: as many retain samples as test samples (a seeded choice of
    // positions in the retain set, whose confidences are already computed).
    let positions: Vec<usize> = (0..sets.retain.len()).collect();
    let cm: Vec<f32> = shuffled(&positions, sets.seed ^ 0x3141)
        .into_iter()
        .take(test_idx.len())
        .map(|j| cr[j])
        .collect();
    let mia = mia_efficacy(
        &cm,
        &ct,
        &cf,
        &MiaConfig {
            seed: sets.seed,
            ..MiaConfig::default()
        },
    )?;
    let test_forgotten_class_acc = if sets.test_exclude.is_empty() {
        None
    } else {
        let idx: Vec<usize> = (0..sets.test.n)
            .filter(|&i| sets.test_exclude.contains(&sets.test.labels[i]))
            .collect();
        let (p, _) = predict(graph, sets.test, &idx)?;
        Some(accuracy(&p, sets.test, &idx))
    };
    Ok(Measured {
        metrics: Metrics {
            forget_acc: accuracy(&pf, sets.train, sets.forget),
            retain_acc: accuracy(&pr, sets.train, sets.retain),
            test_acc: accuracy(&pt, sets.test, &test_idx),
            mia: 100.0 * mia,
        },
        test_forgotten_class_acc,
    })
}
