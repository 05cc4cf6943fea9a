//! Each im2col row's `Σ|q − zp|` and `Σ(q − zp)²`, summed from the image rather than from the
//! rows.
//!
//! Why: the exact forward ([`super::ort_fix`]) bounds every output's float error by the norms of
//! its patch. Summed over the im2col rows, that reads each input byte once per tap that covers
//! it (`kh·kw` times for a 3×3 conv: 10 % of a CNN's `eval`). Summed once per input pixel and
//! then over the window (four lookups in a summed-area table; tap by tap where the window is
//! dilated), each byte is read once. The sums are integers, so any order gives the same values:
//! the same bounds, the same bytes. A tap in the padding reads the zero point (as
//! [`super::conv::im2col`] writes it) and adds nothing.

use super::conv::Window;
use super::ort_screen::rows_norms;
use super::tensor::Shape;

/// The norms of every im2col row of input channels `c0..c0 + cn` of `img` (`in_shape`, HWC)
/// for an `out_hw` output: `sums[r] = [Σ|q − zp|, Σ(q − zp)²]` over output pixel `r`'s patch,
/// exactly what [`rows_norms`] gives on the rows [`super::conv::im2col`] writes.
pub(crate) fn patch_norms(
    img: &[u8],
    in_shape: Shape,
    out_hw: (usize, usize),
    win: &Window,
    zp: i32,
    (c0, cn): (usize, usize),
    sums: &mut [[u64; 2]],
) {
    let Shape { h, w, c } = in_shape;
    // Each input pixel's own sums over the channels `c0..c0 + cn`.
    let mut pixel = vec![[0u64; 2]; h * w];
    if cn == 1 {
        for (s, &q) in pixel.iter_mut().zip(img[c0..].iter().step_by(c.max(1))) {
            let d = (q as i32 - zp).unsigned_abs() as u64;
            *s = [d, d * d];
        }
    } else if cn == c {
        rows_norms(&img[..h * w * c], c, zp, &mut pixel);
    } else {
        for (p, s) in pixel.iter_mut().enumerate() {
            rows_norms(&img[p * c + c0..][..cn], cn, zp, std::slice::from_mut(s));
        }
    }
    if win.dil_h == 1 && win.dil_w == 1 {
        boxes(&pixel, (h, w), out_hw, win, sums);
    } else {
        taps(&pixel, (h, w), out_hw, win, sums);
    }
}

/// Undilated windows: each patch is a rectangle of pixels (clipped to the image), summed from a
/// summed-area table by four lookups, whatever the window's size.
fn boxes(
    pixel: &[[u64; 2]],
    (h, w): (usize, usize),
    out_hw: (usize, usize),
    win: &Window,
    sums: &mut [[u64; 2]],
) {
    // `table[y][x]`: the sums over pixels above row `y` and left of column `x`.
    let tw = w + 1;
    let mut table = vec![[0u64; 2]; (h + 1) * tw];
    for y in 0..h {
        let mut run = [0u64; 2];
        for x in 0..w {
            let p = pixel[y * w + x];
            run = [run[0] + p[0], run[1] + p[1]];
            let above = table[y * tw + x + 1];
            table[(y + 1) * tw + x + 1] = [above[0] + run[0], above[1] + run[1]];
        }
    }
    let clip = |at: isize, len: usize, n: usize| {
        let lo = at.clamp(0, n as isize) as usize;
        let hi = (at + len as isize).clamp(0, n as isize) as usize;
        (lo, hi.max(lo))
    };
    let mut r = 0;
    for oy in 0..out_hw.0 {
        let (y0, y1) = clip(
            (oy * win.stride_h) as isize - win.pads[0] as isize,
            win.kh,
            h,
        );
        for ox in 0..out_hw.1 {
            let (x0, x1) = clip(
                (ox * win.stride_w) as isize - win.pads[1] as isize,
                win.kw,
                w,
            );
            let at = |y: usize, x: usize| table[y * tw + x];
            let (a, b, c, d) = (at(y1, x1), at(y0, x1), at(y1, x0), at(y0, x0));
            // `(a + d) − (b + c)`: every partial result stays a sum of pixels, so no u64 wraps.
            sums[r] = [(a[0] + d[0]) - (b[0] + c[0]), (a[1] + d[1]) - (b[1] + c[1])];
            r += 1;
        }
    }
}

/// Dilated windows: the pixel sums of each tap inside the image, added one by one.
fn taps(
    pixel: &[[u64; 2]],
    (h, w): (usize, usize),
    out_hw: (usize, usize),
    win: &Window,
    sums: &mut [[u64; 2]],
) {
    let mut r = 0;
    for oy in 0..out_hw.0 {
        let iy0 = (oy * win.stride_h) as isize - win.pads[0] as isize;
        for ox in 0..out_hw.1 {
            let ix0 = (ox * win.stride_w) as isize - win.pads[1] as isize;
            let (mut l1, mut l2) = (0u64, 0u64);
            for ky in 0..win.kh {
                let iy = iy0 + (ky * win.dil_h) as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..win.kw {
                    let ix = ix0 + (kx * win.dil_w) as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let [a, b] = pixel[iy as usize * w + ix as usize];
                    l1 += a;
                    l2 += b;
                }
            }
            sums[r] = [l1, l2];
            r += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::conv::im2col;
    use proptest::prelude::*;

    proptest! {
        /// The same sums as [`rows_norms`] over the rows im2col writes, for any window, padding,
        /// stride, dilation and channel range (the padding filled with the zero point).
        #[test]
        fn equal_the_sums_over_the_im2col_rows(
            (h, w, c) in (1usize..9, 1usize..9, 1usize..6),
            (kh, kw) in (1usize..4, 1usize..4),
            (stride_h, stride_w, dil_h, dil_w) in (1usize..3, 1usize..3, 1usize..3, 1usize..3),
            pads in prop::array::uniform4(0usize..3),
            groups in 1usize..3,
            zp in 0i32..256,
            seed in any::<u64>(),
        ) {
            let win = Window { kh, kw, stride_h, stride_w, pads, dil_h, dil_w };
            let (eh, ew) = (dil_h * (kh - 1) + 1, dil_w * (kw - 1) + 1);
            prop_assume!(h + pads[0] + pads[2] >= eh && w + pads[1] + pads[3] >= ew);
            let oh = (h + pads[0] + pads[2] - eh) / stride_h + 1;
            let ow = (w + pads[1] + pads[3] - ew) / stride_w + 1;
            let c = c * groups;
            let mut s = seed | 1;
            let img: Vec<u8> = (0..h * w * c)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    // Extremes often: 0, 255 and the zero point itself.
                    match s % 5 {
                        0 => 0,
                        1 => 255,
                        2 => zp as u8,
                        _ => (s >> 24) as u8,
                    }
                })
                .collect();
            let shape = Shape { h, w, c };
            let cn = c / groups;
            for g in 0..groups {
                let k = kh * kw * cn;
                let mut cols = vec![0u8; oh * ow * k];
                im2col(&img, shape, (oh, ow), &win, zp as u8, (g * cn, cn), &mut cols);
                let mut want = vec![[0u64; 2]; oh * ow];
                rows_norms(&cols, k, zp, &mut want);
                let mut got = vec![[7u64; 2]; oh * ow];
                patch_norms(&img, shape, (oh, ow), &win, zp, (g * cn, cn), &mut got);
                prop_assert_eq!(&got, &want);
            }
        }
    }
}
