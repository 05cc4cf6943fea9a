//! Shared pieces of the backward pass: what one layer's gradient is, and the dynamic per-tensor
//! int8 quantization of gradients used by the int8 backward path.
//!
//! Gradients are real-valued (`∂L/∂real value`), NHWC like the activations. The int8 path
//! quantizes an output gradient once per layer and batch, symmetric, to −127..127 (scale
//! `max|g| / 127`), so the backward GEMMs run on the same integer kernels as the forward.

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
    let scale = grad_scale(g);
    let inv = 1.0 / scale;
    // `(v + 128) as u8` of the clamped value: the signed byte with its top bit flipped, and 0
    // for NaN as the cast gives.
    let q = map_par(g, |v| {
        let r = crate::graph::qparams::round_half_even(v * inv);
        if r.is_nan() {
            0
        } else {
            clamped_i8(r) as u8 ^ 0x80
        }
    });
    (q, scale)
}

/// Symmetric per-tensor int8 quantization of `g` as signed values, and its scale.
pub fn quantize_i8(g: &[f32]) -> (Vec<i8>, f32) {
    let scale = grad_scale(g);
    let inv = 1.0 / scale;
    let q = map_par(g, |v| {
        let r = crate::graph::qparams::round_half_even(v * inv);
        if r.is_nan() {
            0
        } else {
            clamped_i8(r)
        }
    });
    (q, scale)
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

/// `g.map(f)`, element by element on rayon's pool for long inputs (each output depends on its
/// input only, so the bytes are those of a sequential map).
fn map_par<T: Send>(g: &[f32], f: impl Fn(f32) -> T + Sync) -> Vec<T> {
    use rayon::prelude::*;
    g.par_iter().with_min_len(PAR_MIN).map(|&v| f(v)).collect()
}

/// Inputs shorter than this are quantized on the calling thread.
const PAR_MIN: usize = 1 << 15;

fn grad_scale(g: &[f32]) -> f32 {
    use rayon::prelude::*;
    // A maximum is exact in any order (`max` skips NaN, as the sequential fold did).
    let m = g
        .par_chunks(PAR_MIN)
        .map(|c| c.iter().fold(0f32, |m, &v| m.max(v.abs())))
        .reduce(|| 0f32, f32::max);
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
    use super::{quantize_i8, quantize_u8};
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
}
