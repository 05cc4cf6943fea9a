//! Reshape and Transpose of an activation: the same values in another order.
//!
//! Why a layer of its own: ONNX tensors are NCHW and ours are stored NHWC, so a Reshape that
//! keeps the channels (`x.view(N, C, -1)`), a Transpose of tokens (`flatten(2).transpose(1, 2)`)
//! or a channel shuffle (`view(N, g, C/g, H, W) → transpose(1, 2) → view(N, C, H, W)`) each move
//! bytes between storage positions in a way fixed at import. The importer folds a whole chain of
//! such nodes into one index table (`gather[j]` = the input position that output position `j`
//! reads, per sample), so the forward is a gather, the backward its scatter, and a value is never
//! changed: the output keeps the input's quantization, and the layer has nothing to train.

use super::tensor::{QBatch, Shape};

/// A fixed permutation of each sample's values.
#[derive(Debug, Clone)]
pub struct Permute {
    /// For each output position (NHWC storage of the output shape), the input position it reads.
    pub gather: Vec<u32>,
}

impl Permute {
    /// A permutation from its gather table; `None` when `gather` is not one (a repeated or
    /// out-of-range index).
    pub fn new(gather: Vec<u32>) -> Option<Self> {
        let mut seen = vec![false; gather.len()];
        for &g in &gather {
            let s = seen.get_mut(g as usize)?;
            if *s {
                return None;
            }
            *s = true;
        }
        Some(Permute { gather })
    }

    /// Whether every value stays where it is (a Reshape that only renames the axes).
    pub fn is_identity(&self) -> bool {
        self.gather
            .iter()
            .enumerate()
            .all(|(j, &g)| g as usize == j)
    }

    /// The values of `x` (each sample `gather.len()` long) in the output order.
    pub fn gather<T: Copy>(&self, x: &[T]) -> Vec<T> {
        let l = self.gather.len().max(1);
        let mut out = Vec::with_capacity(x.len());
        for img in x.chunks_exact(l) {
            out.extend(self.gather.iter().map(|&g| img[g as usize]));
        }
        out
    }

    /// The bytes of a quantized batch in the output order, as a batch of `shape`.
    pub fn forward(&self, x: &QBatch, shape: Shape) -> QBatch {
        QBatch {
            n: x.n,
            shape,
            data: self.gather(&x.data).into(),
        }
    }

    /// The gradient with respect to the input: each output gradient back to the position it
    /// was read from.
    pub fn backward(&self, gy: &[f32]) -> Vec<f32> {
        let l = self.gather.len().max(1);
        let mut gx = vec![0f32; gy.len()];
        for (o, g) in gx.chunks_exact_mut(l).zip(gy.chunks_exact(l)) {
            for (&src, &v) in self.gather.iter().zip(g) {
                o[src as usize] = v;
            }
        }
        gx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_permutations_are_accepted() {
        assert!(Permute::new(vec![2, 0, 1]).is_some());
        assert!(Permute::new(vec![0, 0, 1]).is_none());
        assert!(Permute::new(vec![0, 3, 1]).is_none());
        assert!(Permute::new(vec![0, 1, 2]).unwrap().is_identity());
        assert!(!Permute::new(vec![1, 0, 2]).unwrap().is_identity());
    }

    #[test]
    fn backward_is_the_adjoint_of_the_forward() {
        // ⟨P x, y⟩ = ⟨x, Pᵀ y⟩ for two samples of a 6-value permutation.
        let p = Permute::new(vec![3, 0, 5, 1, 4, 2]).unwrap();
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let y: Vec<f32> = (0..12).map(|i| (i as f32 * 1.3).cos()).collect();
        let px = p.gather(&x);
        let pty = p.backward(&y);
        let lhs: f32 = px.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&pty).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
        assert_eq!(px[0], x[3]);
        assert_eq!(px[6 + 2], x[6 + 5]);
    }

    #[test]
    fn bytes_move_with_the_shape() {
        let p = Permute::new(vec![1, 0]).unwrap();
        let x = QBatch {
            n: 2,
            shape: Shape::flat(2),
            data: vec![10, 20, 30, 40].into(),
        };
        let y = p.forward(&x, Shape { h: 2, w: 1, c: 1 });
        assert_eq!(y.data, vec![20, 10, 40, 30]);
        assert_eq!(y.shape, Shape { h: 2, w: 1, c: 1 });
    }
}
