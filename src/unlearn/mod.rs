//! Unlearning methods: OEU (the default) and the baselines the literature compares it with.
//! One [`Method`] trait, one file per method. Every method starts from the deployed integer
//! graph (Retrain from a random one), trains on the integer forward with the straight-through
//! estimator, and returns the new graph; the caller measures and exports it.

mod anchor;
mod config;
mod extend;
pub mod finetune;
mod finish;
pub mod grad_ascent;
pub mod guard;
pub mod oeu;
mod polish;
pub mod qmul;
pub mod random_label;
pub mod retrain;
mod retrain_bn;
mod retrain_fit;
mod sparsify;
pub mod unseen;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use anchor::RetainAnchor;
pub use config::{
    Config, MethodName, ProjectionMode, RetrainNorm, RetrainSchedule, Stop, RETRAIN_COSINE_EPOCHS,
    SAMPLE_WISE_EPOCHS, SAMPLE_WISE_RETAIN_ANCHOR,
};
pub use extend::BUDGET_EXTENSIONS;
pub use guard::{accuracy_on, Guard, GuardReport, Verdict};
pub use unseen::{HeldOut, UnseenTargets};

use crate::data::IdxDataset;
use crate::graph::Graph;
use crate::profile::{timed, Phase};
use crate::train::{BatchStream, Sgd, TrainState};
use crate::{Error, Result};
use anchor::{anchored_step, Anchor};

/// What a method needs to know about the request.
pub struct Request<'a> {
    /// The training split the sample indices refer to.
    pub train: &'a IdxDataset,
    /// Indices of the samples to forget.
    pub forget: &'a [usize],
    /// Indices of the samples to keep (the device's retain buffer) that training may use.
    pub retain: &'a [usize],
    /// Held-out retain samples the guard watches (never trained on); empty: no guard.
    pub probe: &'a [usize],
    /// Target confidences of a sample-wise request (OEU lowers each forget sample's true class
    /// to its target instead of maximizing entropy; see `unseen`); `None`: push every forget
    /// sample towards uniform.
    pub unseen: Option<&'a UnseenTargets>,
    /// The starting model's retain logits, held by every retain step of OEU and of the repair
    /// and polish steps (`train::anchored_cross_entropy`); `None`: retain cross-entropy only.
    pub retain_anchor: Option<&'a RetainAnchor>,
    /// The classes a class-wise request forgets whole (empty for a sample-wise request):
    /// polish holds the forget set away from them (see `polish`).
    pub forgotten_classes: &'a [u8],
    /// Set from any thread to stop the run after the current step with [`Error::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

impl Request<'_> {
    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Progress of a run, reported after every step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
}

/// What a run did besides changing the graph.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunInfo {
    /// Wall time of every epoch that ran, seconds.
    pub epoch_seconds: Vec<f64>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Why the run ended.
    pub stopped: String,
    /// Method-specific notes (e.g. how often OEU projected).
    pub notes: Vec<String>,
    /// What the retain guard did (absent when the run had no guard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    /// Whether the final model meets the stopping rule's target (absent for a fixed budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_met: Option<bool>,
}

/// An unlearning method.
pub trait Method {
    /// Name as the CLI spells it.
    fn name(&self) -> &'static str;
    /// Run on `graph` (modified in place).
    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo>;
}

/// The method called `name`.
pub fn method(name: MethodName) -> Box<dyn Method> {
    match name {
        MethodName::Oeu => Box::new(oeu::Oeu),
        MethodName::Finetune => Box::new(finetune::Finetune),
        MethodName::GradAscent => Box::new(grad_ascent::GradAscent),
        MethodName::RandomLabel => Box::new(random_label::RandomLabel),
        MethodName::Qmul => Box::new(qmul::Qmul),
        MethodName::Retrain => Box::new(retrain::Retrain),
    }
}

/// A training state on `graph` with the configured optimizer.
pub(crate) fn state(graph: Graph, cfg: &Config) -> TrainState {
    let mut st = TrainState::new(
        graph,
        Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay),
        cfg.grad_path,
    );
    st.shadow.hysteresis = cfg.requant_hysteresis;
    st
}

/// The epoch loop every method shares: per epoch, `epoch_start` returns that epoch's batches
/// (and may adjust the state, e.g. a learning-rate schedule); `step` takes one optimizer step on
/// a batch, given the 1-based count of steps so far, and returns the loss to report. The loop
/// reports progress, times epochs (an epoch with no batches ends the run), and every `check_every` steps and after each epoch runs the
/// retain guard (when the request has a probe and the config a budget) and then the stopping
/// rule. The state a run ends in has passed the guard.
pub(crate) fn run_epochs(
    st: &mut TrainState,
    req: &Request,
    cfg: &Config,
    progress: &mut dyn FnMut(&Progress),
    mut epoch_start: impl FnMut(&mut TrainState, usize) -> Result<Vec<Vec<usize>>>,
    mut step: impl FnMut(&mut TrainState, usize, &[usize]) -> Result<f32>,
) -> Result<RunInfo> {
    if st.shadow.is_empty() {
        // Every layer frozen (weights computed at import, behind folded factors, or float
        // layers of quantized weights): steps would change nothing, so say so before spending
        // them.
        return Err(Error::Refused(format!(
            "nothing in {} can be trained: every layer is frozen (its integers are computed at \
             import, by a Cast or another node, so no tensor in the file holds them; or sit \
             behind a per-channel factor folded in after it such as a BatchNormalization on a \
             fake-quantized Conv; or are read by a float layer); nothing was written",
            st.graph
                .source
                .as_deref()
                .map_or("the model".to_string(), |p| format!("'{}'", p.display()))
        )));
    }
    let mut info = RunInfo::default();
    let dead_at_start = dead_units(&st.graph, req)?;
    // The starting weights, for `sparsify` (it needs a stopping rule and the guard's probe).
    let sparse = cfg.delta_goal > 0.0 && cfg.stop != Stop::Fixed && !req.probe.is_empty();
    let base = sparse.then(|| sparsify::Base::new(st));
    let mut guard = match cfg.guard_budget {
        Some(b) if !req.probe.is_empty() => Some(Guard::new(
            st,
            req.train,
            req.probe,
            b,
            cfg.max_backoffs,
            cfg.lr_growth,
        )?),
        _ => None,
    };
    let mut start_look = None;
    if cfg.stop != Stop::Fixed {
        let (met, quick) = cfg.stop.reached_looking(&st.graph, req)?;
        if let Some(why) = met {
            // Nothing to do: the model already behaves as the request asks.
            info.stopped = format!("{why} before any step");
            info.target_met = Some(true);
            if let Some(g) = guard {
                info.guard = Some(g.finish(st, 0)?);
            }
            return Ok(info);
        }
        start_look = quick;
    }
    // Another budget for a run still on its way to the target (see `extend`).
    let mut extensions = extend::Extensions::new(&cfg.stop, cfg.budget_extensions, start_look);
    let mut epochs = cfg.epochs;
    // Repair steps the guard may take on a state over budget (retain cross-entropy with the
    // forget set anchored where that state has it, see `anchor`).
    let mut repair_retain = BatchStream::new(
        req.retain.to_vec(),
        cfg.retain_batch,
        cfg.seed ^ 0x2e9a_1e57,
    );
    let mut repair_forget = BatchStream::new(
        req.forget.to_vec(),
        cfg.forget_batch,
        cfg.seed ^ 0x2e9a_1e58,
    );
    let per_round = cfg.check_every.max(1).min(cfg.repair_steps);
    let rounds = cfg.repair_steps.checked_div(per_round).unwrap_or(0);
    let mut repair_anchor: Option<Anchor> = None;
    let mut repair = |st: &mut TrainState, round: usize| -> Result<usize> {
        if round == 0 || repair_anchor.is_none() {
            repair_anchor = Some(Anchor::new(&st.graph, req)?);
        }
        let a = repair_anchor.as_ref().expect("anchor set above");
        for _ in 0..per_round {
            anchored_step(st, req, a, &mut repair_retain, &mut repair_forget)?;
        }
        Ok(per_round)
    };
    // Guard, then stopping rule, then (class-wise) a try to finish: `Some(reason)` ends the run.
    let mut finisher = finish::Finisher::default();
    // The stopping rule's quick look at the last checkpoint's state (none when the guard rolled
    // that state back), for the extension test at a budget's end.
    let last_look = Cell::new(None);
    let mut checkpoint = |st: &mut TrainState, steps: usize| -> Result<Option<String>> {
        last_look.set(None);
        if let Some(g) = guard.as_mut() {
            match g.check(st, steps, rounds, &mut repair)? {
                Verdict::Pass => {}
                Verdict::BackedOff => return Ok(None),
                Verdict::GaveUp => {
                    return Ok(Some(format!(
                        "the retain guard gave up after {} back-offs",
                        cfg.max_backoffs
                    )))
                }
            }
        }
        let (met, quick) = cfg.stop.reached_looking(&st.graph, req)?;
        if met.is_some() {
            return Ok(met);
        }
        last_look.set(quick);
        let floor = guard.as_ref().map(|g| g.floor());
        finisher.try_finish(st, req, cfg, floor, quick)
    };
    let mut epoch = 0;
    'epochs: while epoch < epochs {
        let started = Instant::now();
        let batches = epoch_start(st, epoch)?;
        if batches.is_empty() {
            // The method's schedule is done before its cap (Retrain's fit schedule).
            epochs = epoch;
            break;
        }
        for (k, b) in batches.iter().enumerate() {
            req.check_cancel()?;
            info.steps += 1;
            let loss = step(st, info.steps, b)?;
            progress(&Progress {
                epoch,
                epochs,
                step: k + 1,
                steps_per_epoch: batches.len(),
                loss,
            });
            req.check_cancel()?;
            let last = k + 1 == batches.len();
            if !last && cfg.check_every > 0 && info.steps.is_multiple_of(cfg.check_every) {
                if let Some(why) = timed(Phase::Checks, || checkpoint(st, info.steps))? {
                    info.epoch_seconds.push(started.elapsed().as_secs_f64());
                    info.stopped = format!("{why} at step {} (epoch {})", info.steps, epoch + 1);
                    break 'epochs;
                }
            }
        }
        info.epoch_seconds.push(started.elapsed().as_secs_f64());
        if let Some(why) = timed(Phase::Checks, || checkpoint(st, info.steps))? {
            info.stopped = format!("{why} after epoch {}", epoch + 1);
            break;
        }
        epoch += 1;
        if epoch == epochs {
            if let Some(x) = extensions.as_mut() {
                let now = match last_look.take() {
                    Some(q) => q,
                    None => timed(Phase::Checks, || {
                        config::quick_forget_accuracy(&st.graph, req)
                    })?,
                };
                if x.grant(now) {
                    epochs += cfg.epochs;
                }
            }
        }
    }
    if let Some(note) = extensions.as_ref().and_then(|x| x.note()) {
        info.notes.push(note);
    }
    if info.stopped.is_empty() {
        // Steps too: a method may run its epochs over part of the forget set (sample-wise OEU
        // trains only the samples whose target asks for a change), so the epoch count alone can
        // read far above the `--epochs` budget it came from.
        info.stopped = format!(
            "step budget spent ({} steps, {} epoch(s))",
            info.steps, epochs
        );
    }
    if let Some(base) = &base {
        if cfg.stop.reached(&st.graph, req)?.is_some() {
            let mut epoch = epochs;
            let every = if cfg.check_every > 0 {
                cfg.check_every
            } else {
                5
            };
            let budget = info.steps.max(2 * every);
            let steps = &mut info.steps;
            // Train on with the method until a checkpoint finds the target met (true), or the
            // budget or the guard ends it (false).
            let mut train = |st: &mut TrainState, max: usize| -> Result<bool> {
                let mut done = 0;
                loop {
                    if timed(Phase::Checks, || checkpoint(st, *steps))?.is_some() {
                        let met = cfg.stop.reached(&st.graph, req)?.is_some();
                        log::debug!("sparsify round: {done} of {max} steps, target met {met}");
                        return Ok(met);
                    }
                    if done >= max {
                        log::debug!("sparsify round: {done} of {max} steps, target not met");
                        return Ok(false);
                    }
                    let batches = epoch_start(st, epoch)?;
                    epoch += 1;
                    for b in &batches {
                        req.check_cancel()?;
                        *steps += 1;
                        done += 1;
                        step(st, *steps, b)?;
                        if done.is_multiple_of(every) || done >= max {
                            break;
                        }
                    }
                }
            };
            let note = sparsify::sparsify(st, base, cfg.delta_goal, budget, &mut train)?;
            info.notes.push(note);
        }
    }
    info.steps += finisher.steps();
    if let Some(g) = guard {
        info.guard = Some(g.finish(st, info.steps)?);
    }
    if cfg.stop != Stop::Fixed {
        info.target_met = Some(cfg.stop.reached(&st.graph, req)?.is_some());
    }
    if info.target_met == Some(true) && cfg.polish_steps > 0 && !req.probe.is_empty() {
        // First a polish inside the delta the run already has: every weight still at its start
        // stays there, and the changed ones re-quantize with plain rounding (no dead band), so
        // the repair can move them by single steps without growing the delta. Why: with the
        // class-wise band of 4 steps a polish could barely repair (MobileNetV2-style fixture,
        // class 3, seed 1: retain accuracy 91.69 %, the retrained reference 93.07 %; inside the
        // delta 91.88 %, seeds 0–2 −1.08 pp from the reference on average against −1.33), and
        // with the band removed everywhere the delta grew past its goal (5.76 % of the file on
        // the s8 residual CNN, seed 2). When the changed weights
        // are too few for that (a W4 residual CNN, 0.24 % changed: the target was lost within
        // ten steps), the polish that may touch every weight runs from the same state instead.
        let mut note = None;
        if let Some(base) = &base {
            let mut inside = st.clone();
            base.pin_unchanged(&mut inside);
            inside.shadow.narrow_band(&inside.graph, 0.0);
            let (n, kept) = polish::polish(&mut inside, req, cfg)?;
            if kept > 0 {
                *st = inside;
                note = Some(format!("{n} (inside the delta, plain rounding)"));
            } else {
                log::debug!("{n} (inside the delta): nothing kept, polishing every weight");
                // Polish may not add float weights to the delta (each float step would change
                // them all): the ones still at their start stay there.
                base.pin_unchanged_floats(st);
            }
        }
        let note = match note {
            Some(n) => n,
            None => polish::polish(st, req, cfg)?.0,
        };
        info.notes.push(note);
    }
    // Units the run left dead, on the same samples as at the start.
    let d = dead_units(&st.graph, req)?;
    info.notes.push(format!(
        "dead units: {} at the end, {} at the start, of {} (clamped for every one of {} retain samples)",
        d.dead,
        dead_at_start.dead,
        d.total,
        watched(req).len()
    ));
    Ok(info)
}

/// The retain samples dead units are counted on: up to 512 of the probe, else of the retain set.
fn watched<'a>(req: &Request<'a>) -> &'a [usize] {
    let w = if req.probe.is_empty() {
        req.retain
    } else {
        req.probe
    };
    &w[..w.len().min(512)]
}

fn dead_units(g: &Graph, req: &Request) -> Result<crate::graph::dead::DeadUnits> {
    let w = watched(req);
    let (images, _) = crate::train::gather(req.train, w);
    g.dead_units(&images, w.len())
}
