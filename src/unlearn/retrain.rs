//! Retrain: the gold standard. Same architecture, random initial weights (He-uniform, zero
//! biases), trained from scratch on the retain set with cross-entropy, on the same integer
//! engine. With no calibration to inherit, scales are learned on the way: weight scales follow
//! each channel's largest shadow weight (max/127) after every step, and activation scales follow
//! EMA min/max observers fed by the float twin every `observe_every` steps (and on a first
//! calibration batch), frozen for the last epoch so the final model is trained on the scales it
//! is measured with. Only meaningful for metrics: its scales differ from the file's, so it is
//! not exportable as a weight-only patch.
//!
//! "Same architecture" includes the ReLUs the quantizer folded into zero points
//! ([`keep_implicit_relus`]): without them the observers trained a linear network, which on
//! `mnist_res_s8` diverged to chance. The optimizer is Adam (the PyTorch references' recipe,
//! default rate 1e-3); SGD from random weights, without the folded batch norms, starts far too
//! slowly (see [`Adam`]). The rate stays at `lr` until the retain set is fit about as well as
//! the original fits it, then a short tail at a tenth of it (`retrain_fit`, the default), or
//! follows a cosine from `lr` to near 0 over exactly `epochs` (`RetrainSchedule::Cosine`).
//!
//! Batch norms train as in PyTorch (`retrain_bn`, `Config::retrain_norm`): a kept
//! BatchNormalization layer normalizes with each batch's statistics. Frozen at the original's
//! factors instead (full retrain, class 3, 10 epochs, 1 thread), `fmnist_cnn_bn_qdq` ended
//! 2.26 pp below the PyTorch retrain's test accuracy; with them 1.03 pp. With
//! `RetrainNorm::All` every other conv gets such a layer too, folded back into it at the end
//! (exporters fold the BatchNorms a network was trained with): MobileNetV2's retain accuracy
//! went from 1.15 pp below PyTorch's to 0.06 above, but on three other fixtures it fit the
//! retain set more than 1 pp better than their PyTorch retrains, so it is not the default.

use std::cell::{Cell, RefCell};

use rand::RngExt;

use super::retrain_bn::{fold_norms, insert_norms, BatchNorms};
use super::retrain_fit::{Average, FitSchedule, Plan, Weights};
use super::{
    accuracy_on, run_epochs, state, Config, Method, Progress, Request, RetrainNorm,
    RetrainSchedule, RunInfo,
};
use crate::graph::{Activation, Graph, Op, ParamKind, QParams};
use crate::train::{batches, gather, rng, RangeObserver, TrainState};
use crate::Result;

/// Retrain from scratch on the retain set.
pub struct Retrain;

/// Observer momentum (weight of the new batch).
const MOMENTUM: f32 = 0.1;

impl Method for Retrain {
    fn name(&self) -> &'static str {
        "retrain"
    }

    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo> {
        let mut g = graph.clone();
        keep_implicit_relus(&mut g);
        let acts_len = g.acts.len();
        let added = match cfg.retrain_norm {
            RetrainNorm::All => insert_norms(&mut g),
            RetrainNorm::Kept | RetrainNorm::None => Vec::new(),
        };
        let mut st = state(g, cfg);
        randomize(&mut st, cfg.seed);
        let mut observers = vec![RangeObserver::new(1.0); st.graph.acts.len()];
        let calib: Vec<usize> = crate::train::shuffled(req.retain, cfg.seed ^ 0xca1)
            .into_iter()
            .take(256)
            .collect();
        // Layers a kept BatchNormalization became normalize with batch statistics
        // (`retrain_bn`). The first calibration saw them at identity; once the ranges before
        // them are known, they take the calibration batch's statistics and the ranges after
        // them are calibrated again.
        let mut norms = match cfg.retrain_norm {
            RetrainNorm::None => None,
            RetrainNorm::All | RetrainNorm::Kept => {
                BatchNorms::new(&mut st.graph, cfg.momentum, cfg.weight_decay)
            }
        };
        observe(&mut st, &mut observers, req, &calib)?;
        if let Some(bn) = norms.as_mut() {
            let (images, _) = gather(req.train, &calib);
            bn.calibrate(&mut st.graph, &images, calib.len())?;
            observe(&mut st, &mut observers, req, &calib)?;
        }
        for o in observers.iter_mut() {
            o.momentum = MOMENTUM;
        }
        // The schedule: the fit schedule's phases (`retrain_fit`), or a cosine over `epochs`.
        let mut fit = match cfg.retrain_schedule {
            RetrainSchedule::Fit => Some(FitSchedule::new(
                graph,
                req.train,
                req.retain,
                cfg.seed,
                cfg.epochs,
                cfg.retrain_tail,
            )?),
            RetrainSchedule::Cosine => None,
        };
        let run_cfg = Config {
            epochs: fit.as_ref().map_or(cfg.epochs, FitSchedule::max_epochs),
            ..cfg.clone()
        };
        // The last epoch trains on frozen activation scales.
        let frozen = Cell::new(false);
        let adam = RefCell::new(Adam::new(cfg.momentum, cfg.weight_decay));
        // Phase 1 of the fit schedule reads the fit on a running average of the weights.
        let steps_per_epoch = req.retain.len().div_ceil(cfg.retain_batch.max(1));
        let average = fit
            .as_ref()
            .map(|_| RefCell::new(Average::new(&st.shadow.theta, steps_per_epoch)));
        let norms = RefCell::new(norms);
        let mut info = run_epochs(
            &mut st,
            req,
            &run_cfg,
            progress,
            |st, epoch| {
                let seed = |e: usize| cfg.seed.wrapping_add(e as u64);
                match fit.as_mut() {
                    Some(f) => {
                        let plan = f.plan(epoch, |p, w| {
                            let norms = norms.borrow();
                            match (w, &average) {
                                (Weights::Average, Some(a)) => {
                                    let mut avg = st.clone();
                                    avg.shadow.theta.copy_from_slice(a.borrow().theta());
                                    rescale_weights(&mut avg);
                                    avg.shadow.apply(&mut avg.graph);
                                    fit_of(&avg, norms.as_ref(), req, p)
                                }
                                _ => fit_of(st, norms.as_ref(), req, p),
                            }
                        })?;
                        match plan {
                            Plan::Train {
                                lr_scale,
                                frozen: fz,
                                epoch: e,
                                part,
                            } => {
                                st.sgd.lr = cfg.lr * lr_scale;
                                frozen.set(fz);
                                let all = batches(req.retain, cfg.retain_batch, seed(e));
                                return Ok(Plan::take(part, all));
                            }
                            Plan::Done => return Ok(Vec::new()),
                        }
                    }
                    None => {
                        frozen.set(epoch + 1 == cfg.epochs);
                        // Cosine-annealed learning rate from `lr` to near 0 over the epochs.
                        st.sgd.lr = cfg.lr
                            * 0.5
                            * (1.0
                                + (std::f32::consts::PI * epoch as f32 / cfg.epochs as f32).cos());
                    }
                }
                Ok(batches(req.retain, cfg.retain_batch, seed(epoch)))
            },
            |st, steps, b| {
                let (loss, grad) = match norms.borrow_mut().as_mut() {
                    Some(bn) => {
                        let r = bn.grad(st, req.train, b)?;
                        bn.step(&r.norm_grad, st.sgd.lr);
                        (r.loss, r.grad)
                    }
                    None => {
                        let r = st.grad(req.train, b, false, None)?;
                        (r.loss, r.grad)
                    }
                };
                log::debug!("retrain step {steps}: lr {:.5} loss {:.4}", st.sgd.lr, loss);
                adam.borrow_mut()
                    .step(&mut st.shadow.theta, &grad, st.sgd.lr, &st.shadow.metric);
                if let Some(a) = &average {
                    a.borrow_mut().update(&st.shadow.theta);
                }
                rescale_weights(st);
                st.shadow.apply(&mut st.graph);
                if !frozen.get() && cfg.observe_every > 0 && steps.is_multiple_of(cfg.observe_every)
                {
                    observe(st, &mut observers, req, b)?;
                }
                Ok(loss)
            },
        )?;
        let norms = norms.into_inner();
        if let Some(f) = &fit {
            info.notes.insert(0, f.note());
        }
        if let Some(bn) = &norms {
            bn.use_running(&mut st.graph);
        }
        fold_norms(&mut st, &added, acts_len, rescale_weights);
        *graph = st.graph;
        Ok(info)
    }
}

/// The retain fit of the model being trained, on the fit schedule's probe: batch norms at their
/// running statistics, as the model is measured at the end.
fn fit_of(
    st: &TrainState,
    norms: Option<&BatchNorms>,
    req: &Request,
    probe: &[usize],
) -> Result<f64> {
    match norms {
        Some(bn) => {
            let mut g = st.graph.clone();
            bn.use_running(&mut g);
            accuracy_on(&g, req.train, probe)
        }
        None => accuracy_on(&st.graph, req.train, probe),
    }
}

/// Make the ReLUs the file's quantization implies explicit, before the observers replace its
/// ranges.
///
/// Quantizers drop a `Relu` (or `Clip(0, ·)`) that follows a conv, a matmul, an add or a concat
/// when the output's range starts at 0: the clamp to the zero point does its work. None of the fixtures
/// keeps a single `Relu` node. The graph then holds such a layer with no fused activation and a
/// zero point at the bottom of the storage range. The observers see the float twin, which has
/// no clamp there, record negative values and move the zero point up: every ReLU of the
/// network is gone and Retrain trains a *linear* model. Measured on `mnist_res_s8` (bundled
/// 10k, class 3): every hidden zero point moved from storage 0 to 122–140 at the first
/// calibration, no unit was ever at its lower clamp, and the run stalled at 81 % in 2 epochs
/// (on 54k it diverged to 11 %). A range that starts at exactly 0 is only produced by
/// non-negative data, so the deployed model clamps there: keeping that clamp as a ReLU is the
/// function the file computes, whatever the original graph said. The output layer is left
/// alone (its loss is taken before its clamp).
///
/// A range of exactly `[0, 6]` (scale 6/255) is a ReLU6 folded the same way (onnxruntime takes
/// a `Clip(0, 6)`'s bounds as the range): it stays a `Clip(0, 6)`. As a plain ReLU, Retrain of
/// `fmnist_cnn_relu6_qdq` trained the other network the ReLU CNN is and ended 1.89 pp above the
/// PyTorch retrain's retain accuracy.
fn keep_implicit_relus(g: &mut Graph) {
    const RELU6: f32 = 6.0;
    for i in 0..g.layers.len() {
        let l = &g.layers[i];
        let trains_range = matches!(
            l.op,
            Op::Conv(_) | Op::Linear(_) | Op::Add(_) | Op::Requantize(_) | Op::Concat(_)
        );
        let q = g.acts[l.output].q;
        if trains_range
            && l.output != g.output
            && l.activation == Activation::None
            && q.zero_point == 0
        {
            let relu6 = (q.scale * 255.0 - RELU6).abs() <= RELU6 * 1e-6;
            log::debug!(
                "retrain: '{}' keeps the {} its range implies",
                l.name,
                if relu6 { "ReLU6" } else { "ReLU" }
            );
            g.layers[i].activation = if relu6 {
                Activation::Clip {
                    min: 0.0,
                    max: RELU6,
                }
            } else {
                Activation::Relu
            };
        }
    }
}

/// He-uniform weights (bound √(6/fan_in)), zero biases.
///
/// The optimizer's coordinates (`graph::metric`) are reset to plain `θ`, as PyTorch's Adam
/// trains a conv before a BatchNorm: the file's BatchNorm factors (a frozen per-channel layer
/// here) made the folded coordinates, which suit fine-tuning the file's weights (steps
/// relative to the folded weights), but from He-uniform weights they shrank the steps of the
/// conv before each BatchNorm by its factor (up to 61 on `fmnist_cnn_bn_qdq`).
fn randomize(st: &mut TrainState, seed: u64) {
    let mut r = rng(seed ^ 0x1417);
    st.shadow.metric.clear();
    for s in st.shadow.segments.clone() {
        let vals = &mut st.shadow.theta[s.range.clone()];
        match s.kind {
            ParamKind::Bias | ParamKind::FloatBias => vals.fill(0.0),
            ParamKind::Weight | ParamKind::FloatWeight => {
                let fan_in = match &st.graph.layers[s.layer].op {
                    crate::graph::Op::Conv(c) => c.row(),
                    crate::graph::Op::Linear(l) => l.in_features,
                    crate::graph::Op::Dense(d) => d.in_features,
                    crate::graph::Op::FloatConv(c) => c.geom.row(),
                    _ => 1,
                };
                let bound = (6.0 / fan_in.max(1) as f32).sqrt();
                for v in vals.iter_mut() {
                    *v = (r.random::<f32>() * 2.0 - 1.0) * bound;
                }
            }
        }
    }
    rescale_weights(st);
    st.shadow.apply(&mut st.graph);
}

/// Weight scales from the shadow: per channel (or per tensor, as the file had) max|θ| over the
/// largest |w − zp| the file's weight type holds (127 at 8 bits, 7 at 4 bits). With 127 at 4
/// bits every weight but the smallest sat at the 4-bit clamp (training clamps to the file's
/// grid) and Retrain of `fmnist_cnn_w4` ended at chance (11.11 % on the retain set).
fn rescale_weights(st: &mut TrainState) {
    for s in st.shadow.segments.clone() {
        if s.kind != ParamKind::Weight {
            continue;
        }
        let layer = &st.graph.layers[s.layer];
        let (c_out, per_channel) = match &layer.op {
            crate::graph::Op::Conv(c) => (c.out_shape.c, c.weight_scales.len() > 1),
            crate::graph::Op::Linear(l) => (l.out_features, l.weight_scales.len() > 1),
            _ => continue,
        };
        // The largest |w − zp| the file's type holds on both sides: 127 for int8, 7 for int4.
        let levels = |c: usize| {
            layer.binding.as_ref().map_or(127.0, |b| {
                let (lo, hi) = b.range_of(c);
                (-lo).min(hi).max(1) as f32
            })
        };
        let vals = &st.shadow.theta[s.range.clone()];
        let row = vals.len() / c_out.max(1);
        let amax = |v: &[f32], c: usize| {
            (v.iter().fold(0f32, |m, x| m.max(x.abs())) / levels(c)).max(1e-8)
        };
        let scales = if per_channel {
            vals.chunks(row.max(1))
                .enumerate()
                .map(|(c, v)| amax(v, c))
                .collect()
        } else {
            vec![amax(vals, 0)]
        };
        st.graph.set_weight_scales(s.layer, scales);
    }
}

/// [`rescale_weights`] for the tests of `retrain_bn`.
#[cfg(test)]
pub(super) fn rescale_for_tests(st: &mut TrainState) {
    rescale_weights(st)
}

/// Feed the float twin's activations on `idx` to the observers and adopt their ranges.
fn observe(
    st: &mut TrainState,
    observers: &mut [RangeObserver],
    req: &Request,
    idx: &[usize],
) -> Result<()> {
    let (images, _) = gather(req.train, idx);
    let params = st.shadow.real_params(&st.graph);
    let acts = st.graph.forward_float(&images, idx.len(), &params)?;
    let mut q: Vec<Option<QParams>> = vec![None; acts.len()];
    for (a, v) in acts.iter().enumerate() {
        if let Some(v) = v {
            observers[a].observe(v);
            let (scale, zero_point) = observers[a].qparams_u8();
            q[a] = Some(QParams::unsigned(scale, zero_point));
        }
    }
    if log::log_enabled!(log::Level::Debug) {
        let mut line = String::from("retrain observe:");
        for (a, o) in observers.iter().enumerate() {
            if q[a].is_some() {
                line += &format!(" {} [{:.3}, {:.3}];", st.graph.acts[a].name, o.min, o.max);
            }
        }
        log::debug!("{line}");
    }
    st.graph.set_activation_params(&q);
    // Integer biases are stored at s_in·s_w: re-quantize them for the new scales.
    st.shadow.apply(&mut st.graph);
    Ok(())
}

/// Adam (PyTorch semantics, L2 weight decay added to the gradient), the optimizer of the recipe
/// the PyTorch references follow. From random weights and without the batch norms the file
/// folded away, SGD spends its first hundred steps near chance (measured on `mnist_res_s8`:
/// loss 2.38 → 2.20 in 20 steps, retain accuracy 25 % after 44 steps) and the activations of the
/// deeper layers grow ~3× per layer, which per-tensor int8 ranges resolve badly; Adam's
/// per-parameter step sizes make the start fast and the layers' scales comparable.
pub(super) struct Adam {
    beta1: f32,
    beta2: f32,
    weight_decay: f32,
    t: i32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    pub(super) fn new(beta1: f32, weight_decay: f32) -> Self {
        Adam {
            beta1: beta1.clamp(0.0, 0.999),
            beta2: 0.999,
            weight_decay,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// One step; `d` are the optimizer coordinates' factors (`graph::metric`, empty: all 1):
    /// the moments live in `φ = D·θ` and `θ` moves by the `φ` step over `D`.
    pub(super) fn step(&mut self, theta: &mut [f32], grad: &[f32], lr: f32, d: &[f32]) {
        if self.m.len() != theta.len() {
            self.m = vec![0.0; theta.len()];
            self.v = vec![0.0; theta.len()];
        }
        self.t = self.t.saturating_add(1);
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        let factor = |i: usize| d.get(i).copied().unwrap_or(1.0);
        for (i, ((p, &g), (m, v))) in theta
            .iter_mut()
            .zip(grad)
            .zip(self.m.iter_mut().zip(&mut self.v))
            .enumerate()
        {
            let k = factor(i);
            let g = g + self.weight_decay * *p * k;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8) / k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unlearn::MethodName;

    /// Retrain trains a conv before a kept BatchNorm in plain `θ` coordinates (module docs of
    /// [`randomize`]): the folded coordinates the file's factors give are dropped with the
    /// file's weights. Full retrain of `fmnist_cnn_bn_qdq`, class 3, 54k images, 10 epochs, 1
    /// thread: retain accuracy 94.61 → 95.59 % (PyTorch retrain 95.59 %), test accuracy 89.72 →
    /// 90.33 % (PyTorch 92.59 %).
    #[test]
    fn retrain_drops_the_files_folded_coordinates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("onnx-models/fmnist_cnn_bn_qdq.onnx");
        let g = crate::onnx::load(&path).unwrap();
        let mut st = state(g, &Config::defaults(MethodName::Retrain));
        assert!(
            st.shadow.metric.iter().any(|&d| d != 1.0),
            "the BatchNorm fixture should give folded coordinates"
        );
        randomize(&mut st, 0);
        assert!(st.shadow.metric.is_empty());
        assert!(st.shadow.norm() > 0.0);
    }

    /// The clamps a quantizer folded into the ranges stay: a range from exactly 0 is a ReLU,
    /// one of exactly [0, 6] a ReLU6 (the ReLU6 CNN's three hidden layers; the ReLU CNN's
    /// ranges end elsewhere, so its layers get plain ReLUs); the output layer keeps none.
    #[test]
    fn folded_relus_and_relu6_become_explicit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
        for (model, want) in [
            ("fmnist_cnn_relu6_qdq", relu6),
            ("fmnist_cnn_qdq", Activation::Relu),
        ] {
            let mut g = crate::onnx::load(root.join(format!("onnx-models/{model}.onnx"))).unwrap();
            keep_implicit_relus(&mut g);
            let got: Vec<(&str, Activation)> = g
                .layers
                .iter()
                .filter(|l| matches!(l.op, Op::Conv(_) | Op::Linear(_)))
                .map(|l| (l.name.as_str(), l.activation))
                .collect();
            let names = ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"];
            assert_eq!(got.len(), names.len(), "{model}: {got:?}");
            for ((name, act), want_name) in got.iter().zip(names) {
                assert_eq!(*name, want_name);
                let want = if *name == "/fc2/Gemm" {
                    Activation::None
                } else {
                    want
                };
                assert_eq!(*act, want, "{model}: '{name}'");
            }
        }
    }
}
