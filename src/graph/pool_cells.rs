//! The in-bounds input cells of every pooling window, listed once per call.
//!
//! Why: [`super::pool::for_each_window`] rebuilds each window's cell list per image (nested
//! loops with border tests for every output pixel of every image); the max pool's forward and
//! backward spent a tenth of an OEU run's samples there and in its per-channel branches. The
//! window geometry is the same for every image of a batch, so the table is built once per
//! call and each image only walks it.

use super::conv::Window;
use super::pool::{first_row_len, for_each_window, sum_columns};
use super::tensor::Shape;

/// Each output pixel's window as a run of row-major input pixel indices, in window order
/// (the order [`for_each_window`] gives), padding cells left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WindowCells {
    /// `starts[p]..starts[p + 1]` indexes `cells` for output pixel `p`.
    starts: Vec<usize>,
    cells: Vec<usize>,
    /// Cells in the first row of each window: its number of columns
    /// ([`super::pool::sum_columns`]).
    ncols: Vec<usize>,
    /// The geometry, for [`WindowCells::column_sums`] over windows that are all whole.
    window: Window,
    width: usize,
    outs: Shape,
    whole: bool,
}

impl WindowCells {
    /// The table of a window sliding over `ins` to give `outs`.
    pub(super) fn new(win: &Window, ins: Shape, outs: Shape) -> Self {
        let mut starts = Vec::with_capacity(outs.h * outs.w + 1);
        let mut cells = Vec::with_capacity(outs.h * outs.w * win.kh * win.kw);
        let mut ncols = Vec::with_capacity(outs.h * outs.w);
        starts.push(0);
        for_each_window(win, ins, outs, |_, window| {
            cells.extend_from_slice(window);
            starts.push(cells.len());
            ncols.push(first_row_len(window, ins.w));
        });
        WindowCells {
            starts,
            cells,
            ncols,
            window: *win,
            width: ins.w,
            outs,
            whole: all_whole(win, ins, outs),
        }
    }

    /// `(output pixel, its cells)` for every output pixel, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &[usize])> + '_ {
        self.starts
            .windows(2)
            .enumerate()
            .map(|(p, s)| (p, &self.cells[s[0]..s[1]]))
    }

    /// `(output pixel, its cells, its number of columns)` for every output pixel, in order.
    pub(super) fn iter_columns(&self) -> impl Iterator<Item = (usize, &[usize], usize)> + '_ {
        self.iter().zip(&self.ncols).map(|((p, c), &n)| (p, c, n))
    }

    /// Each output pixel's divisor: the whole window with `count_include_pad`, else its cells.
    pub(super) fn counts(&self, count_include_pad: bool) -> impl Iterator<Item = usize> + '_ {
        let full = self.window.kh * self.window.kw;
        self.iter()
            .map(move |(_, cells)| if count_include_pad { full } else { cells.len() })
    }

    /// `sums[p]`: output pixel `p`'s window sum over one `plane` of values (row-major, the
    /// input's width), column by column ([`super::pool::sum_columns`]'s additions in its order);
    /// output row by output row when every window is whole ([`whole_window_sums`]), else by the
    /// cell lists. `cols` is scratch for the row-wise form (kept by the caller across calls, so
    /// the hot loop does not allocate).
    #[inline(always)]
    pub(super) fn column_sums(&self, plane: &[f32], sums: &mut [f32], cols: &mut Vec<f32>) {
        if self.whole {
            whole_window_sums(&self.window, self.width, self.outs, plane, sums, cols);
            return;
        }
        for ((_, cells, ncol), sum) in self.iter_columns().zip(sums.iter_mut()) {
            *sum = sum_columns(cells, ncol, |cell| plane[cell]);
        }
    }
}

/// Whether every window of `win` sliding over `ins` to give `outs` lies wholly inside the
/// input (no padding, none clipped): then [`whole_window_sums`] applies.
fn all_whole(win: &Window, ins: Shape, outs: Shape) -> bool {
    win.pads == [0; 4]
        && win.kh > 0
        && win.kw > 0
        && outs.h > 0
        && outs.w > 0
        && (outs.h - 1) * win.stride_h + (win.kh - 1) * win.dil_h < ins.h
        && (outs.w - 1) * win.stride_w + (win.kw - 1) * win.dil_w < ins.w
}

/// Each output pixel's window sum over one plane `width` wide, column by column (each column
/// top to bottom, then the columns left to right: [`super::pool::sum_columns`]'s additions in
/// its order), for windows that are all whole ([`all_whole`]). Per output row, two passes: the
/// column sums of every input column the windows touch (whole input rows added one after the
/// other, which vectorizes), then each window's columns added left to right (`+=` into the
/// zeroed row, one window column at a time). A column sum is the same chain of additions as
/// walking the window (from zero, top to bottom), so the values are those of the cell lists;
/// walking each window's cell list (a dependent chain of loads per cell) had cost as much as
/// the first layer's GEMM on a 2×2 pooling of the model's input, and the window-by-window loop
/// of fixed trip counts still a third of that inference. `scratch` holds the column sums (grown
/// to the row's span when shorter).
#[inline(always)]
fn whole_window_sums(
    win: &Window,
    width: usize,
    outs: Shape,
    plane: &[f32],
    sums: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    if outs.w == 0 || outs.h == 0 {
        return;
    }
    // Input columns up to the last one a window touches (`all_whole`: inside the row).
    let span = (outs.w - 1) * win.stride_w + (win.kw - 1) * win.dil_w + 1;
    if scratch.len() < span {
        scratch.resize(span, 0.0);
    }
    let cols = &mut scratch[..span];
    // Each sum starts from zero: a column's first term is written as `0 + v` (not `v`: a −0
    // becomes +0, as in a zeroed sum), which spares the zeroing (a `memset` call per output
    // row); a window's first column is copied (a column sum is never −0, so `0 + c` is `c`).
    for (oy, row) in sums.chunks_exact_mut(outs.w).enumerate().take(outs.h) {
        for ky in 0..win.kh {
            let r = &plane[(oy * win.stride_h + ky * win.dil_h) * width..][..span];
            if ky == 0 {
                cols.iter_mut().zip(r).for_each(|(c, &v)| *c = 0.0 + v);
            } else {
                cols.iter_mut().zip(r).for_each(|(c, &v)| *c += v);
            }
        }
        for j in 0..win.kw {
            let (cols, first) = (&cols[j * win.dil_w..], j == 0);
            // A constant stride lets the compiler vectorize the strided reads.
            match win.stride_w {
                1 => add_strided::<1>(cols, row, first),
                2 => add_strided::<2>(cols, row, first),
                s if first => row
                    .iter_mut()
                    .zip(cols.iter().step_by(s))
                    .for_each(|(r, &c)| *r = c),
                s => row
                    .iter_mut()
                    .zip(cols.iter().step_by(s))
                    .for_each(|(r, &c)| *r += c),
            }
        }
    }
}

/// `row[i] += cols[i·S]` for every `i` of `row` (`cols` holds at least `(len − 1)·S + 1`);
/// `row[i] = cols[i·S]` when `first` (the row's first column, never −0).
#[inline(always)]
fn add_strided<const S: usize>(cols: &[f32], row: &mut [f32], first: bool) {
    let Some((last, head)) = row.split_last_mut() else {
        return;
    };
    // Whole chunks of S for all but the last output (no bounds check per element, so the
    // strided reads vectorize), then the last one, whose chunk may be cut short.
    let c = cols[head.len() * S];
    let pairs = head.iter_mut().zip(cols.chunks_exact(S));
    if first {
        pairs.for_each(|(r, c)| *r = c[0]);
        *last = c;
    } else {
        pairs.for_each(|(r, c)| *r += c[0]);
        *last += c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_windows_sum_as_the_cell_lists_do() {
        // 2×2 stride 2 (the input pooling), 3×2 stride 1 with a dilated column, and a window
        // whose last position would leave the input (ceil mode): not whole.
        let mut plane: Vec<f32> = (0..7 * 9).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        // A corner of −0: a sum that starts from zero gives +0 there, not −0.
        for i in [0, 1, 2, 9, 10, 11, 18, 19, 20] {
            plane[i] = -0.0;
        }
        let ins = Shape { h: 7, w: 9, c: 1 };
        for (kh, kw, sh, sw, dw) in [(2, 2, 2, 2, 1), (3, 2, 1, 1, 2), (2, 3, 2, 3, 1)] {
            let win = Window {
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                pads: [0; 4],
                dil_h: 1,
                dil_w: dw,
            };
            let (oh, ow) = win.output_hw(7, 9, false).unwrap();
            let outs = Shape { h: oh, w: ow, c: 1 };
            assert!(all_whole(&win, ins, outs));
            let table = WindowCells::new(&win, ins, outs);
            let want: Vec<u32> = table
                .iter_columns()
                .map(|(_, cells, ncol)| {
                    crate::graph::pool::sum_columns(cells, ncol, |c| plane[c]).to_bits()
                })
                .collect();
            let mut sums = vec![f32::NAN; oh * ow];
            // Scratch left over from a wider row must not leak into the sums.
            let mut scratch = vec![f32::NAN; 64];
            whole_window_sums(&win, 9, outs, &plane, &mut sums, &mut scratch);
            let got: Vec<u32> = sums.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{kh}×{kw} stride {sh}×{sw}");
            let (ch, cw) = win.output_hw(7, 9, true).unwrap();
            let clipped = Shape { h: ch, w: cw, c: 1 };
            assert_eq!(all_whole(&win, ins, clipped), (ch, cw) == (oh, ow));
        }
    }

    #[test]
    fn table_lists_what_for_each_window_gives() {
        let win = Window {
            kh: 3,
            kw: 2,
            stride_h: 2,
            stride_w: 1,
            pads: [1, 1, 1, 0],
            dil_h: 1,
            dil_w: 2,
        };
        let ins = Shape { h: 5, w: 4, c: 3 };
        let (oh, ow) = win.output_hw(5, 4, true).unwrap();
        let outs = Shape { h: oh, w: ow, c: 3 };
        let mut want = Vec::new();
        for_each_window(&win, ins, outs, |p, cells| want.push((p, cells.to_vec())));
        let table = WindowCells::new(&win, ins, outs);
        let got: Vec<(usize, Vec<usize>)> = table.iter().map(|(p, c)| (p, c.to_vec())).collect();
        assert_eq!(got, want);
        assert!(!all_whole(&win, ins, outs), "padded windows are not whole");
        for ((p, cells), (q, same, ncol)) in table.iter().zip(table.iter_columns()) {
            assert_eq!((p, cells), (q, same));
            let rows: std::collections::BTreeSet<usize> = cells.iter().map(|c| c / ins.w).collect();
            assert_eq!(ncol * rows.len(), cells.len(), "window {p}: {cells:?}");
        }
    }
}
