//! The coordinates the optimizer works in: `φ = D·θ`, one positive factor `D` per trainable
//! value, so that SGD on a model that kept its BatchNormalization as a layer of its own behaves
//! like SGD on the same model with BatchNormalization folded into the convolution before it.
//!
//! Why: a per-channel scale layer `y_c = f_c·x_c + b_c` after a trainable conv multiplies that
//! conv's weight gradients by `f_c` and the effect of a weight change on the output by `f_c` as
//! well, so plain SGD with one learning rate moves that conv `f_c²` times faster than it would
//! move the folded conv (whose weights are `f_c·W`). onnxruntime's quantizer leaves such layers
//! when the exporter kept BatchNormalization (they import as depthwise 1×1 convs), with factors
//! up to 61 on the BatchNorm fixture: measured there (class-wise request, seed 0), retain
//! fine-tuning alone at the default learning rate dropped probe accuracy from 95.8 % to 85.0 %
//! within ten steps, while the BN-free CNN trains stably at the same rate.
//!
//! In the `φ` coordinates that conv's weights are those of the folded conv: gradients are
//! divided by `D` ([`super::Shadow::to_optimizer_coords`]), steps are divided by `D` on their way back to
//! `θ` (`train::Sgd::step_scaled`), and lengths such as OEU's forget-step norm are measured on
//! `D·θ`. Every value outside such a conv has `D = 1`, so models without per-channel scale
//! layers train exactly as before, bit for bit.

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
