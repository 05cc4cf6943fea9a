//! FT: fine-tune on the retain set only (cross-entropy), relying on catastrophic forgetting.
//! One epoch is one pass over the retain set.

use super::{run_epochs, state, Config, Method, Progress, Request, RunInfo};
use crate::graph::Graph;
use crate::train::batches;
use crate::Result;

/// Fine-tuning on the retain set.
pub struct Finetune;

impl Method for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
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
                Ok(batches(req.retain, cfg.retain_batch, seed))
            },
            |st, _, b| {
                let r = st.grad(req.train, b, false, None)?;
                st.step(&r.grad);
                Ok(r.loss)
            },
        )?;
        *graph = st.graph;
        Ok(info)
    }
}
