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
                // Channels innermost (the layout's contiguous axis): per window, the running
                // maximum of every channel and the cell it came from.
                let mut best_cell = vec![0usize; c];
                let mut best_val: Vec<T> = Vec::with_capacity(c);
                for_each_window(&self.window, self.in_shape, self.out_shape, |p, cells| {
                    let Some((&first, rest)) = cells.split_first() else {
                        return;
                    };
                    best_val.clear();
                    best_val.extend_from_slice(&img[first * c..(first + 1) * c]);
                    best_cell.fill(first);
                    for &cell in rest {
                        let row = &img[cell * c..(cell + 1) * c];
                        for ((bv, bc), &v) in best_val.iter_mut().zip(&mut best_cell).zip(row) {
                            if v > *bv {
                                *bv = v;
                                *bc = cell;
                            }
                        }
                    }
                    let gp = &g[p * c..(p + 1) * c];
                    for (ch, (&b, &gv)) in best_cell.iter().zip(gp).enumerate() {
                        gxi[b * c + ch] += gv;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::conv::Window;
    use proptest::prelude::*;

    /// The definition: per output pixel and channel, the first cell (in window order) holding
    /// the window's maximum gets the output gradient.
    fn reference(p: &MaxPool, x: &[u8], gy: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (p.in_shape.len(), p.out_shape.len(), p.in_shape.c);
        let mut gx = vec![0f32; x.len()];
        for ((gxi, img), g) in gx.chunks_mut(il).zip(x.chunks(il)).zip(gy.chunks(ol)) {
            for_each_window(&p.window, p.in_shape, p.out_shape, |o, cells| {
                for ch in 0..c {
                    let mut best: Option<usize> = None;
                    for &cell in cells {
                        if best.is_none_or(|b| img[cell * c + ch] > img[b * c + ch]) {
                            best = Some(cell);
                        }
                    }
                    if let Some(b) = best {
                        gxi[b * c + ch] += g[o * c + ch];
                    }
                }
            });
        }
        gx
    }

    proptest! {
        #[test]
        fn max_pool_backward_routes_to_the_first_maximum(
            (h, w, c) in (1usize..7, 1usize..7, 1usize..5),
            (k, stride, pad) in (1usize..4, 1usize..3, 0usize..2),
            // Few distinct values, so windows hold ties.
            seed in proptest::collection::vec(0u8..4, 2 * 6 * 6 * 4),
        ) {
            let window = Window { kh: k, kw: k, stride_h: stride, stride_w: stride,
                pads: [pad; 4], dil_h: 1, dil_w: 1 };
            prop_assume!(pad < k);
            let Some((oh, ow)) = window.output_hw(h, w, false) else { return Ok(()) };
            let p = MaxPool {
                window,
                in_shape: Shape { h, w, c },
                out_shape: Shape { h: oh, w: ow, c },
            };
            let n = 2;
            let x: Vec<u8> = seed[..n * h * w * c].to_vec();
            let gy: Vec<f32> = (0..n * oh * ow * c).map(|i| 1.0 + i as f32).collect();
            prop_assert_eq!(p.backward(&x, &gy), reference(&p, &x, &gy));
        }
    }
}
