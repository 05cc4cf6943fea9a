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

impl Graph {
    /// Count the units that output their lower clamp bound for all `n` images.
    pub fn dead_units(&self, images: &[u8], n: usize) -> Result<DeadUnits> {
        let acts = self.run(images, n, true)?;
        let mut out = DeadUnits::default();
        for layer in &self.layers {
            // A float Add (a float segment's) holds reals, not bytes with a clamp range.
            if !matches!(layer.op, Op::Conv(_) | Op::Linear(_) | Op::Add(_))
                || self.acts[layer.output].float
            {
                continue;
            }
            let (Some((lo, _)), Some(y)) = (layer.op.clamp_range(), acts[layer.output].as_ref())
            else {
                continue;
            };
            let c = self.acts[layer.output].shape.c.max(1);
            let mut alive = vec![false; c];
            // NHWC storage: the channel is the fastest index.
            for (k, &q) in y.data.iter().enumerate() {
                if q > lo {
                    alive[k % c] = true;
                }
            }
            out.total += c;
            out.dead += alive.iter().filter(|&&a| !a).count();
        }
        Ok(out)
    }
}
