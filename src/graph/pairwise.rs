//! Element-wise binary ops on real values, `a ∘ b`, with `b` of `a`'s shape, one value per
//! channel and sample (`[N, C, 1, 1]`, broadcast over the pixels of `a`), or one value per
//! sample (`[N, 1]`, a LayerNorm's mean spelled out in ops): the operand walk that the float
//! Mul ([`super::mul`]), Div ([`super::div`]) and Add/Sub share, so each states only its rule.
//! In NHWC storage both broadcasts are `b[i mod len_b]`, `len_b` being `b`'s values per sample
//! (`C` or 1), which [`Pairing::map`] and [`Pairing::backward`] read off the operands.

use super::tensor::Shape;

/// How `b` lines up with `a` (of shape `shape` per sample).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pairing {
    pub shape: Shape,
    /// `b` is `[C]` or `[1]` per sample.
    pub broadcast: bool,
}

impl Pairing {
    pub fn new(shape: Shape, broadcast: bool) -> Self {
        Pairing { shape, broadcast }
    }

    /// Elements per sample of `a` and of `b` (`b_total` values in all): a broadcast `b` has
    /// one value per sample or one per channel.
    fn lens(&self, a_total: usize, b_total: usize) -> (usize, usize) {
        let la = self.shape.len().max(1);
        let n = a_total / la;
        let lb = if !self.broadcast {
            la
        } else if n > 0 && b_total == n {
            1
        } else {
            self.shape.c.max(1)
        };
        (la, lb)
    }

    /// `f(a, b)` element by element, batch-wise.
    ///
    /// Written as loops over runs of `b`'s length (`a[i]` meets `b[i mod len_b]`), not one
    /// iterator over `a` taking `i % len_b`: that form did a division per element and never
    /// vectorized (28 % of an NNCF GELU model's inference, its Sigmoid·x gate).
    pub fn map(&self, ra: &[f32], rb: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let mut out = ra.to_vec();
        self.apply(&mut out, rb, f);
        out
    }

    /// [`Pairing::map`] in place: `a` becomes `f(a, b)` (what a float segment does when no
    /// later layer reads `a`).
    pub fn apply(&self, a: &mut [f32], rb: &[f32], f: impl Fn(f32, f32) -> f32) {
        let (la, lb) = self.lens(a.len(), rb.len());
        for (xa, xb) in a.chunks_exact_mut(la).zip(rb.chunks_exact(lb)) {
            if lb == 1 {
                let b = xb[0];
                for v in xa.iter_mut() {
                    *v = f(*v, b);
                }
                continue;
            }
            for xa in xa.chunks_mut(lb) {
                for (v, &b) in xa.iter_mut().zip(xb) {
                    *v = f(*v, b);
                }
            }
        }
    }

    /// Gradients of both operands: `rule(g, a, b)` gives `∂a` and the term added into `∂b`
    /// (summed over the pixels a broadcast `b` was used for, in pixel order).
    pub fn backward(
        &self,
        ra: &[f32],
        rb: &[f32],
        gy: &[f32],
        rule: impl Fn(f32, f32, f32) -> (f32, f32),
    ) -> (Vec<f32>, Vec<f32>) {
        let (la, lb) = self.lens(ra.len(), rb.len());
        let mut ga = vec![0f32; ra.len()];
        let mut gb = vec![0f32; rb.len()];
        for (s, ((g_a, x_a), g_y)) in ga
            .chunks_exact_mut(la)
            .zip(ra.chunks_exact(la))
            .zip(gy.chunks_exact(la))
            .enumerate()
        {
            let (x_b, g_b) = (&rb[s * lb..(s + 1) * lb], &mut gb[s * lb..(s + 1) * lb]);
            for i in 0..la {
                let j = i % lb;
                let (da, db) = rule(g_y[i], x_a[i], x_b[j]);
                g_a[i] = da;
                g_b[j] += db;
            }
        }
        (ga, gb)
    }
}

#[cfg(test)]
mod tests {
    use super::Pairing;
    use crate::graph::tensor::Shape;

    /// One value per sample (`[N, 1]`) against a flat `[N, 3]`: every feature meets its
    /// sample's value, and the gradient of that value is the sum over the features.
    #[test]
    fn one_value_per_sample_broadcasts_over_the_features() {
        let p = Pairing::new(Shape::flat(3), true);
        let (a, b) = ([1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [10.0f32, 20.0]);
        assert_eq!(
            p.map(&a, &b, |x, y| x - y),
            vec![-9.0, -8.0, -7.0, -16.0, -15.0, -14.0]
        );
        let gy = [1.0f32, 2.0, 3.0, 0.5, 0.5, 0.5];
        let (ga, gb) = p.backward(&a, &b, &gy, |g, _, _| (g, -g));
        assert_eq!(ga, gy.to_vec());
        assert_eq!(gb, vec![-6.0, -1.5]);
        // One value per channel (`[N, C, 1, 1]` on NHWC pixels) still pairs by channel.
        let p = Pairing::new(Shape { h: 1, w: 2, c: 2 }, true);
        assert_eq!(
            p.map(&[1.0, 2.0, 3.0, 4.0], &[10.0, 100.0], |x, y| x * y),
            vec![10.0, 200.0, 30.0, 400.0]
        );
    }
}
