//! What a forget request asks for, as one plain struct: the CLI fills it from its flags, the C
//! API and `serve` from JSON (same field names as the CLI's long options, with `_` for `-`), so
//! the three front ends cannot offer different knobs or different defaults.

use std::path::PathBuf;

use serde::Deserialize;

use crate::data::forget::ForgetSpec;
use crate::graph::GradPath;
use crate::unlearn::{Config, MethodName, ProjectionMode, RetrainNorm, RetrainSchedule, Stop};
use crate::{Error, Result};

/// A forget request's settings. Every `None` takes the method's default (`Config::defaults`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Forget every training sample of this class.
    pub forget_class: Option<u8>,
    /// Forget these training-split indices (0-based).
    pub forget_ids: Option<Vec<usize>>,
    /// Forget a seeded random fraction of the training split.
    pub forget_random: Option<f64>,
    /// Seed of every random choice (forget set, retain subset, probe, batches, init).
    pub seed: u64,
    pub method: MethodName,
    pub epochs: Option<usize>,
    /// More budgets a run still on its way to its target may get (default: 3 when the epoch
    /// budget is the tool's, 0 when `epochs` is given).
    pub budget_extensions: Option<usize>,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub weight_decay: Option<f32>,
    pub forget_batch: Option<usize>,
    pub retain_batch: Option<usize>,
    pub lambda: Option<f32>,
    pub projection: Option<ProjectionMode>,
    pub forget_step: Option<f32>,
    pub retain_anchor: Option<f32>,
    pub requant_hysteresis: Option<f32>,
    /// Percent of the integer weights a delta may change (see `Config::delta_goal`).
    pub delta_goal: Option<f32>,
    pub only_on_conflict: bool,
    /// Retrain: which layers normalize with batch statistics (default: kept).
    pub retrain_norm: Option<RetrainNorm>,
    /// Retrain: learning-rate schedule (default: fit; `epochs` is then the cap of its first
    /// phase, else the cosine's length).
    pub retrain_schedule: Option<RetrainSchedule>,
    /// Retrain, fit schedule: most epochs at a tenth of the rate at the end (default 5).
    pub retrain_tail: Option<usize>,
    /// OEU in a sample-wise request: maximize the forget samples' entropy as in a class-wise
    /// one, instead of lowering each to the confidence unseen data gets (`unlearn::unseen`).
    pub uniform_entropy: bool,
    pub stop_entropy: Option<f32>,
    pub stop_forget_acc: Option<f64>,
    pub no_stop: bool,
    pub check_every: Option<usize>,
    /// Retain guard budget, percentage points.
    pub retain_budget: f64,
    pub probe_size: Option<usize>,
    pub no_guard: bool,
    pub fixed_lr: bool,
    pub repair_steps: Option<usize>,
    pub polish_steps: Option<usize>,
    pub polish_patience: Option<usize>,
    /// Hand back a result even when the forgetting target was not met.
    pub allow_partial: bool,
    /// Backward arithmetic; `None`: the method's default (f32 for Retrain, int8 otherwise).
    pub grad_path: Option<GradPath>,
    /// Samples forgotten by earlier requests: neither retained nor measured.
    pub forgotten: Vec<usize>,
    /// Use only this many retain samples (a seeded subset: the device's retain buffer).
    pub retain_limit: Option<usize>,
    /// A reference model (.onnx) or an earlier run's JSON report: report the Avg. Gap to it.
    pub reference: Option<PathBuf>,
    /// Skip the before/after measurements.
    pub no_metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            forget_class: None,
            forget_ids: None,
            forget_random: None,
            seed: 0,
            method: MethodName::Oeu,
            epochs: None,
            budget_extensions: None,
            lr: None,
            momentum: None,
            weight_decay: None,
            forget_batch: None,
            retain_batch: None,
            lambda: None,
            projection: None,
            forget_step: None,
            retain_anchor: None,
            requant_hysteresis: None,
            delta_goal: None,
            only_on_conflict: false,
            retrain_norm: None,
            retrain_schedule: None,
            retrain_tail: None,
            uniform_entropy: false,
            stop_entropy: None,
            stop_forget_acc: None,
            no_stop: false,
            check_every: None,
            retain_budget: 2.0,
            probe_size: None,
            no_guard: false,
            fixed_lr: false,
            repair_steps: None,
            polish_steps: None,
            polish_patience: None,
            allow_partial: false,
            grad_path: None,
            forgotten: Vec::new(),
            retain_limit: None,
            reference: None,
            no_metrics: false,
        }
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

impl Options {
    /// Options from a JSON object (the C API's and `serve`'s form); unknown keys are errors.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| invalid(format!("request options: {e}")))
    }

    /// What to forget: exactly one of class, ids or random fraction.
    pub fn spec(&self) -> Result<ForgetSpec> {
        match (self.forget_class, &self.forget_ids, self.forget_random) {
            (Some(k), None, None) => Ok(ForgetSpec::Class(k)),
            (None, Some(ids), None) => Ok(ForgetSpec::Ids(ids.clone())),
            (None, None, Some(p)) => Ok(ForgetSpec::Random {
                fraction: p,
                seed: self.seed,
            }),
            (None, None, None) => Err(invalid(
                "say what to forget: a class, a list of ids or a random fraction".into(),
            )),
            _ => Err(invalid(
                "name only one of: a class, a list of ids, a random fraction".into(),
            )),
        }
    }

    /// The run's settings: the method's defaults with these options over them, checked.
    pub fn config(&self) -> Result<Config> {
        let mut c = Config::defaults(self.method);
        c.retrain_schedule = self.retrain_schedule.unwrap_or(c.retrain_schedule);
        if self.method == MethodName::Retrain && c.retrain_schedule == RetrainSchedule::Cosine {
            c.epochs = crate::unlearn::RETRAIN_COSINE_EPOCHS;
        }
        c.epochs = self.epochs.unwrap_or(c.epochs);
        c.retrain_tail = self.retrain_tail.unwrap_or(c.retrain_tail);
        if c.retrain_tail == 0 {
            return Err(invalid(
                "retrain tail must be at least 1 epoch (the final model trains on the scales \
                 it is measured with there)"
                    .into(),
            ));
        }
        // A budget the user typed in is theirs: no extension unless asked for.
        c.budget_extensions = self.budget_extensions.unwrap_or(if self.epochs.is_some() {
            0
        } else {
            crate::unlearn::BUDGET_EXTENSIONS
        });
        c.lr = self.lr.unwrap_or(c.lr);
        c.momentum = self.momentum.unwrap_or(c.momentum);
        c.weight_decay = self.weight_decay.unwrap_or(c.weight_decay);
        c.forget_batch = self.forget_batch.unwrap_or(c.forget_batch);
        c.retain_batch = self.retain_batch.unwrap_or(c.retain_batch);
        c.lambda = self.lambda.unwrap_or(c.lambda);
        c.projection = self.projection.unwrap_or(c.projection);
        c.only_on_conflict = self.only_on_conflict;
        c.retrain_norm = self.retrain_norm.unwrap_or(c.retrain_norm);
        c.forget_step = self.forget_step.unwrap_or(c.forget_step);
        if !(c.forget_step.is_finite() && c.forget_step >= 0.0) {
            return Err(invalid(format!(
                "forget step must be a non-negative number, not {}",
                c.forget_step
            )));
        }
        c.retain_anchor = self.retain_anchor.unwrap_or(c.retain_anchor);
        if !(c.retain_anchor.is_finite() && c.retain_anchor >= 0.0) {
            return Err(invalid(format!(
                "retain anchor must be a non-negative weight, not {}",
                c.retain_anchor
            )));
        }
        c.requant_hysteresis = self.requant_hysteresis.unwrap_or(c.requant_hysteresis);
        if !(c.requant_hysteresis.is_finite() && c.requant_hysteresis >= 0.0) {
            return Err(invalid(format!(
                "requant hysteresis must be a non-negative number of quantization steps, not {}",
                c.requant_hysteresis
            )));
        }
        if let Some(p) = self.delta_goal {
            if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
                return Err(invalid(format!(
                    "delta goal must be a percentage of the weights (0 to 100), not {p}"
                )));
            }
            c.delta_goal = p / 100.0;
        }
        c.seed = self.seed;
        c.check_every = self.check_every.unwrap_or(c.check_every);
        c.grad_path = self.grad_path.unwrap_or(c.grad_path);
        if self.no_stop && (self.stop_entropy.is_some() || self.stop_forget_acc.is_some()) {
            return Err(invalid(
                "no stop conflicts with a stop entropy or stop forget accuracy".into(),
            ));
        }
        c.stop = match (self.stop_entropy, self.stop_forget_acc) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give a stop entropy or a stop forget accuracy, not both".into(),
                ))
            }
            (Some(h), _) => Stop::Entropy(h),
            (_, Some(p)) => Stop::ForgetAcc(p),
            _ => Stop::Fixed,
        };
        c.lr_growth = !self.fixed_lr;
        c.repair_steps = self.repair_steps.unwrap_or(c.repair_steps);
        c.polish_steps = self.polish_steps.unwrap_or(c.polish_steps);
        c.polish_patience = self.polish_patience.unwrap_or(c.polish_patience);
        if self.no_guard {
            c.guard_budget = None;
        } else if c.guard_budget.is_some() {
            if !(self.retain_budget.is_finite() && self.retain_budget >= 0.0) {
                return Err(invalid(format!(
                    "retain budget must be a non-negative number of percentage points, not {}",
                    self.retain_budget
                )));
            }
            c.guard_budget = Some(self.retain_budget);
        }
        if c.epochs == 0 || c.forget_batch == 0 || c.retain_batch == 0 {
            return Err(invalid("epochs and batch sizes must be at least 1".into()));
        }
        if !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(invalid(format!(
                "learning rate must be a positive number, not {}",
                c.lr
            )));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_options_take_the_cli_names_and_defaults() {
        let o = Options::from_json(r#"{"forget_class": 3, "method": "grad-ascent", "lr": 0.01}"#)
            .unwrap();
        assert_eq!(o.spec().unwrap(), ForgetSpec::Class(3));
        let c = o.config().unwrap();
        assert_eq!(c.lr, 0.01);
        assert_eq!(c.epochs, Config::defaults(MethodName::GradAscent).epochs);
        assert_eq!(c.guard_budget, Some(2.0));
    }

    #[test]
    fn a_typed_in_epoch_budget_is_a_hard_cap_unless_extensions_are_asked_for() {
        let c = |json: &str| Options::from_json(json).unwrap().config().unwrap();
        let tool = c(r#"{"forget_class": 3}"#);
        assert_eq!(tool.budget_extensions, crate::unlearn::BUDGET_EXTENSIONS);
        assert_eq!(
            c(r#"{"forget_class": 3, "epochs": 4}"#).budget_extensions,
            0
        );
        let both = c(r#"{"forget_class": 3, "epochs": 4, "budget_extensions": 2}"#);
        assert_eq!((both.epochs, both.budget_extensions), (4, 2));
        assert_eq!(
            c(r#"{"forget_class": 3, "budget_extensions": 0}"#).budget_extensions,
            0
        );
    }

    #[test]
    fn bad_options_are_errors_that_say_why() {
        let e = Options::from_json(r#"{"forget_klass": 3}"#).unwrap_err();
        assert!(e.to_string().contains("forget_klass"), "{e}");
        let o = Options::from_json(r#"{"forget_class": 3, "forget_random": 0.1}"#).unwrap();
        assert!(o.spec().unwrap_err().to_string().contains("only one"));
        let o = Options::from_json(r#"{"forget_class": 3, "lr": -1}"#).unwrap();
        assert!(o
            .config()
            .unwrap_err()
            .to_string()
            .contains("learning rate"));
        assert!(Options::default().spec().is_err());
    }
}
