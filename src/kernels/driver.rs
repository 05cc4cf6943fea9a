//! The blocked GEMM shared by every SIMD tier: packs activations, walks `MR × NR` output tiles
//! in cache-sized column blocks, applies the zero-point correction, and splits output rows over
//! rayon when the product is big enough (see [`super::par`]). Each tier only supplies a [`Tile`]: its layout
//! constants, how bytes map into its lanes, and an `unsafe` micro-kernel that never spawns.

use super::pack::{interleave, map_rows};
use super::par::par_rows;
use super::PackedWeights;

/// Bytes of weight panels walked per column block, sized to stay in a typical L2.
const COL_BLOCK_BYTES: usize = 192 * 1024;

/// Largest `MR × NR` any tier uses (the tile's scratch buffer).
const MAX_TILE: usize = 128;

/// One SIMD tier's micro-kernel and the layout it reads.
pub(super) trait Tile {
    /// Rows of `a` per tile.
    const MR: usize;
    /// Columns of `c` (rows of `b`) per tile.
    const NR: usize;
    /// Consecutive `k` values per lane group.
    const KG: usize;
    /// A row block of activations is `[MR][kgroups·KG]`, its rows one after another, when true;
    /// `[kgroups][MR][KG]` (one `k` group of every row together) when false.
    const ROW_MAJOR: bool;
    /// Packed activation element.
    type A: Copy + Default + Send + Sync;
    /// Packed weight element.
    type B: Copy + Default + Send + Sync;
    /// An activation byte as the tile consumes it, given the zero point.
    fn a_elem(x: u8, zp: i32) -> Self::A;
    /// `a` itself as packed activations, for a row-major tier whose [`Tile::a_elem`] is the
    /// identity on bytes (then a row block of `a` whose `k` is a multiple of `KG` is already
    /// laid out as the tile reads it); `None` for tiers that transform the bytes.
    fn a_in_place(_a: &[u8]) -> Option<&[Self::A]> {
        None
    }
    /// `c[i][j] = tile_sum[i][j] + zp_factor(zp) · row_sums[j]`.
    fn zp_factor(zp: i32) -> i32;
    /// This tier's weight panels for `w` (built once, cached in `w`).
    fn panels(w: &PackedWeights) -> &[Self::B];
    /// `out[i·NR + j] = Σ_g Σ_t a[g][i][t] · b[g][j][t]` over `kgroups` groups (`a[g][i][t]`
    /// at `a[i·kgroups·KG + g·KG + t]` when [`Tile::ROW_MAJOR`]).
    ///
    /// # Safety
    /// The CPU must support the tier's instructions (guaranteed by its `kernel()` constructor);
    /// `a` must be valid for `kgroups·MR·KG` reads, `b` for `kgroups·NR·KG`, and `out` must hold
    /// at least `MR·NR` values.
    unsafe fn tile(kgroups: usize, a: *const Self::A, b: *const Self::B, out: &mut [i32]);
}

/// `c = (a − zp) · wᵀ` with tier `T`; see [`super::GemmKernel::run`].
///
/// # Safety
/// The CPU must support tier `T`'s instructions.
pub(super) unsafe fn gemm<T: Tile>(m: usize, a: &[u8], zp: i32, w: &PackedWeights, c: &mut [i32]) {
    let (n, k) = (w.n, w.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0);
        return;
    }
    let panels = T::panels(w);
    par_rows(m, n, k, T::MR, a, c, |rows, a, c| {
        // SAFETY: forwarded from this function's contract.
        unsafe { block::<T>(rows, a, zp, w, panels, c) }
    });
}

/// One row block on the calling thread.
///
/// # Safety
/// As [`gemm`]; `panels` must be `T::panels(w)`.
unsafe fn block<T: Tile>(
    m: usize,
    a: &[u8],
    zp: i32,
    w: &PackedWeights,
    panels: &[T::B],
    c: &mut [i32],
) {
    let (n, k) = (w.n, w.k);
    let (mr, nr, kg) = (T::MR, T::NR, T::KG);
    let kgroups = k.div_ceil(kg);
    let a_step = kgroups * mr * kg;
    let b_step = kgroups * nr * kg;
    let row_blocks = m.div_ceil(mr);
    let n_panels = n.div_ceil(nr);
    let fz = T::zp_factor(zp);
    // The zero-point correction of each column, `fz · row_sums[j]`, formed once per call (the
    // store then only adds: SSE2 has no 32-bit vector multiply, and that product in the store
    // loop was most of the driver's own time on the int8 backward's `G·W`, whose zero point is
    // 128); empty when there is no correction.
    let corr: Vec<i32> = if fz == 0 {
        Vec::new()
    } else {
        w.row_sums().iter().map(|&r| fz.wrapping_mul(r)).collect()
    };

    // Whole row blocks that the tile can read from `a` as it is (see `Tile::a_in_place`): not
    // copied (the copy was a twentieth of an OEU run on the VNNI tiers); the rest is packed.
    let in_place = T::a_in_place(a).filter(|_| T::ROW_MAJOR && k % kg == 0);
    let first_packed = if in_place.is_some() { m / mr } else { 0 };
    let mut apack = vec![T::A::default(); (row_blocks - first_packed) * a_step];
    let kp = kgroups * kg;
    let f = |x| T::a_elem(x, zp);
    let to_pack = a.chunks(mr * k).skip(first_packed);
    if T::ROW_MAJOR {
        for (rows, dst) in to_pack.zip(apack.chunks_exact_mut(a_step)) {
            map_rows(rows, k, kp, mr, dst, f);
        }
    } else {
        let mut rows_buf = vec![T::A::default(); mr * kp];
        for (rows, dst) in to_pack.zip(apack.chunks_exact_mut(a_step)) {
            map_rows(rows, k, kp, mr, &mut rows_buf, f);
            // `T::KG` and `T::MR` are constants of each tier: the match folds to one arm.
            match (kg, mr) {
                (1, 8) => interleave::<_, 1, 8>(&rows_buf, kgroups, dst),
                (4, 8) => interleave::<_, 4, 8>(&rows_buf, kgroups, dst),
                _ => unreachable!("no interleaved tier has {mr} rows with k grouped by {kg}"),
            }
        }
    }

    let panel_bytes = b_step * std::mem::size_of::<T::B>();
    let panels_per_block = (COL_BLOCK_BYTES / panel_bytes.max(1)).max(1);
    let mut buf = [0i32; MAX_TILE];
    for p0 in (0..n_panels).step_by(panels_per_block) {
        let p1 = (p0 + panels_per_block).min(n_panels);
        for rb in 0..row_blocks {
            let r0 = rb * mr;
            let rows = mr.min(m - r0);
            let ap = match in_place {
                // A whole block of `mr` rows of `k = kgroups·KG` values: `a_step` values.
                Some(a) if rb < first_packed => a[rb * a_step..][..a_step].as_ptr(),
                _ => apack[(rb - first_packed) * a_step..][..a_step].as_ptr(),
            };
            for p in p0..p1 {
                let bp = panels[p * b_step..][..b_step].as_ptr();
                // SAFETY: `ap`/`bp` point at whole packed blocks of the sizes `tile` reads, `buf`
                // holds MAX_TILE ≥ MR·NR values, and the CPU check is the caller's contract.
                unsafe { T::tile(kgroups, ap, bp, &mut buf) };
                let c0 = p * nr;
                let cols = nr.min(n - c0);
                let corr = corr.get(c0..c0 + cols).unwrap_or(&[]);
                for i in 0..rows {
                    store(
                        &mut c[(r0 + i) * n + c0..][..cols],
                        &buf[i * nr..][..cols],
                        corr,
                    );
                }
            }
        }
    }
}

/// One tile row into `c`: `dst[j] = src[j] + corr[j]` (the zero-point correction), in wrapping
/// i32 arithmetic like the SIMD accumulators themselves (a checked `+` kept this loop scalar in
/// the dev build); a plain copy when there is no correction (`corr` empty).
#[inline(always)]
fn store(dst: &mut [i32], src: &[i32], corr: &[i32]) {
    if corr.is_empty() {
        dst.copy_from_slice(src);
        return;
    }
    for ((d, &s), &z) in dst.iter_mut().zip(src).zip(corr) {
        *d = s.wrapping_add(z);
    }
}
