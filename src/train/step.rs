//! One model being trained: the integer graph the forward runs on, its f32 shadow parameters,
//! and the optimizer. A gradient is always taken on the deployed integer forward (straight-
//! through estimator); a step updates the shadow and re-quantizes it into the graph.

use crate::data::IdxDataset;
use crate::graph::{GradPath, Graph, LayerGrad, Shadow, Tape};
use crate::profile::{timed, Phase};
use crate::Result;

use super::loss::{
    anchored_cross_entropy, capped_confidence, cross_entropy, neg_normalized_entropy,
    soft_cross_entropy,
};
use super::sgd::Sgd;

/// What a batch's loss is.
#[derive(Debug, Clone, Copy)]
pub enum Objective<'a> {
    /// Cross-entropy against these labels (one per batch sample).
    CrossEntropy(&'a [u8]),
    /// −mean normalized entropy (descending it maximizes the entropy).
    NegEntropy,
    /// Cross-entropy against soft targets (one distribution per batch sample, row-major).
    SoftCrossEntropy(&'a [f32]),
    /// True-class probability lowered to a cap per sample (`loss::capped_confidence`).
    CappedConfidence { labels: &'a [u8], caps: &'a [f32] },
    /// Cross-entropy plus `weight` times the distance of the centred logits to the teacher's
    /// (`loss::anchored_cross_entropy`).
    AnchoredCrossEntropy {
        labels: &'a [u8],
        teacher: &'a [f32],
        weight: f32,
    },
}

/// Loss, flattened gradient (in the optimizer's coordinates, `Shadow::to_optimizer_coords`)
/// and real logits of one batch.
#[derive(Debug, Clone)]
pub struct BatchGrad {
    pub loss: f32,
    pub grad: Vec<f32>,
    pub logits: Vec<f32>,
}

/// Images and labels of dataset samples `idx`, in that order.
pub fn gather(data: &IdxDataset, idx: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let len = data.image_len();
    let mut images = Vec::with_capacity(idx.len() * len);
    let mut labels = Vec::with_capacity(idx.len());
    for &i in idx {
        images.extend_from_slice(data.image(i));
        labels.push(data.labels[i]);
    }
    (images, labels)
}

/// A graph under training.
#[derive(Debug, Clone)]
pub struct TrainState {
    pub graph: Graph,
    pub shadow: Shadow,
    pub sgd: Sgd,
    pub path: GradPath,
    /// Shadow entries held at a fixed value (index, value): every step puts them back, so their
    /// integers never move (`unlearn::sparsify` pins the changes it reverts).
    pub pinned: Vec<(usize, f32)>,
}

impl TrainState {
    /// Start from the graph's current integers.
    pub fn new(graph: Graph, sgd: Sgd, path: GradPath) -> Self {
        let shadow = Shadow::new(&graph);
        TrainState {
            graph,
            shadow,
            sgd,
            path,
            pinned: Vec::new(),
        }
    }

    /// Loss and gradient of `objective` on the images `images` (`n` of them).
    pub fn grad_images(&self, images: &[u8], n: usize, objective: Objective) -> Result<BatchGrad> {
        let tape = timed(Phase::Forward, || self.graph.forward_tape(images, n))?;
        Ok(self.grad_on_tape(&tape, objective)?.0)
    }

    /// Loss and gradient of `objective` on a forward's tape, and each layer's own gradient
    /// (for parameters outside the shadow, such as Retrain's batch norms).
    pub fn grad_on_tape(
        &self,
        tape: &Tape,
        objective: Objective,
    ) -> Result<(BatchGrad, Vec<Option<LayerGrad>>)> {
        let g = &self.graph;
        let (logits, unclamped) = g.loss_logits(tape);
        let (loss, dz) = timed(Phase::Loss, || match objective {
            Objective::CrossEntropy(labels) => cross_entropy(&logits, g.classes(), labels),
            Objective::NegEntropy => neg_normalized_entropy(&logits, g.classes()),
            Objective::SoftCrossEntropy(t) => soft_cross_entropy(&logits, g.classes(), t),
            Objective::CappedConfidence { labels, caps } => {
                capped_confidence(&logits, g.classes(), labels, caps)
            }
            Objective::AnchoredCrossEntropy {
                labels,
                teacher,
                weight,
            } => anchored_cross_entropy(&logits, g.classes(), labels, teacher, weight),
        });
        let params = match self.path {
            GradPath::F32 => g.real_params(),
            // The int8 path reads the integer weights directly.
            GradPath::Int8 => vec![None; g.layers.len()],
        };
        let grads = timed(Phase::Backward, || {
            g.backward_full(tape, &params, &dz, self.path, false, unclamped)
        })?
        .0;
        let mut grad = self.shadow.gather(g, &grads);
        self.shadow.to_optimizer_coords(&mut grad);
        Ok((BatchGrad { loss, grad, logits }, grads))
    }

    /// Loss and gradient on dataset samples `idx`; `labels` overrides the dataset's labels for
    /// cross-entropy (random or "similar" labels).
    pub fn grad(
        &self,
        data: &IdxDataset,
        idx: &[usize],
        entropy: bool,
        labels: Option<&[u8]>,
    ) -> Result<BatchGrad> {
        let (images, own) = gather(data, idx);
        let obj = if entropy {
            Objective::NegEntropy
        } else {
            Objective::CrossEntropy(labels.unwrap_or(&own))
        };
        self.grad_images(&images, idx.len(), obj)
    }

    /// One optimizer step along `direction` (a gradient to descend), then re-quantize.
    pub fn step(&mut self, direction: &[f32]) {
        timed(Phase::Optimizer, || {
            self.sgd
                .step_scaled(&mut self.shadow.theta, direction, &self.shadow.metric);
            for &(i, v) in &self.pinned {
                self.shadow.theta[i] = v;
            }
        });
        timed(Phase::Requantize, || self.shadow.apply(&mut self.graph));
    }
}
