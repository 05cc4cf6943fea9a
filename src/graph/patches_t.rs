//! im2col in the transposed layout: one row per patch element, one column per output pixel.
//!
//! Why: the int8 weight gradient `dW = Gᵀ·X` reduces over pixels, and the GEMM kernels reduce
//! along rows, so the patches must be pixel-contiguous. The int8 backward used to build the
//! whole batch's patches pixel by pixel ([`super::conv::im2col`]) and then transpose that
//! matrix, far larger than the caches, with a gather of stride `kh·kw·c`: most of the conv
//! backward's time. Here, at horizontal stride 1, each patch row is made of runs of one channel
//! plane (the image itself when it has one channel, else its channels split into planes first):
//! copied row by row, or in one run where the output is as wide as the input. At other strides
//! one image's patches are built in L1 and written down the columns.

use super::conv::{im2col, Window};
use super::tensor::Shape;

/// Patches of input channels `c0..c0+cn` of `img` (`in_shape`, HWC) for every pixel of an
/// `out_hw` output, transposed: `dst[k·ld + p]` is element `k = (ky·kw + kx)·cn + ch` of output
/// pixel `p`'s patch (`p < oh·ow`), i.e. `im2col`'s `cols[p][k]`. Taps in the padding read `pad`.
/// Columns `oh·ow..ld` of each row are left as they are (another image's pixels go there).
///
/// # Panics
/// If `dst` is shorter than `(kh·kw·cn − 1)·ld + oh·ow` or `ld < oh·ow`.
pub(crate) fn im2col_t(
    img: &[u8],
    in_shape: Shape,
    out_hw: (usize, usize),
    win: &Window,
    pad: u8,
    (c0, cn): (usize, usize),
    (dst, ld): (&mut [u8], usize),
) {
    let m = out_hw.0 * out_hw.1;
    let row = win.kh * win.kw * cn;
    assert!(ld >= m, "ld must hold one image's pixels");
    if m == 0 || row == 0 {
        return;
    }
    assert!(dst.len() >= (row - 1) * ld + m, "dst too short");
    if win.stride_w == 1 {
        if in_shape.c == 1 {
            return rows_of_runs(img, in_shape, out_hw, win, pad, (0, 1), (dst, ld));
        }
        // Several channels: each channel's plane first (HWC → CHW, `cn·h·w` bytes, a ninth of
        // the patches of a 3×3 window), then the same runs from each plane.
        let plane = in_shape.h * in_shape.w;
        let mut planes = vec![0u8; cn * plane];
        for (px, src) in img.chunks_exact(in_shape.c).enumerate() {
            for (ch, &v) in src[c0..c0 + cn].iter().enumerate() {
                planes[ch * plane + px] = v;
            }
        }
        let one = Shape { c: 1, ..in_shape };
        for (ch, p) in planes.chunks_exact(plane.max(1)).enumerate() {
            rows_of_runs(p, one, out_hw, win, pad, (ch, cn), (&mut *dst, ld));
        }
        return;
    }
    // One image's patches (a few KB, in L1), then down the columns: each source row is read
    // once, and the `row` destination lines being written stay in L1 across 64 pixels.
    let mut cols = vec![0u8; m * row];
    im2col(img, in_shape, out_hw, win, pad, (c0, cn), &mut cols);
    // Bands of BAND pixels: each destination run of a band is written contiguously, gathered
    // from the band's patches (BAND · row bytes, in L1) at stride `row`.
    for p0 in (0..m).step_by(BAND) {
        let band = &cols[p0 * row..(p0 + BAND.min(m - p0)) * row];
        for k in 0..row {
            let run = &mut dst[k * ld + p0..][..band.len() / row];
            for (d, patch) in run.iter_mut().zip(band.chunks_exact(row)) {
                *d = patch[k];
            }
        }
    }
}

/// Pixels per band of [`im2col_t`]'s general path.
const BAND: usize = 64;

/// [`im2col_t`] of one channel plane at horizontal stride 1, into the patch rows of channel `ch`
/// of `cn` (`k = (ky·kw + kx)·cn + ch`): each output row of a patch row is a run of the plane's
/// row, copied whole, with padding filled at its ends. Where the output is as wide as the plane
/// and the vertical stride is 1 (a "same" conv), a patch row is the plane shifted by a constant
/// offset, copied in one run, and only its padded cells are written afterwards.
fn rows_of_runs(
    img: &[u8],
    in_shape: Shape,
    (oh, ow): (usize, usize),
    win: &Window,
    pad: u8,
    (ch, cn): (usize, usize),
    (dst, ld): (&mut [u8], usize),
) {
    let (h, w) = (in_shape.h, in_shape.w);
    let shifted = win.stride_h == 1 && ow == w;
    for ky in 0..win.kh {
        // iy = oy·stride_h + ky·dil_h − pad_top.
        let off = (ky * win.dil_h) as isize - win.pads[0] as isize;
        for kx in 0..win.kw {
            // ix = ox + kx·dil_w − pad_left: inside for ox in lo..hi.
            let shift = (kx * win.dil_w) as isize - win.pads[1] as isize;
            let lo = (-shift).clamp(0, ow as isize) as usize;
            let hi = (w as isize - shift).clamp(lo as isize, ow as isize) as usize;
            let row = &mut dst[((ky * win.kw + kx) * cn + ch) * ld..][..oh * ow];
            if shifted {
                // Rows oy_lo..oy_hi read inside the plane; the cells of those rows in lo..hi
                // are one run of the plane, `(off·w + shift)` ahead of the output.
                let oy_lo = (-off).clamp(0, oh as isize) as usize;
                let oy_hi = (h as isize - off).clamp(oy_lo as isize, oh as isize) as usize;
                if lo == hi || oy_lo == oy_hi {
                    row.fill(pad);
                    continue;
                }
                row[..oy_lo * ow].fill(pad);
                row[oy_hi * ow..].fill(pad);
                let (a, b) = (oy_lo * ow + lo, (oy_hi - 1) * ow + hi);
                let src = ((oy_lo as isize + off) * w as isize + lo as isize + shift) as usize;
                row[a..b].copy_from_slice(&img[src..][..b - a]);
                for seg in row[oy_lo * ow..oy_hi * ow].chunks_exact_mut(ow) {
                    fill_edge(&mut seg[..lo], pad);
                    fill_edge(&mut seg[hi..], pad);
                }
                continue;
            }
            for (oy, seg) in row.chunks_exact_mut(ow).enumerate() {
                let iy = (oy * win.stride_h) as isize + off;
                if iy < 0 || iy >= h as isize || lo == hi {
                    seg.fill(pad);
                    continue;
                }
                fill_edge(&mut seg[..lo], pad);
                fill_edge(&mut seg[hi..], pad);
                let start = (iy as usize * w) as isize + lo as isize + shift;
                seg[lo..hi].copy_from_slice(&img[start as usize..][..hi - lo]);
            }
        }
    }
}

/// `seg.fill(pad)` for the padded ends of a patch row's output row, 0 to 2 cells for the usual
/// windows: stored directly, since a `fill` is a call to `memset` (once per output row, those
/// calls were a sixth of the weight gradient's time).
#[inline(always)]
fn fill_edge(seg: &mut [u8], pad: u8) {
    match seg {
        [] => {}
        [a] => *a = pad,
        [a, b] => (*a, *b) = (pad, pad),
        _ => seg.fill(pad),
    }
}

#[cfg(test)]
mod tests {
    use super::{im2col, im2col_t, Shape, Window};
    use proptest::prelude::*;

    /// The one-channel, stride-1 path (`rows_of_runs`) on every padding and dilation up to 2,
    /// including windows wider than the padded image's inside.
    #[test]
    fn one_channel_runs_are_the_transpose_of_im2col() {
        for (h, w) in [(1, 1), (3, 5), (7, 4)] {
            for pads in [[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 1, 2], [0, 2, 2, 0]] {
                for (kh, kw, dh, dw, sh) in [(3, 3, 1, 1, 1), (2, 3, 2, 2, 2), (1, 4, 1, 2, 1)] {
                    let win = Window {
                        kh,
                        kw,
                        stride_h: sh,
                        stride_w: 1,
                        pads,
                        dil_h: dh,
                        dil_w: dw,
                    };
                    let s = Shape { h, w, c: 1 };
                    let Some(o) = win.output_hw(h, w, false) else {
                        continue;
                    };
                    let img: Vec<u8> = (0..s.len()).map(|i| i as u8 + 1).collect();
                    let (m, row) = (o.0 * o.1, kh * kw);
                    let mut cols = vec![0u8; m * row];
                    im2col(&img, s, o, &win, 200, (0, 1), &mut cols);
                    let ld = m + 3;
                    let mut t = vec![9u8; row * ld];
                    im2col_t(&img, s, o, &win, 200, (0, 1), (&mut t, ld));
                    for k in 0..row {
                        for p in 0..ld {
                            let want = if p < m { cols[p * row + k] } else { 9 };
                            assert_eq!(t[k * ld + p], want, "{win:?} {h}×{w} k={k} p={p}");
                        }
                    }
                }
            }
        }
    }

    proptest! {
        /// The transpose of what `im2col` (itself tested against the definition) writes, with
        /// the columns of other images untouched.
        #[test]
        fn im2col_t_is_the_transpose_of_im2col(
            h in 1usize..9, w in 1usize..9, c in 1usize..5, kh in 1usize..4, kw in 1usize..4,
            sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), groups in 1usize..3, g in 0usize..2,
            extra in 0usize..5, seed in any::<u64>(),
        ) {
            let win = Window { kh, kw, stride_h: sh, stride_w: sw, pads, dil_h: dh, dil_w: dw };
            let s = Shape { h, w, c: c * groups };
            let Some(o) = win.output_hw(h, w, false) else { return Ok(()) };
            let img: Vec<u8> = (0..s.len()).map(|i| (seed.wrapping_mul(i as u64 + 7) >> 13) as u8).collect();
            let (c0, cn) = ((g % groups) * c, c);
            let (m, row) = (o.0 * o.1, kh * kw * cn);
            let mut cols = vec![0u8; m * row];
            im2col(&img, s, o, &win, 42, (c0, cn), &mut cols);
            let ld = m + extra;
            let mut t = vec![7u8; row * ld];
            im2col_t(&img, s, o, &win, 42, (c0, cn), (&mut t, ld));
            for k in 0..row {
                for p in 0..ld {
                    let want = if p < m { cols[p * row + k] } else { 7 };
                    prop_assert_eq!(t[k * ld + p], want, "k={} p={}", k, p);
                }
            }
        }
    }
}
