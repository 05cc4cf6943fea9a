//! Training machinery shared by the unlearning methods: losses with their gradients w.r.t. the
//! logits, flattened gradient vectors and OEU's projection, the SGD optimizer, seeded batching, and
//! the activation-range observers a model trained from scratch needs for its scales. Nothing here
//! knows the network graph; the layers' backward passes produce and consume these plain slices.

pub mod batch;
pub mod loss;
pub mod observer;
pub mod sgd;
pub mod step;
pub mod vector;

pub use batch::{batches, rng, shuffled, BatchStream};
pub use loss::{
    anchored_cross_entropy, capped_confidence, cross_entropy, mean_normalized_entropy,
    neg_normalized_entropy, soft_cross_entropy, true_class_probs,
};
pub use observer::RangeObserver;
pub use sgd::Sgd;
pub use step::{gather, BatchGrad, Objective, TrainState};
pub use vector::{axpy, dot, norm_sq, project_out, project_out_per_segment, Projection};
