//! When a product is split over threads: output rows in blocks, on rayon's current pool, only
//! above a size threshold, never inside a micro-kernel (which stays a plain loop).

use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on the calling thread: below it, waking
/// workers costs more than it saves (a 64³ GEMM takes a few microseconds).
pub(super) const PAR_THRESHOLD: usize = 64 * 64 * 64;

/// Run `f(rows, a_rows, c_rows)` over blocks of whole rows, in parallel on rayon's current pool
/// when `m·n·k` reaches [`PAR_THRESHOLD`] (block heights are multiples of `align`).
pub(super) fn par_rows(
    m: usize,
    n: usize,
    k: usize,
    align: usize,
    a: &[u8],
    c: &mut [i32],
    f: impl Fn(usize, &[u8], &mut [i32]) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PAR_THRESHOLD || m <= align {
        return f(m, a, c);
    }
    // About four blocks per thread, for balance when one worker is slow or busy.
    let rows = m.div_ceil(threads * 4).div_ceil(align).max(1) * align;
    c.par_chunks_mut(rows * n)
        .zip(a.par_chunks(rows * k))
        .for_each(|(cb, ab)| f(cb.len() / n, ab, cb));
}
