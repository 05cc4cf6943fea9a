//! The exact forward's screen on narrow rows stored back to back: blocks of lanes that run on
//! across the ends of rows.
//!
//! Why: [`super::ort_screen::screen_rows`] works row by row, so a 10-channel conv row costs a
//! block of eight lanes and a padded block of four (with AVX-512, a row narrower than sixteen
//! cannot use the wide blocks at all). On a 5×5 conv with ten channels over 24×24 pixels that
//! screen was a third of the whole forward. Here the `rows × width` values are one stream cut
//! into blocks of `L` lanes; lane `l` of block `b` holds channel `(b·L + l) % width`, so the
//! channels' constants repeat every `lcm(width, L) / L` blocks and are built once per call,
//! and each value's row norms come from a per-value copy. Every lane runs
//! [`super::ort_screen::screen_value`]'s operations in the same order: the same bytes and the
//! same row flags as the row-wise screen (tested against it).

use super::ort_screen::{ScreenConsts, ScreenStage};
use super::simd::lanes_dispatch;

/// The widest rows [`screen_flat`] takes: the constants of a period are `lcm(width, 16) / 16`
/// blocks of 384 bytes, at most 24 KiB below this width (wider rows waste little in their
/// padded last block anyway).
pub(super) const FLAT_MAX_WIDTH: usize = 64;

lanes_dispatch! {
    /// [`super::ort_screen::screen_rows`] for rows stored back to back (`out` holds row `r` at
    /// `r·width`; `width` at most [`FLAT_MAX_WIDTH`]): the same bytes and `near` flags, in
    /// blocks of lanes that run across the ends of rows.
    screen_flat => screen_flat_body(
        acc: &[i32],
        width: usize,
        bias: (&[i32], &[f32]),
        mult: &[f32],
        screen: (&[f32], &[f32], &[f32]),
        rows: &[(f64, f64)],
        out_stage: (f32, f32, f32),
        out: &mut [u8],
        near: &mut [bool],
    ) if acc.len() >= 16
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn screen_flat_body<const L: usize>(
    acc: &[i32],
    width: usize,
    (bias, offset): (&[i32], &[f32]),
    mult: &[f32],
    (patch, norm, cst): (&[f32], &[f32], &[f32]),
    rows: &[(f64, f64)],
    (zp, lo, hi): (f32, f32, f32),
    out: &mut [u8],
    near: &mut [bool],
) {
    let n = width;
    if n == 0 || rows.is_empty() {
        return;
    }
    let total = rows.len() * n;
    let (acc, out, near) = (&acc[..total], &mut out[..total], &mut near[..rows.len()]);
    let stage = ScreenStage::new(zp, lo, hi);
    let fixed = ((bias, mult, offset), (patch, norm, cst));
    // One period of blocks: after `lcm(n, L)` values the channels line up again.
    let period = n / gcd(n, L);
    let consts: Vec<ScreenConsts<L>> = (0..period)
        .map(|p| ScreenConsts::cycled(p * L, n, fixed.0, fixed.1))
        .collect();
    // Each value's row norms (in f32, as the row-wise screen takes them): a row's value
    // written `L` at a time from its first value on, the next row overwriting what runs over;
    // `L` values of slack at the end, so the last block reads whole lanes.
    let mut l1 = vec![0f32; total + L];
    let mut l2 = vec![0f32; total + L];
    for (r, &(a, b)) in rows.iter().enumerate() {
        let (a, b) = (a as f32, b as f32);
        for s in (0..n).step_by(L) {
            let at = r * n + s;
            l1[at..at + L].copy_from_slice(&[a; L]);
            l2[at..at + L].copy_from_slice(&[b; L]);
        }
    }
    let (l1, l2) = (l1.as_chunks::<L>().0, l2.as_chunks::<L>().0);
    let (acc_blocks, acc_tail) = acc.as_chunks::<L>();
    let (out_blocks, out_tail) = out.as_chunks_mut::<L>();
    let mut p = 0;
    for (b, (a, o)) in acc_blocks.iter().zip(out_blocks).enumerate() {
        let mask = consts[p].screen_lanes(a, (&l1[b], &l2[b]), &stage, o);
        flag_rows(near, b * L, mask, n);
        p = if p + 1 == period { 0 } else { p + 1 };
    }
    if !acc_tail.is_empty() {
        // The last values in a block padded with zeros; only the real lanes are kept.
        let b = acc_blocks.len();
        let valid = acc_tail.len();
        let a: [i32; L] = std::array::from_fn(|l| acc_tail.get(l).copied().unwrap_or(0));
        let mut o = [0u8; L];
        let mask = consts[p].screen_lanes(&a, (&l1[b], &l2[b]), &stage, &mut o);
        for (d, &v) in out_tail.iter_mut().zip(&o) {
            *d = v;
        }
        flag_rows(near, b * L, mask & ((1u32 << valid) - 1), n);
    }
}

/// Flags the row of each lane set in `mask` (lane `l` is value `at + l` of rows `width` wide).
#[inline(always)]
fn flag_rows(near: &mut [bool], at: usize, mut mask: u32, width: usize) {
    while mask != 0 {
        near[(at + mask.trailing_zeros() as usize) / width] = true;
        mask &= mask - 1;
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::ort_screen::case::{FlatFn, ScreenCase};
    use super::super::ort_screen::screen_rows;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The flat screen (the dispatched one, and the plain bodies of four, eight and sixteen
    /// lanes) gives the row-wise screen's bytes and flags for every width it takes and row
    /// counts around the blocks, values near rounding boundaries and the clamp's edges, and
    /// extreme sums.
    #[test]
    fn the_flat_screen_gives_the_row_wise_bytes_and_flags() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut flagged, mut clear) = (0, 0);
        for width in 1..=FLAT_MAX_WIDTH {
            for rows in [1, 2, 3, 7, 17] {
                let case = ScreenCase::random(&mut rng, width, rows, 29);
                let want = case.rows_by(screen_rows);
                let bodies: [(&str, FlatFn); 4] = [
                    ("dispatched", screen_flat),
                    ("4 lanes", screen_flat_body::<4>),
                    ("8 lanes", screen_flat_body::<8>),
                    ("16 lanes", screen_flat_body::<16>),
                ];
                for (name, body) in bodies {
                    let got = case.flat_by(body);
                    assert_eq!(got, want, "{name}, width {width}, {rows} rows");
                }
                flagged += want.1.iter().filter(|&&f| f).count();
                clear += want.1.iter().filter(|&&f| !f).count();
            }
        }
        // Both kinds of rows, so that a screen flagging every row (or none) fails.
        assert!(flagged > 100, "only {flagged} rows came near a boundary");
        assert!(
            clear > 100,
            "only {clear} rows stayed clear of the boundaries"
        );
    }
}
