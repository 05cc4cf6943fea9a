//! The weight-derived constants of an [`super::OrtFix`] layer, built once per set of weights.
//!
//! Why: the onnxruntime-order forward needs, per output channel, the centred integer row, its
//! largest magnitude and Euclidean norm (the error bounds), and (for a layer of at most
//! [`EAGER_WEIGHTS`] weights) the row dequantized in onnxruntime's input order. Building them
//! is a few passes over every weight; done on every forward call it cost an MLP's `eval` about
//! as much as its GEMM (a 196 → 256 → 10 MatMul network: one batch of 64 images is 3.2 M
//! multiply-adds in the integer GEMM, and the constants were 5 passes over 52k weights, scalar
//! and with a gather). The weights only change between training steps, and then as a new
//! [`PackedWeights`] with a new [`PackedWeights::id`]; inference runs thousands of batches on
//! one set. So the constants are kept, keyed on the ids of the layer's weights and the bits of
//! its weight steps, and rebuilt when either differs.

use std::sync::{Arc, Mutex};

use crate::kernels::PackedWeights;

/// Layers above this many weights dequantize only the rows they recompute (a recomputed
/// output is rare: under 1 % typically) instead of keeping every row in f32.
pub(crate) const EAGER_WEIGHTS: usize = 1 << 16;

/// One layer's weight-derived constants (see the module docs).
pub(crate) struct RowConsts {
    /// The [`PackedWeights::id`]s they were built from, in the layer's order.
    ids: Vec<u64>,
    /// The bits of each output's weight step.
    scale_bits: Vec<u32>,
    /// The graph-order input at each position of onnxruntime's order.
    pub inv: Vec<usize>,
    /// Centred integer weights `[c_out][k]`, `k` in graph order.
    pub vals: Vec<i32>,
    /// Each output's weight step.
    pub scales: Vec<f32>,
    /// Every row dequantized in onnxruntime's order (`[c_out][k]`), where the layer has at
    /// most [`EAGER_WEIGHTS`] weights; empty otherwise.
    pub w: Vec<f32>,
    /// `max |v|` over each row.
    pub wmax: Vec<i32>,
    /// `‖v‖₂` of each row (`Σv²` summed in integers, exact).
    pub wnorm: Vec<f64>,
}

impl RowConsts {
    /// Build from a layer's weights (`weights`, one per group, rows in output order), the
    /// position `order[i]` of graph input `i` in onnxruntime's order, and each output's step.
    fn build(weights: &[&PackedWeights], order: &[usize], scales: Vec<f32>) -> Self {
        let k = order.len();
        let vals: Vec<i32> = match weights {
            [w] => w.values(),
            ws => ws.iter().flat_map(|w| w.values()).collect(),
        };
        let mut inv = vec![0; k];
        for (i, &at) in order.iter().enumerate() {
            inv[at] = i;
        }
        let rows = || vals.chunks_exact(k.max(1));
        let w = if vals.len() <= EAGER_WEIGHTS {
            let mut w = vec![0f32; vals.len()];
            for ((w, row), &s) in w.chunks_exact_mut(k.max(1)).zip(rows()).zip(&scales) {
                for (w, &i) in w.iter_mut().zip(&inv) {
                    *w = row[i] as f32 * s;
                }
            }
            w
        } else {
            Vec::new()
        };
        let wmax = rows()
            .map(|r| r.iter().map(|v| v.abs()).max().unwrap_or(0))
            .collect();
        let wnorm = rows()
            .map(|r| (r.iter().map(|&v| (v as i64) * (v as i64)).sum::<i64>() as f64).sqrt())
            .collect();
        RowConsts {
            ids: weights.iter().map(|w| w.id()).collect(),
            scale_bits: scales.iter().map(|s| s.to_bits()).collect(),
            inv,
            vals,
            scales,
            w,
            wmax,
            wnorm,
        }
    }

    fn built_from(&self, weights: &[&PackedWeights], scales: &[f32]) -> bool {
        self.ids.len() == weights.len()
            && self.ids.iter().zip(weights).all(|(&id, w)| id == w.id())
            && self.scale_bits.len() == scales.len()
            && self
                .scale_bits
                .iter()
                .zip(scales)
                .all(|(&b, s)| b == s.to_bits())
    }

    /// Output `c`'s dequantized weights in onnxruntime's order, into `w` (`k` long), for a
    /// layer whose rows are not kept in f32.
    pub fn dequantize_row(&self, c: usize, w: &mut [f32]) {
        let k = self.inv.len();
        let (row, s) = (&self.vals[c * k..][..k], self.scales[c]);
        for (w, &i) in w.iter_mut().zip(&self.inv) {
            *w = row[i] as f32 * s;
        }
    }
}

/// The last [`RowConsts`] a layer built. A clone starts empty (it would be rebuilt on first
/// use anyway); so does a layer read back from anywhere.
#[derive(Default)]
pub(crate) struct RowCache(Mutex<Option<Arc<RowConsts>>>);

impl RowCache {
    /// The constants of `weights` with steps `scales`, from the cache when they were built from
    /// the same weights and steps, else built now (and kept). `order` as in [`RowConsts`].
    pub fn get(
        &self,
        weights: &[&PackedWeights],
        order: impl FnOnce() -> Vec<usize>,
        scales: Vec<f32>,
    ) -> Arc<RowConsts> {
        // A poisoned lock only means another thread panicked mid-lookup; the value is whole.
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(rc) = cached.filter(|rc| rc.built_from(weights, &scales)) {
            return rc;
        }
        let rc = Arc::new(RowConsts::build(weights, &order(), scales));
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(rc.clone());
        rc
    }
}

impl Clone for RowCache {
    fn clone(&self) -> Self {
        RowCache::default()
    }
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowCache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(data: Vec<i8>, n: usize, k: usize) -> PackedWeights {
        PackedWeights::new(data, n, k)
    }

    #[test]
    fn constants_follow_the_definition() {
        let w = weights(vec![1, -3, 2, 0, 5, -5], 2, 3);
        let rc = RowConsts::build(&[&w], &[2, 0, 1], vec![0.5, 2.0]);
        // Graph input i sits at onnxruntime position order[i]: position 0 holds input 1.
        assert_eq!(rc.inv, vec![1, 2, 0]);
        assert_eq!(rc.vals, vec![1, -3, 2, 0, 5, -5]);
        assert_eq!(rc.w, vec![-1.5, 1.0, 0.5, 10.0, -10.0, 0.0]);
        assert_eq!(rc.wmax, vec![3, 5]);
        assert_eq!(rc.wnorm, vec![14f64.sqrt(), 50f64.sqrt()]);
        let mut row = [0f32; 3];
        rc.dequantize_row(1, &mut row);
        assert_eq!(row, [10.0, -10.0, 0.0]);
    }

    #[test]
    fn a_cache_rebuilds_for_new_weights_or_steps_only() {
        let cache = RowCache::default();
        let a = weights(vec![1, 2, 3, 4], 2, 2);
        let order = || vec![0, 1];
        let first = cache.get(&[&a], order, vec![1.0, 1.0]);
        assert!(Arc::ptr_eq(
            &first,
            &cache.get(&[&a], order, vec![1.0, 1.0])
        ));
        // A clone holds the same weights: the same constants.
        let a2 = a.clone();
        assert!(Arc::ptr_eq(
            &first,
            &cache.get(&[&a2], order, vec![1.0, 1.0])
        ));
        // New weights rebuild, even with the same bytes (ids, not contents, are compared).
        let same = weights(vec![1, 2, 3, 4], 2, 2);
        assert!(!Arc::ptr_eq(
            &first,
            &cache.get(&[&same], order, vec![1.0, 1.0])
        ));
        let b = weights(vec![1, 2, 3, 5], 2, 2);
        let second = cache.get(&[&b], order, vec![1.0, 1.0]);
        assert_eq!(second.vals, vec![1, 2, 3, 5]);
        let third = cache.get(&[&b], order, vec![1.0, 0.5]);
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(third.w, vec![1.0, 2.0, 1.5, 2.5]);
        // Group count is part of the key.
        let fourth = cache.get(&[&b, &a], || vec![0, 1], vec![1.0; 4]);
        assert_eq!(fourth.vals, vec![1, 2, 3, 5, 1, 2, 3, 4]);
    }
}
