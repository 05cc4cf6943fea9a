//! Element-wise binary ops on real values, `a ∘ b`, with `b` of `a`'s shape or one value per
//! channel and sample (`[N, C, 1, 1]`, broadcast over the pixels of `a`): the operand walk that
//! the float Mul ([`super::mul`]) and Div ([`super::div`]) share, so each states only its rule.

use super::tensor::Shape;

/// How `b` lines up with `a` (of shape `shape` per sample).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pairing {
    pub shape: Shape,
    /// `b` is `[C]` per sample.
    pub broadcast: bool,
}

impl Pairing {
    pub fn new(shape: Shape, broadcast: bool) -> Self {
        Pairing { shape, broadcast }
    }

    /// Elements per sample of `a` and of `b`.
    fn lens(&self) -> (usize, usize) {
        let la = self.shape.len().max(1);
        (
            la,
            if self.broadcast {
                self.shape.c.max(1)
            } else {
                la
            },
        )
    }

    /// Index into one sample of `b` for element `i` of a sample of `a` (NHWC storage).
    pub fn b_index(&self, i: usize) -> usize {
        if self.broadcast {
            i % self.shape.c.max(1)
        } else {
            i
        }
    }

    /// `f(a, b)` element by element, batch-wise.
    pub fn map(&self, ra: &[f32], rb: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let (la, lb) = self.lens();
        ra.chunks_exact(la)
            .zip(rb.chunks_exact(lb))
            .flat_map(|(xa, xb)| {
                let f = &f;
                xa.iter()
                    .enumerate()
                    .map(move |(i, &v)| f(v, xb[self.b_index(i)]))
            })
            .collect()
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
        let (la, lb) = self.lens();
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
                let j = self.b_index(i);
                let (da, db) = rule(g_y[i], x_a[i], x_b[j]);
                g_a[i] = da;
                g_b[j] += db;
            }
        }
        (ga, gb)
    }
}
