//! A chain of float element-wise functions between a DequantizeLinear and a QuantizeLinear:
//! what quantizers leave in float around an activation they do not quantize (Sigmoid,
//! HardSigmoid, HardSwish, LeakyRelu, Tanh, Erf, and arithmetic with constants such as a `Mul`
//! by a scale or a `Sub`/`Div` of a per-channel constant). A product of two chains of the same
//! input is still a function of that input's byte: GELU, `x · (1 + erf(x/√2)) / 2`, and SiLU,
//! `x · sigmoid(x)`, as exporters write them with opset 13 (see [`FloatFn::Product`]).
//!
//! Why a lookup table: the input is one byte and the constants are per channel, so the whole
//! segment `Q(f_k(…f_1(DQ(x))))` takes at most 256 values per channel. The table is computed
//! once, at import, by the very f32 sequence onnxruntime runs with graph optimizations off (one
//! op at a time, each result rounded to f32), so the integer forward is that sequence exactly.
//! The backward is the straight-through estimator of the chain: the derivative of the real
//! function at the input's value (rounding treated as identity), zero where the output
//! saturates its integer range. The float twin evaluates the same functions on real values.

use super::qparams::{round_half_even, QParams};
use super::tensor::QBatch;

/// One float function of the chain; constants hold one value or one per channel.
#[derive(Debug, Clone, PartialEq)]
pub enum FloatFn {
    Add(Vec<f32>),
    /// `x − c`.
    Sub(Vec<f32>),
    /// `c − x`.
    SubFrom(Vec<f32>),
    Mul(Vec<f32>),
    /// `x / c`.
    Div(Vec<f32>),
    Relu,
    Clip {
        min: f32,
        max: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    /// `x` for `x > 0`, else `slope · x`, with one slope or one per channel (PReLU).
    PRelu(Vec<f32>),
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Tanh,
    /// The Gauss error function (`erf`, computed in f64 and rounded to f32: onnxruntime's own
    /// f32 approximation is within an ulp of it, so a table entry can differ from its by one
    /// step only where the result sits on a rounding boundary).
    Erf,
    /// `√x` (IEEE: NaN below 0).
    Sqrt,
    /// `x^e` for a constant exponent `e` (`x · x` for 2, as onnxruntime computes a square).
    Pow(f32),
    /// `x` for `x > 0`, else `alpha · (eˣ − 1)`.
    Elu {
        alpha: f32,
    },
    /// `gamma · x` for `x > 0`, else `gamma · (alpha · eˣ − alpha)`.
    Selu {
        alpha: f32,
        gamma: f32,
    },
    /// `ln(1 + eˣ)`, as onnxruntime computes it without overflow.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `l(x) · r(x)`: a Mul whose two operands are chains of the same input (the left one
    /// often empty, `x` itself). It only ever starts a chain, so `x` is the chain's input.
    Product(Vec<FloatFn>, Vec<FloatFn>),
    /// A QuantizeLinear → DequantizeLinear pair with one scale and one zero point per channel
    /// (NNCF's asymmetric per-channel activations): `(clamp(round(x / s) + zp, lo, hi) − zp) · s`
    /// in f32 as onnxruntime computes the two nodes. The integer layers take one zero point per
    /// tensor, so such a tensor stays a float activation carrying these values exactly; the
    /// backward is straight through inside `[lo, hi]`.
    FakeQuant {
        scale: Vec<f32>,
        zero_point: Vec<f32>,
        lo: f32,
        hi: f32,
    },
}

/// `QuantizeLinear` then `DequantizeLinear` of `x` on channel `c` (see [`FloatFn::FakeQuant`]),
/// and whether the integer lay inside `[lo, hi]`.
fn fake_quant(
    scale: &[f32],
    zero_point: &[f32],
    lo: f32,
    hi: f32,
    c: usize,
    x: f32,
) -> (f32, bool) {
    let (s, z) = (at(scale, c), at(zero_point, c));
    let q = round_half_even(x / s) + z;
    let inside = q >= lo && q <= hi;
    ((q.max(lo).min(hi) - z) * s, inside)
}

fn at(v: &[f32], c: usize) -> f32 {
    v[if v.len() == 1 { 0 } else { c }]
}

use super::mlas_fns::{self, Mlas};

/// The logistic function for derivatives: the straight-through gradient needs the slope, not
/// onnxruntime's bits (the forward uses [`mlas_fns::sigmoid`]), and `exp` is cheaper on the
/// baseline x86-64 target than MLAS's fused multiply-adds.
fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl FloatFn {
    /// ONNX name of the function, for messages and `inspect`.
    pub fn name(&self) -> &'static str {
        match self {
            FloatFn::Add(_) => "Add",
            FloatFn::Sub(_) | FloatFn::SubFrom(_) => "Sub",
            FloatFn::Mul(_) => "Mul",
            FloatFn::Div(_) => "Div",
            FloatFn::Relu => "Relu",
            FloatFn::Clip { .. } => "Clip",
            FloatFn::LeakyRelu { .. } => "LeakyRelu",
            FloatFn::PRelu(_) => "PRelu",
            FloatFn::Sigmoid => "Sigmoid",
            FloatFn::HardSigmoid { .. } => "HardSigmoid",
            FloatFn::HardSwish => "HardSwish",
            FloatFn::Tanh => "Tanh",
            FloatFn::Erf => "Erf",
            FloatFn::Sqrt => "Sqrt",
            FloatFn::Pow(_) => "Pow",
            FloatFn::Elu { .. } => "Elu",
            FloatFn::Selu { .. } => "Selu",
            FloatFn::Softplus => "Softplus",
            FloatFn::Softsign => "Softsign",
            FloatFn::Product(..) => "Mul",
            FloatFn::FakeQuant { .. } => "QuantizeLinear",
        }
    }

    /// Channels the constants have (1 for a scalar or no constant).
    pub fn channels(&self) -> usize {
        match self {
            FloatFn::Add(v)
            | FloatFn::Sub(v)
            | FloatFn::SubFrom(v)
            | FloatFn::Mul(v)
            | FloatFn::Div(v)
            | FloatFn::PRelu(v) => v.len(),
            FloatFn::FakeQuant { scale, .. } => scale.len(),
            FloatFn::Product(l, r) => l.iter().chain(r).map(|f| f.channels()).max().unwrap_or(1),
            _ => 1,
        }
    }

    /// The function on channel `c`, in f32 as ONNX defines it.
    pub fn eval(&self, c: usize, x: f32) -> f32 {
        let mut y = [x];
        self.apply(&mut y, c + 1, c);
        y[0]
    }

    /// The function on every value of `y` in place, `y[i]` being on channel `(c0 + i) % cn`
    /// (NHWC storage with `cn` channels). One match per call, not per value: a float segment's
    /// chain evaluated value by value (a match and a modulo each) was 8 % of an inference.
    pub fn apply(&self, y: &mut [f32], cn: usize, c0: usize) {
        /// `f(channel, x)` on each value, the channel counted without a division.
        #[inline(always)]
        fn each(y: &mut [f32], cn: usize, c0: usize, f: impl Fn(usize, f32) -> f32) {
            let cn = cn.max(1);
            let mut c = c0 % cn;
            for x in y {
                *x = f(c, *x);
                c += 1;
                if c == cn {
                    c = 0;
                }
            }
        }
        match self {
            FloatFn::Add(v) => each(y, cn, c0, |c, x| x + at(v, c)),
            FloatFn::Sub(v) => each(y, cn, c0, |c, x| x - at(v, c)),
            FloatFn::SubFrom(v) => each(y, cn, c0, |c, x| at(v, c) - x),
            FloatFn::Mul(v) => each(y, cn, c0, |c, x| x * at(v, c)),
            FloatFn::Div(v) => each(y, cn, c0, |c, x| x / at(v, c)),
            FloatFn::Relu => each(y, cn, c0, |_, x| x.max(0.0)),
            FloatFn::Clip { min, max } => each(y, cn, c0, |_, x| x.max(*min).min(*max)),
            FloatFn::LeakyRelu { alpha } => {
                each(y, cn, c0, |_, x| if x >= 0.0 { x } else { alpha * x })
            }
            FloatFn::PRelu(v) => each(y, cn, c0, |c, x| if x > 0.0 { x } else { x * at(v, c) }),
            FloatFn::Sigmoid => mlas_fns::apply(Mlas::Sigmoid, y),
            FloatFn::HardSigmoid { alpha, beta } => {
                each(y, cn, c0, |_, x| (alpha * x + beta).clamp(0.0, 1.0))
            }
            // onnxruntime's HardSwish is `x · HardSigmoid(x)` with α = 1/6 (a product, not a
            // division by 6: the two round differently on 7 % of inputs).
            FloatFn::HardSwish => each(y, cn, c0, |_, x| {
                x * (x * (1.0 / 6.0) + 0.5).clamp(0.0, 1.0)
            }),
            FloatFn::Tanh => mlas_fns::apply(Mlas::Tanh, y),
            FloatFn::Erf => mlas_fns::apply(Mlas::Erf, y),
            FloatFn::Sqrt => each(y, cn, c0, |_, x| x.sqrt()),
            FloatFn::Pow(e) => each(y, cn, c0, |_, x| pow(x, *e)),
            FloatFn::Elu { alpha } => each(y, cn, c0, |_, x| elu(x, *alpha)),
            FloatFn::Selu { alpha, gamma } => each(y, cn, c0, |_, x| selu(x, *alpha, *gamma)),
            FloatFn::Softplus => each(y, cn, c0, |_, x| softplus(x)),
            FloatFn::Softsign => each(y, cn, c0, |_, x| x / (1.0 + x.abs())),
            FloatFn::Product(l, r) => {
                each(y, cn, c0, |c, x| eval_chain(l, c, x) * eval_chain(r, c, x))
            }
            FloatFn::FakeQuant {
                scale,
                zero_point,
                lo,
                hi,
            } => each(y, cn, c0, |c, x| {
                fake_quant(scale, zero_point, *lo, *hi, c, x).0
            }),
        }
    }

    /// `d eval / d x` on channel `c` at `x` (0 where a clamp is active).
    pub fn deriv(&self, c: usize, x: f32) -> f32 {
        match self {
            FloatFn::Add(_) | FloatFn::Sub(_) => 1.0,
            FloatFn::SubFrom(_) => -1.0,
            FloatFn::Mul(v) => at(v, c),
            FloatFn::Div(v) => 1.0 / at(v, c),
            FloatFn::Relu => (x > 0.0) as u8 as f32,
            FloatFn::Clip { min, max } => (x > *min && x < *max) as u8 as f32,
            FloatFn::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    1.0
                } else {
                    *alpha
                }
            }
            FloatFn::PRelu(_) if x > 0.0 => 1.0,
            FloatFn::PRelu(v) => at(v, c),
            FloatFn::Sigmoid => {
                let s = logistic(x);
                s * (1.0 - s)
            }
            FloatFn::HardSigmoid { alpha, beta } => {
                let v = alpha * x + beta;
                if v > 0.0 && v < 1.0 {
                    *alpha
                } else {
                    0.0
                }
            }
            FloatFn::HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    x / 3.0 + 0.5
                }
            }
            FloatFn::Tanh => 1.0 - x.tanh().powi(2),
            FloatFn::Erf => std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
            // Infinite at 0: no gradient there rather than an infinite one.
            FloatFn::Sqrt if x > 0.0 => 0.5 / x.sqrt(),
            FloatFn::Sqrt => 0.0,
            FloatFn::Pow(e) => *e * pow(x, *e - 1.0),
            FloatFn::Elu { alpha } if x <= 0.0 => alpha * x.exp(),
            FloatFn::Elu { .. } => 1.0,
            FloatFn::Selu { alpha, gamma } if x <= 0.0 => gamma * alpha * x.exp(),
            FloatFn::Selu { gamma, .. } => *gamma,
            FloatFn::Softplus => logistic(x),
            FloatFn::Softsign => 1.0 / (1.0 + x.abs()).powi(2),
            FloatFn::Product(l, r) => {
                deriv_chain(l, c, x) * eval_chain(r, c, x)
                    + eval_chain(l, c, x) * deriv_chain(r, c, x)
            }
            FloatFn::FakeQuant {
                scale,
                zero_point,
                lo,
                hi,
            } => fake_quant(scale, zero_point, *lo, *hi, c, x).1 as u8 as f32,
        }
    }

    /// The chain as text for `inspect`, a product with its two factors.
    fn describe(&self) -> String {
        match self {
            FloatFn::Product(l, r) => {
                let side = |fns: &[FloatFn]| {
                    if fns.is_empty() {
                        "x".to_string()
                    } else {
                        fns.iter()
                            .map(|f| f.describe())
                            .collect::<Vec<_>>()
                            .join(" → ")
                    }
                };
                format!("Mul({}, {})", side(l), side(r))
            }
            f => f.name().to_string(),
        }
    }
}

/// `x^e`: the square as one rounded product (what `powf(x, 2)` gives too), any other exponent
/// by `powf`.
fn pow(x: f32, e: f32) -> f32 {
    if e == 2.0 {
        x * x
    } else if e == 1.0 {
        x
    } else {
        x.powf(e)
    }
}

/// Elu as onnxruntime's functor computes it in f32.
fn elu(x: f32, alpha: f32) -> f32 {
    if x >= 0.0 {
        x
    } else {
        alpha * (x.exp() - 1.0)
    }
}

/// Selu as onnxruntime's functor computes it in f32.
fn selu(x: f32, alpha: f32, gamma: f32) -> f32 {
    if x > 0.0 {
        gamma * x
    } else {
        gamma * (alpha * x.exp() - alpha)
    }
}

/// Softplus as onnxruntime's functor computes it: `x + ln(1 + e⁻ˣ)` above 0, `ln(1 + eˣ)`
/// below, so neither side overflows.
fn softplus(x: f32) -> f32 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `y = Q(f_k(…f_1(DQ(x))))` per channel, by lookup.
#[derive(Debug, Clone)]
pub struct Pointwise {
    pub fns: Vec<FloatFn>,
    /// Channels of the tensor (the last NHWC dimension).
    pub channels: usize,
    /// Channels the tables differ over (1 when every constant is a scalar, else `channels`).
    pub table_channels: usize,
    /// `table_channels × 256` output bytes.
    pub lut: Vec<u8>,
    /// `table_channels × 256` STE derivatives `d y_real / d x_real`.
    pub dlut: Vec<f32>,
}

impl Pointwise {
    /// Build the tables for input parameters `qi` and output parameters `qo` (whose clamp range
    /// is `lo..=hi`).
    pub fn new(fns: Vec<FloatFn>, channels: usize, qi: &QParams, qo: &QParams) -> Pointwise {
        let table_channels = if fns.iter().any(|f| f.channels() > 1) {
            channels.max(1)
        } else {
            1
        };
        let mut lut = Vec::with_capacity(table_channels * 256);
        let mut dlut = Vec::with_capacity(table_channels * 256);
        for c in 0..table_channels {
            for b in 0..=255u8 {
                let x = qi.dequantize(b);
                let r = eval_chain(&fns, c, x);
                let level = round_half_even(r / qo.scale) + qo.zero_point as f32;
                lut.push(level.clamp(0.0, 255.0) as u8);
                let inside = (0.0..=255.0).contains(&level) || level.is_nan();
                dlut.push(if inside { deriv_chain(&fns, c, x) } else { 0.0 });
            }
        }
        Pointwise {
            fns,
            channels,
            table_channels,
            lut,
            dlut,
        }
    }

    fn table(&self, i: usize) -> usize {
        if self.table_channels == 1 {
            0
        } else {
            (i % self.channels.max(1)) * 256
        }
    }

    /// Run on a batch (NHWC storage: the channel is the index modulo `channels`).
    pub fn forward(&self, x: &QBatch) -> QBatch {
        let data = if self.table_channels == 1 {
            x.data.iter().map(|&q| self.lut[q as usize]).collect()
        } else {
            x.data
                .iter()
                .enumerate()
                .map(|(i, &q)| self.lut[self.table(i) + q as usize])
                .collect()
        };
        QBatch {
            n: x.n,
            shape: x.shape,
            data,
        }
    }

    /// Input gradient from the saved input bytes.
    pub fn backward_q(&self, x: &[u8], gy: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(gy)
            .enumerate()
            .map(|(i, (&q, &g))| g * self.dlut[self.table(i) + q as usize])
            .collect()
    }

    /// The float twin: the chain on real values.
    pub fn forward_real(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        self.apply_real(&mut y);
        y
    }

    /// [`Pointwise::forward_real`] in place.
    pub fn apply_real(&self, y: &mut [f32]) {
        // Each function over all values in turn: the values of `eval_chain` on each, since
        // every function acts on one value alone.
        for f in &self.fns {
            f.apply(y, self.channels, 0);
        }
    }

    /// The float twin's values ([`super::float`]: no rounding of activations): as
    /// [`Pointwise::forward_real`], but a [`FloatFn::FakeQuant`] only clamps to its range
    /// `[(lo − zp)·s, (hi − zp)·s]`, as the twin treats every quantization.
    pub fn forward_twin(&self, x: &[f32]) -> Vec<f32> {
        let mut y = x.to_vec();
        let cn = self.channels.max(1);
        for f in &self.fns {
            match f {
                FloatFn::FakeQuant {
                    scale,
                    zero_point,
                    lo,
                    hi,
                } => {
                    for (i, v) in y.iter_mut().enumerate() {
                        let c = i % cn;
                        let (s, z) = (at(scale, c), at(zero_point, c));
                        *v = v.max((lo - z) * s).min((hi - z) * s);
                    }
                }
                other => other.apply(&mut y, self.channels, 0),
            }
        }
        y
    }

    /// The float twin's input gradient at real inputs `x`.
    pub fn backward_real(&self, x: &[f32], gy: &[f32]) -> Vec<f32> {
        let cn = self.channels.max(1);
        x.iter()
            .zip(gy)
            .enumerate()
            .map(|(i, (&v, &g))| g * deriv_chain(&self.fns, i % cn, v))
            .collect()
    }

    /// The chain as text, e.g. `Mul → HardSwish`.
    pub fn describe(&self) -> String {
        self.fns
            .iter()
            .map(|f| f.describe())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

fn eval_chain(fns: &[FloatFn], c: usize, x: f32) -> f32 {
    fns.iter().fold(x, |v, f| f.eval(c, v))
}

/// Chain rule through the functions, each derivative taken at its own input.
fn deriv_chain(fns: &[FloatFn], c: usize, x: f32) -> f32 {
    let mut v = x;
    let mut d = 1.0;
    for f in fns {
        d *= f.deriv(c, v);
        v = f.eval(c, v);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Shape;

    fn q(scale: f32, zero_point: i32) -> QParams {
        QParams::unsigned(scale, zero_point)
    }

    /// QuantizeLinear → DequantizeLinear with a zero point per channel, against the two ONNX
    /// definitions written out (f32 division, round half to even, saturate, then
    /// `(q − zp) · s`), on a grid of values through both saturation ends; the derivative is 1
    /// exactly where the integer was not saturated.
    #[test]
    fn fake_quant_is_quantize_then_dequantize_per_channel() {
        let scale = vec![0.02f32, 0.05, 0.013];
        let zps = [-100i32, 3, 127];
        let f = FloatFn::FakeQuant {
            scale: scale.clone(),
            zero_point: zps.iter().map(|&z| z as f32).collect(),
            lo: -128.0,
            hi: 127.0,
        };
        assert_eq!(f.channels(), 3);
        let (mut inside, mut outside) = (0, 0);
        for i in -2000..2000 {
            let x = i as f32 * 0.0037;
            for c in 0..3 {
                let r = x / scale[c];
                let rounded = if (r - r.trunc()).abs() == 0.5 {
                    2.0 * (r / 2.0).round()
                } else {
                    r.round()
                } as i64
                    + zps[c] as i64;
                let q = rounded.clamp(-128, 127);
                let want = (q - zps[c] as i64) as f32 * scale[c];
                assert_eq!(f.eval(c, x).to_bits(), want.to_bits(), "x {x} channel {c}");
                let d = f.deriv(c, x);
                if (-128..=127).contains(&rounded) {
                    assert_eq!(d, 1.0, "x {x} channel {c}");
                    inside += 1;
                } else {
                    assert_eq!(d, 0.0, "x {x} channel {c}");
                    outside += 1;
                }
            }
        }
        assert!(inside > 1000 && outside > 1000, "{inside} {outside}");
        // In place on NHWC values, the channel cycling from `c0`.
        let mut y = vec![0.5f32; 6];
        f.apply(&mut y, 3, 1);
        let want: Vec<f32> = (0..6).map(|i| f.eval((1 + i) % 3, 0.5)).collect();
        assert_eq!(y, want);
    }

    #[test]
    fn table_is_the_f32_chain_then_quantize() {
        let (qi, qo) = (q(0.05, 128), q(1.0 / 255.0, 0));
        let p = Pointwise::new(
            vec![FloatFn::Mul(vec![2.0, 0.5]), FloatFn::Sigmoid],
            2,
            &qi,
            &qo,
        );
        assert_eq!(p.table_channels, 2);
        let x = QBatch {
            n: 1,
            shape: Shape::flat(2),
            data: vec![200, 200].into(),
        };
        let y = p.forward(&x);
        for (c, m) in [(0, 2.0f32), (1, 0.5)] {
            let r = 1.0 / (1.0 + (-(0.05 * 72.0 * m)).exp());
            assert_eq!(y.data[c], (r * 255.0).round() as u8, "channel {c}");
        }
    }

    #[test]
    fn chain_derivative_matches_finite_differences() {
        let fns = vec![
            FloatFn::Sub(vec![0.3]),
            FloatFn::Div(vec![1.7]),
            FloatFn::HardSwish,
            FloatFn::LeakyRelu { alpha: 0.1 },
            FloatFn::Tanh,
            FloatFn::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            FloatFn::SubFrom(vec![1.0]),
        ];
        for i in 0..200 {
            let x = -6.0 + i as f32 * 0.0613;
            let h = 1e-3f64;
            let f = |v: f64| eval_chain(&fns, 0, v as f32) as f64;
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            let d = deriv_chain(&fns, 0, x) as f64;
            assert!((fd - d).abs() < 2e-2, "x {x}: fd {fd} vs {d}");
        }
    }

    /// The pieces of a LayerNorm that opsets below 17 spell out: the square is one rounded
    /// product, `Sqrt` is IEEE's, and both derivatives match finite differences (the square
    /// root's is 0 at and below 0 rather than infinite or NaN).
    #[test]
    fn square_and_square_root() {
        let (sq, rt, cube) = (FloatFn::Pow(2.0), FloatFn::Sqrt, FloatFn::Pow(3.0));
        for x in [0.1f32, 0.7, 1.3, 2.9, 17.0] {
            assert_eq!(sq.eval(0, x), x * x);
            assert_eq!(rt.eval(0, x), x.sqrt());
            for f in [&sq, &rt, &cube] {
                let h = 1e-3f64;
                let v = |t: f64| f.eval(0, t as f32) as f64;
                let fd = (v(x as f64 + h) - v(x as f64 - h)) / (2.0 * h);
                let d = f.deriv(0, x) as f64;
                assert!(
                    (fd - d).abs() < 1e-2 * (1.0 + d.abs()),
                    "{f:?} at {x}: {fd} vs {d}"
                );
            }
        }
        assert_eq!(rt.deriv(0, 0.0), 0.0);
        assert_eq!(rt.deriv(0, -1.0), 0.0);
        assert!(rt.eval(0, -1.0).is_nan());
    }

    /// GELU and SiLU as exporters write them: a product of two chains of the same input. The
    /// values are the definitions (erf to f32 precision), the derivative the finite difference.
    #[test]
    fn products_of_chains_are_gelu_and_silu() {
        let gelu = vec![
            FloatFn::Product(
                vec![],
                vec![
                    FloatFn::Div(vec![std::f32::consts::SQRT_2]),
                    FloatFn::Erf,
                    FloatFn::Add(vec![1.0]),
                ],
            ),
            FloatFn::Mul(vec![0.5]),
        ];
        let silu = vec![FloatFn::Product(vec![], vec![FloatFn::Sigmoid])];
        let mish = vec![FloatFn::Product(
            vec![],
            vec![FloatFn::Softplus, FloatFn::Tanh],
        )];
        // erf(1) = 0.8427007929497149, erf(−2) = −0.9953222650189527 (tables).
        assert!((eval_chain(&[FloatFn::Erf], 0, 1.0) - 0.842_700_8).abs() < 1e-7);
        assert!((eval_chain(&[FloatFn::Erf], 0, -2.0) + 0.995_322_3).abs() < 1e-7);
        for i in 0..200 {
            let x = -5.0 + i as f32 * 0.0517;
            let (g, s) = (eval_chain(&gelu, 0, x), eval_chain(&silu, 0, x));
            let want_g = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()));
            let want_s = x as f64 / (1.0 + (-x as f64).exp());
            assert!(
                (g as f64 - want_g).abs() < 1e-5,
                "gelu({x}) = {g}, want {want_g}"
            );
            assert!(
                (s as f64 - want_s).abs() < 1e-5,
                "silu({x}) = {s}, want {want_s}"
            );
            let want_m = x as f64 * (1.0 + (x as f64).exp()).ln().tanh();
            let m = eval_chain(&mish, 0, x) as f64;
            assert!((m - want_m).abs() < 1e-5, "mish({x}) = {m}, want {want_m}");
            let (elu, selu, plus, sign) = (
                vec![FloatFn::Elu { alpha: 0.7 }],
                vec![FloatFn::Selu {
                    alpha: 1.673_263_2,
                    gamma: 1.050_701,
                }],
                vec![FloatFn::Softplus],
                vec![FloatFn::Softsign],
            );
            let xd = x as f64;
            let wants = [
                (
                    &elu,
                    if xd >= 0.0 {
                        xd
                    } else {
                        0.7 * (xd.exp() - 1.0)
                    },
                ),
                (
                    &selu,
                    1.050_701
                        * if xd > 0.0 {
                            xd
                        } else {
                            1.673_263_2 * (xd.exp() - 1.0)
                        },
                ),
                (&plus, (1.0 + xd.exp()).ln()),
                (&sign, xd / (1.0 + xd.abs())),
            ];
            for (fns, want) in wants {
                let got = eval_chain(fns, 0, x) as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "{}({x}) = {got}, want {want}",
                    fns[0].name()
                );
            }
            for fns in [&gelu, &silu, &mish, &elu, &selu, &plus, &sign] {
                let h = 1e-3f64;
                let f = |v: f64| eval_chain(fns, 0, v as f32) as f64;
                let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
                let d = deriv_chain(fns, 0, x) as f64;
                assert!((fd - d).abs() < 1e-2, "x {x}: fd {fd} vs {d}");
            }
        }
        assert_eq!(
            Pointwise::new(gelu, 1, &q(0.05, 128), &q(0.05, 10)).describe(),
            "Mul(x, Div → Erf → Add) → Mul"
        );
    }

    #[test]
    fn prelu_takes_each_channel_s_slope() {
        let f = FloatFn::PRelu(vec![0.25, -0.5, 2.0]);
        assert_eq!(f.channels(), 3);
        for (c, slope) in [0.25f32, -0.5, 2.0].into_iter().enumerate() {
            for x in [-3.0f32, -0.1, 0.0, 0.1, 3.0] {
                let want = if x > 0.0 { x } else { slope * x };
                assert_eq!(f.eval(c, x), want, "channel {c}, x {x}");
                let h = 1e-3f32;
                if x.abs() > h {
                    let fd = (f.eval(c, x + h) - f.eval(c, x - h)) / (2.0 * h);
                    assert!((fd - f.deriv(c, x)).abs() < 1e-3, "channel {c}, x {x}");
                }
            }
        }
        // One slope for every channel.
        assert_eq!(FloatFn::PRelu(vec![0.1]).eval(7, -2.0), -0.2);
    }

    #[test]
    fn a_slice_gets_each_value_s_own_channel() {
        // `apply` on a whole NHWC slice is `eval` value by value with channel `i % 3`, bit for
        // bit, for every function; a start channel shifts the channels.
        let k = vec![0.5, -1.25, 3.0];
        let fns = [
            FloatFn::Add(k.clone()),
            FloatFn::Sub(k.clone()),
            FloatFn::SubFrom(k.clone()),
            FloatFn::Mul(k.clone()),
            FloatFn::Div(k.clone()),
            FloatFn::Mul(vec![-0.75]),
            FloatFn::Relu,
            FloatFn::Clip {
                min: -1.0,
                max: 2.0,
            },
            FloatFn::LeakyRelu { alpha: 0.1 },
            FloatFn::Sigmoid,
            FloatFn::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            FloatFn::HardSwish,
            FloatFn::Tanh,
        ];
        let x: Vec<f32> = (0..23).map(|i| -4.1 + i as f32 * 0.37).collect();
        for f in &fns {
            for c0 in [0, 2] {
                let mut y = x.clone();
                f.apply(&mut y, 3, c0);
                let want: Vec<u32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = (c0 + i) % 3;
                        // Per-channel constants written out; the rest have no channel.
                        let r = match f {
                            FloatFn::Add(k) => v + k[c],
                            FloatFn::Sub(k) => v - k[c],
                            FloatFn::SubFrom(k) => k[c] - v,
                            FloatFn::Mul(k) if k.len() == 3 => v * k[c],
                            FloatFn::Div(k) => v / k[c],
                            _ => f.eval(0, v),
                        };
                        r.to_bits()
                    })
                    .collect();
                let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{} from channel {c0}", f.name());
            }
        }
    }

    #[test]
    fn saturated_outputs_pass_no_gradient() {
        // x ∈ [−12.8, 12.7] through a Relu into an output range [0, 2.55]: inputs above 2.55
        // saturate, inputs at or below 0 are gated by the Relu.
        let p = Pointwise::new(vec![FloatFn::Relu], 1, &q(0.1, 128), &q(0.01, 0));
        let g = p.backward_q(&[100, 140, 200], &[1.0, 1.0, 1.0]);
        assert_eq!(g, vec![0.0, 1.0, 0.0]);
    }
}
