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
    let q = g
        .iter()
        .map(|&v| {
            (crate::graph::qparams::round_half_even(v * inv).clamp(-127.0, 127.0) + 128.0) as u8
        })
        .collect();
    (q, scale)
}

/// Symmetric per-tensor int8 quantization of `g` as signed values, and its scale.
pub fn quantize_i8(g: &[f32]) -> (Vec<i8>, f32) {
    let scale = grad_scale(g);
    let inv = 1.0 / scale;
    let q = g
        .iter()
        .map(|&v| crate::graph::qparams::round_half_even(v * inv).clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

fn grad_scale(g: &[f32]) -> f32 {
    let m = g.iter().fold(0f32, |m, &v| m.max(v.abs()));
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
