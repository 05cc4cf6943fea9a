//! Weights a file keeps in float and quantizes at run time: a float initializer read by a
//! `QuantizeLinear` whose output a `DequantizeLinear` reads (onnxruntime's `quantize_static`
//! with `AddQDQPairToWeight`).
//!
//! Why a type of its own: the integers the engine trains are not in the file. The importer
//! computes them as onnxruntime's QuantizeLinear does (f32 division by the scale, round half to
//! even, plus the zero point, saturated to the output type), and an export has to go the other
//! way: write floats that onnxruntime re-quantizes to exactly the trained integers, and keep
//! the float bytes of every weight whose integer did not change, so an untouched weight is
//! byte-identical to the input file. A changed weight is written as `(q − zp) · s` in f32;
//! [`FloatWeight::new`] checks once, for every integer of the type's range and every scale,
//! that this value quantizes back to `q`, so every exported value is known to round-trip.

use super::qparams::round_half_even;

/// The file's float weight and the QuantizeLinear that turns it into integers.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatWeight {
    /// QuantizeLinear scales: one, or one per slice along `axis`.
    pub scale: Vec<f32>,
    /// QuantizeLinear zero points (one, or one per slice).
    pub zero_point: Vec<i64>,
    /// Axis of per-slice scales.
    pub axis: usize,
    /// Dimensions of the weight.
    pub dims: Vec<usize>,
    /// Saturation range of the output type (−128..=127 for int8, 0..=255 for uint8).
    pub range: (i64, i64),
    /// The file's float values, in file order.
    pub original: Vec<f32>,
    /// Their integers (what the file's QuantizeLinear gives), in file order.
    pub quantized: Vec<i64>,
}

/// onnxruntime's QuantizeLinear of one value: `saturate(round_half_even(x / s) + zp)`, the
/// division in f32.
pub fn quantize(x: f32, s: f32, zp: i64, (lo, hi): (i64, i64)) -> i64 {
    let r = round_half_even(x / s);
    // Clamp in float first (as onnxruntime does) so a huge quotient cannot wrap.
    let r = r.clamp((lo - zp) as f32, (hi - zp) as f32) as i64;
    (r + zp).clamp(lo, hi)
}

impl FloatWeight {
    /// The weight `original` (dimensions `dims`) quantized with `scale`/`zero_point` along
    /// `axis` into `range`. Errors (as text) name the value or scale that does not work.
    pub fn new(
        original: Vec<f32>,
        dims: Vec<usize>,
        scale: Vec<f32>,
        zero_point: Vec<i64>,
        axis: usize,
        range: (i64, i64),
    ) -> Result<Self, String> {
        let n: usize = dims.iter().product();
        if original.len() != n {
            return Err(format!(
                "holds {} values for dimensions {dims:?}",
                original.len()
            ));
        }
        if scale.len() > 1 && dims.get(axis) != Some(&scale.len()) {
            return Err(format!(
                "has {} scales, which do not match axis {axis} of dimensions {dims:?}",
                scale.len()
            ));
        }
        if zero_point.len() != 1 && zero_point.len() != scale.len() {
            return Err(format!(
                "has {} zero points for {} scales",
                zero_point.len(),
                scale.len()
            ));
        }
        if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("has scale {s}, not a positive number"));
        }
        if let Some(z) = zero_point
            .iter()
            .find(|z| !(range.0..=range.1).contains(*z))
        {
            return Err(format!(
                "has zero point {z}, outside {}..={}",
                range.0, range.1
            ));
        }
        if let Some(i) = original.iter().position(|x| !x.is_finite()) {
            return Err(format!("holds {} at index {i}", original[i]));
        }
        let mut w = FloatWeight {
            scale,
            zero_point,
            axis,
            dims,
            range,
            original,
            quantized: Vec::new(),
        };
        for c in 0..w.scale.len() {
            let (s, zp) = w.params(c);
            for q in range.0..=range.1 {
                let back = quantize(dequantize(q, s, zp), s, zp, range);
                if back != q {
                    return Err(format!(
                        "has scale {s}, with which the integer {q} written back as (q − zp)·s \
                         re-quantizes to {back}; trained integers could not be exported exactly"
                    ));
                }
            }
        }
        w.quantized = (0..n)
            .map(|i| {
                let (s, zp) = w.params(w.slice_of(i));
                quantize(w.original[i], s, zp, range)
            })
            .collect();
        Ok(w)
    }

    /// Index of the scale element `i` (file order) uses.
    pub fn slice_of(&self, i: usize) -> usize {
        if self.scale.len() <= 1 {
            return 0;
        }
        let inner: usize = self.dims[self.axis + 1..].iter().product();
        (i / inner.max(1)) % self.scale.len()
    }

    /// Scale and zero point of slice `c`.
    fn params(&self, c: usize) -> (f32, i64) {
        let zp = self.zero_point[if self.zero_point.len() > 1 { c } else { 0 }];
        (self.scale[c], zp)
    }

    /// Float values for the file that onnxruntime quantizes to `ints` (file order): the
    /// original float wherever the integer is unchanged, `(q − zp)·s` elsewhere.
    pub fn export(&self, ints: &[i64]) -> Vec<f32> {
        debug_assert_eq!(ints.len(), self.original.len());
        ints.iter()
            .enumerate()
            .map(|(i, &q)| {
                if q == self.quantized[i] {
                    return self.original[i];
                }
                let (s, zp) = self.params(self.slice_of(i));
                let x = dequantize(q, s, zp);
                // Checked for every integer and scale in `new`.
                debug_assert_eq!(quantize(x, s, zp, self.range), q);
                x
            })
            .collect()
    }
}

/// `(q − zp) · s` in f32, as DequantizeLinear computes it.
fn dequantize(q: i64, s: f32, zp: i64) -> f32 {
    (q - zp) as f32 * s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        // 0.5 / 1 = 0.5 → 0; 1.5 → 2; 2.5 → 2 (ties to even), as QuantizeLinear specifies.
        let r = (-128, 127);
        assert_eq!(quantize(0.5, 1.0, 0, r), 0);
        assert_eq!(quantize(1.5, 1.0, 0, r), 2);
        assert_eq!(quantize(2.5, 1.0, 0, r), 2);
        assert_eq!(quantize(-2.5, 1.0, 0, r), -2);
        assert_eq!(quantize(1e30, 0.01, 0, r), 127);
        assert_eq!(quantize(-1e30, 0.01, 3, r), -128);
        assert_eq!(quantize(0.3, 0.1, 128, (0, 255)), 131);
    }

    #[test]
    fn per_channel_integers_and_an_export_that_keeps_unchanged_floats() {
        // Two output channels (axis 0) of two values, scales 0.1 and 0.02.
        let w = FloatWeight::new(
            vec![0.26, -0.31, 0.05, 0.011],
            vec![2, 2],
            vec![0.1, 0.02],
            vec![0],
            0,
            (-128, 127),
        )
        .unwrap();
        assert_eq!(w.quantized, vec![3, -3, 2, 1]);
        let out = w.export(&[3, -2, 2, 5]);
        // Unchanged integers keep the file's float bits.
        assert_eq!(out[0].to_bits(), 0.26f32.to_bits());
        assert_eq!(out[2].to_bits(), 0.05f32.to_bits());
        // Changed ones are (q − zp)·s, and re-quantize to q.
        assert_eq!(out[1], -2.0 * 0.1);
        assert_eq!(out[3], 5.0 * 0.02);
        for (i, &q) in [3i64, -2, 2, 5].iter().enumerate() {
            let s = w.scale[w.slice_of(i)];
            assert_eq!(quantize(out[i], s, 0, w.range), q);
        }
    }

    #[test]
    fn malformed_parameters_are_named() {
        let e = FloatWeight::new(
            vec![1.0; 6],
            vec![3, 2],
            vec![0.1; 2],
            vec![0],
            0,
            (-128, 127),
        )
        .unwrap_err();
        assert!(e.contains("2 scales") && e.contains("axis 0"), "{e}");
        let e =
            FloatWeight::new(vec![1.0], vec![1], vec![-1.0], vec![0], 0, (-128, 127)).unwrap_err();
        assert!(e.contains("scale -1"), "{e}");
        let e = FloatWeight::new(vec![f32::NAN], vec![1], vec![1.0], vec![0], 0, (-128, 127))
            .unwrap_err();
        assert!(e.contains("NaN"), "{e}");
        let e =
            FloatWeight::new(vec![1.0], vec![1], vec![1.0], vec![300], 0, (0, 255)).unwrap_err();
        assert!(e.contains("zero point 300"), "{e}");
    }
}
