//! `qforget forget MODEL --dataset DIR (--forget-class K | --forget-ids FILE | --forget-random F)
//! [--method M] [...] [--export OUT.onnx] [--json]`: one forget request, measured before and
//! after, optionally exported as a patched .onnx.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use qforget::request::{Data, Event, Options, Report, Session};
use qforget::unlearn::{MethodName, ProjectionMode, RetrainNorm, RetrainSchedule};

/// Options of `forget` (see `cli::Command::Forget` for their help).
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Quantized .onnx model to unlearn (never modified).
    pub model: PathBuf,
    /// Dataset directory: idx files, .npy files, or train/ and test/ folders of class folders
    /// of images; sample ids refer to its training split.
    #[arg(long)]
    pub dataset: PathBuf,
    #[command(flatten)]
    pub norm: super::norm::NormArgs,
    /// Forget every training sample of this class.
    #[arg(long, group = "what", value_name = "K")]
    pub forget_class: Option<u8>,
    /// Forget the training samples listed in FILE (0-based indices, one per line).
    #[arg(long, group = "what", value_name = "FILE")]
    pub forget_ids: Option<PathBuf>,
    /// Forget a random fraction of the training split (with --seed).
    #[arg(long, group = "what", value_name = "FRAC")]
    pub forget_random: Option<f64>,
    /// Seed of every random choice (forget set, retain subset, batches, init).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Unlearning method.
    #[arg(long, value_enum, default_value = "oeu")]
    pub method: MethodName,
    /// Epoch budget (default: 10 for OEU, 15 for OEU on some samples of a class, 3 for GA, RL
    /// and Q-MUL, 2 for finetune; for retrain the cap of its fit phase, 60, or with
    /// --retrain-schedule cosine its length, 10); runs stop earlier once the forgetting target
    /// is met (retrain: once the retain set is fit), and may get more (--budget-extensions) only
    /// when this is left to the tool. OEU runs at least 100 steps whatever the budget (a forget
    /// set of 20 samples is one batch per epoch), as more epochs of the same size.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// More epoch budgets a run may get when it spends its budget while still on its way to
    /// the forgetting target (at a pace that reaches it within them); default 3, or 0 when
    /// --epochs is given (then the budget, or OEU's 100-step floor, is a hard cap).
    #[arg(long, value_name = "N")]
    pub budget_extensions: Option<usize>,
    /// Learning rate (default: 0.003; 0.001 for retrain, which uses Adam).
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum (retrain: Adam's β1).
    #[arg(long)]
    pub momentum: Option<f32>,
    /// SGD weight decay.
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Forget batch size.
    #[arg(long)]
    pub forget_batch: Option<usize>,
    /// Retain batch size.
    #[arg(long)]
    pub retain_batch: Option<usize>,
    /// OEU: weight λ of the retain gradient.
    #[arg(long)]
    pub lambda: Option<f32>,
    /// OEU: project the forget gradient globally, per tensor, or not at all.
    #[arg(long, value_enum)]
    pub projection: Option<ProjectionMode>,
    /// OEU: length of the forget part of each step, as a fraction of the parameters' norm
    /// (default 2e-4; 0: the raw projected entropy gradient).
    #[arg(long, value_name = "RHO")]
    pub forget_step: Option<f32>,
    /// OEU: weight of the retain logit anchor: the retain loss also keeps each retain sample's
    /// centred logits near the starting model's (default 0.1 for some samples, 0 for whole
    /// classes; 0: retain cross-entropy only).
    #[arg(long, value_name = "W")]
    pub retain_anchor: Option<f32>,
    /// Re-quantization hysteresis in quantization steps: a weight keeps its integer until its
    /// f32 shadow is more than 0.5 + H steps from it, then trails it by H (default 4 for OEU
    /// on whole classes, 0 otherwise; 0: plain rounding). Fewer weights change, so the delta is smaller.
    #[arg(long, value_name = "H")]
    pub requant_hysteresis: Option<f32>,
    /// Once the forgetting target is met, give back weight changes (re-training on what is
    /// left so the target still holds) until at most this percent of the integer weights
    /// differ from the model's (0: keep every change). Smaller deltas.
    #[arg(long, value_name = "PCT")]
    pub delta_goal: Option<f32>,
    /// OEU: project only when the forget and retain gradients conflict (⟨g_f,g_r⟩ < 0).
    #[arg(long)]
    pub only_on_conflict: bool,
    /// Retrain: which layers train as batch norms (the batch's own statistics, running
    /// statistics at the end): `kept` (default) the file's kept BatchNormalization layers;
    /// `all` those and a new one after every other conv, folded into it at the end (exporters
    /// fold the BatchNorms a network was trained with; closer to PyTorch on MobileNetV2);
    /// `none` neither (kept ones stay at the file's factors).
    #[arg(long, value_enum, value_name = "WHICH")]
    pub retrain_norm: Option<RetrainNorm>,
    /// Retrain: learning-rate schedule. `fit` (default): the full rate until the retain set is
    /// fit within 0.5 pp of the original model's fit (read each epoch on 5,000 retain samples,
    /// on a running average of the weights over a quarter epoch; `--epochs` caps this phase,
    /// default 60), then a tenth of it on frozen activation scales, in quarter epochs, until
    /// the fit reaches the original's, at most `--retrain-tail` epochs; `cosine`: from the full
    /// rate to 0 over exactly `--epochs` (default 10).
    #[arg(long, value_enum, value_name = "SCHEDULE")]
    pub retrain_schedule: Option<RetrainSchedule>,
    /// Retrain, fit schedule: most epochs at a tenth of the rate once the retain set is fit
    /// [default: 5].
    #[arg(long, value_name = "N")]
    pub retrain_tail: Option<usize>,
    /// OEU, sample-wise requests: maximize the forget samples' entropy (the class-wise
    /// objective) instead of lowering each one's confidence to what unseen data gets.
    #[arg(long)]
    pub uniform_entropy: bool,
    /// Stop once the forget set's mean normalized entropy reaches this value (0..1), instead of
    /// the default target.
    #[arg(long, value_name = "H", conflicts_with_all = ["stop_forget_acc", "no_stop"])]
    pub stop_entropy: Option<f32>,
    /// Stop once forget accuracy (percent) is at or below this value, instead of the default
    /// target (class-wise: 1 %; sample-wise: the starting model's test accuracy plus two
    /// standard errors of the forget set's size, at most 2 pp).
    #[arg(long, value_name = "PCT", conflicts_with = "no_stop")]
    pub stop_forget_acc: Option<f64>,
    /// Run the whole epoch budget: no forgetting target, no early stop.
    #[arg(long)]
    pub no_stop: bool,
    /// Run the guard and the stopping rule every N steps, and after each epoch (default 5; 0:
    /// only after each epoch).
    #[arg(long, value_name = "N")]
    pub check_every: Option<usize>,
    /// Retain guard: the largest drop of retain accuracy (percentage points, on a held-out
    /// probe of the retain set) a request may cause; beyond it the run rolls back and slows down.
    #[arg(long, value_name = "PP", default_value_t = 2.0)]
    pub retain_budget: f64,
    /// Retain guard: probe size (default: a tenth of the retain set, 200 to 1,000 samples; at
    /// least 1 and at most half of the retain set; --no-guard turns the guard off).
    #[arg(long, value_name = "N")]
    pub probe_size: Option<usize>,
    /// Turn the retain guard off (no probe is held out; the model is handed back whatever
    /// happened to its retain accuracy).
    #[arg(long, conflicts_with_all = ["retain_budget", "probe_size"])]
    pub no_guard: bool,
    /// Keep the learning rate fixed (by default the guard raises it while retain accuracy is
    /// well within budget, and halves it on a roll-back; sample-wise OEU requests always keep
    /// it fixed).
    #[arg(long)]
    pub fixed_lr: bool,
    /// Retain guard: before rolling back a state over budget, try up to N repair steps (retain
    /// cross-entropy, forget set held at its current outputs) to bring it back (default 10; 0:
    /// roll back at once).
    #[arg(long, value_name = "N")]
    pub repair_steps: Option<usize>,
    /// Once the forgetting target is met, up to N repair steps that win back retain
    /// accuracy while the target still holds (default 200, ending early after 40 steps with no
    /// better state; a state only counts if the forget set is no more confident than when
    /// polish began; 0: none).
    #[arg(long, value_name = "N")]
    pub polish_steps: Option<usize>,
    /// Polish ends once N steps in a row brought no better state (default 40).
    #[arg(long, value_name = "N")]
    pub polish_patience: Option<usize>,
    /// Write the result even when the forgetting target was not met (by default such a request
    /// fails and writes nothing).
    #[arg(long)]
    pub allow_partial: bool,
    /// Backward arithmetic: int8 or f32 [default: f32 for retrain, int8 for every other method]
    #[arg(long)]
    pub grad_path: Option<qforget::graph::GradPath>,
    /// Samples forgotten by earlier requests (ids, one per line): no longer on the device, so
    /// they are neither retained nor measured (use with --parent).
    #[arg(long, value_name = "FILE")]
    pub forgotten: Option<PathBuf>,
    /// Use only this many retain samples (a seeded subset: the device's retain buffer).
    #[arg(long, value_name = "N")]
    pub retain_limit: Option<usize>,
    /// Use only the first N images of the training split.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// A reference model (.onnx, e.g. a retrained one) or the JSON output of an earlier
    /// `forget --json` run (its `after` metrics): report the Avg. Gap to it.
    #[arg(long, value_name = "MODEL.onnx|RUN.json")]
    pub reference: Option<PathBuf>,
    /// Write the unlearned model here (the input file with its trained initializers replaced).
    #[arg(long, value_name = "OUT.onnx")]
    pub export: Option<PathBuf>,
    /// Write the request as a delta file over the untouched MODEL (and append it to the journal).
    #[arg(long, value_name = "DELTA")]
    pub out: Option<PathBuf>,
    /// Earlier deltas of MODEL, in request order: this request continues that chain (the
    /// unlearning then starts from the model they give).
    #[arg(long, value_name = "DELTA")]
    pub parent: Vec<PathBuf>,
    /// Journal to append the request to (default: qforget-journal.jsonl beside --out).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Skip the before/after measurements (only the request itself runs; for timing it, or
    /// on a device that cannot spare the memory of the MIA attacker).
    #[arg(long, conflicts_with = "reference")]
    pub no_metrics: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print where the time went (per phase: setup, forward, loss, backward, optimizer,
    /// re-quantization, checks, metrics, other; and GEMM time inside each) on stderr, and as
    /// `profile` in the --json report.
    #[arg(long)]
    pub profile: bool,
}

impl ForgetArgs {
    /// The library's request options for these flags, but for the id files (`--forget-ids`,
    /// `--forgotten`), which are read once the training split's size is known.
    fn options(&self) -> Options {
        Options {
            forget_class: self.forget_class,
            forget_ids: None,
            forget_random: self.forget_random,
            seed: self.seed,
            method: self.method,
            epochs: self.epochs,
            budget_extensions: self.budget_extensions,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            forget_batch: self.forget_batch,
            retain_batch: self.retain_batch,
            lambda: self.lambda,
            projection: self.projection,
            forget_step: self.forget_step,
            retain_anchor: self.retain_anchor,
            delta_goal: self.delta_goal,
            requant_hysteresis: self.requant_hysteresis,
            only_on_conflict: self.only_on_conflict,
            retrain_norm: self.retrain_norm,
            retrain_schedule: self.retrain_schedule,
            retrain_tail: self.retrain_tail,
            uniform_entropy: self.uniform_entropy,
            stop_entropy: self.stop_entropy,
            stop_forget_acc: self.stop_forget_acc,
            no_stop: self.no_stop,
            check_every: self.check_every,
            retain_budget: self.retain_budget,
            probe_size: self.probe_size,
            no_guard: self.no_guard,
            fixed_lr: self.fixed_lr,
            repair_steps: self.repair_steps,
            polish_steps: self.polish_steps,
            polish_patience: self.polish_patience,
            allow_partial: self.allow_partial,
            grad_path: self.grad_path,
            forgotten: Vec::new(),
            retain_limit: self.retain_limit,
            reference: self.reference.clone(),
            no_metrics: self.no_metrics,
        }
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps  loss {msg}  {elapsed}<{eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b
}

pub fn run(a: ForgetArgs) -> anyhow::Result<()> {
    // Settings are checked before anything is loaded.
    let mut opts = a.options();
    opts.config()?;
    let norm = a.norm.resolve()?;
    let mut session = Session::open(&a.model, &a.parent)?;
    session.override_normalization(norm)?;
    session.check_outputs(a.method, a.export.as_deref(), a.out.as_deref())?;
    if let Some(out) = &a.out {
        // A delta the journal records is never overwritten: say so now, not after the method.
        let journal = a
            .journal
            .clone()
            .unwrap_or_else(|| qforget::delta::journal::default_path(Some(out)));
        qforget::delta::check_recordable(out, &journal)?;
    }
    let data = Data::load_for(&a.dataset, a.train_limit, Some(session.graph().input.shape))?;
    if let Some(f) = &a.forget_ids {
        opts.forget_ids = Some(qforget::data::read_ids(f, data.train.n)?);
    }
    if let Some(f) = &a.forgotten {
        opts.forgotten = qforget::data::read_ids(f, data.train.n)?;
    }
    let quiet = a.json || !std::io::stderr().is_terminal();
    if a.profile {
        qforget::profile::enable();
    }
    let bar = progress_bar(quiet);
    let mut outcome = session.forget(
        &data,
        &opts,
        &mut |e| match e {
            Event::Selected {
                forget,
                retain,
                train,
                method,
            } => {
                if !quiet {
                    eprintln!(
                        "forget {forget} of {train} training samples ({retain} retained) \
                             with {}; measuring the model first",
                        method.as_str()
                    );
                }
            }
            Event::Step(p) => {
                bar.set_length(p.steps_per_epoch as u64);
                bar.set_position(p.step as u64);
                bar.set_prefix(format!("epoch {}/{}", p.epoch + 1, p.epochs));
                bar.set_message(format!("{:.4}", p.loss));
            }
        },
        None,
    )?;
    bar.finish_and_clear();
    if a.profile {
        let phases = qforget::profile::breakdown();
        print_profile(&phases, outcome.report.seconds);
        outcome.report.profile = Some(phases);
    }
    if outcome.report.refused.is_none() {
        if let Some(out) = &a.export {
            outcome
                .export(&session, out)
                .with_context(|| format!("{}: exporting", a.model.display()))?;
        }
        if let Some(out) = &a.out {
            outcome.record(&session, out, a.journal.as_deref())?;
        }
    }
    let report = &outcome.report;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print_text(report);
    }
    match &report.refused {
        Some(why) => bail!("{}: {why}", a.model.display()),
        None => Ok(()),
    }
}

/// The profile as a table on stderr.
fn print_profile(phases: &[qforget::profile::PhaseTime], method_seconds: f64) {
    let total: f64 = phases.iter().map(|p| p.seconds).sum();
    eprintln!(
        "profile (kernel {}; wall time per phase, exclusive; GEMM time summed over threads):",
        qforget::kernels::current().name
    );
    eprintln!(
        "  {:<38} {:>9} {:>7} {:>12} {:>8}",
        "phase", "wall s", "%", "GEMM thr. s", "GEMMs"
    );
    for p in phases {
        eprintln!(
            "  {:<38} {:>9.3} {:>6.1}% {:>12.3} {:>8}",
            p.phase,
            p.seconds,
            100.0 * p.seconds / total.max(1e-12),
            p.gemm_thread_seconds,
            p.gemm_calls
        );
    }
    eprintln!(
        "  {:<38} {:>9.3} (the method alone: {method_seconds:.3} s)",
        "total", total
    );
}

fn print_text(r: &Report) {
    println!(
        "{}: forgot {} samples ({} retained) in {:.2} s on the {} kernel, {} steps ({})",
        r.method, r.forget_count, r.retain_count, r.seconds, r.kernel, r.steps, r.stopped
    );
    println!("            forget acc  retain acc  test acc     MIA    gap");
    for (name, s) in [("before", &r.before), ("after", &r.after)] {
        let Some(s) = s else {
            continue;
        };
        let m = &s.m.metrics;
        println!(
            "  {name:<8} {:>9.2} %  {:>8.2} %  {:>6.2} %  {:>5.2} %  {}",
            m.forget_acc,
            m.retain_acc,
            m.test_acc,
            m.mia,
            s.gap
                .map(|g| format!("{g:.2} pp"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if let Some(m) = &r.reference {
        println!(
            "  reference {:>8.2} %  {:>8.2} %  {:>6.2} %  {:>5.2} %",
            m.forget_acc, m.retain_acc, m.test_acc, m.mia
        );
    }
    println!(
        "  target: {}{}",
        r.target,
        match r.target_met {
            Some(true) => " (met)",
            Some(false) => " (NOT met)",
            None => "",
        }
    );
    if let Some(g) = &r.guard {
        println!(
            "  retain guard: probe of {} held out, accuracy {:.2} % → {:.2} % (budget {} pp), {} check(s), {} back-off(s){}",
            g.probe_size,
            g.start_acc,
            g.final_acc,
            g.budget_pp,
            g.checks,
            g.backoffs,
            if g.gave_up { ", gave up" } else { "" }
        );
        for e in &g.events {
            println!("    {e}");
        }
    }
    for n in &r.notes {
        println!("  {n}");
    }
    println!("  {} quantized weights changed", r.changed_weights);
    if let Some(e) = &r.export {
        println!("  wrote {e}");
    }
    if let (Some(d), Some(h)) = (&r.delta, &r.delta_sha256) {
        println!("  wrote delta {d} (sha256 {h}) and its journal entry");
    }
}
