//! The coordinates the optimizer works in: `φ = D·θ`, one positive factor `D` per trainable
//! value. Two factors, multiplied:
//!
//! **Grid units, at 4 bits.** A 4-bit weight of output channel `c` moves in units of its own
//! quantization step:
//! `D = G/s_c`, `s_c` the channel's weight scale and `G` the geometric mean of the layer's
//! scales (so a layer's typical channel keeps its learning rate). SGD in these coordinates is
//! SGD on the integers themselves: `Δq_c = −η/G² · ∂L/∂q_c`.
//!
//! Why: per-channel scales of one layer span 10–40× (onnxruntime's per-channel quantizer, every
//! fixture), and plain SGD on the real weights moves every channel by the same real amount, so a
//! fine-grid channel's integers change at every step while a coarse channel's never cross a
//! rounding boundary: a small update is lost to rounding exactly where the grid is coarse. At
//! 4 bits that stopped forgetting: random 10 % on the memorizing W4 CNN (3 seeds) was refused
//! every time, forget accuracy 96.6 % after 480 steps against a target of 89.7 %, Avg. Gap
//! 4.15 pp; in grid units every seed met its target, Avg. Gap 1.47 pp, and class-wise on the
//! W4 residual CNN the gap fell from 8.5 to 0.1 pp. At 8 bits, where a step is 1/16 of a 4-bit
//! one, the same coordinates changed the Avg. Gap by −0.28..+0.07 pp on the fixtures but made
//! class-wise deltas larger (BatchNorm CNN 0.54 → 1.25 % of the file, MobileNetV2 4.36 →
//! 4.92 % with 2.5× the steps), so 8-bit weights keep `D = 1` and train bit for bit as before;
//! so do per-tensor weights at any width (one scale). Biases keep `D = 1`: an int32 bias's grid
//! is far finer than any step.
//!
//! **Folded BatchNorm.** SGD on a model that kept its BatchNormalization as a layer of its own
//! should behave like SGD on the same model with BatchNormalization folded into the
//! convolution before it. A per-channel scale layer `y_c = f_c·x_c + b_c` after a trainable
//! conv multiplies that conv's weight gradients by `f_c` and the effect of a weight change on
//! the output by `f_c` as well, so plain SGD with one learning rate moves that conv `f_c²` times
//! faster than it would move the folded conv (whose weights are `f_c·W`). onnxruntime's
//! quantizer leaves such layers when the exporter kept BatchNormalization (they import as
//! depthwise 1×1 convs), with factors up to 61 on the BatchNorm fixture: measured there
//! (class-wise request, seed 0), retain fine-tuning alone at the default learning rate dropped
//! probe accuracy from 95.8 % to 85.0 % within ten steps, while the BN-free CNN trains stably at
//! the same rate. Every value of such a conv (weights and bias) gets `D = |f_c|`.
//!
//! In the `φ` coordinates gradients are divided by `D` ([`super::Shadow::to_optimizer_coords`]),
//! steps are divided by `D` on their way back to `θ` (`train::Sgd::step_scaled`), and lengths
//! such as OEU's forget-step norm are measured on `D·θ`.

use super::{Graph, Op};

/// `D` of every trainable value, in the layout of [`super::Shadow::theta`]: for a weight or bias
/// of output channel `c` of a conv/linear layer whose output only a per-channel 1×1 layer
/// reads, `|f_c|` (that layer's real weight of channel `c`); 1 everywhere else. `segments`
/// gives each value's layer and whether it is a weight; `row` is the layer's weights per
/// output channel. Returns an empty vector when every factor is 1.
pub fn fold_factors(g: &Graph, segments: &[(usize, bool, std::ops::Range<usize>)]) -> Vec<f32> {
    let mut d = Vec::new();
    let len = segments.iter().map(|s| s.2.end).max().unwrap_or(0);
    for (layer, is_weight, range) in segments {
        let Some(f) = channel_scale_after(g, *layer) else {
            continue;
        };
        if d.is_empty() {
            d = vec![1.0f32; len];
        }
        log::debug!(
            "optimizer coordinates: '{}' trains as if the per-channel layer after it were folded in (factors {:.3e}..{:.3e})",
            g.layers[*layer].name,
            f.iter().cloned().fold(f32::INFINITY, f32::min),
            f.iter().cloned().fold(0.0, f32::max)
        );
        let per = if *is_weight {
            range.len() / f.len().max(1)
        } else {
            1
        };
        for (k, v) in d[range.clone()].iter_mut().enumerate() {
            *v = f[(k / per.max(1)).min(f.len() - 1)];
        }
    }
    d
}

/// `|f_c|` per output channel of layer `i` when its output is read by exactly one layer and
/// that layer is a per-channel 1×1 scale (a depthwise 1×1 conv, stride 1, no padding) with
/// finite non-zero factors; `None` otherwise.
fn channel_scale_after(g: &Graph, i: usize) -> Option<Vec<f32>> {
    let out = g.layers[i].output;
    let mut readers = g.layers.iter().filter(|l| l.inputs.contains(&out));
    let next = readers.next()?;
    if readers.next().is_some() || g.output == out {
        return None;
    }
    let Op::Conv(c) = &next.op else {
        return None;
    };
    let w = &c.window;
    let unit = w.kh == 1 && w.kw == 1 && w.stride_h == 1 && w.stride_w == 1 && w.pads == [0; 4];
    if !unit || !c.is_depthwise() || c.weights.len() != c.out_shape.c {
        return None;
    }
    let f: Vec<f32> = (0..c.out_shape.c)
        .map(|ch| (c.weights[ch].values()[0] as f32 * c.scale_of(ch)).abs())
        .collect();
    f.iter().all(|v| v.is_finite() && *v > 0.0).then_some(f)
}

/// Weights of at most this many bits train in grid units (see the module doc).
pub const GRID_BITS: u32 = 4;

/// Grid-unit factors `G/s_c` of every integer weight of at most [`GRID_BITS`] bits (see the
/// module doc), in the layout of
/// [`super::Shadow::theta`]; `segments` gives each value's layer and whether it is an integer
/// weight. Empty when every layer has one weight scale (all factors 1).
pub fn grid_factors(g: &Graph, segments: &[(usize, bool, std::ops::Range<usize>)]) -> Vec<f32> {
    let len = segments.iter().map(|s| s.2.end).max().unwrap_or(0);
    let mut d = Vec::new();
    for (layer, is_weight, range) in segments {
        let Some(scales) = weight_scales(g, *layer).filter(|_| *is_weight) else {
            continue;
        };
        let ln_mean = scales.iter().map(|s| f64::from(*s).ln()).sum::<f64>() / scales.len() as f64;
        let gm = ln_mean.exp();
        let per = range.len() / scales.len();
        if per == 0 || scales.iter().all(|&s| s == scales[0]) {
            continue;
        }
        if d.is_empty() {
            d = vec![1.0f32; len];
        }
        for (k, v) in d[range.clone()].iter_mut().enumerate() {
            *v = (gm / f64::from(scales[(k / per).min(scales.len() - 1)])) as f32;
        }
    }
    d
}

/// Per-channel weight scales of integer layer `i` when its weights have at most
/// [`GRID_BITS`] bits and all scales are finite and positive.
fn weight_scales(g: &Graph, i: usize) -> Option<Vec<f32>> {
    use super::params::{dims, weight_bits, weight_scale};
    weight_bits(g, i).filter(|&b| b <= GRID_BITS)?;
    let (c_out, _) = dims(g, i)?;
    let s: Vec<f32> = (0..c_out).map(|c| weight_scale(g, i, c)).collect();
    (!s.is_empty() && s.iter().all(|v| v.is_finite() && *v > 0.0)).then_some(s)
}

/// `a·b` elementwise, an empty vector standing for all ones.
pub fn combine(a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b,
        (_, true) => a,
        _ => a.iter().zip(&b).map(|(x, y)| x * y).collect(),
    }
}
