//! Activation-range observers for a model trained from scratch (the Retrain baseline): with random
//! initial weights there are no calibrated activation scales, so each quantized activation's range
//! is tracked during training as an exponential moving average of per-batch minimum and maximum,
//! like PyTorch's `MovingAverageMinMaxObserver`, and turned into uint8 scale and zero point.
//! The range always contains 0 so that zero (ReLU's output, padding) is represented exactly.

/// EMA of per-batch min and max (first batch initialises; min ≤ 0 ≤ max always kept so 0 is exact).
///
/// `momentum` is the weight of the new batch, as in PyTorch's batch norm:
/// `min ← (1 − momentum)·min + momentum·batch_min`.
#[derive(Debug, Clone)]
pub struct RangeObserver {
    pub min: f32,
    pub max: f32,
    pub momentum: f32,
    seen: bool,
}

impl RangeObserver {
    /// Panics unless `0 < momentum <= 1`.
    pub fn new(momentum: f32) -> Self {
        assert!(
            momentum > 0.0 && momentum <= 1.0,
            "observer momentum must be in (0, 1], got {momentum}"
        );
        RangeObserver {
            min: 0.0,
            max: 0.0,
            momentum,
            seen: false,
        }
    }

    /// Fold one batch of activations into the range. Non-finite values are ignored; a batch with no
    /// finite value changes nothing.
    pub fn observe(&mut self, values: &[f32]) {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if lo > hi {
            return;
        }
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if self.seen {
            let m = self.momentum;
            self.min = ((1.0 - m) * self.min + m * lo).min(0.0);
            self.max = ((1.0 - m) * self.max + m * hi).max(0.0);
        } else {
            (self.min, self.max) = (lo, hi);
            self.seen = true;
        }
    }

    /// Whether any batch has been observed yet.
    pub fn seen(&self) -> bool {
        self.seen
    }

    /// uint8 asymmetric parameters (scale > 0 even for an all-zero range): (scale, zero_point 0..=255).
    ///
    /// scale = (max − min)/255, at least `f32::EPSILON` (PyTorch's floor); zero point =
    /// round-half-even(−min/scale), clamped to 0..=255. Real value = scale·(q − zero_point).
    pub fn qparams_u8(&self) -> (f32, i32) {
        let scale = ((self.max - self.min) / 255.0).max(f32::EPSILON);
        let zp = (-self.min / scale).round_ties_even().clamp(0.0, 255.0) as i32;
        (scale, zp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_batch_initialises_then_ema() {
        let mut o = RangeObserver::new(0.1);
        assert!(!o.seen());
        o.observe(&[-1.0, 3.0, 2.0]);
        assert_eq!((o.min, o.max), (-1.0, 3.0));
        // min ← 0.9·(−1) + 0.1·(−3) = −1.2; max ← 0.9·3 + 0.1·5 = 3.2
        o.observe(&[-3.0, 5.0]);
        assert!((o.min + 1.2).abs() < 1e-6 && (o.max - 3.2).abs() < 1e-6);
    }

    #[test]
    fn range_always_contains_zero() {
        let mut o = RangeObserver::new(0.5);
        o.observe(&[2.0, 4.0]); // post-ReLU: min is clamped to 0
        assert_eq!((o.min, o.max), (0.0, 4.0));
        o.observe(&[-4.0, -2.0]);
        assert_eq!((o.min, o.max), (-2.0, 2.0));
        let (scale, zp) = o.qparams_u8();
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
        // 2/(4/255) = 127.5 in exact arithmetic; the f32 scale decides which side it rounds to.
        assert!((127..=128).contains(&zp));
        let mut o = RangeObserver::new(0.5);
        o.observe(&[-1.0, 3.0]);
        assert_eq!(o.qparams_u8().1, 64); // 1/(4/255) = 63.75
    }

    #[test]
    fn all_zero_and_empty_batches() {
        let mut o = RangeObserver::new(0.01);
        o.observe(&[]);
        o.observe(&[f32::NAN, f32::INFINITY]);
        assert!(!o.seen());
        o.observe(&[0.0; 8]);
        let (scale, zp) = o.qparams_u8();
        assert!(scale > 0.0 && scale.is_finite());
        assert_eq!(zp, 0);
    }

    #[test]
    fn relu_range_has_zero_point_zero() {
        let mut o = RangeObserver::new(1.0);
        o.observe(&[0.0, 6.0, 1.0]);
        assert_eq!(o.qparams_u8(), (6.0 / 255.0, 0));
        o.observe(&[-2.55, 0.0]); // momentum 1: the last batch only
        assert_eq!(o.qparams_u8(), (0.01, 255));
    }
}
