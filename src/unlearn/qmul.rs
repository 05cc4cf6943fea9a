//! Q-MUL (arXiv 2503.13917), as DESIGN.md summarises it: each forget sample is pushed toward its
//! *similar* label `ỹ = argmin_{c≠y} |p_c − p_y|` (recomputed from the current model at the start
//! of every epoch) rather than a random one, and the forget and retain gradients are weighted by
//! `w_f = Ḡ_r/(Ḡ_f+Ḡ_r)`, `w_r = Ḡ_f/(Ḡ_f+Ḡ_r)`, the mean per-batch gradient norms so far,
//! so neither side dominates the step.

use std::cell::RefCell;
use std::collections::HashMap;

use super::config::logits;
use super::{run_epochs, state, Config, Method, Progress, Request, RunInfo};
use crate::graph::Graph;
use crate::train::{axpy, batches, norm_sq, BatchStream};
use crate::Result;

/// Q-MUL.
pub struct Qmul;

/// `argmin_{c≠y} |p_c − p_y|` for one row of logits.
pub fn similar_label(z: &[f32], y: usize) -> u8 {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let p: Vec<f32> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: f32 = p.iter().sum();
    let py = p[y] / s;
    let mut best = (f32::INFINITY, 0usize);
    for (c, &pc) in p.iter().enumerate() {
        if c != y && ((pc / s) - py).abs() < best.0 {
            best = (((pc / s) - py).abs(), c);
        }
    }
    best.1 as u8
}

impl Method for Qmul {
    fn name(&self) -> &'static str {
        "qmul"
    }

    fn run(
        &self,
        graph: &mut Graph,
        req: &Request,
        cfg: &Config,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<RunInfo> {
        let classes = graph.classes();
        let mut st = state(graph.clone(), cfg);
        let mut retain = BatchStream::new(req.retain.to_vec(), cfg.retain_batch, cfg.seed ^ 0x5eed);
        let (mut sum_f, mut sum_r, mut count) = (0f64, 0f64, 0usize);
        // Similar labels of the forget set, recomputed at the start of every epoch.
        let similar = RefCell::new(HashMap::new());
        let info = run_epochs(
            &mut st,
            req,
            cfg,
            progress,
            |st, epoch| {
                let z = logits(&st.graph, req.train, req.forget)?;
                *similar.borrow_mut() = req
                    .forget
                    .iter()
                    .zip(z.chunks_exact(classes))
                    .map(|(&i, row)| (i, similar_label(row, req.train.labels[i] as usize)))
                    .collect();
                let seed = cfg.seed.wrapping_add(epoch as u64);
                Ok(batches(req.forget, cfg.forget_batch, seed))
            },
            |st, _, b| {
                let labels: Vec<u8> = b.iter().map(|i| similar.borrow()[i]).collect();
                let f = st.grad(req.train, b, false, Some(&labels))?;
                let r = st.grad(req.train, &retain.next_batch(), false, None)?;
                sum_f += norm_sq(&f.grad).sqrt();
                sum_r += norm_sq(&r.grad).sqrt();
                count += 1;
                let (gf, gr) = (sum_f / count as f64, sum_r / count as f64);
                let (wf, wr) = if gf + gr > 0.0 {
                    (gr / (gf + gr), gf / (gf + gr))
                } else {
                    (0.5, 0.5)
                };
                let mut g: Vec<f32> = f.grad.iter().map(|&v| v * wf as f32).collect();
                axpy(&mut g, wr as f32, &r.grad);
                st.step(&g);
                Ok(f.loss)
            },
        )?;
        *graph = st.graph;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn similar_label_is_the_closest_other_probability() {
        // p ∝ exp(z): class 0 true; class 2 is closest to it.
        assert_eq!(super::similar_label(&[2.0, 0.0, 1.9, -1.0], 0), 2);
        assert_eq!(super::similar_label(&[0.0, 5.0, 4.0], 1), 2);
    }
}
