//! OEU — Orthogonal Entropy Unlearning (DESIGN.md, "OEU as implemented").
//!
//! Per step, a forget batch `B_f` and a retain batch `B_r`:
//! `g_f = ∇(−mean H(softmax)/ln C)` on `B_f`, `g_r = ∇CE` on `B_r`,
//! `g_f⊥ = g_f − ⟨g_f,g_r⟩/(‖g_r‖²+ε)·g_r` (globally or per tensor, optionally only when they
//! conflict), and SGD with momentum descends `g_f⊥ + λ·g_r`. Removing the retain direction from
//! the forget step means the entropy ascent has no first-order effect on the retain loss; the
//! λ term repairs what second-order effects and quantization do.
//!
//! Normalized forget step (default; `forget_step = 0` gives the formula as written): `g_f⊥` is
//! rescaled to a fixed length, `forget_step·‖θ₀‖/lr`. Why: the entropy gradient of a confident
//! prediction is tiny and grows by an order of magnitude as the prediction softens
//! (`∂H/∂z_j = −p_j(ln p_j + H)`), a positive feedback that, with momentum, turned a safe first
//! step into a model-killing tenth step on the residual fixture (measured: ‖g_f‖ 1.5 → 9.8 and
//! retain loss 0.005 → 6.5 within ten steps, then every gradient exactly zero). A fixed step
//! length moves at the same speed on memorized samples (where the raw gradient barely moves)
//! and on soft ones (where it explodes); the retain guard halves it when it is still too much.
//!
//! Sample-wise requests (the request carries `unseen` targets): `g_f` is the gradient of
//! `train::capped_confidence` instead of the entropy, lowering each forget sample's true class
//! to the confidence unseen data of its rank gets, and the forget batches come only from the
//! samples whose target asks for a change (the step budget stays that of the whole forget set).
//! Why: see `unseen`; measured on the memorizing Fashion-MNIST CNN (random 10 %, seed 0), the
//! entropy objective ended at Avg. Gap 4.27 pp and was refused; this one at 2.03 pp (mean of 3
//! seeds, 1 refused), on the memorizing residual CNN 3.73 → 2.09 pp (docs/RESULTS.md).
//!
//! The retain gradient comes from `anchor::retain_grad`: when the request carries a retain
//! logit anchor (sample-wise requests by default, `SAMPLE_WISE_RETAIN_ANCHOR`), `g_r` is the
//! gradient of retain cross-entropy plus the anchor, which keeps a restoring force on a model
//! whose retain cross-entropy is ~0 (memorized data); both the projection and the λ term use it.

use super::anchor::retain_grad;
use super::{run_epochs, state, Config, Method, Progress, ProjectionMode, Request, RunInfo};
use crate::graph::Graph;
use crate::train::{
    axpy, batches, gather, norm_sq, project_out, project_out_per_segment, BatchStream, Objective,
};
use crate::Result;

/// Orthogonal Entropy Unlearning.
pub struct Oeu;

const EPS: f64 = 1e-12;

/// Smallest step budget of a run, whatever the epoch budget says (a forget set of 20 samples is
/// one batch per epoch).
const MIN_STEPS: usize = 100;

impl Method for Oeu {
    fn name(&self) -> &'static str {
        "oeu"
    }

    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo> {
        // A sample-wise request trains only the samples whose target asks for a change.
        let active = match req.unseen {
            Some(t) => t.active(req.forget),
            None => req.forget.to_vec(),
        };
        let forget: &[usize] = if active.is_empty() {
            req.forget
        } else {
            &active
        };
        // The step budget is the epoch budget over the whole forget set, and at least MIN_STEPS
        // (a forget set of 20 samples is one batch per epoch); the epochs run over `forget`.
        let per_epoch = |n: usize| n.div_ceil(cfg.forget_batch.max(1)).max(1);
        let budget = (cfg.epochs * per_epoch(req.forget.len())).max(MIN_STEPS);
        let cfg = &Config {
            epochs: cfg.epochs.max(budget.div_ceil(per_epoch(forget.len()))),
            ..cfg.clone()
        };
        let mut st = state(graph.clone(), cfg);
        let ranges = st.shadow.ranges();
        // Normalized forget step (see the module doc): its length in parameter space is
        // `forget_step·‖θ₀‖` at the configured learning rate, whatever ‖g_f⊥‖ is.
        let theta_norm = st.shadow.norm();
        let forget_len = cfg.forget_step as f64 * theta_norm / cfg.lr as f64;
        let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, cfg.seed ^ 0x5eed);
        let (mut projected, mut conflicts) = (0usize, 0usize);
        // Steps whose forget or retain gradient was exactly zero (a silenced network).
        let (mut zero_f, mut zero_r) = (0usize, 0usize);
        // Size of the removed component relative to g_f and to the λ·g_r repair term (global
        // projection), for diagnosing runs where the projection destabilises training.
        let (mut max_coef, mut max_removed) = (0f64, 0f64);
        let mut info = run_epochs(
            &mut st,
            req,
            cfg,
            progress,
            |_, epoch| {
                let seed = cfg.seed.wrapping_add(epoch as u64);
                Ok(batches(forget, cfg.forget_batch, seed))
            },
            |st, _, b_f| {
                let b_r = retain.next_batch();
                let f = match req.unseen {
                    Some(t) => {
                        let (images, labels) = gather(req.train, b_f);
                        let caps = t.of(b_f);
                        let obj = Objective::CappedConfidence {
                            labels: &labels,
                            caps: &caps,
                        };
                        st.grad_images(&images, b_f.len(), obj)?
                    }
                    None => st.grad(req.train, b_f, true, None)?,
                };
                let r = retain_grad(st, req, &b_r)?;
                let mut g = f.grad;
                zero_f += g.iter().all(|&x| x == 0.0) as usize;
                zero_r += r.grad.iter().all(|&x| x == 0.0) as usize;
                log::debug!(
                    "oeu step: L_f {:.4} L_r {:.4} |g_f| {:.3e} |g_r| {:.3e} <g_f,g_r> {:.3e} zero_f {} zero_r {}",
                    f.loss,
                    r.loss,
                    norm_sq(&g).sqrt(),
                    norm_sq(&r.grad).sqrt(),
                    crate::train::dot(&g, &r.grad),
                    g.iter().filter(|&&x| x == 0.0).count(),
                    r.grad.iter().filter(|&&x| x == 0.0).count(),
                );
                if log::log_enabled!(log::Level::Trace) {
                    for seg in &st.shadow.segments {
                        let rg = seg.range.clone();
                        log::trace!(
                            "  {} |θ| {:.3e} |g_f| {:.3e} |g_r| {:.3e}",
                            seg.initializer,
                            norm_sq(&st.shadow.theta[rg.clone()]).sqrt(),
                            norm_sq(&g[rg.clone()]).sqrt(),
                            norm_sq(&r.grad[rg]).sqrt()
                        );
                    }
                }
                let did = match cfg.projection {
                    ProjectionMode::Global => {
                        let nf = norm_sq(&g).sqrt();
                        let p = project_out(&mut g, &r.grad, EPS, cfg.only_on_conflict);
                        conflicts += (p.dot < 0.0) as usize;
                        if p.projected {
                            max_coef = max_coef.max(p.coef.abs());
                            let removed = p.coef.abs() * norm_sq(&r.grad).sqrt();
                            max_removed = max_removed.max(removed / nf.max(1e-30));
                        }
                        p.projected
                    }
                    ProjectionMode::PerTensor => {
                        let ps = project_out_per_segment(
                            &mut g,
                            &r.grad,
                            &ranges,
                            EPS,
                            cfg.only_on_conflict,
                        );
                        conflicts += ps.iter().any(|p| p.dot < 0.0) as usize;
                        ps.iter().any(|p| p.projected)
                    }
                    ProjectionMode::None => false,
                };
                projected += did as usize;
                if forget_len > 0.0 {
                    let n = norm_sq(&g).sqrt();
                    if n > 0.0 {
                        let k = (forget_len / n) as f32;
                        g.iter_mut().for_each(|x| *x *= k);
                    }
                }
                axpy(&mut g, cfg.lambda, &r.grad);
                st.step(&g);
                Ok(f.loss)
            },
        )?;
        let steps = info.steps;
        if let Some(c) = req.unseen {
            info.notes.push(c.describe());
        }
        info.notes.push(format!(
            "projected {projected} of {steps} steps; forget and retain gradients conflicted in {conflicts}"
        ));
        info.notes.push(format!(
            "zero forget gradient in {zero_f} of {steps} steps, zero retain gradient in {zero_r}"
        ));
        if cfg.projection == ProjectionMode::Global && projected > 0 {
            info.notes.push(format!(
                "largest projection coefficient |⟨g_f,g_r⟩|/‖g_r‖² = {max_coef:.3e} (λ = {}); largest removed component {:.2} × ‖g_f‖",
                cfg.lambda, max_removed
            ));
        }
        *graph = st.graph;
        Ok(info)
    }
}
