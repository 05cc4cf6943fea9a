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

use std::collections::HashMap;

use super::config::logits;
use super::Request;
use crate::graph::Graph;
use crate::train::{axpy, gather, BatchStream, Objective, TrainState};
use crate::Result;

/// Softmax of every forget sample at one moment.
pub(super) struct Anchor {
    row: HashMap<usize, usize>,
    probs: Vec<f32>,
    classes: usize,
}

impl Anchor {
    /// The forget set's predictions on `graph` now.
    pub(super) fn new(graph: &Graph, req: &Request) -> Result<Self> {
        let classes = graph.classes();
        let mut probs = logits(graph, req.train, req.forget)?;
        for r in probs.chunks_exact_mut(classes) {
            let max = r.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
            let mut sum = 0f64;
            for z in r.iter_mut() {
                *z = ((*z - max) as f64).exp() as f32;
                sum += *z as f64;
            }
            r.iter_mut().for_each(|p| *p = (*p as f64 / sum) as f32);
        }
        let row = req
            .forget
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, k))
            .collect();
        Ok(Anchor {
            row,
            probs,
            classes,
        })
    }

    /// Targets of the forget samples `batch`, row-major.
    fn targets(&self, batch: &[usize]) -> Vec<f32> {
        let c = self.classes;
        batch
            .iter()
            .flat_map(|i| {
                let k = self.row[i];
                self.probs[k * c..(k + 1) * c].iter().copied()
            })
            .collect()
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
    let mut g = st.grad(req.train, &b_r, false, None)?.grad;
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
