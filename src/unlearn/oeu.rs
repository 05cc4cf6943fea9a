//! OEU — Orthogonal Entropy Unlearning (DESIGN.md, "OEU as implemented").
//!
//! Per step, a forget batch `B_f` and a retain batch `B_r`:
//! `g_f = ∇(−mean H(softmax)/ln C)` on `B_f`, `g_r = ∇CE` on `B_r`,
//! `g_f⊥ = g_f − ⟨g_f,g_r⟩/(‖g_r‖²+ε)·g_r` (globally or per tensor, optionally only when they
//! conflict), and SGD with momentum descends `g_f⊥ + λ·g_r`. Removing the retain direction from
//! the forget step means the entropy ascent has no first-order effect on the retain loss; the
//! λ term repairs what second-order effects and quantization do.

use super::{run_epochs, state, Config, Method, Progress, ProjectionMode, Request, RunInfo};
use crate::graph::Graph;
use crate::train::{axpy, batches, norm_sq, project_out, project_out_per_segment, BatchStream};
use crate::Result;

/// Orthogonal Entropy Unlearning.
pub struct Oeu;

const EPS: f64 = 1e-12;

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
        let mut st = state(graph.clone(), cfg);
        let ranges = st.shadow.ranges();
        let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, cfg.seed ^ 0x5eed);
        let (mut projected, mut conflicts) = (0usize, 0usize);
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
                Ok(batches(req.forget, cfg.forget_batch, seed))
            },
            |st, _, b_f| {
                let b_r = retain.next_batch();
                let f = st.grad(req.train, b_f, true, None)?;
                let r = st.grad(req.train, &b_r, false, None)?;
                let mut g = f.grad;
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
                axpy(&mut g, cfg.lambda, &r.grad);
                st.step(&g);
                Ok(f.loss)
            },
        )?;
        let steps = info.steps;
        info.notes.push(format!(
            "projected {projected} of {steps} steps; forget and retain gradients conflicted in {conflicts}"
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
