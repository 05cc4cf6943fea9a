//! im2col in the transposed layout: one row per patch element, one column per output pixel.
//!
//! Why: the int8 weight gradient `dW = Gᵀ·X` reduces over pixels, and the GEMM kernels reduce
//! along rows, so the patches must be pixel-contiguous. The int8 backward used to build the
//! patches pixel by pixel ([`super::conv::im2col`]) and then transpose the whole batch's matrix
//! with a gather of stride `kh·kw·c`, which with the batch's patches far larger than the caches
//! was most of the conv backward's time. Gathering straight from one image (a few KB, in L1)
//! writes each row of the transposed matrix sequentially instead.

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
    // One image's patches (a few KB, in L1), then down the columns: each source row is read
    // once, and the `row` destination lines being written stay in L1 across 64 pixels.
    let mut cols = vec![0u8; m * row];
    im2col(img, in_shape, out_hw, win, pad, (c0, cn), &mut cols);
    for (p, patch) in cols.chunks_exact(row).enumerate() {
        for (d, &v) in dst[p..].iter_mut().step_by(ld).zip(patch) {
            *d = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{im2col, im2col_t, Shape, Window};
    use proptest::prelude::*;

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
