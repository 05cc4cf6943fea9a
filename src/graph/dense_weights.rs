//! A float layer's weights, with their transpose kept beside them until they change.
//!
//! Why: [`super::Dense`] stores its weights `[out][in]` (what the backward and the file want),
//! but its onnxruntime-order sums run over output channels, `[in][out]`. Transposed on every
//! forward call, that copy was 7 % of an MLP's inference with a float first layer, and on a
//! float head of 1568 × 128 it moved 200 k floats per batch. The weights change only between
//! training steps, so the transpose is made on first use and dropped on every change: the only
//! way to change the weights is [`DenseWeights::make_mut`], which drops it.

use std::ops::Deref;
use std::sync::OnceLock;

use super::aligned::Aligned;
use super::transpose::transpose;

/// Real weights `[out][in]` and, once asked for, their transpose `[in][out]`.
#[derive(Debug, Clone, Default)]
pub struct DenseWeights {
    w: Vec<f32>,
    t: OnceLock<Aligned>,
}

impl DenseWeights {
    /// The weights as a `rows × cols` matrix transposed (`cols × rows`), made on first use.
    /// A layer always asks with its own dimensions.
    pub(super) fn transposed(&self, rows: usize, cols: usize) -> &[f32] {
        let t = self
            .t
            .get_or_init(|| Aligned::copy_of(&transpose(&self.w, rows, cols)));
        debug_assert_eq!(t.len(), rows * cols);
        t
    }

    /// The weights to change; drops the transpose.
    pub fn make_mut(&mut self) -> &mut [f32] {
        self.t = OnceLock::new();
        &mut self.w
    }
}

impl From<Vec<f32>> for DenseWeights {
    fn from(w: Vec<f32>) -> Self {
        DenseWeights {
            w,
            t: OnceLock::new(),
        }
    }
}

impl Deref for DenseWeights {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_drops_the_transpose() {
        let mut w = DenseWeights::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(w.transposed(2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        w.make_mut()[1] = -2.0;
        assert_eq!(&w[..], [1.0, -2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(w.transposed(2, 3), [1.0, 4.0, -2.0, 5.0, 3.0, 6.0]);
        let copy = w.clone();
        w.make_mut()[0] = 0.5;
        assert_eq!(copy.transposed(2, 3)[0], 1.0);
        assert_eq!(w.transposed(2, 3)[0], 0.5);
    }
}
