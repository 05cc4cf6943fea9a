//! Backward of the pooling layers and of Flatten. Max pooling routes each output gradient to
//! the first largest input of its window (the one the forward picked, since quantization is
//! monotone the stored bytes order the same way as the real values); average pooling spreads it
//! evenly over the window's divisor; Flatten undoes its permutation.

use rayon::prelude::*;

use super::pool::{for_each_window, AvgPool, GlobalAvgPool, MaxPool};
use super::tensor::Shape;

impl MaxPool {
    /// Input gradient from the saved input `x` (stored bytes or real values) and `gy`.
    pub fn backward<T: PartialOrd + Copy + Sync>(&self, x: &[T], gy: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(il)
            .zip(x.par_chunks(il))
            .zip(gy.par_chunks(ol))
            .for_each(|((gxi, img), g)| {
                for_each_window(&self.window, self.in_shape, self.out_shape, |p, cells| {
                    for ch in 0..c {
                        let mut best: Option<usize> = None;
                        for &cell in cells {
                            let v = img[cell * c + ch];
                            if best.is_none_or(|b| v > img[b * c + ch]) {
                                best = Some(cell);
                            }
                        }
                        if let Some(b) = best {
                            gxi[b * c + ch] += g[p * c + ch];
                        }
                    }
                })
            });
        gx
    }
}

impl AvgPool {
    /// Input gradient; `n` samples.
    pub fn backward(&self, n: usize, gy: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let full = self.window.kh * self.window.kw;
        let mut gx = vec![0f32; n * self.in_shape.len()];
        gx.par_chunks_mut(il)
            .zip(gy.par_chunks(ol))
            .for_each(|(gxi, g)| {
                for_each_window(&self.window, self.in_shape, self.out_shape, |p, cells| {
                    let count = if self.count_include_pad {
                        full
                    } else {
                        cells.len()
                    };
                    let inv = 1.0 / count.max(1) as f32;
                    for &cell in cells {
                        for ch in 0..c {
                            gxi[cell * c + ch] += g[p * c + ch] * inv;
                        }
                    }
                })
            });
        gx
    }
}

impl GlobalAvgPool {
    /// Input gradient; `n` samples.
    pub fn backward(&self, n: usize, gy: &[f32]) -> Vec<f32> {
        let Shape { h, w, c } = self.in_shape;
        let inv = 1.0 / (h * w).max(1) as f32;
        let mut gx = vec![0f32; n * self.in_shape.len()];
        for (gxi, g) in gx
            .chunks_exact_mut(self.in_shape.len().max(1))
            .zip(gy.chunks_exact(c.max(1)))
        {
            for px in gxi.chunks_exact_mut(c) {
                for (d, &v) in px.iter_mut().zip(g) {
                    *d = v * inv;
                }
            }
        }
        gx
    }
}

/// Gradient of [`super::eltwise::flatten_nchw`]: NCHW-ordered flat gradient back to NHWC.
pub fn unflatten_nchw(s: Shape, gy: &[f32]) -> Vec<f32> {
    if s.h * s.w == 1 {
        return gy.to_vec();
    }
    let plane = s.h * s.w;
    let mut gx = vec![0f32; gy.len()];
    for (o, g) in gx
        .chunks_exact_mut(s.len().max(1))
        .zip(gy.chunks_exact(s.len().max(1)))
    {
        for (p, px) in o.chunks_exact_mut(s.c).enumerate() {
            for (ch, d) in px.iter_mut().enumerate() {
                *d = g[ch * plane + p];
            }
        }
    }
    gx
}
