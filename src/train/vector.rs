//! Flattened gradient vectors: all trainable parameters of a model laid end to end, one segment per
//! parameter tensor. OEU works on these as whole vectors (a dot product and a projection, see
//! `DESIGN.md`, "OEU as implemented"); the per-segment variant is its "projection per tensor"
//! option. Storage stays f32 (memory is the device's scarce resource) but every reduction
//! accumulates in f64: a million-element dot product in f32 loses the digits that decide whether
//! the projected gradient is really orthogonal.

use std::ops::Range;

/// ⟨a, b⟩ with f64 accumulation (four independent sums, so the loop pipelines).
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot of vectors of different lengths");
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y as f64).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// ‖a‖² with f64 accumulation.
pub fn norm_sq(a: &[f32]) -> f64 {
    dot(a, a)
}

/// What OEU's projection did, for logging.
#[derive(Debug, Clone, Copy, Default)]
pub struct Projection {
    /// ⟨g_f, g_r⟩ before the projection.
    pub dot: f64,
    /// The multiple of g_r that was subtracted (0 when nothing was done).
    pub coef: f64,
    /// Whether g_f was changed.
    pub projected: bool,
}

/// g_f ← g_f − (⟨g_f,g_r⟩/(‖g_r‖²+eps))·g_r over the whole vector. If `only_on_conflict`, only
/// when ⟨g_f,g_r⟩ < 0. Returns what was done.
///
/// A zero g_r (or a zero denominator with `eps == 0`) leaves g_f unchanged: there is no retain
/// direction to protect. The update is computed in f64 and rounded once per element.
pub fn project_out(g_f: &mut [f32], g_r: &[f32], eps: f64, only_on_conflict: bool) -> Projection {
    let d = dot(g_f, g_r);
    let denom = norm_sq(g_r) + eps;
    let skip = (only_on_conflict && d >= 0.0) || denom <= 0.0 || d == 0.0 || !d.is_finite();
    if skip {
        return Projection {
            dot: d,
            coef: 0.0,
            projected: false,
        };
    }
    let coef = d / denom;
    for (f, &r) in g_f.iter_mut().zip(g_r) {
        *f = (*f as f64 - coef * r as f64) as f32;
    }
    Projection {
        dot: d,
        coef,
        projected: true,
    }
}

/// The same, separately on each segment `ranges` (one per parameter tensor).
///
/// Elements outside every range are left as they are. Ranges should not overlap; panics if one
/// reaches past the end of the vectors.
pub fn project_out_per_segment(
    g_f: &mut [f32],
    g_r: &[f32],
    ranges: &[Range<usize>],
    eps: f64,
    only_on_conflict: bool,
) -> Vec<Projection> {
    assert_eq!(
        g_f.len(),
        g_r.len(),
        "projection of vectors of different lengths"
    );
    ranges
        .iter()
        .map(|r| project_out(&mut g_f[r.clone()], &g_r[r.clone()], eps, only_on_conflict))
        .collect()
}

/// y += a·x.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy of vectors of different lengths");
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// |cos| between the two vectors, in f64.
    fn abs_cos(a: &[f32], b: &[f32]) -> f64 {
        dot(a, b).abs() / (norm_sq(a).sqrt() * norm_sq(b).sqrt())
    }

    fn vec_pair(max_len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (2..max_len).prop_flat_map(|n| {
            (
                prop::collection::vec(-10f32..10.0, n),
                prop::collection::vec(-10f32..10.0, n),
            )
        })
    }

    /// Deterministic pseudo-random values in [-1, 1), for the long-vector cases.
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    proptest! {
        #[test]
        fn projected_gradient_is_orthogonal((mut f, r) in vec_pair(300)) {
            prop_assume!(norm_sq(&r) > 1e-3);
            let before = f.clone();
            let p = project_out(&mut f, &r, 1e-12, false);
            prop_assert!((p.dot - dot(&before, &r)).abs() < 1e-9);
            if norm_sq(&f) > 1e-6 && norm_sq(&f) > 1e-12 * norm_sq(&before) {
                prop_assert!(abs_cos(&f, &r) < 1e-5, "cos {}", abs_cos(&f, &r));
            }
        }

        #[test]
        fn conflict_only_leaves_agreeing_gradients((mut f, r) in vec_pair(300)) {
            let before = f.clone();
            let p = project_out(&mut f, &r, 1e-12, true);
            if dot(&before, &r) >= 0.0 {
                prop_assert!(!p.projected);
                prop_assert_eq!(&f, &before);
            } else {
                prop_assert!(p.projected && p.coef < 0.0);
                if norm_sq(&f) > 1e-6 {
                    prop_assert!(abs_cos(&f, &r) < 1e-5, "cos {}", abs_cos(&f, &r));
                }
            }
        }

        #[test]
        fn each_segment_is_orthogonal((mut f, r) in vec_pair(400), cut in 0.1f64..0.9) {
            let n = f.len();
            let m = ((n as f64 * cut) as usize).clamp(1, n - 1);
            let ranges = [0..m, m..n];
            let ps = project_out_per_segment(&mut f, &r, &ranges, 1e-12, false);
            prop_assert_eq!(ps.len(), 2);
            for range in ranges {
                let (fs, rs) = (&f[range.clone()], &r[range]);
                if norm_sq(rs) > 1e-3 && norm_sq(fs) > 1e-6 {
                    prop_assert!(abs_cos(fs, rs) < 1e-5, "cos {}", abs_cos(fs, rs));
                }
            }
        }
    }

    #[test]
    fn million_element_projection_is_orthogonal() {
        let n = 1_000_000;
        // Strongly correlated with g_r so that most of g_f is removed: the hard case for rounding.
        let r = noise(n, 1);
        let mut f: Vec<f32> = noise(n, 2)
            .iter()
            .zip(&r)
            .map(|(&a, &b)| 0.1 * a - 3.0 * b)
            .collect();
        let p = project_out(&mut f, &r, 1e-12, false);
        assert!(p.projected && p.dot < 0.0);
        assert!(abs_cos(&f, &r) < 1e-5, "cos {}", abs_cos(&f, &r));
        // Per segment, with uneven segments like a model's tensors.
        let mut f2: Vec<f32> = noise(n, 3).iter().zip(&r).map(|(&a, &b)| a + b).collect();
        let ranges = [0..10, 10..5_000, 5_000..400_000, 400_000..n];
        project_out_per_segment(&mut f2, &r, &ranges, 1e-12, false);
        for range in ranges {
            let c = abs_cos(&f2[range.clone()], &r[range]);
            assert!(c < 1e-5, "cos {c}");
        }
    }

    #[test]
    fn zero_retain_gradient_is_safe() {
        let mut f = vec![1.0f32, -2.0, 3.0];
        for eps in [0.0, 1e-12] {
            let p = project_out(&mut f, &[0.0; 3], eps, false);
            assert!(!p.projected && p.coef == 0.0 && p.dot == 0.0);
            assert_eq!(f, [1.0, -2.0, 3.0]);
        }
        let ps = project_out_per_segment(&mut f, &[0.0; 3], &[0..1, 1..3], 0.0, true);
        assert!(ps.iter().all(|p| !p.projected));
        assert!(f.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn projection_of_parallel_vector_is_zero() {
        // g_f = −2·g_r: coef = ⟨g_f,g_r⟩/‖g_r‖² = −2 and g_f⊥ = 0 exactly.
        let r = [1.0f32, 2.0, -3.0];
        let mut f = [-2.0f32, -4.0, 6.0];
        let p = project_out(&mut f, &r, 0.0, true);
        assert_eq!((p.dot, p.coef, p.projected), (-28.0, -2.0, true));
        assert_eq!(f, [0.0; 3]);
    }

    #[test]
    fn dot_axpy_norm() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let b = [1.0f32, 0.5, -1.0, 2.0, 0.0];
        assert_eq!(dot(&a, &b), 1.0 + 1.0 - 3.0 + 8.0);
        assert_eq!(norm_sq(&a), 55.0);
        let mut y = a;
        axpy(&mut y, 2.0, &b);
        assert_eq!(y, [3.0, 3.0, 1.0, 8.0, 5.0]);
        assert_eq!(dot(&[], &[]), 0.0);
    }
}
