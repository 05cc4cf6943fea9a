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

#[cfg(test)]
mod tests {
    use super::transpose;

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
}
