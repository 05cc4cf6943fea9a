//! Polish: once a request's forgetting target is met, a few steps that win back the retain
//! accuracy the last forget steps cost, without giving back any forgetting.
//!
//! Why: a run stops as soon as its target is met, so the collateral damage of its last forget
//! steps has had no retain steps to repair it (measured on the residual MNIST fixtures: about
//! 1 pp of retain accuracy). Retain cross-entropy alone is not enough: on the s8 residual CNN,
//! five retain-only steps let the forgotten class back above 1 % forget accuracy, because its
//! images were only pushed to uncertain, not away. So each polish step also anchors the forget
//! set to the outputs it had when the target was met (see [`super::anchor`]), and the state kept is the one with the best probe accuracy among those that still meet the
//! target (the state polish started from, if none is better).

use super::anchor::{anchored_step, Anchor};
use super::{accuracy_on, Config, Request};
use crate::train::{BatchStream, TrainState};
use crate::Result;

/// Polish `st` (which meets `cfg.stop`) for up to `cfg.polish_steps` steps, checked every
/// `cfg.check_every`; returns a note for the run report.
pub(super) fn polish(st: &mut TrainState, req: &Request, cfg: &Config) -> Result<String> {
    // The forget set's outputs as the model gives them now.
    let anchor = Anchor::new(&st.graph, req)?;
    let start = accuracy_on(&st.graph, req.train, req.probe)?;
    let mut best = (start, st.clone(), 0usize);
    let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, cfg.seed ^ 0x9011);
    let mut forget = BatchStream::new(req.forget.to_vec(), cfg.forget_batch, cfg.seed ^ 0x9012);
    st.sgd.reset();
    let every = cfg.check_every.max(1);
    let mut steps = 0usize;
    while steps < cfg.polish_steps {
        for _ in 0..every.min(cfg.polish_steps - steps) {
            anchored_step(st, req, &anchor, &mut retain, &mut forget)?;
            steps += 1;
        }
        if cfg.stop.reached(&st.graph, req)?.is_none() {
            break;
        }
        let acc = accuracy_on(&st.graph, req.train, req.probe)?;
        if acc > best.0 {
            best = (acc, st.clone(), steps);
        }
    }
    let (acc, kept) = (best.0, best.2);
    *st = best.1;
    Ok(format!(
        "polish: {steps} step(s) tried after the target was met, kept {kept}; probe accuracy {start:.2} % → {acc:.2} %"
    ))
}
