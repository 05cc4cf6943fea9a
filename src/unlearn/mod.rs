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

/// Times epochs and decides when to stop.
pub(crate) struct EpochLoop {
    pub info: RunInfo,
    started: Instant,
    steps: usize,
}

impl EpochLoop {
    pub fn new() -> Self {
        EpochLoop {
            info: RunInfo::default(),
            started: Instant::now(),
            steps: 0,
        }
    }

    /// After an optimizer step: `true` if the stopping rule, checked every `check_every`
    /// steps, says stop (the partial epoch's time is recorded).
    pub fn after_step(
        &mut self,
        st: &TrainState,
        req: &Request,
        cfg: &Config,
        epoch: usize,
    ) -> Result<bool> {
        self.steps += 1;
        if cfg.check_every == 0 || !self.steps.is_multiple_of(cfg.check_every) {
            return Ok(false);
        }
        if let Some(why) = cfg.stop.reached(&st.graph, req)? {
            self.info
                .epoch_seconds
                .push(self.started.elapsed().as_secs_f64());
            self.info.stopped = format!("{why} at step {} (epoch {})", self.steps, epoch + 1);
            return Ok(true);
        }
        Ok(false)
    }

    /// Close an epoch: record its time; `true` if the stopping rule says stop.
    pub fn end_epoch(
        &mut self,
        st: &TrainState,
        req: &Request,
        cfg: &Config,
        epoch: usize,
    ) -> Result<bool> {
        self.info
            .epoch_seconds
            .push(self.started.elapsed().as_secs_f64());
        let stop = cfg.stop.reached(&st.graph, req)?;
        if let Some(why) = stop {
            self.info.stopped = format!("{why} after epoch {}", epoch + 1);
            return Ok(true);
        }
        self.started = Instant::now();
        Ok(false)
    }

    /// Finish: the reason is "epochs done" unless a rule stopped it earlier.
    pub fn finish(mut self, epochs: usize) -> RunInfo {
        if self.info.stopped.is_empty() {
            self.info.stopped = format!("{epochs} epoch(s) done");
        }
        self.info
    }
}
