//! GA: gradient ascent on the forget set's cross-entropy. One epoch is one pass over the
//! forget set. Without a retain term it damages the whole model if run long; the stopping rule
//! (e.g. a forget-accuracy target) is what keeps it usable.

use super::{run_epochs, state, Config, Method, Progress, Request, RunInfo};
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
        let info = run_epochs(
            &mut st,
            req,
            cfg,
            progress,
            |_, epoch| {
                let seed = cfg.seed.wrapping_add(epoch as u64);
                Ok(batches(req.forget, cfg.forget_batch, seed))
            },
            |st, _, b| {
                let f = st.grad(req.train, b, false, None)?;
                let ascent: Vec<f32> = f.grad.iter().map(|g| -g).collect();
                st.step(&ascent);
                Ok(f.loss)
            },
        )?;
        *graph = st.graph;
        Ok(info)
    }
}
