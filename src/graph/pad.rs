//! An explicit constant Pad: borders of real 0 around each image (PyTorch's `nn.ZeroPad2d`,
//! `F.pad(x, (0, 1, 0, 1))` before a stride-2 conv, the asymmetric "same" padding of networks
//! ported from TensorFlow).
//!
//! Why a layer rather than a change to the next conv's padding: what reads the padded tensor
//! may be a MaxPool or an AveragePool, for which ONNX's own padding means something else (−∞, or
//! not counted), while a Pad's borders are values like any other. Here they are the byte of real
//! 0 (the tensor's zero point) in a quantized activation, and 0.0 in a float one; the output keeps
//! the input's quantization, and the backward crops the gradient back to the input's pixels.

use super::tensor::{QBatch, Shape};

/// Zero borders of `top`/`left` pixels before and the rest of `out_shape` after each image.
#[derive(Debug, Clone)]
pub struct Pad {
    pub in_shape: Shape,
    pub out_shape: Shape,
    pub top: usize,
    pub left: usize,
}

impl Pad {
    /// Each sample of `x` (NHWC, `in_shape`) inside borders of `fill`.
    pub fn fill<T: Copy>(&self, x: &[T], fill: T) -> Vec<T> {
        let (i, o) = (self.in_shape, self.out_shape);
        let n = x.len() / i.len().max(1);
        let mut out = vec![fill; n * o.len()];
        for (dst, src) in out
            .chunks_exact_mut(o.len().max(1))
            .zip(x.chunks_exact(i.len().max(1)))
        {
            for h in 0..i.h {
                let at = ((h + self.top) * o.w + self.left) * o.c;
                dst[at..at + i.w * i.c].copy_from_slice(&src[h * i.w * i.c..(h + 1) * i.w * i.c]);
            }
        }
        out
    }

    /// The padded batch; the borders hold `zero_point`, the byte of real 0.
    pub fn forward(&self, x: &QBatch, zero_point: u8) -> QBatch {
        QBatch {
            n: x.n,
            shape: self.out_shape,
            data: self.fill(&x.data, zero_point).into(),
        }
    }

    /// The gradient of the input: the output gradient without its borders.
    pub fn backward(&self, gy: &[f32]) -> Vec<f32> {
        let (i, o) = (self.in_shape, self.out_shape);
        let mut gx = Vec::with_capacity(gy.len() / o.len().max(1) * i.len());
        for g in gy.chunks_exact(o.len().max(1)) {
            for h in 0..i.h {
                let at = ((h + self.top) * o.w + self.left) * o.c;
                gx.extend_from_slice(&g[at..at + i.w * i.c]);
            }
        }
        gx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad() -> Pad {
        // 2×2 images of 2 channels, one row on top, one column on the right.
        Pad {
            in_shape: Shape { h: 2, w: 2, c: 2 },
            out_shape: Shape { h: 3, w: 3, c: 2 },
            top: 1,
            left: 0,
        }
    }

    #[test]
    fn borders_hold_the_fill_and_pixels_keep_their_place() {
        let x: Vec<u8> = (1..=8).collect();
        let y = pad().forward(
            &QBatch {
                n: 1,
                shape: Shape { h: 2, w: 2, c: 2 },
                data: x.into(),
            },
            9,
        );
        #[rustfmt::skip]
        let want = vec![
            9, 9,  9, 9,  9, 9,
            1, 2,  3, 4,  9, 9,
            5, 6,  7, 8,  9, 9,
        ];
        assert_eq!(y.data, want);
    }

    #[test]
    fn backward_is_the_adjoint_of_the_forward() {
        let p = pad();
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..36).map(|i| (i as f32 * 0.91).cos()).collect();
        let lhs: f32 = p.fill(&x, 0.0).iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&p.backward(&g)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
    }
}
