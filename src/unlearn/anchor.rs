//! The forget set's predictions at one moment, held as soft targets while retain steps repair
//! the model (the guard's repair and the polish after the target is met).
//!
//! Why: retain cross-entropy alone gives back forgetting. The features a forget step damaged
//! are shared by the forget samples, so repairing them for the retain set raised forget accuracy
//! again (measured: five retain-only steps took the s8 residual CNN's forgotten class from 0 %
//! back above the 1 % target; on the BN CNN, repairs undid each round of forget progress and the
//! request stalled at 15 % forget accuracy). Each repair step therefore also descends the
//! cross-entropy of a forget batch against the softmax it had when the repair began (a
//! distillation of the forgotten state), so the retain set is repaired around the forget set's
//! outputs, not through them. Soft targets keep confidence where it was too: hard labels would
//! sharpen the forget samples that are still right, which is exactly what a membership attack
//! reads.
//!
//! The retain side can be anchored as well (`RetainAnchor`): the starting model's logits on the
//! retain samples, held by OEU's retain gradient and by these repair steps when the request
//! carries one (`train::anchored_cross_entropy`).

use std::collections::HashMap;

use super::config::logits;
use super::Request;
use crate::data::IdxDataset;
use crate::graph::Graph;
use crate::train::{axpy, gather, BatchGrad, BatchStream, Objective, TrainState};
use crate::Result;

/// Rows of per-sample values (logits or probabilities) of a set of samples at one moment, looked
/// up by sample index.
struct Snapshot {
    row: HashMap<usize, usize>,
    values: Vec<f32>,
    classes: usize,
}

impl Snapshot {
    /// The real logits `graph` gives the samples `idx` of `data` now.
    fn logits(graph: &Graph, data: &IdxDataset, idx: &[usize]) -> Result<Self> {
        let row = idx.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        Ok(Snapshot {
            row,
            values: logits(graph, data, idx)?,
            classes: graph.classes(),
        })
    }

    /// Rows of the samples `batch` (each must be in the snapshot), row-major.
    fn rows(&self, batch: &[usize]) -> Vec<f32> {
        let c = self.classes;
        batch
            .iter()
            .flat_map(|i| {
                let k = self.row[i];
                self.values[k * c..(k + 1) * c].iter().copied()
            })
            .collect()
    }
}

/// The retain logit anchor: the starting model's logits on the retain samples and the anchor's
/// weight (`train::anchored_cross_entropy`).
pub struct RetainAnchor {
    logits: Snapshot,
    weight: f32,
}

impl RetainAnchor {
    /// The logits `graph` gives the retain samples `retain` of `data`, held with `weight`.
    pub fn new(graph: &Graph, data: &IdxDataset, retain: &[usize], weight: f32) -> Result<Self> {
        Ok(RetainAnchor {
            logits: Snapshot::logits(graph, data, retain)?,
            weight,
        })
    }
}

/// Loss and gradient of the retain batch `b_r`: cross-entropy, plus the logit anchor when the
/// request carries one.
pub(super) fn retain_grad(st: &TrainState, req: &Request, b_r: &[usize]) -> Result<BatchGrad> {
    match req.retain_anchor {
        Some(a) => {
            let (images, labels) = gather(req.train, b_r);
            let teacher = a.logits.rows(b_r);
            let obj = Objective::AnchoredCrossEntropy {
                labels: &labels,
                teacher: &teacher,
                weight: a.weight,
            };
            st.grad_images(&images, b_r.len(), obj)
        }
        None => st.grad(req.train, b_r, false, None),
    }
}

/// Softmax of every forget sample at one moment.
pub(super) struct Anchor(Snapshot);

impl Anchor {
    /// The forget set's predictions on `graph` now.
    pub(super) fn new(graph: &Graph, req: &Request) -> Result<Self> {
        let mut snap = Snapshot::logits(graph, req.train, req.forget)?;
        for r in snap.values.chunks_exact_mut(snap.classes) {
            let max = r.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
            let mut sum = 0f64;
            for z in r.iter_mut() {
                *z = ((*z - max) as f64).exp() as f32;
                sum += *z as f64;
            }
            r.iter_mut().for_each(|p| *p = (*p as f64 / sum) as f32);
        }
        Ok(Anchor(snap))
    }

    /// Targets of the forget samples `batch`, row-major.
    fn targets(&self, batch: &[usize]) -> Vec<f32> {
        self.0.rows(batch)
    }
}

/// One repair step: retain cross-entropy on the next retain batch plus the anchored forget
/// batch's cross-entropy against its targets.
pub(super) fn anchored_step(
    st: &mut TrainState,
    req: &Request,
    anchor: &Anchor,
    retain: &mut BatchStream,
    forget: &mut BatchStream,
) -> Result<()> {
    let b_r = retain.next_batch();
    let mut g = retain_grad(st, req, &b_r)?.grad;
    let b_f = forget.next_batch();
    if !b_f.is_empty() {
        let (images, _) = gather(req.train, &b_f);
        let t = anchor.targets(&b_f);
        let f = st.grad_images(&images, b_f.len(), Objective::SoftCrossEntropy(&t))?;
        axpy(&mut g, 1.0, &f.grad);
    }
    st.step(&g);
    Ok(())
}
