//! QuantizeLinear of reals, `x / scale`, by a multiply wherever that provably gives the byte the
//! division gives.
//!
//! Why: onnxruntime divides by the scale, and a vector division is the slowest float
//! instruction there is (one `vdivps` every five cycles for eight lanes on the Xeons we measure,
//! ten or more for sixteen): it bound the whole loop, 10 % of an NNCF CNN's inference, whatever
//! the vector width. Only the byte counts, though, and the byte of `round(v / s)` depends on the
//! quotient only near a half-integer. `q = v · (1/s)` is within `2⁻¹²` of `v / s` below 2048 (two
//! roundings of at most 2⁻²⁴ relative each, `1/s` normal), and the correctly rounded quotient
//! within `2⁻¹³`; so where `q` lies more than [`NEAR_HALF`] = `2⁻¹⁰` from every half-integer,
//! both round to the same whole number. From 2048 on both clamp, whatever they round to (a zero
//! point is at most 255). A block of lanes with any value nearer a half-integer, or a NaN, is
//! done again by division: the same bytes as dividing everything, in every case.

use super::qparams::{clamped_byte, round_magic, rounded_byte};
use super::simd::lanes_dispatch;

/// Products nearer a half-integer than this take the division.
const NEAR_HALF: f32 = 1.0 / 1024.0;

lanes_dispatch! {
    /// `out[i] = rounded_byte(x[i] / scale, zp, lo, hi)`, the bytes of
    /// `(round_half_even(x[i] / scale) + zp).clamp(lo, hi) as u8`, with a multiply where that
    /// gives the same byte (sixteen lanes with AVX-512, eight with AVX2).
    quantize_reals => quantize_reals_body(
        x: &[f32],
        scale: f32,
        zp: f32,
        lo: f32,
        hi: f32,
        out: &mut [u8],
    ) if x.len() >= 16
}

/// [`quantize_reals`] in blocks of `L` lanes.
#[inline(always)]
fn quantize_reals_body<const L: usize>(
    x: &[f32],
    scale: f32,
    zp: f32,
    lo: f32,
    hi: f32,
    out: &mut [u8],
) {
    debug_assert_eq!(x.len(), out.len());
    let divided = |xs: &[f32], os: &mut [u8]| {
        for (o, &v) in os.iter_mut().zip(xs) {
            *o = rounded_byte(v / scale, zp, lo, hi);
        }
    };
    let Some(inv) = reciprocal(scale) else {
        return divided(x, out);
    };
    let mut xs = x.chunks_exact(L);
    let mut os = out.chunks_exact_mut(L);
    for (xb, ob) in (&mut xs).zip(&mut os) {
        let mut near = false;
        for (o, &v) in ob.iter_mut().zip(xb) {
            let q = v * inv;
            let r = round_magic(q);
            // Clear of every half-integer; NaN fails the comparison, so it is not.
            let clear = 0.5 - (q - r).abs() > NEAR_HALF;
            near |= !clear;
            *o = clamped_byte(r, zp, lo, hi);
        }
        if near {
            divided(xb, ob);
        }
    }
    divided(xs.remainder(), os.into_remainder());
}

/// `1 / scale` where it is normal and rounded within 2⁻²⁴ of the reciprocal (a scale within
/// `2^±64`: every scale a quantizer writes); `None` sends everything to the division.
fn reciprocal(scale: f32) -> Option<f32> {
    const EDGE: f32 = 18_446_744_073_709_551_616.0; // 2⁶⁴
    let s = scale.abs();
    (s.is_normal() && (1.0 / EDGE..=EDGE).contains(&s)).then(|| 1.0 / scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The bytes of the division for `x` at `scale` (every zero point and clamp the layers use).
    fn check(x: &[f32], scale: f32) {
        for &(zp, lo, hi) in &[(0.0, 0.0, 255.0), (128.0, 0.0, 255.0), (255.0, 3.0, 250.0)] {
            let want: Vec<u8> = x
                .iter()
                .map(|&v| rounded_byte(v / scale, zp, lo, hi))
                .collect();
            let mut got = vec![0u8; x.len()];
            quantize_reals(x, scale, zp, lo, hi, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "x {:e} (bits {:#x}) / scale {:e}",
                    x[i],
                    x[i].to_bits(),
                    scale
                );
            }
            let mut narrow = vec![0u8; x.len()];
            quantize_reals_body::<4>(x, scale, zp, lo, hi, &mut narrow);
            assert_eq!(narrow, want, "four lanes at scale {scale:e}");
        }
    }

    /// Values a few units in the last place around `(n + 1/2) · scale`, where the product and
    /// the quotient round apart most often: the test fails without the fallback (or with
    /// [`NEAR_HALF`] a thousand times smaller).
    #[test]
    fn the_multiply_gives_the_division_s_bytes_at_half_steps() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut apart = 0;
        for _ in 0..300 {
            let scale = 10f32.powf(rng.random_range(-6.0..2.0)) * rng.random_range(1.0..10.0);
            let inv = 1.0 / scale;
            let mut x = Vec::new();
            for _ in 0..64 {
                let n = rng.random_range(-300i32..300) as f32 + 0.5;
                let mid = n * scale;
                for k in -4i32..=4 {
                    let bits = (mid.to_bits() as i32 + k) as u32;
                    let v = f32::from_bits(bits);
                    apart += usize::from(round_magic(v * inv) != round_magic(v / scale));
                    x.push(v);
                }
            }
            check(&x, scale);
        }
        assert!(
            apart > 100,
            "only {apart} values where product and quotient round apart"
        );
    }

    /// Random reals of every magnitude, NaN, infinities, zeros of both signs, subnormals, at
    /// ordinary and extreme scales (past `2^±64` the division runs throughout); lengths that
    /// leave every remainder.
    #[test]
    fn the_multiply_gives_the_division_s_bytes_everywhere() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MIN_POSITIVE / 8.0,
            f32::MAX,
            -f32::MAX,
        ];
        let scales = [
            3.9215686e-3,
            0.0118,
            1e-30,
            1e-20,
            5e19,
            1e30,
            f32::MIN_POSITIVE / 4.0,
        ];
        for (t, &scale) in scales.iter().cycle().take(70).enumerate() {
            let len = t % 37 + 1;
            let x: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => specials[rng.random_range(0..specials.len())],
                    1 => f32::from_bits(rng.random()),
                    _ => rng.random_range(-300.0f32..300.0) * scale,
                })
                .collect();
            check(&x, scale);
        }
    }

    #[test]
    fn reciprocal_only_for_scales_within_the_bound() {
        assert_eq!(reciprocal(0.25), Some(4.0));
        assert!(reciprocal(1e-30).is_none());
        assert!(reciprocal(1e30).is_none());
        assert!(reciprocal(0.0).is_none());
        assert!(reciprocal(f32::NAN).is_none());
        assert!(reciprocal(f32::INFINITY).is_none());
    }
}
