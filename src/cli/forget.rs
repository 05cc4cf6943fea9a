//! `qforget forget MODEL --dataset DIR (--forget-class K | --forget-ids FILE | --forget-random F)
//! [--method M] [...] [--export OUT.onnx] [--json]`: one forget request, measured before and
//! after, optionally exported as a patched .onnx.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use qforget::data::forget::{
    default_probe_size, hold_out_probe, select, whole_classes, ForgetSpec,
};
use qforget::data::{IdxDataset, Split};
use qforget::eval::forgetting::{measure, EvalSets, Measured};
use qforget::eval::metrics::{avg_gap, Metrics};
use qforget::graph::params::{ExportType, Shadow};
use qforget::onnx::patch::{patch_initializers, InitializerUpdate, TensorValues};
use qforget::unlearn::{self, Config, MethodName, ProjectionMode, Request, RunInfo, Stop};
use serde::Serialize;

use super::output::write_atomic;

/// Options of `forget` (see `cli::Command::Forget` for their help).
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Quantized .onnx model to unlearn (never modified).
    pub model: PathBuf,
    /// Dataset directory (idx files); sample ids refer to its training split.
    #[arg(long)]
    pub dataset: PathBuf,
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
    /// Epoch budget (default: 10 for OEU, 3 for GA, RL and Q-MUL, 2 for finetune, 10 for
    /// retrain); runs stop earlier once the forgetting target is met.
    #[arg(long)]
    pub epochs: Option<usize>,
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
    /// Re-quantization hysteresis in quantization steps: a weight keeps its integer until its
    /// f32 shadow is more than 0.5 + H steps from it, then trails it by H (default 4 for OEU
    /// on whole classes, 0 otherwise; 0: plain rounding). Fewer weights change, so the delta is smaller.
    #[arg(long, value_name = "H")]
    pub requant_hysteresis: Option<f32>,
    /// OEU: project only when the forget and retain gradients conflict (⟨g_f,g_r⟩ < 0).
    #[arg(long)]
    pub only_on_conflict: bool,
    /// Stop once the forget set's mean normalized entropy reaches this value (0..1), instead of
    /// the default target.
    #[arg(long, value_name = "H", conflicts_with_all = ["stop_forget_acc", "no_stop"])]
    pub stop_entropy: Option<f32>,
    /// Stop once forget accuracy (percent) is at or below this value, instead of the default
    /// target (class-wise: 1 %; sample-wise: the starting model's test accuracy).
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
    /// Retain guard: probe size (default: a tenth of the retain set, 200 to 1,000 samples).
    #[arg(long, value_name = "N")]
    pub probe_size: Option<usize>,
    /// Turn the retain guard off (no probe is held out; the model is handed back whatever
    /// happened to its retain accuracy).
    #[arg(long, conflicts_with_all = ["retain_budget", "probe_size"])]
    pub no_guard: bool,
    /// Keep the learning rate fixed (by default the guard raises it while retain accuracy is
    /// well within budget, and halves it on a roll-back).
    #[arg(long)]
    pub fixed_lr: bool,
    /// Retain guard: before rolling back a state over budget, try up to N repair steps (retain
    /// cross-entropy, forget set held at its current outputs) to bring it back (default 10; 0:
    /// roll back at once).
    #[arg(long, value_name = "N")]
    pub repair_steps: Option<usize>,
    /// Once the forgetting target is met, up to N repair steps that win back retain
    /// accuracy while the target still holds (default 20; 0: none).
    #[arg(long, value_name = "N")]
    pub polish_steps: Option<usize>,
    /// Write the result even when the forgetting target was not met (by default such a request
    /// fails and writes nothing).
    #[arg(long)]
    pub allow_partial: bool,
    /// Backward arithmetic: int8 (default) or f32.
    #[arg(long, default_value = "int8")]
    pub grad_path: qforget::graph::GradPath,
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
}

#[derive(Serialize)]
struct Side {
    #[serde(flatten)]
    m: Measured,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    method: &'static str,
    model: String,
    dataset: String,
    forget_count: usize,
    retain_count: usize,
    seconds: f64,
    epoch_seconds: Vec<f64>,
    steps: usize,
    stopped: String,
    /// The forgetting target (stopping rule) the request ran to.
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_met: Option<bool>,
    /// Why nothing was written (the request failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<qforget::unlearn::GuardReport>,
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta_sha256: Option<String>,
    changed_weights: usize,
    settings: std::collections::BTreeMap<String, String>,
}

fn load_train(dir: &Path, limit: Option<usize>) -> anyhow::Result<IdxDataset> {
    let mut d = IdxDataset::load(dir, Split::Train)?;
    if let Some(n) = limit {
        if n == 0 || n > d.n {
            bail!(
                "--train-limit {n}: the training split of {} has {} images",
                dir.display(),
                d.n
            );
        }
        d.images.truncate(n * d.rows * d.cols);
        d.labels.truncate(n);
        d.n = n;
    }
    Ok(d)
}

fn config(a: &ForgetArgs) -> anyhow::Result<Config> {
    let mut c = Config::defaults(a.method);
    c.epochs = a.epochs.unwrap_or(c.epochs);
    c.lr = a.lr.unwrap_or(c.lr);
    c.momentum = a.momentum.unwrap_or(c.momentum);
    c.weight_decay = a.weight_decay.unwrap_or(c.weight_decay);
    c.forget_batch = a.forget_batch.unwrap_or(c.forget_batch);
    c.retain_batch = a.retain_batch.unwrap_or(c.retain_batch);
    c.lambda = a.lambda.unwrap_or(c.lambda);
    c.projection = a.projection.unwrap_or(c.projection);
    c.only_on_conflict = a.only_on_conflict;
    c.forget_step = a.forget_step.unwrap_or(c.forget_step);
    if !(c.forget_step.is_finite() && c.forget_step >= 0.0) {
        bail!(
            "--forget-step must be a non-negative number, not {}",
            c.forget_step
        );
    }
    c.requant_hysteresis = a.requant_hysteresis.unwrap_or(c.requant_hysteresis);
    if !(c.requant_hysteresis.is_finite() && c.requant_hysteresis >= 0.0) {
        bail!(
            "--requant-hysteresis must be a non-negative number of quantization steps, not {}",
            c.requant_hysteresis
        );
    }
    c.seed = a.seed;
    c.check_every = a.check_every.unwrap_or(c.check_every);
    c.grad_path = a.grad_path;
    c.stop = match (a.stop_entropy, a.stop_forget_acc) {
        (Some(h), _) => Stop::Entropy(h),
        (_, Some(p)) => Stop::ForgetAcc(p),
        _ => Stop::Fixed,
    };
    c.lr_growth = !a.fixed_lr;
    c.repair_steps = a.repair_steps.unwrap_or(c.repair_steps);
    c.polish_steps = a.polish_steps.unwrap_or(c.polish_steps);
    if a.no_guard {
        c.guard_budget = None;
    } else if c.guard_budget.is_some() {
        if !(a.retain_budget.is_finite() && a.retain_budget >= 0.0) {
            bail!(
                "--retain-budget must be a non-negative number of percentage points, not {}",
                a.retain_budget
            );
        }
        c.guard_budget = Some(a.retain_budget);
    }
    if c.epochs == 0 || c.forget_batch == 0 || c.retain_batch == 0 {
        bail!("--epochs and batch sizes must be at least 1");
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        bail!("--lr must be a positive number, not {}", c.lr);
    }
    Ok(c)
}

/// The forgetting target a request implies (DESIGN.md): a whole class is forgotten once at most
/// 1 % of its samples are still recognised; some samples once they are recognised no more often
/// than data the model never saw (the starting model's accuracy on the test images of the
/// classes it still knows, i.e. those with retain samples).
fn default_stop(
    graph: &qforget::graph::Graph,
    train: &IdxDataset,
    test: &IdxDataset,
    retain: &[usize],
    class_wise: Option<&[u8]>,
) -> anyhow::Result<Stop> {
    if class_wise.is_some() {
        return Ok(Stop::ForgetAcc(1.0));
    }
    let mut known = [false; 256];
    for &i in retain {
        known[train.labels[i] as usize] = true;
    }
    let held_out: Vec<usize> = (0..test.n)
        .filter(|&i| known[test.labels[i] as usize])
        .collect();
    let acc = unlearn::accuracy_on(graph, test, &held_out)?;
    Ok(Stop::ForgetAcc((acc * 100.0).round() / 100.0))
}

/// Metrics of the reference: measured on its model, or read from an earlier run's JSON.
fn reference(path: &Path, sets: &EvalSets) -> anyhow::Result<Metrics> {
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let after = v.get("after").with_context(|| {
            format!(
                "{}: no \"after\" object (expected `forget --json` output)",
                path.display()
            )
        })?;
        let f = |k: &str| {
            after
                .get(k)
                .and_then(|x| x.as_f64())
                .with_context(|| format!("{}: \"after\" has no number \"{k}\"", path.display()))
        };
        return Ok(Metrics {
            forget_acc: f("forget_acc")?,
            retain_acc: f("retain_acc")?,
            test_acc: f("test_acc")?,
            mia: f("mia")?,
        });
    }
    let g = qforget::onnx::load(path)?;
    Ok(measure(&g, sets)?.metrics)
}

/// Exported initializers as the patcher takes them.
fn updates(shadow: &Shadow, g: &qforget::graph::Graph) -> Vec<InitializerUpdate> {
    shadow
        .exports(g)
        .into_iter()
        .map(|e| InitializerUpdate {
            name: e.name,
            values: match e.dtype {
                ExportType::I8 => TensorValues::I8(e.values.iter().map(|&v| v as i8).collect()),
                ExportType::U8 => TensorValues::U8(e.values.iter().map(|&v| v as u8).collect()),
                ExportType::I32 => TensorValues::I32(e.values.iter().map(|&v| v as i32).collect()),
                ExportType::F32 => {
                    TensorValues::F32(e.values.iter().map(|&v| f32::from_bits(v as u32)).collect())
                }
            },
        })
        .collect()
}

pub fn run(a: ForgetArgs) -> anyhow::Result<()> {
    let mut cfg = config(&a)?;
    if let Some(out) = &a.export {
        if out.exists() && same_file(out, &a.model) {
            bail!(
                "{}: --export would overwrite the input model",
                out.display()
            );
        }
    }
    if (a.export.is_some() || a.out.is_some()) && a.method == MethodName::Retrain {
        bail!(
            "--export/--out: a retrained model has new scales and cannot be written as a weight \
             patch of {}; run retrain without them (its --json output serves as --reference)",
            a.model.display()
        );
    }
    let model_bytes =
        std::fs::read(&a.model).with_context(|| format!("{}: cannot read", a.model.display()))?;
    // A continued chain starts from the model its deltas give; the delta is always over MODEL.
    let start_bytes = if a.parent.is_empty() {
        model_bytes.clone()
    } else {
        qforget::delta::apply_files(&a.model, &a.parent)?
    };
    let mut graph = qforget::onnx::from_bytes(&start_bytes, &a.model)?;
    let train = load_train(&a.dataset, a.train_limit)?;
    let test = IdxDataset::load(&a.dataset, Split::Test)?;
    qforget::eval::check_fits(&graph, &train)?;
    let spec = match (a.forget_class, &a.forget_ids, a.forget_random) {
        (Some(k), _, _) => ForgetSpec::Class(k),
        (_, Some(f), _) => ForgetSpec::Ids(qforget::data::read_ids(f, train.n)?),
        (_, _, Some(p)) => ForgetSpec::Random {
            fraction: p,
            seed: a.seed,
        },
        _ => {
            bail!("say what to forget: --forget-class K, --forget-ids FILE or --forget-random FRAC")
        }
    };
    let mut split = select(&train.labels, &spec, a.retain_limit, a.seed)
        .with_context(|| format!("{}: choosing the forget set", a.dataset.display()))?;
    if let Some(f) = &a.forgotten {
        let mut gone = qforget::data::read_ids(f, train.n)?;
        gone.sort_unstable();
        let is_gone = |i: &usize| gone.binary_search(i).is_ok();
        if let Some(i) = split.forget.iter().find(|i| is_gone(i)) {
            bail!(
                "{}: sample {i} is both in the forget set and among the samples already forgotten",
                f.display()
            );
        }
        split.retain.retain(|i| !is_gone(i));
        if split.retain.is_empty() {
            bail!("{}: no retain sample is left", f.display());
        }
    }
    // The guard's probe: held-out retain samples, never trained on (metrics still count them
    // as retain samples).
    let (train_retain, probe) = if cfg.guard_budget.is_some() {
        let size = a
            .probe_size
            .unwrap_or_else(|| default_probe_size(split.retain.len()));
        hold_out_probe(&split.retain, size, a.seed)
    } else {
        (split.retain.clone(), Vec::new())
    };
    let class_wise = whole_classes(&train.labels, &split.forget);
    // Hysteresis by default for whole classes only: in a chain of sample-wise requests on
    // fmnist_cnn_qdq (tests/it/safe_forget.rs) one was refused with h = 4, and plain rounding
    // already gives sample-wise deltas of under 2 % of the model file.
    if class_wise.is_none() && a.requant_hysteresis.is_none() {
        cfg.requant_hysteresis = 0.0;
    }
    if cfg.stop == Stop::Fixed && !a.no_stop && a.method != MethodName::Retrain {
        cfg.stop = default_stop(&graph, &train, &test, &split.retain, class_wise.as_deref())?;
    }
    let sets = EvalSets {
        train: &train,
        test: &test,
        forget: &split.forget,
        retain: &split.retain,
        test_exclude: a.forget_class,
        seed: a.seed,
    };
    let reference = match &a.reference {
        Some(p) => Some(reference(p, &sets)?),
        None => None,
    };
    let quiet = a.json || !std::io::stderr().is_terminal();
    if !quiet {
        eprintln!(
            "forget {} of {} training samples ({} retained) with {}; measuring the model first",
            split.forget.len(),
            train.n,
            split.retain.len(),
            a.method.as_str()
        );
    }
    let before = if a.no_metrics {
        None
    } else {
        Some(measure(&graph, &sets)?)
    };
    let base = graph.clone();
    let req = Request {
        train: &train,
        forget: &split.forget,
        retain: &train_retain,
        probe: &probe,
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} steps  loss {msg}  {elapsed}<{eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    };
    let t0 = Instant::now();
    let info: RunInfo = unlearn::method(a.method).run(&mut graph, &req, &cfg, &mut |p| {
        bar.set_length(p.steps_per_epoch as u64);
        bar.set_position(p.step as u64);
        bar.set_prefix(format!("epoch {}/{}", p.epoch + 1, p.epochs));
        bar.set_message(format!("{:.4}", p.loss));
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let after = if a.no_metrics {
        None
    } else {
        Some(measure(&graph, &sets)?)
    };
    let changed = changed_weights(&base, &graph);
    let ups = updates(&Shadow::new(&graph), &graph);
    let refused = (info.target_met == Some(false) && !a.allow_partial).then(|| {
        let guard = match &info.guard {
            Some(g) => format!(
                " without losing more than {} pp of retain accuracy (probe {:.2} % → {:.2} %, {} back-off(s){})",
                g.budget_pp,
                g.start_acc,
                g.final_acc,
                g.backoffs,
                if g.gave_up { ", gave up" } else { "" }
            ),
            None => String::new(),
        };
        format!(
            "{} could not meet the forgetting target ({}){guard} within {} epoch(s): {}; nothing \
             was written (--allow-partial writes such a result anyway; --retain-budget, --epochs \
             and --lr change what is tried)",
            a.method.as_str(),
            cfg.stop.describe(),
            cfg.epochs,
            info.stopped
        )
    });
    if let (Some(out), None) = (&a.export, &refused) {
        let patched = patch_initializers(&start_bytes, &ups)
            .with_context(|| format!("{}: exporting", a.model.display()))?;
        write_atomic(out, &patched)?;
    }
    let delta_sha256 = match (&a.out, &refused) {
        (Some(out), None) => {
            let journal = a.journal.clone().unwrap_or_else(|| {
                out.parent()
                    .unwrap_or(Path::new("."))
                    .join(qforget::delta::journal::DEFAULT_NAME)
            });
            let flat = |m: &Option<Measured>| {
                m.as_ref()
                    .map(|m| {
                        let v = serde_json::to_value(m).unwrap_or_default();
                        v.as_object()
                            .map(|o| {
                                o.iter()
                                    .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .unwrap_or_default()
            };
            let rec = qforget::delta::RequestRecord {
                request_id: String::new(),
                method: a.method.as_str().to_string(),
                settings: cfg.settings(),
                forget_ids: split.forget.iter().map(|&i| i as u64).collect(),
                metrics_before: flat(&before),
                metrics_after: flat(&after),
            };
            Some(qforget::delta::record_request(
                &a.model, &a.parent, &ups, &rec, out, &journal,
            )?)
        }
        _ => None,
    };
    let side = |m: Measured| Side {
        gap: reference.as_ref().map(|r| avg_gap(&m.metrics, r)),
        m,
    };
    let report = Report {
        method: a.method.as_str(),
        model: a.model.display().to_string(),
        dataset: a.dataset.display().to_string(),
        forget_count: split.forget.len(),
        retain_count: split.retain.len(),
        seconds,
        epoch_seconds: info.epoch_seconds.clone(),
        steps: info.steps,
        stopped: info.stopped.clone(),
        target: cfg.stop.describe(),
        target_met: info.target_met,
        refused: refused.clone(),
        guard: info.guard.clone(),
        notes: info.notes.clone(),
        before: before.map(side),
        after: after.map(side),
        reference,
        export: a
            .export
            .as_ref()
            .filter(|_| refused.is_none())
            .map(|p| p.display().to_string()),
        delta: a
            .out
            .as_ref()
            .filter(|_| refused.is_none())
            .map(|p| p.display().to_string()),
        delta_sha256,
        changed_weights: changed,
        settings: cfg.settings(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    match refused {
        Some(why) => bail!("{}: {why}", a.model.display()),
        None => Ok(()),
    }
}

fn print_text(r: &Report) {
    println!(
        "{}: forgot {} samples ({} retained) in {:.2} s, {} steps ({})",
        r.method, r.forget_count, r.retain_count, r.seconds, r.steps, r.stopped
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
    println!("  {} int8 weights changed", r.changed_weights);
    if let Some(e) = &r.export {
        println!("  wrote {e}");
    }
    if let (Some(d), Some(h)) = (&r.delta, &r.delta_sha256) {
        println!("  wrote delta {d} (sha256 {h}) and its journal entry");
    }
}

/// Number of integer weights that differ between two graphs of the same architecture.
fn changed_weights(a: &qforget::graph::Graph, b: &qforget::graph::Graph) -> usize {
    use qforget::graph::Op;
    a.layers
        .iter()
        .zip(&b.layers)
        .map(|(x, y)| match (&x.op, &y.op) {
            (Op::Conv(p), Op::Conv(q)) => p
                .weights
                .iter()
                .zip(&q.weights)
                .map(|(u, v)| u.data.iter().zip(&v.data).filter(|(s, t)| s != t).count())
                .sum(),
            (Op::Linear(p), Op::Linear(q)) => p
                .weights
                .data
                .iter()
                .zip(&q.weights.data)
                .filter(|(s, t)| s != t)
                .count(),
            _ => 0,
        })
        .sum()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
