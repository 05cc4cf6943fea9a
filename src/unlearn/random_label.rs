//! RL: cross-entropy on the forget set with random wrong labels (drawn once per run, seeded),
//! plus cross-entropy on a retain batch in the same step. One epoch is one pass over the forget
//! set.

use rand::RngExt;

use super::{run_epochs, state, Config, Method, Progress, Request, RunInfo};
use crate::graph::Graph;
use crate::train::{axpy, batches, rng, BatchStream};
use crate::Result;

/// Random labels.
pub struct RandomLabel;

impl Method for RandomLabel {
    fn name(&self) -> &'static str {
        "random-label"
    }

    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo> {
        let classes = graph.classes() as u64;
        let mut st = state(graph.clone(), cfg);
        // A wrong label per forget sample: true + 1..C−1 (mod C).
        let mut r = rng(cfg.seed ^ 0x7a11);
        let wrong: std::collections::HashMap<usize, u8> = req
            .forget
            .iter()
            .map(|&i| {
                let shift = r.random_range(1..classes.max(2));
                (i, ((req.train.labels[i] as u64 + shift) % classes) as u8)
            })
            .collect();
        let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, cfg.seed ^ 0x5eed);
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
                let labels: Vec<u8> = b.iter().map(|i| wrong[i]).collect();
                let f = st.grad(req.train, b, false, Some(&labels))?;
                let rg = st.grad(req.train, &retain.next_batch(), false, None)?;
                let mut g = f.grad;
                axpy(&mut g, 1.0, &rg.grad);
                st.step(&g);
                Ok(f.loss)
            },
        )?;
        *graph = st.graph;
        Ok(info)
    }
}
