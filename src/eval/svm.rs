//! A C-support-vector classifier with an RBF kernel on one feature: the membership-inference
//! attacker of [`super::mia`] (scikit-learn's `SVC(C, kernel="rbf")`, which is libsvm).
//!
//! Why hand-written: the attacker is fitted twice per request (before and after) on up to
//! 2 × 2000 confidences. linfa-svm spent 1.5–2.1 s per fit on the 2-core build machine (AMD
//! EPYC Zen 3), about 80 % of it filling its dense kernel matrix one ndarray row view per pair,
//! a cost every `forget` paid twice and that linfa's API gives no way around (it takes records,
//! never a kernel). Here the kernel of a scalar feature is one `exp` per pair, filled in parallel,
//! and the solver is libsvm's: sequential minimal optimization with second-order working-set
//! selection (Fan, Chen and Lin, JMLR 2005), no shrinking, libsvm's stopping rule
//! (`max violation < eps`) and its bias (`rho`: the mean of `y·∇` over free vectors).
//!
//! The dual: minimise `½ αᵀQα − Σα` with `Q_ij = y_i y_j K(x_i, x_j)`, `0 ≤ α_i ≤ C`,
//! `Σ y_i α_i = 0`; the decision value of `x` is `Σ y_i α_i K(x_i, x) − rho`, positive for
//! the `true` class. The tests check the Karush-Kuhn-Tucker conditions of every fit, which hold
//! at the optimum whatever the path to it.

use rayon::prelude::*;

/// libsvm's `TAU`: the curvature used when two points coincide (a zero second derivative).
const TAU: f64 = 1e-12;

/// A fitted classifier: support values, signed weights `y_i α_i` and the bias.
#[derive(Debug, Clone, PartialEq)]
pub struct RbfSvm {
    /// `(x_i, y_i α_i)` of every vector with `α_i > 0`, in training order.
    pub support: Vec<(f64, f64)>,
    /// Bias: the decision value is `Σ y_i α_i K(x_i, x) − rho`.
    pub rho: f64,
    /// γ of the kernel `exp(−γ (x − x')²)`.
    pub gamma: f64,
    /// SMO iterations the fit took.
    pub iterations: usize,
}

/// The dual variables of a fit, before the support vectors are picked out (for the tests'
/// optimality checks).
pub(crate) struct Dual {
    pub alpha: Vec<f64>,
    /// Gradient `Qα − 1` at `alpha`.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "the tests' optimality checks read it")
    )]
    pub grad: Vec<f64>,
    pub rho: f64,
    pub iterations: usize,
}

impl RbfSvm {
    /// Fit on the points `x` with classes `y` (`true`: +1), penalty `c`, kernel coefficient
    /// `gamma`, stopping tolerance `eps` (libsvm's default is 1e-3). Both classes must be
    /// present and every input finite; the caller checks (see `mia_efficacy`).
    pub fn fit(x: &[f64], y: &[bool], c: f64, gamma: f64, eps: f64) -> RbfSvm {
        let d = solve(x, y, c, gamma, eps);
        let support = x
            .iter()
            .zip(y)
            .zip(&d.alpha)
            .filter(|(_, &a)| a > 0.0)
            .map(|((&x, &y), &a)| (x, if y { a } else { -a }))
            .collect();
        RbfSvm {
            support,
            rho: d.rho,
            gamma,
            iterations: d.iterations,
        }
    }

    /// Decision value of `x`: positive on the `true` side.
    pub fn decision(&self, x: f64) -> f64 {
        let g = self.gamma;
        let s: f64 = self
            .support
            .iter()
            .map(|&(s, a)| a * (-g * (s - x) * (s - x)).exp())
            .sum();
        s - self.rho
    }
}

/// The kernel matrix `K_ij = exp(−γ (x_i − x_j)²)`, row-major, in f32 as libsvm caches it (the
/// solver's sums stay in f64).
fn kernel(x: &[f64], gamma: f64) -> Vec<f32> {
    let n = x.len();
    let mut k = vec![0f32; n * n];
    k.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        let xi = x[i];
        for (v, &xj) in row.iter_mut().zip(x) {
            *v = (-gamma * (xi - xj) * (xi - xj)).exp() as f32;
        }
    });
    k
}

/// libsvm's solver for the C-SVC dual (module documentation).
pub(crate) fn solve(x: &[f64], y: &[bool], c: f64, gamma: f64, eps: f64) -> Dual {
    let n = x.len();
    let k = kernel(x, gamma);
    let row = |i: usize| &k[i * n..][..n];
    let sign = |i: usize| if y[i] { 1.0 } else { -1.0 };
    let mut alpha = vec![0f64; n];
    let mut grad = vec![-1f64; n];
    let upper = |a: f64| a >= c;
    let lower = |a: f64| a <= 0.0;
    // libsvm's cap, so a degenerate problem ends.
    let max_iter = (100 * n).max(10_000_000);
    let mut iterations = 0;
    while iterations < max_iter {
        // i: the most violating index of I_up (largest −y·∇).
        let (mut gmax, mut i) = (f64::NEG_INFINITY, usize::MAX);
        for t in 0..n {
            let v = -sign(t) * grad[t];
            let up = if y[t] {
                !upper(alpha[t])
            } else {
                !lower(alpha[t])
            };
            if up && v >= gmax {
                gmax = v;
                i = t;
            }
        }
        if i == usize::MAX {
            break;
        }
        // j: of I_low, the one whose pair with i decreases the objective most (second order).
        let (ki, yi) = (row(i), sign(i));
        let (mut gmax2, mut j, mut best) = (f64::NEG_INFINITY, usize::MAX, f64::INFINITY);
        for t in 0..n {
            let low = if y[t] {
                !lower(alpha[t])
            } else {
                !upper(alpha[t])
            };
            if !low {
                continue;
            }
            let v = sign(t) * grad[t];
            gmax2 = gmax2.max(v);
            let diff = gmax + v;
            if diff > 0.0 {
                // K_ii + K_tt − 2 K_it, with K_ii = K_tt = 1.
                let quad = 2.0 - 2.0 * ki[t] as f64;
                let obj = -(diff * diff) / if quad > 0.0 { quad } else { TAU };
                if obj <= best {
                    best = obj;
                    j = t;
                }
            }
        }
        if gmax + gmax2 < eps || j == usize::MAX {
            break;
        }
        iterations += 1;
        let (ai, aj) = (alpha[i], alpha[j]);
        let kij = ki[j] as f64;
        let quad = 2.0 - 2.0 * kij;
        let quad = if quad > 0.0 { quad } else { TAU };
        if y[i] != y[j] {
            let delta = (-grad[i] - grad[j]) / quad;
            let diff = ai - aj;
            let (mut ni, mut nj) = (ai + delta, aj + delta);
            if diff > 0.0 {
                if nj < 0.0 {
                    nj = 0.0;
                    ni = diff;
                }
            } else if ni < 0.0 {
                ni = 0.0;
                nj = -diff;
            }
            if diff > 0.0 {
                if ni > c {
                    ni = c;
                    nj = c - diff;
                }
            } else if nj > c {
                nj = c;
                ni = c + diff;
            }
            alpha[i] = ni;
            alpha[j] = nj;
        } else {
            let delta = (grad[i] - grad[j]) / quad;
            let sum = ai + aj;
            let (mut ni, mut nj) = (ai - delta, aj + delta);
            clip_same_sign(&mut ni, &mut nj, sum, c);
            clip_same_sign(&mut nj, &mut ni, sum, c);
            alpha[i] = ni;
            alpha[j] = nj;
        }
        // ∇_t += Q_ti Δα_i + Q_tj Δα_j, Q_ti = y_t y_i K_ti.
        let (di, dj) = (yi * (alpha[i] - ai), sign(j) * (alpha[j] - aj));
        let kj = row(j);
        for t in 0..n {
            grad[t] += sign(t) * (ki[t] as f64 * di + kj[t] as f64 * dj);
        }
    }
    let rho = bias(y, &alpha, &grad, c);
    Dual {
        alpha,
        grad,
        rho,
        iterations,
    }
}

/// libsvm's clipping of a same-class pair back into the box, keeping `a + b = sum`: `a` to its
/// upper bound when the sum exceeds it, else `b` to its lower one (applied once each way round).
fn clip_same_sign(a: &mut f64, b: &mut f64, sum: f64, c: f64) {
    if sum > c {
        if *a > c {
            *a = c;
            *b = sum - c;
        }
    } else if *b < 0.0 {
        *b = 0.0;
        *a = sum;
    }
}

/// libsvm's `calculate_rho`: the mean of `y·∇` over the free vectors, or the middle of the
/// feasible interval when none is free.
fn bias(y: &[bool], alpha: &[f64], grad: &[f64], c: f64) -> f64 {
    let (mut ub, mut lb, mut free, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0usize, 0f64);
    for ((&y, &a), &g) in y.iter().zip(alpha).zip(grad) {
        let yg = if y { g } else { -g };
        if a >= c {
            if y {
                lb = lb.max(yg);
            } else {
                ub = ub.min(yg);
            }
        } else if a <= 0.0 {
            if y {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else {
            free += 1;
            sum += yg;
        }
    }
    if free > 0 {
        sum / free as f64
    } else {
        (ub + lb) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn points(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut r = crate::train::batch::rng(seed);
        (0..n)
            .map(|i| {
                let member = i % 2 == 0;
                let centre = if member { 0.8 } else { 0.55 };
                let x: f64 = centre + r.random_range(-0.3..0.3);
                (x.clamp(0.0, 1.0), member)
            })
            .unzip()
    }

    /// The optimality conditions of the dual within `tol`: α in its box, Σ y α = 0, and no
    /// violating pair (max over I_up of −y∇ at most min over I_low of −y∇ plus `tol`).
    fn assert_kkt(y: &[bool], d: &Dual, c: f64, tol: f64) {
        let s = |b: bool| if b { 1.0 } else { -1.0 };
        assert!(d.alpha.iter().all(|&a| (0.0..=c).contains(&a)));
        let balance: f64 = y.iter().zip(&d.alpha).map(|(&y, &a)| s(y) * a).sum();
        assert!(balance.abs() < 1e-9, "Σ y α = {balance}");
        let (mut m_up, mut m_low) = (f64::NEG_INFINITY, f64::INFINITY);
        for ((&y, &a), &g) in y.iter().zip(&d.alpha).zip(&d.grad) {
            let v = -s(y) * g;
            if (y && a < c) || (!y && a > 0.0) {
                m_up = m_up.max(v);
            }
            if (y && a > 0.0) || (!y && a < c) {
                m_low = m_low.min(v);
            }
        }
        assert!(m_up - m_low < tol, "violation {}", m_up - m_low);
    }

    #[test]
    fn fits_satisfy_the_optimality_conditions() {
        for (n, seed, c) in [(2, 1, 3.0), (7, 2, 0.5), (300, 3, 3.0), (1000, 4, 10.0)] {
            let (x, y) = points(n, seed);
            let d = solve(&x, &y, c, 1.0, 1e-3);
            assert_kkt(&y, &d, c, 1e-3);
            // The gradient it kept is the gradient of the α it returns.
            let k = kernel(&x, 1.0);
            for i in (0..n).step_by((n / 20).max(1)) {
                let s = |b: bool| if b { 1.0 } else { -1.0 };
                let g: f64 = (0..n)
                    .map(|j| s(y[i]) * s(y[j]) * k[i * n + j] as f64 * d.alpha[j])
                    .sum::<f64>()
                    - 1.0;
                assert!((g - d.grad[i]).abs() < 1e-9, "∇_{i}: {g} vs {}", d.grad[i]);
            }
        }
    }

    #[test]
    fn a_tighter_tolerance_moves_the_boundary_little() {
        // Two fits to different tolerances decide alike away from the boundary.
        let (x, y) = points(800, 9);
        let loose = RbfSvm::fit(&x, &y, 3.0, 1.0, 1e-3);
        let tight = RbfSvm::fit(&x, &y, 3.0, 1.0, 1e-8);
        for q in 0..=100 {
            let q = q as f64 / 100.0;
            let (a, b) = (loose.decision(q), tight.decision(q));
            assert!((a - b).abs() < 2e-3, "at {q}: {a} vs {b}");
        }
    }

    #[test]
    fn separable_points_are_classed_by_side() {
        let x = [0.1, 0.15, 0.2, 0.8, 0.85, 0.9];
        let y = [false, false, false, true, true, true];
        let m = RbfSvm::fit(&x, &y, 3.0, 1.0, 1e-3);
        assert!(m.decision(0.0) < 0.0 && m.decision(0.2) < 0.0);
        assert!(m.decision(0.8) > 0.0 && m.decision(1.0) > 0.0);
    }
}
