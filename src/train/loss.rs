//! The two losses OEU needs on a batch of logits, each with its gradient w.r.t. the logits, so a
//! layer's backward can start from them: cross-entropy for the retain batch, and the negative
//! normalized prediction entropy for the forget batch (minimizing it pushes the forget predictions
//! towards uniform). Rows are processed in f64 after a max shift: logits of an int8 model can sit
//! far apart, and `exp` of the raw values would overflow or lose the small probabilities.

/// Log-softmax of one row, in f64, shifted by the row's maximum so `exp` never overflows.
fn log_softmax(row: &[f32], out: &mut [f64]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z)) as f64;
    let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
    let log_sum = sum.ln();
    for (o, &z) in out.iter_mut().zip(row) {
        *o = z as f64 - max - log_sum;
    }
}

fn check_shape(logits: &[f32], classes: usize) -> usize {
    assert!(classes > 0, "logits need at least one class");
    assert_eq!(
        logits.len() % classes,
        0,
        "{} logits are not a whole number of rows of {classes} classes",
        logits.len()
    );
    logits.len() / classes
}

/// Mean cross-entropy of `logits` (n × classes, row-major) against `labels`; returns the loss
/// and its gradient w.r.t. the logits, (softmax − onehot)/n. Numerically stable (max-shifted).
///
/// An empty batch has loss 0. Panics if `labels.len() != n` or a label is `>= classes`.
pub fn cross_entropy(logits: &[f32], classes: usize, labels: &[u8]) -> (f32, Vec<f32>) {
    let n = check_shape(logits, classes);
    assert_eq!(
        labels.len(),
        n,
        "{} labels for {n} rows of logits",
        labels.len()
    );
    mean_cross_entropy(logits, classes, |i, j| {
        let y = labels[i] as usize;
        assert!(y < classes, "label {y} out of range for {classes} classes");
        if j == y {
            1.0
        } else {
            0.0
        }
    })
}

/// Mean cross-entropy of `logits` against soft `targets` (n × classes, each row a probability
/// distribution): L = −(1/n) Σ_i Σ_k t_ik ln softmax(z_i)_k, gradient (softmax − t)/n. With a
/// model's own earlier softmax as targets it holds predictions where they were (distillation).
///
/// Panics if `targets.len() != logits.len()`.
pub fn soft_cross_entropy(logits: &[f32], classes: usize, targets: &[f32]) -> (f32, Vec<f32>) {
    check_shape(logits, classes);
    assert_eq!(
        targets.len(),
        logits.len(),
        "targets and logits differ in size"
    );
    mean_cross_entropy(logits, classes, |i, j| targets[i * classes + j] as f64)
}

/// −(1/n) Σ_i Σ_j t(i, j) ln softmax(z_i)_j and its gradient (softmax − t)/n, for a target
/// distribution `t(row, class)` (one-hot for hard labels; adding its zero terms is exact).
fn mean_cross_entropy(
    logits: &[f32],
    classes: usize,
    target: impl Fn(usize, usize) -> f64,
) -> (f32, Vec<f32>) {
    mean_over_rows(logits, classes, |i, lp, dz| {
        let mut loss = 0f64;
        for (j, (d, &l)) in dz.iter_mut().zip(lp).enumerate() {
            let t = target(i, j);
            loss -= t * l;
            *d = l.exp() - t;
        }
        loss
    })
}

/// The mean over rows of a per-row loss and its gradient w.r.t. the logits: `row(i, lp, dz)`
/// gets row `i`'s log-softmax `lp`, writes that row's gradient into `dz` (zeroed; untouched
/// means 0) and returns its loss; both are divided by the number of rows here.
fn mean_over_rows(
    logits: &[f32],
    classes: usize,
    mut row: impl FnMut(usize, &[f64], &mut [f64]) -> f64,
) -> (f32, Vec<f32>) {
    let n = logits.len() / classes;
    let mut grad = vec![0f32; logits.len()];
    if n == 0 {
        return (0.0, grad);
    }
    let inv_n = 1.0 / n as f64;
    let (mut lp, mut dz) = (vec![0f64; classes], vec![0f64; classes]);
    let mut loss = 0f64;
    for (i, (z, g)) in logits
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .enumerate()
    {
        log_softmax(z, &mut lp);
        dz.fill(0.0);
        loss += row(i, &lp, &mut dz);
        for (g, &d) in g.iter_mut().zip(&dz) {
            *g = (d * inv_n) as f32;
        }
    }
    ((loss * inv_n) as f32, grad)
}

/// Entropy of one row from its log-probabilities; `p·ln p` is taken as 0 when `p` underflows.
fn entropy(lp: &[f64]) -> f64 {
    -lp.iter()
        .map(|&l| {
            let p = l.exp();
            if p > 0.0 {
                p * l
            } else {
                0.0
            }
        })
        .sum::<f64>()
}

/// L = −(1/n) Σ_i H(softmax(z_i)) / ln C, and dL/dz (maximizing normalized entropy).
///
/// With p = softmax(z) and H = −Σ_k p_k ln p_k, dH/dz_j = −p_j (ln p_j + H), so
/// dL/dz_ij = p_j (ln p_j + H_i) / (n ln C). An empty batch has loss 0. Panics if `classes < 2`
/// (the entropy of a single class is always 0 and ln C would be 0).
pub fn neg_normalized_entropy(logits: &[f32], classes: usize) -> (f32, Vec<f32>) {
    let n = check_shape(logits, classes);
    assert!(classes >= 2, "normalized entropy needs at least 2 classes");
    let mut grad = vec![0f32; logits.len()];
    if n == 0 {
        return (0.0, grad);
    }
    let scale = 1.0 / (n as f64 * (classes as f64).ln());
    let mut lp = vec![0f64; classes];
    let mut total = 0f64;
    for (row, g) in logits
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
    {
        log_softmax(row, &mut lp);
        let h = entropy(&lp);
        total += h;
        for (g, &l) in g.iter_mut().zip(&lp) {
            let p = l.exp();
            *g = if p > 0.0 {
                (p * (l + h) * scale) as f32
            } else {
                0.0
            };
        }
    }
    ((-total * scale) as f32, grad)
}

/// Mean over rows of KL(t_i ‖ softmax(z_i)), where t_i lowers row i's true-class probability to
/// its cap: t_iy = cap_i and the rest of the mass keeps the proportions the other classes have
/// now (spread evenly if they all underflowed). Rows already at or below their cap contribute
/// nothing. The target is held fixed for the gradient, which is (softmax − t)/n on the rows
/// above their cap.
///
/// Why: a sample-wise request should leave each forget sample as confident as data the model
/// never saw (`unlearn::unseen`). Lowering the true class towards the classes the model already
/// finds closest is what not having memorized a sample looks like: a hard sample ends up as the
/// model's best guess among its neighbours, an easy one keeps most of its confidence.
///
/// Panics if `labels` or `caps` do not have one entry per row, or a label is `>= classes`.
pub fn capped_confidence(
    logits: &[f32],
    classes: usize,
    labels: &[u8],
    caps: &[f32],
) -> (f32, Vec<f32>) {
    let n = check_shape(logits, classes);
    assert_eq!(labels.len(), n, "{} labels for {n} rows", labels.len());
    assert_eq!(caps.len(), n, "{} caps for {n} rows", caps.len());
    mean_over_rows(logits, classes, |i, lp, dz| {
        let y = labels[i] as usize;
        assert!(y < classes, "label {y} out of range for {classes} classes");
        let cap = (caps[i] as f64).clamp(0.0, 1.0);
        if lp[y].exp() <= cap {
            return 0.0;
        }
        let rest: f64 = (0..classes).filter(|&j| j != y).map(|j| lp[j].exp()).sum();
        let mut loss = 0f64;
        for (j, (d, &l)) in dz.iter_mut().zip(lp).enumerate() {
            let p = l.exp();
            let t = if j == y {
                cap
            } else if rest > 0.0 {
                p * (1.0 - cap) / rest
            } else {
                (1.0 - cap) / (classes - 1).max(1) as f64
            };
            if t > 0.0 {
                loss += t * (t.ln() - l);
            }
            *d = p - t;
        }
        loss
    })
}

/// Mean cross-entropy against `labels` plus `weight` times the logit anchor
/// `½·mean_i ‖c(z_i) − c(t_i)‖²`, where `t` are teacher logits (the starting model's, one row
/// per sample) and `c` centres a row (softmax ignores a row's offset, so the anchor does too).
/// Gradient: the cross-entropy's plus `weight·(c(z_i) − c(t_i))/n`.
///
/// Why: on a model that memorized its training data the retain cross-entropy is ~0 and so is
/// its gradient: it cannot hold the function in place while a forget step moves it. The logits
/// of a memorized sample still carry its margins; anchoring them gives a restoring force that
/// grows with the drift, whatever the confidence (the centred log-softmax equals the centred
/// logits, so it is computed from the row's log-softmax).
///
/// Panics if `labels` does not have one entry per row, `teacher.len() != logits.len()`, or a
/// label is `>= classes`.
pub fn anchored_cross_entropy(
    logits: &[f32],
    classes: usize,
    labels: &[u8],
    teacher: &[f32],
    weight: f32,
) -> (f32, Vec<f32>) {
    let n = check_shape(logits, classes);
    assert_eq!(labels.len(), n, "{} labels for {n} rows", labels.len());
    assert_eq!(
        teacher.len(),
        logits.len(),
        "teacher logits and logits differ in size"
    );
    let w = weight as f64;
    mean_over_rows(logits, classes, |i, lp, dz| {
        let y = labels[i] as usize;
        assert!(y < classes, "label {y} out of range for {classes} classes");
        let t = &teacher[i * classes..(i + 1) * classes];
        let mean_lp = lp.iter().sum::<f64>() / classes as f64;
        let mean_t = t.iter().map(|&v| v as f64).sum::<f64>() / classes as f64;
        let mut loss = -lp[y];
        for (j, (d, &l)) in dz.iter_mut().zip(lp).enumerate() {
            let diff = (l - mean_lp) - (t[j] as f64 - mean_t);
            loss += 0.5 * w * diff * diff;
            *d = l.exp() - (j == y) as u8 as f64 + w * diff;
        }
        loss
    })
}

/// Softmax probability of each row's true class.
///
/// Panics if `labels` does not have one entry per row.
pub fn true_class_probs(logits: &[f32], classes: usize, labels: &[u8]) -> Vec<f32> {
    let n = check_shape(logits, classes);
    assert_eq!(labels.len(), n, "{} labels for {n} rows", labels.len());
    let mut lp = vec![0f64; classes];
    logits
        .chunks_exact(classes)
        .zip(labels)
        .map(|(row, &y)| {
            log_softmax(row, &mut lp);
            lp[y as usize].exp() as f32
        })
        .collect()
}

/// Mean normalized entropy H/ln C of the rows (for stopping rules), in [0, 1].
///
/// An empty batch gives 0. Panics if `classes < 2`.
pub fn mean_normalized_entropy(logits: &[f32], classes: usize) -> f32 {
    let n = check_shape(logits, classes);
    assert!(classes >= 2, "normalized entropy needs at least 2 classes");
    if n == 0 {
        return 0.0;
    }
    let mut lp = vec![0f64; classes];
    let total: f64 = logits
        .chunks_exact(classes)
        .map(|row| {
            log_softmax(row, &mut lp);
            entropy(&lp)
        })
        .sum();
    ((total / (n as f64 * (classes as f64).ln())) as f32).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences of `f` at `x`, in f64, step `h`.
    fn numeric_grad(x: &[f32], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        let mut xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        (0..x.len())
            .map(|i| {
                let v = xs[i];
                xs[i] = v + h;
                let up = f(&xs);
                xs[i] = v - h;
                let down = f(&xs);
                xs[i] = v;
                (up - down) / (2.0 * h)
            })
            .collect()
    }

    /// Reference losses written directly from their definitions, in f64.
    fn softmax64(row: &[f64]) -> Vec<f64> {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|z| (z - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }
    fn ce64(z: &[f64], c: usize, labels: &[u8]) -> f64 {
        let rows: Vec<_> = z.chunks(c).collect();
        rows.iter()
            .zip(labels)
            .map(|(r, &y)| -softmax64(r)[y as usize].ln())
            .sum::<f64>()
            / rows.len() as f64
    }
    fn nne64(z: &[f64], c: usize) -> f64 {
        let rows: Vec<_> = z.chunks(c).collect();
        let h: f64 = rows
            .iter()
            .map(|r| {
                -softmax64(r)
                    .iter()
                    .map(|&p| if p > 0.0 { p * p.ln() } else { 0.0 })
                    .sum::<f64>()
            })
            .sum();
        -h / (rows.len() as f64 * (c as f64).ln())
    }

    /// Deterministic pseudo-random logits in [-4, 4).
    fn logits(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 8.0 - 4.0
            })
            .collect()
    }

    fn assert_close(a: &[f32], b: &[f64], tol: f64) {
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x as f64 - y).abs() < tol,
                "element {i}: analytic {x} vs numeric {y}"
            );
        }
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let (c, labels) = (5, [0u8, 3, 4, 1]);
        let z = logits(c * labels.len(), 1);
        let (loss, grad) = cross_entropy(&z, c, &labels);
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        assert!((loss as f64 - ce64(&z64, c, &labels)).abs() < 1e-6);
        assert_close(
            &grad,
            &numeric_grad(&z, 1e-5, |x| ce64(x, c, &labels)),
            1e-6,
        );
    }

    #[test]
    fn soft_cross_entropy_gradient_matches_finite_differences() {
        let (c, n) = (6, 3);
        let z = logits(c * n, 3);
        // Targets: softmax of other logits (each row a distribution).
        let t: Vec<f32> = logits(c * n, 9)
            .chunks(c)
            .flat_map(|r| softmax64(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .map(|p| p as f32)
            .collect();
        let sce64 = |x: &[f64]| -> f64 {
            x.chunks(c)
                .zip(t.chunks(c))
                .map(|(r, tr)| {
                    let p = softmax64(r);
                    -tr.iter()
                        .zip(&p)
                        .map(|(&a, b)| a as f64 * b.ln())
                        .sum::<f64>()
                })
                .sum::<f64>()
                / n as f64
        };
        let (loss, grad) = soft_cross_entropy(&z, c, &t);
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        assert!((loss as f64 - sce64(&z64)).abs() < 1e-6);
        assert_close(&grad, &numeric_grad(&z, 1e-5, sce64), 1e-6);
        // One-hot targets give plain cross-entropy.
        let labels = [2u8, 0, 5];
        let onehot: Vec<f32> = labels
            .iter()
            .flat_map(|&y| (0..c).map(move |j| (j == y as usize) as u8 as f32))
            .collect();
        let (a, ga) = soft_cross_entropy(&z, c, &onehot);
        let (b, gb) = cross_entropy(&z, c, &labels);
        assert!((a - b).abs() < 1e-6);
        assert_close(&ga, &gb.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-7);
    }

    #[test]
    fn neg_entropy_gradient_matches_finite_differences() {
        let c = 10;
        let z = logits(c * 3, 7);
        let (loss, grad) = neg_normalized_entropy(&z, c);
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        assert!((loss as f64 - nne64(&z64, c)).abs() < 1e-6);
        assert_close(&grad, &numeric_grad(&z, 1e-5, |x| nne64(x, c)), 1e-6);
        assert!((mean_normalized_entropy(&z, c) + loss).abs() < 1e-6);
    }

    #[test]
    fn anchored_cross_entropy_gradient_matches_finite_differences() {
        let z = [2.0f32, -1.0, 0.5, 7.0, 7.5, -3.0];
        let teacher = [1.0f32, 0.0, 0.0, 9.0, 6.0, -2.0];
        let labels = [0u8, 1];
        let (c, w) = (3, 0.7);
        let (loss, grad) = anchored_cross_entropy(&z, c, &labels, &teacher, w);
        let f = |x: &[f64]| {
            let zf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            anchored_cross_entropy(&zf, c, &labels, &teacher, w).0 as f64
        };
        let num = numeric_grad(&z, 1e-3, f);
        for (a, b) in grad.iter().zip(&num) {
            assert!((*a as f64 - b).abs() < 1e-3, "{grad:?} vs {num:?}");
        }
        // By hand: row 0's difference (2,−1,.5)−(1,0,0) = (1,−1,.5) centres to (5/6,−7/6,1/3),
        // squared norm 13/6, anchor ½·0.7·13/6; row 1's (−2,1.5,−1) centres to (−1.5,2,−0.5),
        // squared norm 6.5, anchor ½·0.7·6.5.
        let (ce, _) = cross_entropy(&z, c, &labels);
        let anchor = 0.5 * 0.7 * (13.0 / 6.0 + 6.5) / 2.0;
        assert!(
            (loss - (ce + anchor)).abs() < 1e-5,
            "{loss} vs {ce} + {anchor}"
        );
        // The anchor ignores a per-row offset: shifting the teacher by a constant changes nothing.
        let shifted: Vec<f32> = teacher.iter().map(|v| v + 5.0).collect();
        let (l2, g2) = anchored_cross_entropy(&z, c, &labels, &shifted, w);
        assert!((l2 - loss).abs() < 1e-5);
        assert!(g2.iter().zip(&grad).all(|(a, b)| (a - b).abs() < 1e-6));
        // At the teacher's logits only the cross-entropy remains.
        let (l3, g3) = anchored_cross_entropy(&teacher, c, &labels, &teacher, w);
        let (ce3, gce3) = cross_entropy(&teacher, c, &labels);
        assert!((l3 - ce3).abs() < 1e-6);
        assert!(g3.iter().zip(&gce3).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn capped_confidence_gradient_matches_finite_differences_with_the_target_held() {
        let (c, labels) = (6, [0u8, 3, 5, 2]);
        let z = logits(c * labels.len(), 13);
        let p = true_class_probs(&z, c, &labels);
        // Rows 0 and 1 above their caps, row 2 a hair below it (f32 rounding of `p`), row 3
        // well below.
        let caps = [p[0] * 0.5, 0.01, p[2] + 1e-6, p[3] + 0.1];
        let (loss, grad) = capped_confidence(&z, c, &labels, &caps);
        // The targets at z, from their definition, then frozen.
        let t: Vec<Vec<f64>> = z
            .chunks(c)
            .zip(labels.iter().zip(&caps))
            .map(|(r, (&y, &cap))| {
                let s = softmax64(&r.iter().map(|&v| v as f64).collect::<Vec<_>>());
                let rest: f64 = (0..c).filter(|&j| j != y as usize).map(|j| s[j]).sum();
                (0..c)
                    .map(|j| {
                        if j == y as usize {
                            cap as f64
                        } else {
                            s[j] * (1.0 - cap as f64) / rest
                        }
                    })
                    .collect()
            })
            .collect();
        let active = [true, true, false, false];
        let kl64 = |x: &[f64]| -> f64 {
            x.chunks(c)
                .zip(&t)
                .zip(&active)
                .filter(|(_, &a)| a)
                .map(|((r, t), _)| {
                    let s = softmax64(r);
                    t.iter()
                        .zip(&s)
                        .map(|(&t, &q)| t * (t.ln() - q.ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / labels.len() as f64
        };
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        assert!(
            (loss as f64 - kl64(&z64)).abs() < 1e-6,
            "{loss} vs {}",
            kl64(&z64)
        );
        assert_close(&grad, &numeric_grad(&z, 1e-5, kl64), 1e-6);
        assert!(grad[2 * c..].iter().all(|&g| g == 0.0));
        // Each active row's gradient lowers its true class and sums to zero.
        for (r, &y) in grad.chunks(c).zip(&labels).take(2) {
            assert!(r[y as usize] > 0.0);
            assert!(r.iter().sum::<f32>().abs() < 1e-6);
        }
    }

    #[test]
    fn capped_confidence_of_a_saturated_row_spreads_evenly_and_stays_finite() {
        // The other classes underflow: the removed mass goes to them evenly.
        let z = [1000.0f32, 0.0, 0.0, 0.0];
        let (loss, g) = capped_confidence(&z, 4, &[0], &[0.4]);
        assert!(loss.is_finite() && loss > 0.0);
        assert!((g[0] - 0.6).abs() < 1e-6, "{g:?}");
        assert!(g[1..].iter().all(|&v| (v + 0.2).abs() < 1e-6), "{g:?}");
        assert_eq!(true_class_probs(&z, 4, &[0]), vec![1.0]);
    }

    #[test]
    fn uniform_logits_have_entropy_one_and_zero_gradient() {
        let z = vec![2.5f32; 4 * 10];
        assert!((mean_normalized_entropy(&z, 10) - 1.0).abs() < 1e-6);
        let (loss, grad) = neg_normalized_entropy(&z, 10);
        assert!((loss + 1.0).abs() < 1e-6);
        assert!(grad.iter().all(|g| g.abs() < 1e-7), "{grad:?}");
    }

    #[test]
    fn one_dominant_class_is_finite() {
        // Logits 1000 apart: exp of the raw values overflows f32 and f64 both.
        let z = [1000.0f32, 0.0, 0.0, -1000.0, 0.0, 1000.0];
        let (ce, g) = cross_entropy(&z, 3, &[0, 2]);
        assert!(ce.abs() < 1e-6, "{ce}");
        assert!(g.iter().all(|v| v.is_finite() && v.abs() < 1e-6));
        // Wrong label on a confident row: loss ≈ 1000/2 (mean of 1000 and 0), grad −1/2 on it.
        let (ce, g) = cross_entropy(&z, 3, &[1, 2]);
        assert!((ce - 500.0).abs() < 1e-3, "{ce}");
        assert!((g[0] - 0.5).abs() < 1e-6 && (g[1] + 0.5).abs() < 1e-6);
        let (h, g) = neg_normalized_entropy(&z, 3);
        assert!(h.abs() < 1e-6 && g.iter().all(|v| v.is_finite()));
        assert!(mean_normalized_entropy(&z, 3) < 1e-6);
    }

    #[test]
    fn cross_entropy_gradient_rows_sum_to_zero() {
        let z = logits(6 * 4, 3);
        let (_, g) = cross_entropy(&z, 6, &[5, 0, 2, 2]);
        for row in g.chunks(6) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
    }

    #[test]
    fn empty_batch_is_zero() {
        assert_eq!(cross_entropy(&[], 10, &[]), (0.0, vec![]));
        assert_eq!(neg_normalized_entropy(&[], 10), (0.0, vec![]));
        assert_eq!(mean_normalized_entropy(&[], 10), 0.0);
    }
}
