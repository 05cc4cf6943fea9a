//! Retrain: the gold standard. Same architecture, random initial weights (He-uniform, zero
//! biases), trained from scratch on the retain set with cross-entropy, on the same integer
//! engine. With no calibration to inherit, scales are learned on the way: weight scales follow
//! each channel's largest shadow weight (max/127) after every step, and activation scales follow
//! EMA min/max observers fed by the float twin every `observe_every` steps (and on a first
//! calibration batch), frozen for the last epoch so the final model is trained on the scales it
//! is measured with. Only meaningful for metrics: its scales differ from the file's, so it is
//! not exportable as a weight-only patch. The learning rate follows a cosine schedule from
//! `lr` to near 0 over the epochs.

use std::cell::Cell;

use rand::RngExt;

use super::{run_epochs, state, Config, Method, Progress, Request, RunInfo};
use crate::graph::{Graph, ParamKind, QParams};
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
        let mut st = state(graph.clone(), cfg);
        randomize(&mut st, cfg.seed);
        let mut observers = vec![RangeObserver::new(1.0); st.graph.acts.len()];
        let calib: Vec<usize> = crate::train::shuffled(req.retain, cfg.seed ^ 0xca1)
            .into_iter()
            .take(256)
            .collect();
        observe(&mut st, &mut observers, req, &calib)?;
        for o in observers.iter_mut() {
            o.momentum = MOMENTUM;
        }
        // The last epoch trains on frozen activation scales.
        let frozen = Cell::new(false);
        let info = run_epochs(
            &mut st,
            req,
            cfg,
            progress,
            |st, epoch| {
                frozen.set(epoch + 1 == cfg.epochs);
                // Cosine-annealed learning rate: training from scratch must converge (memorize
                // its training data as the original did) in a fixed budget of epochs.
                st.sgd.lr = cfg.lr
                    * 0.5
                    * (1.0 + (std::f32::consts::PI * epoch as f32 / cfg.epochs as f32).cos());
                let seed = cfg.seed.wrapping_add(epoch as u64);
                Ok(batches(req.retain, cfg.retain_batch, seed))
            },
            |st, steps, b| {
                let r = st.grad(req.train, b, false, None)?;
                st.sgd.step(&mut st.shadow.theta, &r.grad);
                rescale_weights(st);
                st.shadow.apply(&mut st.graph);
                if !frozen.get() && cfg.observe_every > 0 && steps.is_multiple_of(cfg.observe_every)
                {
                    observe(st, &mut observers, req, b)?;
                }
                Ok(r.loss)
            },
        )?;
        *graph = st.graph;
        Ok(info)
    }
}

/// He-uniform weights (bound √(6/fan_in)), zero biases.
fn randomize(st: &mut TrainState, seed: u64) {
    let mut r = rng(seed ^ 0x1417);
    for s in st.shadow.segments.clone() {
        let vals = &mut st.shadow.theta[s.range.clone()];
        match s.kind {
            ParamKind::Bias => vals.fill(0.0),
            ParamKind::Weight => {
                let fan_in = match &st.graph.layers[s.layer].op {
                    crate::graph::Op::Conv(c) => c.row(),
                    crate::graph::Op::Linear(l) => l.in_features,
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

/// Weight scales from the shadow: per channel (or per tensor, as the file had) max|θ| / 127.
fn rescale_weights(st: &mut TrainState) {
    for s in st.shadow.segments.clone() {
        if s.kind != ParamKind::Weight {
            continue;
        }
        let (c_out, per_channel) = match &st.graph.layers[s.layer].op {
            crate::graph::Op::Conv(c) => (c.out_shape.c, c.weight_scales.len() > 1),
            crate::graph::Op::Linear(l) => (l.out_features, l.weight_scales.len() > 1),
            _ => continue,
        };
        let vals = &st.shadow.theta[s.range.clone()];
        let row = vals.len() / c_out.max(1);
        let amax = |v: &[f32]| (v.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0).max(1e-8);
        let scales = if per_channel {
            vals.chunks(row.max(1)).map(amax).collect()
        } else {
            vec![amax(vals)]
        };
        st.graph.set_weight_scales(s.layer, scales);
    }
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
            q[a] = Some(QParams {
                scale,
                zero_point,
                signed: false,
            });
        }
    }
    st.graph.set_activation_params(&q);
    // Integer biases are stored at s_in·s_w: re-quantize them for the new scales.
    st.shadow.apply(&mut st.graph);
    Ok(())
}
