//! Panel layouts: how weights and activations are rearranged so a micro-kernel reads both
//! operands with unit stride, one register-wide load per step.
//!
//! Weights (`n × k`, row-major) become panels of `NR` columns: `[panel][k / KG][NR][KG]`, so one
//! step of the micro-kernel loads `NR × KG` consecutive values. Activations are packed per call
//! into `[k / KG][MR][KG]` blocks of `MR` rows. Both are zero-padded to whole panels and whole
//! `KG` groups; padded weights are 0, so padded `k` contributes nothing and padded rows/columns
//! are simply not written back. Weight panels are built once per [`PackedWeights`] and kernel
//! family, on first use, and cached.

use std::fmt;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::sync::OnceLock;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::PackedWeights;

/// Weight panels built so far, one slot per kernel family compiled for this target.
#[derive(Clone, Default)]
pub(super) struct PanelCache {
    #[cfg(target_arch = "x86_64")]
    pub(super) i16_nr16_kg2: OnceLock<Vec<i16>>,
    #[cfg(target_arch = "x86_64")]
    pub(super) i8_nr16_kg4: OnceLock<Vec<i8>>,
    #[cfg(target_arch = "aarch64")]
    pub(super) i16_nr8_kg1: OnceLock<Vec<i16>>,
    #[cfg(target_arch = "aarch64")]
    pub(super) i8_nr8_kg4: OnceLock<Vec<i8>>,
}

impl fmt::Debug for PanelCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanelCache { .. }")
    }
}

/// Weights `w` (`n × k`) as `[panel][k / KG][nr][KG]`, each value mapped by `f`.
///
/// `KG` is a constant, as in [`interleave`]: with a runtime group size every element's position
/// took a division and a remainder, and this function was 5 % of an OEU run's samples (the int8
/// backward packs the batch's output gradient as weights on every call).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) fn pack_b<T: Copy + Default, const KG: usize>(
    w: &PackedWeights,
    nr: usize,
    f: impl Fn(i8) -> T,
) -> Vec<T> {
    let (n, k) = (w.n, w.k);
    let kgroups = k.div_ceil(KG);
    let panels = n.div_ceil(nr);
    let stride = nr * KG;
    let mut out = vec![T::default(); panels * kgroups * stride];
    let full = k / KG * KG;
    for (col, row) in w.data.chunks_exact(k.max(1)).enumerate().take(n) {
        let (p, j) = (col / nr, col % nr);
        let panel = &mut out[p * kgroups * stride + j * KG..];
        // Whole groups as fixed-size copies (each destination chunk holds at least KG values:
        // `j < nr`), then the `k` tail: with `chunks(KG)` of unknown length every group was a
        // generic loop, and the int8 backward packs a batch's gradient this way on every call.
        let (body, tail) = row.split_at(full);
        let mut groups = panel.chunks_mut(stride);
        for (src, dst) in body.chunks_exact(KG).zip(groups.by_ref()) {
            for (d, &v) in dst[..KG].iter_mut().zip(src) {
                *d = f(v);
            }
        }
        if let Some(dst) = groups.next().filter(|_| !tail.is_empty()) {
            for (d, &v) in dst.iter_mut().zip(tail) {
                *d = f(v);
            }
        }
    }
    out
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Rows `a` (`rows × k`, `rows ≤ mr`) mapped by `f` into `out` as `mr` rows of `kp ≥ k` values
/// (`[mr][kp]`); rows past `rows` are zeroed. The tail `k..kp` of each row is not written: the
/// caller's buffer must start zeroed there (a fresh buffer, or one only this function wrote
/// with the same `k` and `kp`).
///
/// A plain element-wise loop over contiguous bytes, which the compiler vectorises. Tiers that
/// read a row block as rows (`Tile::ROW_MAJOR`) use this alone; the others then regroup it with
/// [`interleave`].
pub(super) fn map_rows<T: Copy + Default>(
    a: &[u8],
    k: usize,
    kp: usize,
    mr: usize,
    out: &mut [T],
    f: impl Fn(u8) -> T,
) {
    let out = &mut out[..mr * kp];
    let rows = a.len() / k.max(1);
    for (dst, src) in out.chunks_exact_mut(kp).zip(a.chunks_exact(k)) {
        for (d, &x) in dst[..k].iter_mut().zip(src) {
            *d = f(x);
        }
    }
    out[rows * kp..].fill(T::default());
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `MR` rows of `kgroups·KG` values (`[MR][kp]`, from [`map_rows`]) regrouped as
/// `[kgroups][MR][KG]` into `out`: the layout of tiers that load one `k` group of all rows at
/// once (NEON's lane-indexed products).
///
/// `MR` and `KG` are constants, so each group is one fixed-size move. Mapping and scattering in
/// one pass, row by row with a stride of `MR·KG`, was 35 % of an inference run and 19 % of an
/// OEU run on AVX2 (more than the micro-kernel: the layers' `n` is 16–64, so each packed value
/// feeds only a few tiles).
pub(super) fn interleave<T: Copy, const KG: usize, const MR: usize>(
    rows: &[T],
    kgroups: usize,
    out: &mut [T],
) {
    let kp = kgroups * KG;
    let rows = &rows[..MR * kp];
    let out = &mut out[..kgroups * MR * KG];
    let src = rows.as_ptr();
    for (g, dst) in out.chunks_exact_mut(MR * KG).enumerate() {
        for r in 0..MR {
            // SAFETY: r < MR and g < kgroups, so `r·kp + g·KG + KG ≤ MR·kp`, the length of
            // `rows`; the destination is the `KG` values at `r·KG` of a chunk of `MR·KG`; the
            // two slices are distinct borrows, so they do not overlap. (Indexing here kept two
            // bounds checks per 4-byte move, a quarter of an inference run.)
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.add(r * kp + g * KG),
                    dst.as_mut_ptr().add(r * KG),
                    KG,
                );
            }
        }
    }
}
