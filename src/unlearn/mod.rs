//! Unlearning methods: OEU (the default) and the baselines the literature compares it with.
//! One [`Method`] trait, one file per method. Every method starts from the deployed integer
//! graph (Retrain from a random one), trains on the integer forward with the straight-through
//! estimator, and returns the new graph; the caller measures and exports it.

mod config;
pub mod finetune;
pub mod grad_ascent;
pub mod oeu;
pub mod qmul;
pub mod random_label;
pub mod retrain;

use std::time::Instant;

pub use config::{Config, MethodName, ProjectionMode, Stop};

use crate::data::IdxDataset;
use crate::graph::Graph;
use crate::train::{Sgd, TrainState};
use crate::Result;

/// What a method needs to know about the request.
pub struct Request<'a> {
    /// The training split the sample indices refer to.
    pub train: &'a IdxDataset,
    /// Indices of the samples to forget.
    pub forget: &'a [usize],
    /// Indices of the samples to keep (the device's retain buffer).
    pub retain: &'a [usize],
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
    TrainState::new(
        graph,
        Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay),
        cfg.grad_path,
    )
}

/// The epoch loop every method shares: per epoch, `epoch_start` returns that epoch's batches
/// (and may adjust the state, e.g. a learning-rate schedule); `step` takes one optimizer step on
/// a batch, given the 1-based count of steps so far, and returns the loss to report. The loop
/// reports progress, times epochs, and applies the stopping rule after each epoch and every
/// `check_every` steps.
pub(crate) fn run_epochs(
    st: &mut TrainState,
    req: &Request,
    cfg: &Config,
    progress: &mut dyn FnMut(&Progress),
    mut epoch_start: impl FnMut(&mut TrainState, usize) -> Result<Vec<Vec<usize>>>,
    mut step: impl FnMut(&mut TrainState, usize, &[usize]) -> Result<f32>,
) -> Result<RunInfo> {
    let mut info = RunInfo::default();
    'epochs: for epoch in 0..cfg.epochs {
        let started = Instant::now();
        let batches = epoch_start(st, epoch)?;
        for (k, b) in batches.iter().enumerate() {
            info.steps += 1;
            let loss = step(st, info.steps, b)?;
            progress(&Progress {
                epoch,
                epochs: cfg.epochs,
                step: k + 1,
                steps_per_epoch: batches.len(),
                loss,
            });
            if cfg.check_every > 0 && info.steps.is_multiple_of(cfg.check_every) {
                if let Some(why) = cfg.stop.reached(&st.graph, req)? {
                    info.epoch_seconds.push(started.elapsed().as_secs_f64());
                    info.stopped = format!("{why} at step {} (epoch {})", info.steps, epoch + 1);
                    break 'epochs;
                }
            }
        }
        info.epoch_seconds.push(started.elapsed().as_secs_f64());
        if let Some(why) = cfg.stop.reached(&st.graph, req)? {
            info.stopped = format!("{why} after epoch {}", epoch + 1);
            break;
        }
    }
    if info.stopped.is_empty() {
        info.stopped = format!("{} epoch(s) done", cfg.epochs);
    }
    Ok(info)
}
