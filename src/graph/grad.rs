//! Shared pieces of the backward pass: what one layer's gradient is, and the dynamic per-tensor
//! int8 quantization of gradients used by the int8 backward path.
//!
//! Gradients are real-valued (`∂L/∂real value`), NHWC like the activations. The int8 path
//! quantizes an output gradient once per layer and batch, symmetric, to −127..127 (scale
//! `max|g| / 127`), so the backward GEMMs run on the same integer kernels as the forward.

use rayon::prelude::*;

use super::simd::avx2_dispatch;
use super::transpose::gather_columns;

/// Which arithmetic the backward GEMMs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum GradPath {
    /// f32 on dequantized activations and weights (the reference path).
    #[serde(alias = "f32")]
    F32,
    /// Gradients quantized per tensor to int8; integer GEMMs on the int8 kernels.
    #[default]
    #[serde(alias = "int8")]
    Int8,
}

impl std::str::FromStr for GradPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(GradPath::F32),
            "int8" => Ok(GradPath::Int8),
            _ => Err(format!("unknown gradient path '{s}' (f32 or int8)")),
        }
    }
}

/// Gradients of one conv/linear layer's parameters, in graph layout, real units.
#[derive(Debug, Clone, Default)]
pub struct LayerGrad {
    /// `∂L/∂W_real`, `c_out × row`.
    pub dw: Vec<f32>,
    /// `∂L/∂b_real`, `c_out`.
    pub db: Vec<f32>,
}

/// Symmetric per-tensor int8 quantization of `g`: values as storage bytes shifted by +128
/// (zero point 128, the form [`crate::kernels::gemm_u8i8`] takes as its `a` operand) and scale.
pub fn quantize_u8(g: &[f32]) -> (Vec<u8>, f32) {
    quantize_u8_scaled(g, &[1.0])
}

/// [`quantize_u8`] of `g` with each value multiplied by its channel's factor first (`g` is
/// `[pixels][channels]`, `scales` one factor per channel): the values `v·s` are formed once per
/// pass, as a scaled copy would hold them, without the copy.
pub fn quantize_u8_scaled(g: &[f32], scales: &[f32]) -> (Vec<u8>, f32) {
    let scales = if scales.is_empty() {
        &[1.0][..]
    } else {
        scales
    };
    let chunk = scaled_chunk(scales);
    let scale = scale_of_max(par_max(g, chunk, |part, m| max_abs_scaled(part, scales, m)));
    (quantize_u8_scaled_at(g, scales, scale), scale)
}

/// [`quantize_u8_scaled`] of `g` (channel factors `scales`, not empty) and [`i8_step`] of `g`,
/// both maxima taken in one pass over `g` (the conv backward needs both, and each pass over a
/// batch's gradient reads it from memory).
pub fn quantize_u8_scaled_and_step(g: &[f32], scales: &[f32]) -> ((Vec<u8>, f32), f32) {
    let chunk = scaled_chunk(scales);
    let (scaled, plain) = g
        .par_chunks(chunk)
        .map(|part| {
            let mut m = [0; 2];
            max_abs_both(part, scales, &mut m);
            (m[0], m[1])
        })
        .reduce(|| (0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    let scale = scale_of_max(f32::from_bits(scaled));
    let step = scale_of_max(f32::from_bits(plain));
    ((quantize_u8_scaled_at(g, scales, scale), scale), step)
}

/// Chunks of whole pixels for the parallel passes over `g` with channel factors `scales`.
fn scaled_chunk(scales: &[f32]) -> usize {
    let c = scales.len().max(1);
    (PAR_MIN / c).max(1) * c
}

/// `g` times its channel factors `scales` (not empty), quantized with step `scale`.
fn quantize_u8_scaled_at(g: &[f32], scales: &[f32], scale: f32) -> Vec<u8> {
    let chunk = scaled_chunk(scales);
    let inv = 1.0 / scale;
    let mut q = vec![0u8; g.len()];
    q.par_chunks_mut(chunk)
        .zip(g.par_chunks(chunk))
        .for_each(|(q, g)| quantize_u8_into(g, scales, inv, q));
    q
}

/// Symmetric per-tensor int8 quantization of `g` as signed values, and its scale.
pub fn quantize_i8(g: &[f32]) -> (Vec<i8>, f32) {
    let scale = i8_step(g);
    (quantize_i8_at(g, 1.0 / scale), scale)
}

/// `g` quantized as [`quantize_i8`] does with a step already known (`1 / inv`, from
/// [`i8_step`]), so a caller that needs the step first does not take the maximum twice.
pub fn quantize_i8_at(g: &[f32], inv: f32) -> Vec<i8> {
    let mut q = vec![0i8; g.len()];
    q.par_chunks_mut(PAR_MIN)
        .zip(g.par_chunks(PAR_MIN))
        .for_each(|(q, g)| quantize_i8_into(g, inv, q));
    q
}

/// The step [`quantize_i8`] uses for `g`: `max|g| / 127` (1 for an all-zero or non-finite
/// maximum).
pub fn i8_step(g: &[f32]) -> f32 {
    scale_of_max(par_max(g, PAR_MIN, max_abs))
}

/// Channels `c0..c0+cn` of `g` (`[pixels][c]`) quantized with step `1 / inv` as
/// [`quantize_i8`] does, written transposed: `cn` rows of `pixels` values. The int8 weight
/// gradient reads the output gradient channel-major; quantizing straight into that layout
/// saves a pass over the batch's gradient and an i8 copy of it.
pub fn quantize_i8_t(g: &[f32], c: usize, (c0, cn): (usize, usize), inv: f32) -> Vec<i8> {
    let c = c.max(1);
    let pixels = g.len() / c;
    let mut out = vec![0i8; cn * pixels];
    if cn == 0 || pixels == 0 {
        return out;
    }
    // Bands of T_TILE pixels: a band is quantized in its own layout (contiguous, so that loop
    // vectorizes) into a buffer that stays in L1, then each channel's run of the band is
    // gathered from it (serial: the caller runs chunks of images in parallel).
    let mut band = vec![0i8; T_TILE * c];
    let mut rows: Vec<&mut [i8]> = out.chunks_mut(pixels).collect();
    for p0 in (0..pixels).step_by(T_TILE) {
        let pn = T_TILE.min(pixels - p0);
        let band = &mut band[..pn * c];
        quantize_i8_into(&g[p0 * c..(p0 + pn) * c], inv, band);
        gather_columns(band, c, c0, &mut rows, p0);
    }
    out
}

/// Pixels per band of [`quantize_i8_t`] (a band of 64 channels is 4 KB of bytes).
const T_TILE: usize = 64;

/// Bits of an f32 infinity: larger bit patterns (sign cleared) are NaN.
const INF_BITS: u32 = 0x7f80_0000;

/// The magnitude of `v` as bits, NaN as 0: for non-negative floats the bit patterns order as
/// the values do, so an integer maximum (which vectorizes) equals `f32::max`'s, NaN skipped.
#[inline(always)]
fn abs_bits(v: f32) -> u32 {
    let b = v.to_bits() & 0x7fff_ffff;
    if b > INF_BITS {
        0
    } else {
        b
    }
}

avx2_dispatch! {
    /// `*m` = bits of the largest |v| in `g` (NaN skipped, 0 for none).
    max_abs => max_abs_body(g: &[f32], m: &mut u32)
}

#[inline(always)]
fn max_abs_body(g: &[f32], m: &mut u32) {
    max_abs_scaled_body(g, &[1.0], m)
}

avx2_dispatch! {
    /// `*m` = bits of the largest |v·s| over `g`'s pixels (`[pixels][scales.len()]`).
    max_abs_scaled => max_abs_scaled_body(g: &[f32], scales: &[f32], m: &mut u32)
}

/// Lanes of the running maxima: independent per lane, so the loop vectorizes (a single running
/// maximum compiled to a scalar compare-and-move chain).
const LANES: usize = 16;

avx2_dispatch! {
    /// `m` = bits of the largest |v·s| and of the largest |v| over `g`'s pixels
    /// (`[pixels][scales.len()]`): [`max_abs_scaled`] and [`max_abs`] in one pass.
    max_abs_both => max_abs_both_body(g: &[f32], scales: &[f32], m: &mut [u32; 2])
}

#[inline(always)]
fn max_abs_both_body(g: &[f32], scales: &[f32], m: &mut [u32; 2]) {
    let (factors, lanes) = lane_factors(scales);
    let (mut scaled, mut plain) = (vec![0u32; lanes], vec![0u32; lanes]);
    let mut rows = g.chunks_exact(lanes);
    let mut take = |row: &[f32]| {
        for (((b, p), &v), &s) in scaled.iter_mut().zip(&mut plain).zip(row).zip(&factors) {
            *b = (*b).max(abs_bits(v * s));
            *p = (*p).max(abs_bits(v));
        }
    };
    for row in &mut rows {
        take(row);
    }
    take(rows.remainder());
    m[0] = scaled.into_iter().max().unwrap_or(0);
    m[1] = plain.into_iter().max().unwrap_or(0);
}

/// The factor of each lane of the running maxima, and their number: one lane per channel when
/// there are channels, else [`LANES`] lanes (then every factor is the one scale).
#[inline(always)]
fn lane_factors(scales: &[f32]) -> (Vec<f32>, usize) {
    let lanes = if scales.len() > 1 {
        scales.len()
    } else {
        LANES
    };
    (
        (0..lanes).map(|j| scales[j % scales.len()]).collect(),
        lanes,
    )
}

#[inline(always)]
fn max_abs_scaled_body(g: &[f32], scales: &[f32], m: &mut u32) {
    // One running maximum per lane ([`lane_factors`]).
    let (factors, lanes) = lane_factors(scales);
    let mut best = vec![0u32; lanes];
    let mut rows = g.chunks_exact(lanes);
    for row in &mut rows {
        for ((b, &v), &s) in best.iter_mut().zip(row).zip(&factors) {
            *b = (*b).max(abs_bits(v * s));
        }
    }
    for (b, (&v, &s)) in best.iter_mut().zip(rows.remainder().iter().zip(&factors)) {
        *b = (*b).max(abs_bits(v * s));
    }
    *m = best.into_iter().max().unwrap_or(0);
}

avx2_dispatch! {
    /// `q = round_half_even(v·inv)` clamped to ±127, as signed bytes, NaN as 0.
    quantize_i8_into => quantize_i8_body(g: &[f32], inv: f32, q: &mut [i8])
}

#[inline(always)]
fn quantize_i8_body(g: &[f32], inv: f32, q: &mut [i8]) {
    for (q, &v) in q.iter_mut().zip(g) {
        *q = to_i8(v * inv);
    }
}

avx2_dispatch! {
    /// `q = round_half_even(v·s·inv)` clamped to ±127, plus 128, as storage bytes (NaN as byte
    /// 0, as the cast gave); `g` is `[pixels][scales.len()]`.
    quantize_u8_into => quantize_u8_body(g: &[f32], scales: &[f32], inv: f32, q: &mut [u8])
}

#[inline(always)]
fn quantize_u8_body(g: &[f32], scales: &[f32], inv: f32, q: &mut [u8]) {
    if let [s] = scales {
        for (q, &v) in q.iter_mut().zip(g) {
            *q = to_u8(v * s * inv);
        }
        return;
    }
    let c = scales.len().max(1);
    for (q, px) in q.chunks_exact_mut(c).zip(g.chunks_exact(c)) {
        for ((q, &v), &s) in q.iter_mut().zip(px).zip(scales) {
            *q = to_u8(v * s * inv);
        }
    }
}

/// `round_half_even(x)` clamped to ±127, plus 128, as a storage byte; NaN as byte 0 (the value
/// the cast `(NaN + 128.0) as u8` gave).
#[inline(always)]
fn to_u8(x: f32) -> u8 {
    let r = crate::graph::qparams::round_half_even(x);
    if r.is_nan() {
        0
    } else {
        clamped_i8(r) as u8 ^ 0x80
    }
}

/// `round_half_even(x)` clamped to ±127 as a signed byte, NaN as 0.
#[inline(always)]
fn to_i8(x: f32) -> i8 {
    let r = crate::graph::qparams::round_half_even(x);
    if r.is_nan() {
        0
    } else {
        clamped_i8(r)
    }
}

/// `r.clamp(-127.0, 127.0) as i8` for a whole number or ±∞ `r` (not NaN), read off the bits of
/// `c + 1.5·2²³` (exact for |c| < 2²²): the same value as the cast, but a loop over it
/// vectorizes, where x86 has no vector conversion from f32 to bytes and compiled the cast to
/// one scalar conversion per value (a tenth of the backward's serial time in a profile).
#[inline(always)]
fn clamped_i8(r: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let c = r.clamp(-127.0, 127.0);
    (c + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits()) as u8 as i8
}

/// The largest magnitude in `g` (as [`abs_bits`]), over chunks of `chunk` values in parallel:
/// a maximum is exact in any order.
fn par_max(g: &[f32], chunk: usize, f: impl Fn(&[f32], &mut u32) + Sync) -> f32 {
    let bits = g
        .par_chunks(chunk.max(1))
        .map(|part| {
            let mut m = 0;
            f(part, &mut m);
            m
        })
        .reduce(|| 0, u32::max);
    f32::from_bits(bits)
}

/// Inputs shorter than this are quantized on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// The per-tensor step for a largest magnitude `m`: `m / 127`, or 1 when `m` is 0 or infinite.
fn scale_of_max(m: f32) -> f32 {
    if m > 0.0 && m.is_finite() {
        m / 127.0
    } else {
        1.0
    }
}

/// Add `src` into `dst` element-wise.
pub fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

#[cfg(test)]
mod tests {
    use super::{
        i8_step, quantize_i8, quantize_i8_t, quantize_u8, quantize_u8_scaled,
        quantize_u8_scaled_and_step,
    };
    use crate::graph::qparams::round_half_even;

    /// The casts these functions replaced, element by element.
    #[test]
    fn quantization_equals_the_plain_casts() {
        let mut g: Vec<f32> = (0..70_000)
            .map(|i| ((i as f32) * 0.37).sin() * (1 + i % 13) as f32)
            .collect();
        g.extend([
            0.5,
            -0.5,
            1.5,
            -2.5,
            127.5,
            -127.5,
            0.0,
            -0.0,
            f32::NAN,
            1e-30,
        ]);
        for scale_hint in [1.0f32, 1e-3, 1e3] {
            let g: Vec<f32> = g.iter().map(|v| v * scale_hint).collect();
            let (qi, si) = quantize_i8(&g);
            let (qu, su) = quantize_u8(&g);
            let m = g.iter().fold(0f32, |m, &v| m.max(v.abs()));
            assert_eq!(si, m / 127.0);
            assert_eq!(su, si);
            let inv = 1.0 / si;
            for (j, &v) in g.iter().enumerate() {
                let r = round_half_even(v * inv).clamp(-127.0, 127.0);
                assert_eq!(qi[j], r as i8, "{v}");
                assert_eq!(qu[j], (r + 128.0) as u8, "{v}");
            }
        }
        // Non-finite gradients: ±∞ saturate, NaN is 0; the scale ignores them.
        let (qi, si) = quantize_i8(&[f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 2.0]);
        assert_eq!(si, 1.0);
        assert_eq!(qi, vec![127, -127, 0, 2]);
    }

    /// The fused channel scaling gives the bytes and step of quantizing a scaled copy.
    #[test]
    fn scaled_quantization_equals_quantizing_a_scaled_copy() {
        for c in [1usize, 3, 10, 32, 128] {
            let scales: Vec<f32> = (0..c).map(|j| 1e-3 * (1 + j * 7 % 11) as f32).collect();
            let mut g: Vec<f32> = (0..c * 997)
                .map(|i| ((i as f32) * 0.61).cos() * (1 + i % 5) as f32)
                .collect();
            let at = 5 % g.len();
            g[at] = f32::NAN;
            let copy: Vec<f32> = g
                .chunks_exact(c)
                .flat_map(|px| px.iter().zip(&scales).map(|(&v, &s)| v * s))
                .collect();
            assert_eq!(
                quantize_u8_scaled(&g, &scales),
                quantize_u8(&copy),
                "{c} channels"
            );
        }
    }

    /// The two maxima taken in one pass give the bytes and steps of taking them apart.
    #[test]
    fn both_maxima_in_one_pass_equal_each_alone() {
        for (c, pixels) in [(1usize, 70_000usize), (3, 5), (10, 997), (64, 1200)] {
            let scales: Vec<f32> = (0..c).map(|j| 1e-3 * (1 + j * 7 % 11) as f32).collect();
            let mut g: Vec<f32> = (0..c * pixels)
                .map(|i| ((i as f32) * 0.61).cos() * (1 + i % 5) as f32)
                .collect();
            g[c * pixels / 3] = f32::NAN;
            g[c * pixels / 2] = 9.0;
            let (scaled, step) = quantize_u8_scaled_and_step(&g, &scales);
            assert_eq!(scaled, quantize_u8_scaled(&g, &scales), "{c} channels");
            assert_eq!(step, i8_step(&g), "{c} channels");
            assert_ne!(scaled.1, step, "the two steps differ here");
        }
    }

    /// Quantizing into the transposed layout gives the bytes of quantizing, then transposing,
    /// for every channel range and band remainder.
    #[test]
    fn transposed_quantization_equals_quantize_then_transpose() {
        for (c, pixels) in [
            (1usize, 5usize),
            (16, 64),
            (32, 130),
            (10, 257),
            (24, 71),
            (64, 200),
        ] {
            let mut g: Vec<f32> = (0..c * pixels)
                .map(|i| ((i as f32) * 0.29).sin() * (1 + i % 7) as f32)
                .collect();
            g[c * pixels / 2] = f32::NAN;
            let (q, step) = quantize_i8(&g);
            assert_eq!(i8_step(&g), step);
            for (c0, cn) in [(0, c), (c / 2, c - c / 2), (c - 1, 1)] {
                let t = quantize_i8_t(&g, c, (c0, cn), 1.0 / step);
                for j in 0..cn {
                    for p in 0..pixels {
                        assert_eq!(t[j * pixels + p], q[p * c + c0 + j], "c {c} px {p} ch {j}");
                    }
                }
            }
        }
    }
}
