//! The exact forward's screen (see [`super::ort_fix`]): which outputs of the integer path lie
//! close enough to a rounding boundary that onnxruntime's float order could round them the
//! other way.
//!
//! Why a file of its own: it is the hot part of the exact forward (a fifth of a CNN's `eval`),
//! written as blocks of fixed-size lanes that the compiler vectorizes, with its own tests against
//! the per-output definitions; [`super::ort_fix`] holds the bounds it applies and the
//! recomputation in MLAS's order. Two passes: [`screen_rows`] gives every byte of a row and
//! flags the row in f32 (bound widened for f32's own error); [`near_outputs`] re-checks a flagged
//! row's outputs against the exact bound in f64.

use super::ort_fix::MAGIC;
use super::qparams::rounded_byte;
use super::simd::{avx2_dispatch, lanes_dispatch};

/// Each row's `(Σ|x − zp|, ‖x − zp‖₂)` from its integer sums.
pub(super) fn l1_l2(sums: &[[u64; 2]]) -> Vec<(f64, f64)> {
    sums.iter()
        .map(|s| (s[0] as f64, (s[1] as f64).sqrt()))
        .collect()
}

avx2_dispatch! {
    /// `Σ|q − zp|` and `Σ(q − zp)²` of each row of `k` input bytes, into `sums` (one per row).
    rows_norms => rows_norms_body(bytes: &[u8], k: usize, zp: i32, sums: &mut [[u64; 2]])
}

#[inline(always)]
fn rows_norms_body(bytes: &[u8], k: usize, zp: i32, sums: &mut [[u64; 2]]) {
    for (row, sums) in bytes.chunks_exact(k.max(1)).zip(sums) {
        // In blocks short enough that the i32 sums cannot overflow (255² · 4096 < 2³¹).
        for block in row.chunks(4096) {
            let (mut l1, mut l2) = (0i32, 0i32);
            for &q in block {
                let d = (q as i32 - zp).abs();
                l1 += d;
                l2 += d * d;
            }
            sums[0] += l1 as u64;
            sums[1] += l2 as u64;
        }
    }
}

lanes_dispatch! {
    /// The integer path's bytes of each row of `acc` (`width` values; `out` rows every `stride`
    /// bytes): `out[j] = rounded_byte((acc[j] + bias[j])·mult[j] + offset[j])`, as
    /// [`super::Requant::apply_rows`] gives them; `near[r]` set when some value of row `r` lies
    /// within `min(patch[j]·‖x‖₁, norm[j]·‖x‖₂) + cst[j] + 2⁻²¹·|v|` of a rounding boundary,
    /// with `(‖x‖₁, ‖x‖₂) = rows[r]` (in f32).
    ///
    /// In blocks of sixteen lanes with AVX-512F, of eight with AVX2 or without either: each lane
    /// does the same operations in the same order whatever the block, so the same bytes and
    /// flags. Sixteen lanes halve the vector instructions of the costliest part of the exact
    /// forward (a quarter of a CNN's `eval`).
    screen_rows => screen_rows_body(
        acc: &[i32],
        width: usize,
        bias: (&[i32], &[f32]),
        mult: &[f32],
        screen: (&[f32], &[f32], &[f32]),
        rows: &[(f64, f64)],
        out_stage: (f32, f32, f32),
        out: (&mut [u8], usize),
        near: &mut [bool],
    ) if width >= 16
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn screen_rows_body<const L: usize>(
    acc: &[i32],
    width: usize,
    (bias, offset): (&[i32], &[f32]),
    mult: &[f32],
    (patch, norm, cst): (&[f32], &[f32], &[f32]),
    rows: &[(f64, f64)],
    (zp, lo, hi): (f32, f32, f32),
    (out, stride): (&mut [u8], usize),
    near: &mut [bool],
) {
    let n = width;
    let (bias, mult, offset) = (&bias[..n], &mult[..n], &offset[..n]);
    let (patch, norm, cst) = (&patch[..n], &norm[..n], &cst[..n]);
    let stage = ScreenStage::new(zp, lo, hi);
    // The channels' constants, block by block; the last block (`n % L` channels) padded with
    // zeros, so a width that is not a multiple of `L` runs the same vector code as the rest
    // (its padding lanes' results are dropped). Scalar tails were an eighth of the `eval` of
    // a CNN with 10- and 20-channel convs.
    let full = n / L;
    let consts: Vec<ScreenConsts<L>> = (0..full)
        .map(|j| ScreenConsts::new(j * L, (bias, mult, offset), (patch, norm, cst)))
        .collect();
    // The tail in blocks of four or eight lanes (a short tail in a block of sixteen ran
    // slower than the scalar loop it replaced).
    let tail_at = full * L;
    let tail4 = ScreenConsts::<4>::new(tail_at, (bias, mult, offset), (patch, norm, cst));
    let tail8 = ScreenConsts::<8>::new(tail_at, (bias, mult, offset), (patch, norm, cst));
    let tail_l = ScreenConsts::<L>::new(tail_at, (bias, mult, offset), (patch, norm, cst));
    for (r, (acc, (&(patch_abs, patch_norm), near))) in
        acc.chunks_exact(n).zip(rows.iter().zip(near)).enumerate()
    {
        let row = (patch_abs as f32, patch_norm as f32);
        let out = &mut out[r * stride..][..n];
        let mut any = false;
        // Blocks of `L` lanes on fixed-size arrays (no bounds checks inside a block): left to
        // the loop vectorizer, this loop stayed scalar in one build and not in another, and a
        // CNN's `eval` ran at half speed.
        let (out8, tail) = out.as_chunks_mut::<L>();
        for ((o8, a8), k) in out8.iter_mut().zip(acc.as_chunks::<L>().0).zip(&consts) {
            any |= screen_block(a8, k, row, &stage, o8, L);
        }
        let rest = &acc[tail_at..];
        match tail.len() {
            0 => {}
            1..=4 => any |= screen_tail(rest, &tail4, row, &stage, tail),
            5..=8 => any |= screen_tail(rest, &tail8, row, &stage, tail),
            _ => any |= screen_tail(rest, &tail_l, row, &stage, tail),
        }
        *near = any;
    }
}

/// The output stage of [`screen_rows`]: zero point, clamp, and the clamp's `[below, above]`.
pub(super) struct ScreenStage {
    zp: f32,
    lo: f32,
    hi: f32,
    below: f32,
    above: f32,
}

impl ScreenStage {
    /// Zero point `zp` and clamp `[lo, hi]`; outside `[below, above]` every rounding clamps to
    /// the same byte (see [`flips`]).
    pub(super) fn new(zp: f32, lo: f32, hi: f32) -> Self {
        ScreenStage {
            zp,
            lo,
            hi,
            below: lo - zp - 1.0,
            above: hi - zp + 1.0,
        }
    }
}

/// `L` channels' constants for [`screen_block`].
pub(super) struct ScreenConsts<const L: usize> {
    bias: [i32; L],
    mult: [f32; L],
    offset: [f32; L],
    patch: [f32; L],
    norm: [f32; L],
    cst: [f32; L],
}

impl<const L: usize> ScreenConsts<L> {
    /// The constants of channels `c0..c0 + L` (zeros past the end of the slices).
    #[inline(always)]
    fn new(
        c0: usize,
        (bias, mult, offset): (&[i32], &[f32], &[f32]),
        (patch, norm, cst): (&[f32], &[f32], &[f32]),
    ) -> Self {
        fn lanes<T: Copy + Default, const L: usize>(s: &[T], c0: usize) -> [T; L] {
            let mut v = [T::default(); L];
            let part = &s[c0.min(s.len())..s.len().min(c0 + L)];
            v[..part.len()].copy_from_slice(part);
            v
        }
        ScreenConsts {
            bias: lanes(bias, c0),
            mult: lanes(mult, c0),
            offset: lanes(offset, c0),
            patch: lanes(patch, c0),
            norm: lanes(norm, c0),
            cst: lanes(cst, c0),
        }
    }

    /// The constants of lanes that run on across rows of `width` channels: lane `l` holds
    /// channel `(at + l) % width`.
    pub(super) fn cycled(
        at: usize,
        width: usize,
        (bias, mult, offset): (&[i32], &[f32], &[f32]),
        (patch, norm, cst): (&[f32], &[f32], &[f32]),
    ) -> Self {
        let c = |l: usize| (at + l) % width;
        ScreenConsts {
            bias: std::array::from_fn(|l| bias[c(l)]),
            mult: std::array::from_fn(|l| mult[c(l)]),
            offset: std::array::from_fn(|l| offset[c(l)]),
            patch: std::array::from_fn(|l| patch[c(l)]),
            norm: std::array::from_fn(|l| norm[c(l)]),
            cst: std::array::from_fn(|l| cst[c(l)]),
        }
    }

    /// One block of lanes, each with its own row's `(‖x‖₁, ‖x‖₂)`: every lane's byte into
    /// `out`, and a mask of the lanes that lie within their bound of a rounding boundary (the
    /// operations of [`screen_value`], in the same order).
    #[inline(always)]
    pub(super) fn screen_lanes(
        &self,
        acc: &[i32; L],
        (patch_abs, patch_norm): (&[f32; L], &[f32; L]),
        stage: &ScreenStage,
        out: &mut [u8; L],
    ) -> u32 {
        let mut mask = 0u32;
        for l in 0..L {
            let (byte, near) = screen_value(
                acc[l],
                (self.bias[l], self.mult[l], self.offset[l]),
                (self.patch[l], self.norm[l], self.cst[l]),
                (patch_abs[l], patch_norm[l]),
                stage,
            );
            out[l] = byte;
            mask |= (near as u32) << l;
        }
        mask
    }
}

/// The last `out.len()` (under `L`) outputs of a row: [`screen_block`] on lanes padded with
/// zeros, only the real ones kept.
#[inline(always)]
fn screen_tail<const L: usize>(
    acc: &[i32],
    k: &ScreenConsts<L>,
    row: (f32, f32),
    stage: &ScreenStage,
    out: &mut [u8],
) -> bool {
    // Lane by lane over the whole block: a copy of a variable length (or a loop the compiler
    // turns into one) is a `memcpy` call, which cost more than the block.
    let n = out.len();
    let a: [i32; L] = std::array::from_fn(|l| acc.get(l).copied().unwrap_or(0));
    let mut o = [0u8; L];
    let near = screen_block(&a, k, row, stage, &mut o, n);
    for (l, &v) in o.iter().enumerate() {
        if let Some(d) = out.get_mut(l) {
            *d = v;
        }
    }
    near
}

/// One block of [`screen_rows`]: each lane's byte into `out`, and whether any of the first
/// `valid` lanes lies within its bound of a rounding boundary. Every lane runs the operations
/// of [`screen_value`] in the same order.
#[inline(always)]
fn screen_block<const L: usize>(
    acc: &[i32; L],
    k: &ScreenConsts<L>,
    (patch_abs, patch_norm): (f32, f32),
    stage: &ScreenStage,
    out: &mut [u8; L],
    valid: usize,
) -> bool {
    let mut hit = 0u8;
    for l in 0..L {
        let (byte, near) = screen_value(
            acc[l],
            (k.bias[l], k.mult[l], k.offset[l]),
            (k.patch[l], k.norm[l], k.cst[l]),
            (patch_abs, patch_norm),
            stage,
        );
        out[l] = byte;
        hit |= (near & (l < valid)) as u8;
    }
    hit != 0
}

/// One output of the screen: the integer path's byte `rounded_byte((acc + bias)·mult +
/// offset)`, and whether its value `v` lies within `min(patch·‖x‖₁, norm·‖x‖₂) + cst +
/// 2⁻²¹·|v|` of a rounding boundary whose sides give different bytes.
#[inline(always)]
pub(super) fn screen_value(
    acc: i32,
    (bias, mult, offset): (i32, f32, f32),
    (patch, norm, cst): (f32, f32, f32),
    (patch_abs, patch_norm): (f32, f32),
    stage: &ScreenStage,
) -> (u8, bool) {
    const MAGIC32: f32 = 12_582_912.0;
    let v = acc.saturating_add(bias) as f32 * mult + offset;
    let byte = rounded_byte(v, stage.zp, stage.lo, stage.hi);
    let r = (v + MAGIC32) - MAGIC32;
    let products = (patch * patch_abs).min(norm * patch_norm);
    let margin = products + cst + v.abs() * (1.0 / 2_097_152.0);
    let near = 0.5 - (v - r).abs() <= margin;
    (byte, near & flips32(v, margin, (stage.below, stage.above)))
}

lanes_dispatch! {
    /// The outputs `j` of one flagged row whose exact value `z = acc[j]·a[j] + b[j]` (f64,
    /// output steps) lies within `m = min(m_patch[j]·‖x‖₁, m_norm[j]·‖x‖₂) + m_const[j]` of a
    /// rounding boundary whose sides give different bytes, pushed to `hits` in order. In blocks
    /// of `L` lanes without branches (a scalar loop with a branch per output was 60 % of the
    /// exact forward's own time on a 256-output linear layer, where nearly every row is
    /// flagged).
    near_outputs => near_outputs_body(
        acc: &[i32],
        consts: NearConsts,
        row: (f64, f64),
        out_stage: (f64, f64, f64),
        hits: &mut Vec<usize>,
    ) if acc.len() >= 16
}

/// One row's channels of [`super::ort_fix::OrtRun`]'s `a`, `b`, `m_patch`, `m_norm` and
/// `m_const`.
#[derive(Clone, Copy)]
pub(crate) struct NearConsts<'a> {
    pub(super) a: &'a [f64],
    pub(super) b: &'a [f64],
    pub(super) m_patch: &'a [f64],
    pub(super) m_norm: &'a [f64],
    pub(super) m_const: &'a [f64],
}

#[inline(always)]
fn near_outputs_body<const L: usize>(
    acc: &[i32],
    k: NearConsts,
    (patch_abs, patch_norm): (f64, f64),
    stage: (f64, f64, f64),
    hits: &mut Vec<usize>,
) {
    let n = acc.len();
    let (a, b, m_patch, m_norm, m_const) = (
        &k.a[..n],
        &k.b[..n],
        &k.m_patch[..n],
        &k.m_norm[..n],
        &k.m_const[..n],
    );
    let near = |j: usize| {
        let z = acc[j] as f64 * a[j] + b[j];
        let rounded = (z + MAGIC) - MAGIC;
        let bound = (m_patch[j] * patch_abs).min(m_norm[j] * patch_norm);
        let m = bound + m_const[j];
        (0.5 - (z - rounded).abs() <= m) & flips(z, m, stage)
    };
    let blocks = n / L;
    for blk in 0..blocks {
        let j0 = blk * L;
        let mut mask = 0u32;
        for l in 0..L {
            mask |= (near(j0 + l) as u32) << l;
        }
        while mask != 0 {
            hits.push(j0 + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }
    for j in blocks * L..n {
        if near(j) {
            hits.push(j);
        }
    }
}

/// Whether onnxruntime's value, within `m` of `z` (output steps, zero point not added), can
/// give another byte than `z` rounded: not where every value that close rounds to an integer
/// the clamp to `[lo, hi]` (zero point added) maps to the same byte. Below `lo − zp − ½` all of
/// them round to at most `lo − zp` and clamp to `lo` (likewise above `hi − zp + ½`); the test
/// keeps a whole step of slack (`lo − zp − 1`). A ReLU folded into the output range clamps about
/// half of a layer's outputs: their near-boundary values were recomputed for nothing.
#[inline(always)]
pub(super) fn flips(z: f64, m: f64, (zp, lo, hi): (f64, f64, f64)) -> bool {
    (z + m > lo - zp - 1.0) & (z - m < hi - zp + 1.0)
}

/// [`flips`] in the screen's f32, with `below = lo − zp − 1` and `above = hi − zp + 1`.
#[inline(always)]
pub(super) fn flips32(v: f32, m: f32, (below, above): (f32, f32)) -> bool {
    (v + m > below) & (v - m < above)
}

/// A random screen input shared by this file's test and [`super::ort_flat`]'s: the same draws
/// in the same order for both.
#[cfg(test)]
pub(super) mod case {
    use rand::RngExt;
    use rand_chacha::ChaCha8Rng;

    /// A screen's signature with rows `width` apart in `out` (the row-wise screen).
    pub(in crate::graph) type RowsFn = fn(
        &[i32],
        usize,
        (&[i32], &[f32]),
        &[f32],
        (&[f32], &[f32], &[f32]),
        &[(f64, f64)],
        (f32, f32, f32),
        (&mut [u8], usize),
        &mut [bool],
    );

    /// The same with rows back to back in `out` (the flat screen).
    pub(in crate::graph) type FlatFn = fn(
        &[i32],
        usize,
        (&[i32], &[f32]),
        &[f32],
        (&[f32], &[f32], &[f32]),
        &[(f64, f64)],
        (f32, f32, f32),
        &mut [u8],
        &mut [bool],
    );

    /// `rows` rows of `width` sums (every `extreme`-th one `i32::MAX`, the next `i32::MIN`),
    /// each channel's constants and each row's norms, around rounding boundaries and the
    /// clamp's edges of the output stage `stage`.
    pub(in crate::graph) struct ScreenCase {
        pub(in crate::graph) width: usize,
        pub(in crate::graph) rows: usize,
        pub(in crate::graph) acc: Vec<i32>,
        pub(in crate::graph) bias_i: Vec<i32>,
        pub(in crate::graph) offset: Vec<f32>,
        pub(in crate::graph) mult: Vec<f32>,
        pub(in crate::graph) patch: Vec<f32>,
        pub(in crate::graph) norm: Vec<f32>,
        pub(in crate::graph) cst: Vec<f32>,
        pub(in crate::graph) norms: Vec<(f64, f64)>,
        pub(in crate::graph) stage: (f32, f32, f32),
    }

    impl ScreenCase {
        pub(in crate::graph) fn random(
            rng: &mut ChaCha8Rng,
            width: usize,
            rows: usize,
            extreme: usize,
        ) -> Self {
            let acc: Vec<i32> = (0..rows * width)
                .map(|i| match i % extreme {
                    0 => i32::MAX,
                    1 => i32::MIN,
                    _ => rng.random_range(-40_000..40_000),
                })
                .collect();
            let f = |rng: &mut ChaCha8Rng, lo: f32, hi: f32| -> Vec<f32> {
                (0..width).map(|_| rng.random_range(lo..hi)).collect()
            };
            let bias_i: Vec<i32> = (0..width).map(|_| rng.random_range(-500..500)).collect();
            let offset = f(rng, -3.0, 3.0);
            let mult = f(rng, 1e-4, 4e-3);
            let (patch, norm, cst) = (f(rng, 0.0, 1e-6), f(rng, 0.0, 1e-5), f(rng, 0.0, 0.01));
            let norms: Vec<(f64, f64)> = (0..rows)
                .map(|_| (rng.random_range(0.0..5e3), rng.random_range(0.0..400.0)))
                .collect();
            ScreenCase {
                width,
                rows,
                acc,
                bias_i,
                offset,
                mult,
                patch,
                norm,
                cst,
                norms,
                stage: (7.0, 0.0, 200.0),
            }
        }

        /// The bytes and row flags of a row-wise screen on this case.
        pub(in crate::graph) fn rows_by(&self, screen: RowsFn) -> (Vec<u8>, Vec<bool>) {
            let (mut out, mut near) = self.outputs();
            let c = self;
            screen(
                &c.acc,
                c.width,
                (&c.bias_i, &c.offset),
                &c.mult,
                (&c.patch, &c.norm, &c.cst),
                &c.norms,
                c.stage,
                (&mut out, c.width),
                &mut near,
            );
            (out, near)
        }

        /// The bytes and row flags of a flat screen on this case.
        pub(in crate::graph) fn flat_by(&self, screen: FlatFn) -> (Vec<u8>, Vec<bool>) {
            let (mut out, mut near) = self.outputs();
            let c = self;
            screen(
                &c.acc,
                c.width,
                (&c.bias_i, &c.offset),
                &c.mult,
                (&c.patch, &c.norm, &c.cst),
                &c.norms,
                c.stage,
                &mut out,
                &mut near,
            );
            (out, near)
        }

        fn outputs(&self) -> (Vec<u8>, Vec<bool>) {
            (vec![0u8; self.rows * self.width], vec![false; self.rows])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::case::ScreenCase;
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The screen this CPU runs (sixteen lanes with AVX-512F, eight with AVX2) gives the bytes
    /// and the flags of the plain eight-lane loop, for every width (blocks and tails), values
    /// around rounding boundaries and the clamp's edges, and extreme sums.
    #[test]
    fn every_screen_width_gives_the_plain_loops_bytes_and_flags() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut flagged = 0;
        for width in 1..70 {
            let rows = 9;
            let case = ScreenCase::random(&mut rng, width, rows, 23);
            let ScreenCase {
                acc,
                bias_i,
                offset,
                mult,
                patch,
                norm,
                cst,
                norms,
                stage,
                ..
            } = &case;
            let ours = case.rows_by(screen_rows);
            let plain = case.rows_by(screen_rows_body::<8>);
            assert_eq!(ours, plain, "width {width}");
            // Both against the definition, output by output (tails included).
            let (z, l, h) = *stage;
            let st = ScreenStage::new(z, l, h);
            let mut want = (vec![0u8; rows * width], vec![false; rows]);
            for r in 0..rows {
                for c in 0..width {
                    let (byte, near) = screen_value(
                        acc[r * width + c],
                        (bias_i[c], mult[c], offset[c]),
                        (patch[c], norm[c], cst[c]),
                        (norms[r].0 as f32, norms[r].1 as f32),
                        &st,
                    );
                    want.0[r * width + c] = byte;
                    want.1[r] |= near;
                }
            }
            assert_eq!(ours, want, "width {width}");
            flagged += want.1.iter().filter(|&&f| f).count();
        }
        assert!(
            flagged > 0,
            "no row came near a boundary: the flags went untested"
        );
    }

    /// The flagged row's re-check in blocks gives the outputs, in order, of the per-output test
    /// (widths around the blocks of eight and sixteen, values around rounding boundaries and
    /// the clamp's edges).
    #[test]
    fn near_outputs_are_the_per_output_test() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut found = 0;
        for width in 0..70 {
            for _ in 0..20 {
                let acc: Vec<i32> = (0..width).map(|_| rng.random_range(-3000..3000)).collect();
                let f = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| -> Vec<f64> {
                    (0..width).map(|_| rng.random_range(lo..hi)).collect()
                };
                let (a, b) = (f(&mut rng, 0.01, 0.2), f(&mut rng, -100.0, 100.0));
                let (mp, mn, mc) = (
                    f(&mut rng, 0.0, 1e-4),
                    f(&mut rng, 0.0, 1e-3),
                    f(&mut rng, 0.0, 0.05),
                );
                let row = (rng.random_range(0.0..500.0), rng.random_range(0.0..50.0));
                let stage = (3.0, 0.0, 120.0);
                let want: Vec<usize> = (0..width)
                    .filter(|&j| {
                        let z = acc[j] as f64 * a[j] + b[j];
                        let m = (mp[j] * row.0).min(mn[j] * row.1) + mc[j];
                        let r = z.round_ties_even();
                        0.5 - (z - r).abs() <= m && z + m > -4.0 && z - m < 118.0
                    })
                    .collect();
                let consts = NearConsts {
                    a: &a,
                    b: &b,
                    m_patch: &mp,
                    m_norm: &mn,
                    m_const: &mc,
                };
                let (mut ours, mut plain) = (Vec::new(), Vec::new());
                near_outputs(&acc, consts, row, stage, &mut ours);
                near_outputs_body::<8>(&acc, consts, row, stage, &mut plain);
                assert_eq!(ours, want, "width {width}");
                assert_eq!(plain, want, "width {width}");
                found += want.len();
            }
        }
        assert!(found > 100, "only {found} outputs came near a boundary");
    }
}
