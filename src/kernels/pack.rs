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
/// `KG` is a constant, as in [`pack_a`]: with a runtime group size every element's position
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
/// Rows `a` (`rows × k`, `rows ≤ MR`) as `[k / KG][MR][KG]` into `out`, each byte mapped by `f`;
/// missing rows and the `k` tail are zero. `rows_buf` is scratch for `MR` converted rows; the
/// caller keeps it between calls (it must start zeroed and only this function writes it).
///
/// Two passes: every row is mapped into `rows_buf` (a plain element-wise loop over contiguous
/// bytes, which the compiler vectorises), then groups of `KG` are copied into place with `MR`
/// and `KG` constants, so each copy is one fixed-size move. Mapping and scattering in one pass,
/// row by row with a stride of `MR·KG`, was 35 % of an inference run and 19 % of an OEU run on
/// AVX2 (more than the micro-kernel itself: the layers' `n` is 16–64, so each packed value
/// feeds only one or a few tiles).
pub(super) fn pack_a<T: Copy + Default, const KG: usize, const MR: usize>(
    a: &[u8],
    k: usize,
    rows_buf: &mut [T],
    out: &mut [T],
    f: impl Fn(u8) -> T,
) {
    let kgroups = k.div_ceil(KG);
    let kp = kgroups * KG;
    let rows_buf = &mut rows_buf[..MR * kp];
    let rows = a.len() / k.max(1);
    for (dst, src) in rows_buf.chunks_exact_mut(kp).zip(a.chunks_exact(k)) {
        // The padded tail `k..kp` stays zero: nothing else writes it.
        for (d, &x) in dst[..k].iter_mut().zip(src) {
            *d = f(x);
        }
    }
    // Rows missing from the last block read as zero (a later block with all rows would have
    // overwritten them, so clear them each time).
    rows_buf[rows * kp..].fill(T::default());
    let out = &mut out[..kgroups * MR * KG];
    let src = rows_buf.as_ptr();
    for (g, dst) in out.chunks_exact_mut(MR * KG).enumerate() {
        for r in 0..MR {
            // SAFETY: r < MR and g < kgroups, so `r·kp + g·KG + KG ≤ MR·kp`, the length of
            // `rows_buf`; the destination is the `KG` values at `r·KG` of a chunk of `MR·KG`;
            // the two slices are distinct borrows, so they do not overlap. (Indexing here kept
            // two bounds checks per 4-byte move, a quarter of an inference run.)
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
