//! A blocked, parallel matrix transpose for the int8 backward's operands.
//!
//! Why: the integer GEMMs reduce along rows, so a weight gradient `Gᵀ·X` needs both operands
//! batch-contiguous, i.e. transposed. Written as one loop over the source, the transpose of a
//! linear layer's input (batch × 1568 bytes) wrote with a stride of the batch size into 1568
//! rows, serially, on every backward call. Square tiles keep both sides in cache, and rows of
//! tiles run in parallel.

use rayon::prelude::*;

/// Tile edge: a 64 × 64 tile of bytes is 4 KB on each side.
const TILE: usize = 64;

/// `src` (`rows × cols`, row-major) transposed: `cols × rows`.
pub(crate) fn transpose<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
) -> Vec<T> {
    assert_eq!(src.len(), rows * cols, "src must be rows × cols");
    let mut dst = vec![T::default(); rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    // One band of TILE destination rows (source columns) per task.
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TILE;
            let cn = out.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let rn = TILE.min(rows - r0);
                for c in 0..cn {
                    let o = &mut out[c * rows + r0..][..rn];
                    for (r, d) in o.iter_mut().enumerate() {
                        *d = src[(r0 + r) * cols + c0 + c];
                    }
                }
            }
        });
    dst
}

/// Columns `c0..c0 + rows.len()` of the bytes `src` (`[pixel][c]`) into `rows`: `rows[j][at + p]
/// = src[p·c + c0 + j]` for every pixel `p`.
///
/// Why: the int8 weight gradient reads a layer's quantized output gradient channel-major, and
/// gathering it one strided byte at a time was 5 % of a residual CNN's OEU run. Blocks of 8
/// pixels × 8 channels are moved as eight 64-bit words transposed in registers (three rounds
/// of masked swaps, plain integer code on every target); the edges that do not fill a block
/// go byte by byte.
pub(crate) fn gather_columns(src: &[i8], c: usize, c0: usize, rows: &mut [&mut [i8]], at: usize) {
    let c = c.max(1);
    let (pixels, cn) = (src.len() / c, rows.len());
    debug_assert!(c0 + cn <= c);
    let (pb, jb) = (pixels / 8 * 8, cn / 8 * 8);
    for p in (0..pb).step_by(8) {
        for j in (0..jb).step_by(8) {
            let mut w = [0u64; 8];
            for (i, w) in w.iter_mut().enumerate() {
                let from = (p + i) * c + c0 + j;
                let bytes: &[i8; 8] = src[from..from + 8].try_into().expect("eight bytes");
                *w = u64::from_le_bytes(bytes.map(|v| v as u8));
            }
            transpose_8x8(&mut w);
            for (i, w) in w.iter().enumerate() {
                rows[j + i][at + p..][..8].copy_from_slice(&w.to_le_bytes().map(|b| b as i8));
            }
        }
    }
    let one = |rows: &mut [&mut [i8]], j: usize, p: usize| {
        rows[j][at + p] = src[p * c + c0 + j];
    };
    for j in jb..cn {
        for p in 0..pixels {
            one(rows, j, p);
        }
    }
    for j in 0..jb {
        for p in pb..pixels {
            one(rows, j, p);
        }
    }
}

/// The 8 × 8 bytes held in `w` (byte `b` of word `i` is element `(i, b)`) transposed in place:
/// swap the off-diagonal 4 × 4 blocks, then the 2 × 2 blocks inside each, then single bytes.
#[inline(always)]
fn transpose_8x8(w: &mut [u64; 8]) {
    for (shift, mask, step) in [
        (32, 0x0000_0000_ffff_ffff_u64, 4),
        (16, 0x0000_ffff_0000_ffff, 2),
        (8, 0x00ff_00ff_00ff_00ff, 1),
    ] {
        for i in (0..8).filter(|i| i & step == 0) {
            let t = ((w[i] >> shift) ^ w[i + step]) & mask;
            w[i] ^= t << shift;
            w[i + step] ^= t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{gather_columns, transpose};

    #[test]
    fn transpose_is_the_definition() {
        for &(rows, cols) in &[
            (0, 0),
            (0, 5),
            (5, 0),
            (1, 1),
            (3, 7),
            (64, 64),
            (65, 130),
            (200, 3),
        ] {
            let src: Vec<u16> = (0..rows * cols).map(|i| i as u16).collect();
            let t = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "{rows}×{cols} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn gathered_columns_are_the_definition() {
        for (c, pixels) in [
            (1usize, 5usize),
            (8, 8),
            (16, 64),
            (24, 71),
            (17, 200),
            (40, 9),
        ] {
            let src: Vec<i8> = (0..c * pixels).map(|i| (i * 37 % 251) as i8).collect();
            for (c0, cn) in [(0, c), (c / 3, c - c / 3), (c - 1, 1), (c / 2, (c + 1) / 4)] {
                let at = 3;
                let mut out = vec![vec![-1i8; pixels + at + 2]; cn];
                let mut rows: Vec<&mut [i8]> = out.iter_mut().map(|r| &mut r[..]).collect();
                gather_columns(&src, c, c0, &mut rows, at);
                for (j, row) in out.iter().enumerate() {
                    assert_eq!(&row[..at], &[-1; 3], "{c} × {pixels}: before {at}");
                    assert_eq!(
                        &row[at + pixels..],
                        &[-1; 2],
                        "{c} × {pixels}: past the end"
                    );
                    for p in 0..pixels {
                        assert_eq!(
                            row[at + p],
                            src[p * c + c0 + j],
                            "{c} × {pixels} ({c0}+{j}, {p})"
                        );
                    }
                }
            }
        }
    }
}
