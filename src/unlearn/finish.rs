//! Finishing a class-wise request: once most of the forgotten class is gone, a few repair steps
//! whose forget targets have the forgotten class's share moved onto the other classes
//! ([`Anchor::without`]) take its last samples off it while the retain set is repaired.
//!
//! Why: entropy ascent makes the forget samples' predictions flat, and a flat prediction's
//! argmax is whatever class is marginally ahead, often still the true one: forget accuracy can
//! sit at a few percent for many steps while entropy keeps rising and every step costs retain
//! accuracy. Measured on the MobileNetV2-style Fashion-MNIST network, class 3: seeds 0 and 2 met
//! the 1 % target in 15–16 steps, seed 1 needed 115 steps, a learning rate grown 14.5× and a
//! roll-back, and changed 48 % of the weights before the sparser delta gave most back (retain
//! accuracy 90.69 % against 92.51 and 91.55 for the other seeds).
//!
//! A try runs on a copy and is kept only if it meets the target with the probe within the
//! guard's budget; otherwise the run goes on from where it was, and the next try waits until
//! forget accuracy has fallen further.

use super::anchor::{anchored_step, Anchor};
use super::config::quick_forget_accuracy;
use super::{accuracy_on, Config, Request, Stop};
use crate::train::{BatchStream, TrainState};
use crate::Result;

/// A try starts once the forget accuracy of a quick look is at most this (percent).
pub const FINISH_AT: f64 = 10.0;

/// Steps of one try, checked every `check_every`.
pub const FINISH_STEPS: usize = 20;

/// Tries of one run, and the forget accuracy the last one started at.
#[derive(Debug, Default)]
pub struct Finisher {
    tries: usize,
    last_start: Option<f64>,
    steps: usize,
}

impl Finisher {
    /// Steps taken by the kept try (they count as steps of the run).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Try to finish `st` (which does not meet the target yet): `Some(reason)` when a try met
    /// the target with the probe at or above `floor`; `st` is then the finished state. `quick`:
    /// the state's [`quick_forget_accuracy`] if the caller has it already.
    pub fn try_finish(
        &mut self,
        st: &mut TrainState,
        req: &Request,
        cfg: &Config,
        floor: Option<f64>,
        quick: Option<f64>,
    ) -> Result<Option<String>> {
        if req.forgotten_classes.is_empty() || req.probe.is_empty() || cfg.stop == Stop::Fixed {
            return Ok(None);
        }
        let fa = match quick {
            Some(q) => q,
            None => quick_forget_accuracy(&st.graph, req)?,
        };
        // A new try only once forget accuracy has halved since the last one began.
        let due = fa <= FINISH_AT && self.last_start.is_none_or(|last| fa <= 0.5 * last);
        if !due {
            return Ok(None);
        }
        self.tries += 1;
        self.last_start = Some(fa);
        let mut t = st.clone();
        t.sgd.reset();
        let anchor = Anchor::without(&t.graph, req, req.forgotten_classes)?;
        let seed = cfg.seed ^ (0xf1_2157 + self.tries as u64);
        let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, seed);
        let mut forget = BatchStream::new(req.forget.to_vec(), cfg.forget_batch, seed ^ 1);
        let every = cfg.check_every.max(1);
        let mut steps = 0;
        while steps < FINISH_STEPS {
            for _ in 0..every.min(FINISH_STEPS - steps) {
                anchored_step(&mut t, req, &anchor, &mut retain, &mut forget)?;
                steps += 1;
            }
            if let Some(why) = cfg.stop.reached(&t.graph, req)? {
                let probe = accuracy_on(&t.graph, req.train, req.probe)?;
                log::debug!(
                    "finish try {}: {why} after {steps} steps, probe {probe:.2} %",
                    self.tries
                );
                if floor.is_none_or(|f| probe >= f) {
                    *st = t;
                    self.steps += steps;
                    return Ok(Some(format!(
                        "{why} after {steps} finishing step(s) (try {} from forget accuracy {fa:.2} % on a quick look)",
                        self.tries
                    )));
                }
                return Ok(None);
            }
        }
        log::debug!(
            "finish try {} from {fa:.2} %: target not met in {steps} steps",
            self.tries
        );
        Ok(None)
    }
}
