//! Dead units: output channels of a conv/linear/add layer that sit on their lower clamp bound
//! (a fused ReLU's zero, or the storage minimum, which is where a ReLU folded into the output
//! quantization lands) for every input of a batch. The straight-through estimator passes no
//! gradient through such a unit, so training can never revive it (DESIGN.md, "Units die");
//! counting them after a run tells a silenced network from a merely confused one.

use super::{Graph, Op};
use crate::Result;

/// Dead and total units of the graph's conv/linear/add layers on `n` images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeadUnits {
    pub dead: usize,
    pub total: usize,
}

/// Images per forward pass of [`Graph::dead_units`]: every activation of a pass is kept, so
/// the whole sample at once held all of them (a MobileNetV2-style network on 512 images:
/// about 100 MB, most of a forget request's peak memory).
const CHUNK: usize = 64;

impl Graph {
    /// Count the units that output their lower clamp bound for all `n` images.
    pub fn dead_units(&self, images: &[u8], n: usize) -> Result<DeadUnits> {
        // Per counted layer: its clamp bound and whether each channel was ever above it.
        let mut alive: Vec<Option<(u8, Vec<bool>)>> = self
            .layers
            .iter()
            .map(|layer| {
                // A float Add (a float segment's) holds reals, not bytes with a clamp range.
                if !matches!(layer.op, Op::Conv(_) | Op::Linear(_) | Op::Add(_))
                    || self.acts[layer.output].float
                {
                    return None;
                }
                let (lo, _) = layer.op.clamp_range()?;
                Some((lo, vec![false; self.acts[layer.output].shape.c.max(1)]))
            })
            .collect();
        let img_len = images.len() / n.max(1);
        for (i, chunk) in images.chunks(CHUNK * img_len.max(1)).enumerate() {
            let m = (n - i * CHUNK).min(CHUNK);
            let acts = self.run(chunk, m, true)?;
            for (layer, slot) in self.layers.iter().zip(&mut alive) {
                let (Some((lo, alive)), Some(y)) = (slot, acts[layer.output].as_ref()) else {
                    continue;
                };
                // NHWC storage: the channel is the fastest index.
                let c = alive.len();
                for (k, &q) in y.data.iter().enumerate() {
                    if q > *lo {
                        alive[k % c] = true;
                    }
                }
            }
        }
        let mut out = DeadUnits::default();
        for (_, alive) in alive.iter().flatten() {
            out.total += alive.len();
            out.dead += alive.iter().filter(|&&a| !a).count();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The count as one pass over all `n` images at once gives it.
    fn one_pass(g: &Graph, images: &[u8], n: usize) -> DeadUnits {
        let acts = g.run(images, n, true).unwrap();
        let mut out = DeadUnits::default();
        for layer in &g.layers {
            if !matches!(layer.op, Op::Conv(_) | Op::Linear(_) | Op::Add(_))
                || g.acts[layer.output].float
            {
                continue;
            }
            let (Some((lo, _)), Some(y)) = (layer.op.clamp_range(), acts[layer.output].as_ref())
            else {
                continue;
            };
            let c = g.acts[layer.output].shape.c.max(1);
            let alive: Vec<bool> = (0..c)
                .map(|ch| y.data.iter().skip(ch).step_by(c).any(|&q| q > lo))
                .collect();
            out.total += c;
            out.dead += alive.iter().filter(|&&a| !a).count();
        }
        out
    }

    #[test]
    fn chunked_count_equals_one_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let g = crate::onnx::load(root.join("onnx-models/mnist_res_s8.onnx")).unwrap();
        let d = crate::data::IdxDataset::load(root.join("data/mnist"), crate::data::Split::Test)
            .unwrap();
        let px = d.image_len();
        // 100 black images, then 50 digits (150: two whole chunks and a partial one). The black
        // ones alone leave units dead that the digits wake, so a count that kept only one
        // chunk's verdict would differ.
        let mut images = vec![0u8; 100 * px];
        images.extend_from_slice(&d.images[..50 * px]);
        let all = g.dead_units(&images, 150).unwrap();
        assert_eq!(all, one_pass(&g, &images, 150));
        let black = g.dead_units(&images[..64 * px], 64).unwrap();
        assert_eq!(black, one_pass(&g, &images[..64 * px], 64));
        assert!(black.dead > all.dead, "black {black:?}, all {all:?}");
        assert_eq!(black.total, all.total);
    }
}
