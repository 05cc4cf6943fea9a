//! FT: fine-tune on the retain set only (cross-entropy), relying on catastrophic forgetting.
//! One epoch is one pass over the retain set.

use super::{state, Config, EpochLoop, Method, Progress, Request, RunInfo};
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
        let mut lp = EpochLoop::new();
        'epochs: for epoch in 0..cfg.epochs {
            let rb = batches(
                req.retain,
                cfg.retain_batch,
                cfg.seed.wrapping_add(epoch as u64),
            );
            for (k, b) in rb.iter().enumerate() {
                let r = st.grad(req.train, b, false, None)?;
                st.step(&r.grad);
                lp.info.steps += 1;
                progress(&Progress {
                    epoch,
                    epochs: cfg.epochs,
                    step: k + 1,
                    steps_per_epoch: rb.len(),
                    loss: r.loss,
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
