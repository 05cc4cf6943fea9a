//! tract's inference engine on the same .onnx file, as an in-process reference (for `eval
//! --engine tract`, cross-checks in tests, and speed comparisons). Behind the `tract-engine`
//! feature so a device build can leave the engine out. tract lacks onnxruntime's
//! `com.microsoft` operators, so QOperator files using them are refused here.

use std::path::Path;

use tract_onnx::prelude::*;

use super::Evaluation;
use crate::data::IdxDataset;
use crate::graph::{normalize, Normalization};
use crate::{Error, Result};

/// A model loaded into tract for one fixed batch size.
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    batch: usize,
    chw: [usize; 3],
    norm: Option<Normalization>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Reference(format!("{}: {e:#}", path.display()))
}

impl TractModel {
    /// Load `path` for batches of `batch` images of `c × h × w`.
    pub fn load(path: &Path, batch: usize, chw: [usize; 3]) -> Result<Self> {
        let [c, h, w] = chw;
        // Intermediate shapes in value_info may name a symbolic batch that clashes with the
        // fixed batch given here; tract infers them anyway, so drop them.
        let mut proto = crate::onnx::read_model(path)?;
        if let Some(g) = proto.graph.as_mut() {
            g.value_info.clear();
        }
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|m| {
                m.with_input_fact(
                    0,
                    InferenceFact::dt_shape(f32::datum_type(), tvec!(batch, c, h, w)),
                )
            })
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(path, e))?;
        Ok(TractModel {
            plan,
            batch,
            chw,
            norm: None,
        })
    }

    /// Feed pixels normalised by `norm` (as [`crate::graph::Graph::quantize_images`] does).
    pub fn with_normalization(mut self, norm: Option<Normalization>) -> Self {
        self.norm = norm;
        self
    }

    /// Float outputs (`batch × classes`) for raw image bytes (NCHW; pixels = byte / 255,
    /// normalised if [`TractModel::with_normalization`] said so).
    pub fn run(&self, images: &[u8]) -> Result<Vec<f32>> {
        let [c, h, w] = self.chw;
        let plane = (h * w).max(1);
        let norm = self.norm.as_ref();
        let x: Vec<f32> = images
            .iter()
            .enumerate()
            .map(|(i, &b)| normalize::pixel_value(norm, i / plane % c.max(1), b))
            .collect();
        let t = Tensor::from_shape(&[self.batch, c, h, w], &x)
            .map_err(|e| Error::Reference(format!("{e:#}")))?;
        let out = self
            .plan
            .run(tvec!(t.into()))
            .map_err(|e| Error::Reference(format!("{e:#}")))?;
        let v = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| Error::Reference(format!("{e:#}")))?;
        Ok(v.iter().copied().collect())
    }
}

/// Top-1 accuracy of the .onnx at `model` under tract (one image per run), its input
/// normalised by `norm`.
pub fn accuracy(
    model: &Path,
    data: &IdxDataset,
    norm: Option<Normalization>,
) -> Result<Evaluation> {
    let m =
        TractModel::load(model, 1, [data.channels, data.rows, data.cols])?.with_normalization(norm);
    let mut predictions = Vec::with_capacity(data.n);
    let mut correct = 0;
    for i in 0..data.n {
        let best = super::argmax(&m.run(data.image(i))?);
        correct += (best == data.labels[i] as usize) as usize;
        predictions.push(best);
    }
    Ok(Evaluation {
        n: data.n,
        correct,
        accuracy: correct as f64 / data.n.max(1) as f64,
        predictions,
    })
}
