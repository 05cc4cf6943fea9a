//! The quotient of two tensors in float: `a / b`, both of one shape, or `b` one value per
//! channel and sample (`[N, C, 1, 1]`, broadcast over the pixels of `a`, as a gate is for
//! [`super::mul`]).
//!
//! Why float only: a quotient of two bytes is not a function of one byte, and onnxruntime's
//! quantizer leaves Div in float anyway (graph optimizations off, a QDQ `DQ a, DQ b → Div → Q`
//! is run as an f32 division of the dequantized operands). So the layer always writes a float
//! activation (see [`super::float_seg`]); a QuantizeLinear after it is a separate
//! [`super::Quantize`] layer, which rounds as onnxruntime does. The forward is the f32 quotient,
//! IEEE as onnxruntime's (a zero divisor gives ±inf or NaN there too, never a panic). The
//! backward is the quotient rule on the saved real operands: `∂a = g / b` and `∂b = −g·a/b²`,
//! summed over the pixels a broadcast divisor was used for.

use super::pairwise::Pairing;
use super::tensor::Shape;

/// `y = a / b` on real values.
#[derive(Debug, Clone)]
pub struct Div {
    /// `b` is `[C]` per sample, broadcast over the pixels of `a`.
    pub broadcast: bool,
}

impl Div {
    pub(crate) fn pairing(&self, shape: Shape) -> Pairing {
        Pairing::new(shape, self.broadcast)
    }

    /// The f32 quotient of real operands (`ra` of shape `shape` per sample).
    pub fn forward_real(&self, shape: Shape, ra: &[f32], rb: &[f32]) -> Vec<f32> {
        self.pairing(shape).map(ra, rb, |a, b| a / b)
    }

    /// Gradients of both operands from their real values and the output gradient `gy`.
    pub fn backward(
        &self,
        shape: Shape,
        ra: &[f32],
        rb: &[f32],
        gy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        // `∂b += −(q·a/b)` is the f32 `∂b −= q·a/b` (negation is exact).
        self.pairing(shape).backward(ra, rb, gy, |g, a, b| {
            let q = g / b;
            (q, -(q * a / b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_divisor_per_channel_broadcasts_and_gradients_follow_the_quotient_rule() {
        let d = Div { broadcast: true };
        let s = Shape { h: 1, w: 2, c: 2 };
        // a = pixel 0 [1, 2], pixel 1 [3, −1]; b = [2, −0.5].
        let (a, b) = ([1.0f32, 2.0, 3.0, -1.0], [2.0f32, -0.5]);
        assert_eq!(d.forward_real(s, &a, &b), vec![0.5, -4.0, 1.5, 2.0]);
        let (ga, gb) = d.backward(s, &a, &b, &[1.0, 1.0, 2.0, 1.0]);
        assert_eq!(ga, vec![0.5, -2.0, 1.0, -2.0]);
        // ∂b_c = −Σ g·a / b_c²: channel 0 −(1·1 + 2·3)/4, channel 1 −(1·2 + 1·(−1))/0.25.
        assert_eq!(gb, vec![-7.0 / 4.0, -4.0]);
    }

    #[test]
    fn equal_shapes_divide_element_by_element_and_zero_is_ieee() {
        let d = Div { broadcast: false };
        let s = Shape::flat(3);
        let y = d.forward_real(s, &[1.0, -1.0, 0.0], &[4.0, 0.0, 0.0]);
        assert_eq!(y[0], 0.25);
        assert_eq!(y[1], f32::NEG_INFINITY);
        assert!(y[2].is_nan());
    }
}
