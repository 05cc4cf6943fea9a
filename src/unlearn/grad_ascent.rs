//! GA: gradient ascent on the forget set's cross-entropy. One epoch is one pass over the
//! forget set. Without a retain term it damages the whole model if run long; the stopping rule
//! (e.g. a forget-accuracy target) is what keeps it usable.

use super::{state, Config, EpochLoop, Method, Progress, Request, RunInfo};
use crate::graph::Graph;
use crate::train::batches;
use crate::Result;

/// Gradient ascent.
pub struct GradAscent;

impl Method for GradAscent {
    fn name(&self) -> &'static str {
        "grad-ascent"
    }

    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo> {
        let mut st = state(graph.clone(), cfg);
        let mut lp = EpochLoop::new();
        'epochs: for epoch in 0..cfg.epochs {
            let fb = batches(
                req.forget,
                cfg.forget_batch,
                cfg.seed.wrapping_add(epoch as u64),
            );
            for (k, b) in fb.iter().enumerate() {
                let f = st.grad(req.train, b, false, None)?;
                let ascent: Vec<f32> = f.grad.iter().map(|g| -g).collect();
                st.step(&ascent);
                lp.info.steps += 1;
                progress(&Progress {
                    epoch,
                    epochs: cfg.epochs,
                    step: k + 1,
                    steps_per_epoch: fb.len(),
                    loss: f.loss,
                });
                if lp.after_step(&st, req, cfg, epoch)? {
                    break 'epochs;
                }
            }
            if lp.end_epoch(&st, req, cfg, epoch)? {
                break;
            }
        }
        *graph = st.graph;
        Ok(lp.finish(cfg.epochs))
    }
}
