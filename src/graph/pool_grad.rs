//! Backward of the pooling layers and of Flatten. Max pooling routes each output gradient to
//! the first largest input of its window (the one the forward picked, since quantization is
//! monotone the stored bytes order the same way as the real values); average pooling spreads it
//! evenly over the window's divisor; Flatten undoes its permutation.

use rayon::prelude::*;

use super::pool::{for_each_window, AvgPool, GlobalAvgPool, MaxPool};
use super::pool_cells::WindowCells;
use super::tensor::Shape;
use super::zeroed::par_zeroed_chunks;

impl MaxPool {
    /// Input gradient from the saved input `x` (stored bytes or real values) and `gy`.
    pub fn backward<T: PartialOrd + Copy + Sync>(&self, x: &[T], gy: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        let table = WindowCells::new(&self.window, self.in_shape, self.out_shape);
        let mut gx = vec![0f32; x.len()];
        gx.par_chunks_mut(il)
            .zip(x.par_chunks(il))
            .zip(gy.par_chunks(ol))
            .for_each(|((gxi, img), g)| {
                // Channels innermost (the layout's contiguous axis): per window, the running
                // maximum of every channel and the cell it came from.
                let mut best_cell = vec![0usize; c];
                let mut best_val: Vec<T> = Vec::with_capacity(c);
                for (p, cells) in table.iter() {
                    let Some((&first, rest)) = cells.split_first() else {
                        continue;
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
                }
            });
        gx
    }

    /// [`MaxPool::backward`] on stored bytes, given also the forward's output `y` for `x`
    /// ([`MaxPool::forward`]'s bytes, as the tape keeps them).
    ///
    /// Why: the window's maximum is already known, so the cell that gets the gradient is the
    /// first one in window order whose byte equals it (the first largest, as in
    /// [`MaxPool::backward`]), found with compares and selects over the channels (they
    /// vectorize) instead of a running argmax with a branch per channel and cell. Each input
    /// cell receives the same f32 additions in the same order (windows in output order), so
    /// the result is bit for bit [`MaxPool::backward`]'s.
    pub fn backward_q(&self, x: &[u8], y: &[u8], gy: &[f32]) -> Vec<f32> {
        let (il, ol, c) = (
            self.in_shape.len().max(1),
            self.out_shape.len().max(1),
            self.in_shape.c,
        );
        if y.len() / ol != x.len() / il || gy.len() != y.len() {
            return self.backward(x, gy);
        }
        let table = WindowCells::new(&self.window, self.in_shape, self.out_shape);
        par_zeroed_chunks(x.len(), il, |i, gxi| {
            let (img, yi, g) = (&x[i * il..][..il], &y[i * ol..][..ol], &gy[i * ol..][..ol]);
            route_image(&table, c, img, yi, g, gxi);
        })
    }
}

super::simd::avx2_dispatch! {
    /// One image of [`MaxPool::backward_q`]: every window's gradient routed to its first
    /// largest cell, 8 channels at a time where the CPU has AVX2 (integer masks and one f32
    /// addition per cell, the same bits either way).
    route_image => route_image_portable(
        table: &WindowCells,
        c: usize,
        img: &[u8],
        yi: &[u8],
        g: &[f32],
        gxi: &mut [f32],
    )
}

#[inline(always)]
fn route_image_portable(
    table: &WindowCells,
    c: usize,
    img: &[u8],
    yi: &[u8],
    g: &[f32],
    gxi: &mut [f32],
) {
    // Per channel, the byte still to be found; with bit 8 set (no byte matches) once it was.
    let mut target = vec![0u32; c];
    for (p, cells) in table.iter() {
        let (yp, gp) = (&yi[p * c..(p + 1) * c], &g[p * c..(p + 1) * c]);
        for (t, &v) in target.iter_mut().zip(yp) {
            *t = v as u32;
        }
        for &cell in cells {
            let row = &img[cell * c..(cell + 1) * c];
            route(&mut gxi[cell * c..(cell + 1) * c], row, &mut target, gp);
        }
    }
}

/// One window cell's share of the max pool's routing, over the channels: where the cell's
/// byte `row[ch]` is the one still wanted (`target[ch]`), add `g[ch]` into `dst[ch]` and mark
/// the channel found.
///
/// Branch-free (integer masks; one lane width, so it vectorizes): a missed channel adds `+0.0`,
/// which leaves every value but `−0.0` unchanged, and a gradient sum that starts at `+0.0`
/// never becomes `−0.0` (`x + y` is `−0.0` only when both are), so this equals the
/// conditional add bit for bit.
#[inline(always)]
fn route(dst: &mut [f32], row: &[u8], target: &mut [u32], g: &[f32]) {
    let c = dst.len();
    let (row, target, g) = (&row[..c], &mut target[..c], &g[..c]);
    for ch in 0..c {
        let hit = 0u32.wrapping_sub((row[ch] as u32 == target[ch]) as u32);
        dst[ch] += f32::from_bits(g[ch].to_bits() & hit);
        target[ch] |= hit & 0x100;
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

    /// Dead-simple max pooling with its routing: for each output cell, walk the window's taps
    /// row by row, skip the padding, keep the first strictly largest byte; the forward value is
    /// that byte (0 for a window with no input cell), and the gradient goes to its cell.
    fn simple(p: &MaxPool, x: &[u8], gy: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (ins, outs, w) = (p.in_shape, p.out_shape, &p.window);
        let (il, ol, c) = (ins.len(), outs.len(), ins.c);
        let n = x.len() / il;
        let (mut y, mut gx) = (vec![0u8; n * ol], vec![0f32; x.len()]);
        for i in 0..n {
            for oy in 0..outs.h {
                for ox in 0..outs.w {
                    for ch in 0..c {
                        let mut best: Option<(u8, usize)> = None;
                        for ky in 0..w.kh {
                            for kx in 0..w.kw {
                                let iy =
                                    (oy * w.stride_h + ky * w.dil_h) as isize - w.pads[0] as isize;
                                let ix =
                                    (ox * w.stride_w + kx * w.dil_w) as isize - w.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= ins.h as isize || ix >= ins.w as isize
                                {
                                    continue;
                                }
                                let at = i * il + (iy as usize * ins.w + ix as usize) * c + ch;
                                if best.is_none_or(|(b, _)| x[at] > b) {
                                    best = Some((x[at], at));
                                }
                            }
                        }
                        let o = i * ol + (oy * outs.w + ox) * c + ch;
                        if let Some((v, at)) = best {
                            y[o] = v;
                            gx[at] += gy[o];
                        }
                    }
                }
            }
        }
        (y, gx)
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

        #[test]
        fn max_pool_forward_and_byte_backward_equal_the_simple_loops(
            (h, w, c) in (1usize..7, 1usize..7, 1usize..5),
            (k, stride, dil) in (1usize..4, 1usize..3, 1usize..3),
            pads in proptest::array::uniform4(0usize..3),
            ceil in proptest::bool::ANY,
            // Few distinct values, so windows hold ties (255 too: the top byte).
            seed in proptest::collection::vec(prop_oneof![0u8..3, Just(255u8)], 3 * 6 * 6 * 4),
        ) {
            let window = Window { kh: k, kw: k + 1 - stride.min(k), stride_h: stride,
                stride_w: stride, pads, dil_h: dil, dil_w: 1 };
            let Some((oh, ow)) = window.output_hw(h, w, ceil) else { return Ok(()) };
            let p = MaxPool {
                window,
                in_shape: Shape { h, w, c },
                out_shape: Shape { h: oh, w: ow, c },
            };
            let n = 3;
            let x = crate::graph::QBatch {
                n,
                shape: p.in_shape,
                data: seed[..n * h * w * c].to_vec().into(),
            };
            // Signed, with zeros, so a wrong sign of zero or order of additions would show.
            let gy: Vec<f32> = (0..n * oh * ow * c)
                .map(|i| [0.0, -0.0, 1.5, -2.25, 1e-3][i % 5] * (1 + i % 7) as f32)
                .collect();
            let (y, gx) = simple(&p, &x.data, &gy);
            let fwd = p.forward(&x);
            prop_assert_eq!(&fwd.data, &y);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&p.backward_q(&x.data, &fwd.data, &gy)), bits(&gx));
            prop_assert_eq!(bits(&p.backward(&x.data, &gy)), bits(&gx));
        }
    }
}
