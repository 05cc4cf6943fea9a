//! Measuring a model on a dataset: top-1 accuracy and predictions here; the forgetting metrics
//! built on them (forget/retain/test accuracy, Avg. Gap) in [`metrics`], membership inference in
//! [`mia`].

#[cfg(feature = "tract-engine")]
pub mod tract_ref;

pub mod forgetting;
pub mod metrics;
pub mod mia;
mod svm;

pub use metrics::{avg_gap, Metrics};

use crate::data::IdxDataset;
use crate::graph::{Graph, Logits};
use crate::{Error, Result};

/// Images per forward batch: large enough to amortise per-layer overhead, small enough that
/// activations of the biggest layer stay in a few MB.
pub const BATCH: usize = 256;

/// Index of the largest value (the first one on ties, as numpy's argmax); 0 for an empty slice.
pub fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    let mut best = 0;
    for (j, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = j;
        }
    }
    best
}

/// Result of running a model over a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// Predicted class per image, in dataset order.
    pub predictions: Vec<usize>,
}

/// Check that the model's input fits the dataset's images (channels, height, width, or a flat
/// input of their C·H·W values) and its outputs cover the labels; the error names the dataset
/// file and what the model expects.
pub fn check_fits(graph: &Graph, data: &IdxDataset) -> Result<()> {
    let s = graph.input.shape;
    let model = graph
        .source
        .as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default();
    // A flat `[N, C·H·W]` input (an MLP whose `x.view(-1, 784)` was done outside the model)
    // reads each image's bytes in the dataset's C×H×W order, as PyTorch's flatten of NCHW.
    let flat = s.h == 1 && s.w == 1 && s.c == data.channels * data.rows * data.cols;
    if !flat && (s.c != data.channels || s.h != data.rows || s.w != data.cols) {
        let kind = |c: usize| match c {
            1 => " (grey)",
            3 => " (RGB)",
            _ => "",
        };
        let why = if s.c != data.channels {
            format!(
                ": {} channel{}{} against the model's {}{}; qforget does not convert between \
                 grey and colour",
                data.channels,
                if data.channels == 1 { "" } else { "s" },
                kind(data.channels),
                s.c,
                kind(s.c)
            )
        } else {
            String::new()
        };
        return Err(Error::Dataset {
            path: data.images_path.clone(),
            reason: format!(
                "images are {}×{}×{} but the model{model} takes input {s} (channels×height×width){why}",
                data.channels, data.rows, data.cols,
            ),
        });
    }
    if let Some(&max) = data.labels.iter().max() {
        if max as usize >= graph.classes() {
            let at = data.labels.iter().position(|&l| l == max).unwrap_or(0);
            return Err(Error::Dataset {
                path: data.images_path.clone(),
                reason: format!(
                    "label {max} is out of range for the model{model} with {} classes \
                     (sample {at} in {})",
                    graph.classes(),
                    data.labels_path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Run `graph` over the images `indices` of `data` (all when `None`), calling `each` with every
/// batch's logits and the dataset indices it covers.
pub fn run(
    graph: &Graph,
    data: &IdxDataset,
    indices: Option<&[usize]>,
    mut each: impl FnMut(&[usize], &Logits),
) -> Result<()> {
    check_fits(graph, data)?;
    let all: Vec<usize>;
    let idx = match indices {
        Some(i) => i,
        None => {
            all = (0..data.n).collect();
            &all
        }
    };
    let mut buf = Vec::with_capacity(BATCH * data.image_len());
    for chunk in idx.chunks(BATCH) {
        buf.clear();
        for &i in chunk {
            buf.extend_from_slice(data.image(i));
        }
        let logits = graph.forward(&buf, chunk.len())?;
        each(chunk, &logits);
    }
    Ok(())
}

/// Top-1 accuracy of `graph` on the whole dataset.
pub fn accuracy(graph: &Graph, data: &IdxDataset) -> Result<Evaluation> {
    let mut predictions = Vec::with_capacity(data.n);
    let mut correct = 0;
    run(graph, data, None, |idx, logits| {
        for (r, &i) in idx.iter().enumerate() {
            let p = logits.top1(r);
            correct += (p == data.labels[i] as usize) as usize;
            predictions.push(p);
        }
    })?;
    Ok(Evaluation {
        n: data.n,
        correct,
        accuracy: if data.n == 0 {
            0.0
        } else {
            correct as f64 / data.n as f64
        },
        predictions,
    })
}
