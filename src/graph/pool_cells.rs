//! The in-bounds input cells of every pooling window, listed once per call.
//!
//! Why: [`super::pool::for_each_window`] rebuilds each window's cell list per image (nested
//! loops with border tests for every output pixel of every image); the max pool's forward and
//! backward spent a tenth of an OEU run's samples there and in its per-channel branches. The
//! window geometry is the same for every image of a batch, so the table is built once per
//! call and each image only walks it.

use super::conv::Window;
use super::pool::{first_row_len, for_each_window};
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for ((p, cells), (q, same, ncol)) in table.iter().zip(table.iter_columns()) {
            assert_eq!((p, cells), (q, same));
            let rows: std::collections::BTreeSet<usize> = cells.iter().map(|c| c / ins.w).collect();
            assert_eq!(ncol * rows.len(), cells.len(), "window {p}: {cells:?}");
        }
    }
}
