//! Batch normalization with the batch's own statistics, for training from scratch.
//!
//! Why: a model exported with its BatchNormalization kept (onnxruntime then puts Q/DQ between
//! the Conv and the BatchNormalization) imports it as a per-channel layer of its own, a
//! depthwise 1×1 conv with the file's factors `γ/σ` and offsets `β − μγ/σ` and no tensor of its
//! own in the file, so fine-tuning leaves it frozen. Retrain from random weights cannot keep
//! those factors (they belong to the original's weights): it trains such a layer as PyTorch
//! trained it, normalizing each channel with the batch's mean and variance under a learned
//! scale and offset (`unlearn::retrain_bn`). Held at the original's factors instead, Retrain of
//! `fmnist_cnn_bn_qdq` ended 2.26 pp below the PyTorch retrain's test accuracy.
//!
//! How: the integer forward runs up to each such layer, takes its input's statistics, sets the
//! layer's factors for this batch ([`Graph::set_channel_affine`]) and runs on
//! ([`Graph::forward_tape_normalizing`]). The statistics are kept in [`Graph::batch_stats`] for
//! the backward, which adds the gradient through the batch mean and variance
//! ([`normalized_input_grad`]); outside Retrain that map is empty.

use rayon::prelude::*;

use super::float_seg::real_values;
use super::grad::LayerGrad;
use super::{
    ActId, ActInfo, Activation, Conv, Graph, Layer, Op, QBatch, QParams, Requant, Tape, Window,
};
use crate::kernels::PackedWeights;
use crate::{Error, Result};

/// The statistics one batch was normalized with, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// `1/√(var + ε)`.
    pub inv_std: Vec<f32>,
}

/// Per-channel mean and (biased) variance of a batch, and how many values each channel had.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub count: usize,
}

impl Conv {
    /// A per-channel affine layer: one input and one output channel per group, a 1×1 window,
    /// the output the input's shape (stride 1, no padding).
    pub fn is_channel_affine(&self) -> bool {
        self.group == self.in_shape.c
            && self.group == self.out_shape.c
            && self.row() == 1
            && self.in_shape == self.out_shape
    }
}

impl Graph {
    /// The layers Retrain normalizes with batch statistics: per-channel affine convs with no
    /// tensor of their own in the file (a BatchNormalization the exporter kept, or a
    /// per-channel Mul/Add the importer made one layer), in graph order.
    pub fn batch_norm_layers(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.binding.is_none()
                    && !self.acts[l.output].float
                    && matches!(&l.op, Op::Conv(c) if c.is_channel_affine())
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Mean and biased variance per channel of activation `a`'s real values in `x`: from a
    /// histogram of each channel's bytes (256 counts; exact sums, one parallel pass) for a
    /// quantized activation, from the reals for a float one.
    pub fn channel_moments(&self, a: ActId, x: &QBatch) -> Moments {
        moments(&self.acts[a], x)
    }

    /// Make layer `i` (a per-channel affine conv) compute `y = f[c]·x + b[c]`: weight ±127 at
    /// scale `|f|/127`, as the importer writes a BatchNormalization, and `b` as the
    /// requantization's offset (in output steps, so it is not rounded to accumulator units).
    pub fn set_channel_affine(&mut self, i: usize, f: &[f32], b: &[f32]) {
        let Op::Conv(c) = &mut self.layers[i].op else {
            return;
        };
        for (ch, w) in c.weights.iter_mut().enumerate() {
            let q: i8 = if f[ch] < 0.0 { -127 } else { 127 };
            if w.data.first() != Some(&q) {
                *w = PackedWeights::with_zero_points(vec![q], 1, 1, w.row_zero.clone());
            }
        }
        c.weight_scales = f
            .iter()
            .map(|v| (v.abs() / 127.0).max(f32::MIN_POSITIVE))
            .collect();
        c.requant.float_bias.clear();
        self.set_conv_bias(i, b);
        self.refresh_layer(i, None);
    }

    /// The real factor and offset per channel of layer `i` (a per-channel affine conv):
    /// `y = f[c]·x + b[c]`; the inverse of [`Graph::set_channel_affine`].
    pub fn channel_affine(&self, i: usize) -> (Vec<f32>, Vec<f32>) {
        self.layer_real_params(i)
            .map_or((Vec::new(), Vec::new()), |p| (p.w, p.b))
    }

    /// Make conv layer `i`'s real bias `b`, all of it in the requantization's offset (output
    /// steps), so it is not rounded to accumulator units.
    pub fn set_conv_bias(&mut self, i: usize, b: &[f32]) {
        let s_out = self.acts[self.layers[i].output].scales();
        if let Op::Conv(c) = &mut self.layers[i].op {
            c.bias.iter_mut().for_each(|v| *v = 0);
            c.requant.offset = b
                .iter()
                .enumerate()
                .map(|(ch, &v)| v / s_out[if s_out.len() > 1 { ch } else { 0 }])
                .collect();
        }
    }

    /// Integer forward keeping every activation, where each layer of `layers` (ascending) first
    /// gets this batch's statistics: `set(graph, layer, moments of its input)` runs once the
    /// layer's input is computed, before the layer runs, and sets its factors.
    pub fn forward_tape_normalizing(
        &mut self,
        images: &[u8],
        n: usize,
        layers: &[usize],
        mut set: impl FnMut(&mut Graph, usize, &Moments),
    ) -> Result<Tape> {
        let mut vals = self.start_run(images, n)?;
        let mut from = 0;
        for &i in layers {
            self.run_layers(&mut vals, from..i, false, None)?;
            let a = self.layers[i].inputs[0];
            let x = vals[a].as_ref().ok_or_else(|| {
                Error::Shape(format!(
                    "layer {i} reads activation {a} before it is computed"
                ))
            })?;
            let m = self.channel_moments(a, x);
            set(self, i, &m);
            from = i;
        }
        self.run_layers(&mut vals, from..self.layers.len(), false, None)?;
        Ok(Tape::Quant(vals))
    }
}

impl Graph {
    /// Conv layers Retrain gives a normalizing layer of their own ([`Graph::insert_norm`]):
    /// every trainable conv but a per-channel affine one, the output layer, and a conv whose
    /// output a normalizing layer reads already.
    pub fn unnormalized_convs(&self) -> Vec<usize> {
        let norms = self.batch_norm_layers();
        let normalized = |a: ActId| {
            norms
                .iter()
                .any(|&n| self.layers[n].inputs.first() == Some(&a))
        };
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                matches!(&l.op, Op::Conv(c) if !c.is_channel_affine())
                    && l.binding.is_some()
                    && l.output != self.output
                    && !self.acts[l.output].float
                    && !normalized(l.output)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Put an identity per-channel layer after conv layer `i`: the conv writes a new activation
    /// (appended to [`Graph::acts`]; no fused activation, mid-range zero point) and the new
    /// layer, at index `i + 1`, reads it and writes the conv's old output under the conv's
    /// activation. Undone by [`Graph::remove_norm`].
    pub fn insert_norm(&mut self, i: usize) -> usize {
        let out = self.layers[i].output;
        let info = self.acts[out].clone();
        let c = info.shape.c;
        let pre = self.acts.len();
        self.acts.push(ActInfo {
            name: format!("{}/before_norm", info.name),
            channel_scales: Vec::new(),
            q: QParams {
                zero_point: 128,
                ..info.q
            },
            ..info.clone()
        });
        let activation = std::mem::replace(&mut self.layers[i].activation, Activation::None);
        self.layers[i].output = pre;
        if let Op::Conv(conv) = &mut self.layers[i].op {
            // onnxruntime's order for the file's output (`OrtOrder`, `OrtFix`) holds that
            // output's scales: the conv writes another activation now. Left in place, NNCF's 1×1
            // convs with per-channel outputs ran on those stale scales and the folded MobileNets
            // ended at chance.
            conv.ort_order = None;
            conv.ort_fix = None;
            // Its offsets (a float bias, in output steps) were in the steps of each channel of
            // an output quantized per channel; the new activation has one scale.
            conv.requant
                .restate_offsets(&info.scales(), &[info.q.scale]);
        }
        let conv = Conv {
            window: Window::unit(),
            group: c,
            in_shape: info.shape,
            out_shape: info.shape,
            in_zero_point: 128,
            weights: (0..c)
                .map(|_| PackedWeights::new(vec![127], 1, 1))
                .collect(),
            weight_scales: vec![1.0 / 127.0; c],
            weight_bits: 8,
            bias: vec![0; c],
            requant: Requant {
                multiplier: vec![1.0; c],
                offset: Vec::new(),
                float_bias: Vec::new(),
                zero_point: info.q.zero_point,
                lo: 0,
                hi: 255,
            },
            ort_order: None,
            ort_fix: None,
        };
        let name = format!("{}/norm", self.layers[i].name);
        self.layers.insert(
            i + 1,
            Layer {
                name,
                op: Op::Conv(conv),
                activation,
                inputs: vec![pre],
                output: out,
                params: Vec::new(),
                binding: None,
            },
        );
        self.refresh_layer(i, None);
        self.refresh_layer(i + 1, None);
        i + 1
    }

    /// Remove the layer [`Graph::insert_norm`] put at `j` (an identity by now: the caller
    /// folded its factors into the conv before it): the conv writes the layer's output again,
    /// under its activation. The activation it wrote in between stays in [`Graph::acts`]
    /// (unread) until [`Graph::drop_unread_acts`].
    pub fn remove_norm(&mut self, j: usize) {
        let norm = self.layers.remove(j);
        self.batch_stats.remove(&j);
        let conv = &mut self.layers[j - 1];
        conv.output = norm.output;
        conv.activation = norm.activation;
        self.refresh_layer(j - 1, None);
    }

    /// Drop the activations from `len` on, which no layer reads or writes any more.
    pub fn drop_unread_acts(&mut self, len: usize) {
        let used = self
            .layers
            .iter()
            .any(|l| l.output >= len || l.inputs.iter().any(|&a| a >= len));
        if !used {
            self.acts.truncate(len);
        }
    }
}

/// [`Graph::channel_moments`] of an activation `info`.
pub fn moments(info: &ActInfo, x: &QBatch) -> Moments {
    let c = info.shape.c.max(1);
    let mut count = x.data.len() / c;
    let (s, s2) = if info.float {
        let r = real_values(info, x);
        count = r.len() / c;
        let (mut s, mut s2) = (vec![0f64; c], vec![0f64; c]);
        for px in r.chunks_exact(c) {
            for ((s, s2), &v) in s.iter_mut().zip(s2.iter_mut()).zip(px) {
                *s += v as f64;
                *s2 += v as f64 * v as f64;
            }
        }
        (s, s2)
    } else {
        let hist = x
            .data
            .par_chunks(c * PIXELS_PER_TASK)
            .fold(
                || vec![0u32; c * 256],
                |mut h, part| {
                    for px in part.chunks_exact(c) {
                        for (ch, &q) in px.iter().enumerate() {
                            h[ch * 256 + q as usize] += 1;
                        }
                    }
                    h
                },
            )
            .reduce(
                || vec![0u32; c * 256],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let lut = real_table(info);
        let (mut s, mut s2) = (vec![0f64; c], vec![0f64; c]);
        for ch in 0..c {
            for q in 0..256 {
                let (n, v) = (hist[ch * 256 + q] as f64, lut[ch * 256 + q] as f64);
                s[ch] += n * v;
                s2[ch] += n * v * v;
            }
        }
        (s, s2)
    };
    let m = count.max(1) as f64;
    let mean: Vec<f64> = s.iter().map(|v| v / m).collect();
    Moments {
        mean: mean.iter().map(|&v| v as f32).collect(),
        var: s2
            .iter()
            .zip(&mean)
            .map(|(v, mu)| (v / m - mu * mu).max(0.0) as f32)
            .collect(),
        count,
    }
}

/// Pixels per parallel task of the per-channel passes.
const PIXELS_PER_TASK: usize = 1024;

/// The real value of every byte of every channel of a quantized activation, `[c][256]`.
fn real_table(info: &ActInfo) -> Vec<f32> {
    let c = info.shape.c.max(1);
    (0..c)
        .flat_map(|ch| {
            let (s, zp) = (info.scale_of(ch), info.q.zero_point);
            (0..=255u8).map(move |q| s * super::qparams::centered(q, zp) as f32)
        })
        .collect()
}

/// The input gradient of a per-channel layer `y = f·(x − μ_B)·inv_std + β'` that normalized
/// with its batch's statistics. `gx` holds `f·dy`, the gradient with the statistics held
/// constant; the batch mean and variance depend on every input too, which subtracts
/// `f/M · (Σdy + x̂·Σdy·x̂)` per channel (`x̂ = (x − μ_B)·inv_std`, `M` values per channel). The
/// sums are the layer's own parameter gradients: `Σdy = db`, `Σdy·x = dw`, so
/// `Σdy·x̂ = (dw − μ_B·db)·inv_std`. `x` is the layer's saved input: bytes of the quantized
/// activation `info`, or its reals for a float one.
pub fn normalized_input_grad(
    gx: &mut [f32],
    x: &QBatch,
    info: &ActInfo,
    stats: &BatchStats,
    f: &[f32],
    g: &LayerGrad,
) {
    let c = stats.mean.len().max(1);
    let m = (gx.len() / c).max(1) as f32;
    // gx −= a[c] + x̂·k[c], with x̂ = (x − μ)·inv_std: per channel, gx −= a + (x − μ)·k'.
    let a: Vec<f32> = (0..c).map(|ch| f[ch] / m * g.db[ch]).collect();
    let k: Vec<f32> = (0..c)
        .map(|ch| {
            let sum_dxh = (g.dw[ch] - stats.mean[ch] * g.db[ch]) * stats.inv_std[ch];
            f[ch] / m * sum_dxh * stats.inv_std[ch]
        })
        .collect();
    let chunk = c * PIXELS_PER_TASK;
    if info.float {
        let r = x.reals();
        gx.par_chunks_mut(chunk)
            .zip(r.par_chunks(chunk))
            .for_each(|(gx, r)| {
                for (gx, r) in gx.chunks_exact_mut(c).zip(r.chunks_exact(c)) {
                    for ch in 0..c {
                        gx[ch] -= a[ch] + (r[ch] - stats.mean[ch]) * k[ch];
                    }
                }
            });
        return;
    }
    // The subtracted amount for every byte of every channel.
    let lut: Vec<f32> = real_table(info)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i / 256;
            a[ch] + (v - stats.mean[ch]) * k[ch]
        })
        .collect();
    gx.par_chunks_mut(chunk)
        .zip(x.data.par_chunks(chunk))
        .for_each(|(gx, q)| {
            for (gx, q) in gx.chunks_exact_mut(c).zip(q.chunks_exact(c)) {
                for (ch, (g, &q)) in gx.iter_mut().zip(q).enumerate() {
                    *g -= lut[ch * 256 + q as usize];
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Shape;

    /// `L = Σ w·y` with `y` batch-normalized per channel, at inputs on a uint8 grid: the
    /// gradient from the layer's sums and the correction equals central differences of `L` in
    /// f64, and the moments from the byte histogram equal the direct ones.
    #[test]
    fn normalized_input_grad_matches_finite_differences() {
        let (n, c) = (13, 3);
        let info = ActInfo {
            name: "x".into(),
            shape: Shape::flat(c),
            q: QParams::unsigned(0.05, 100),
            channel_scales: vec![0.05, 0.02, 0.1],
            float: false,
        };
        let bytes: Vec<u8> = (0..n * c).map(|i| (i * 7919 % 251) as u8).collect();
        let batch = QBatch {
            n,
            shape: info.shape,
            data: bytes.clone().into(),
        };
        let x: Vec<f64> = info
            .dequantize_all(&bytes)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let w: Vec<f64> = (0..n * c)
            .map(|i| ((i * 31 % 17) as f64 - 8.0) / 8.0)
            .collect();
        let gamma = [0.7, -1.3, 2.0];
        let eps = 1e-5;
        let direct = |x: &[f64], ch: usize| {
            let v: Vec<f64> = x.iter().skip(ch).step_by(c).copied().collect();
            let mu = v.iter().sum::<f64>() / n as f64;
            let var = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / n as f64;
            (v, mu, var)
        };
        let loss = |x: &[f64]| -> f64 {
            let mut l = 0.0;
            for ch in 0..c {
                let (v, mu, var) = direct(x, ch);
                for (p, a) in v.iter().enumerate() {
                    l += w[p * c + ch] * gamma[ch] * (a - mu) / (var + eps).sqrt();
                }
            }
            l
        };
        let m = moments(&info, &batch);
        assert_eq!(m.count, n);
        let mut mean = vec![0f32; c];
        let mut inv_std = vec![0f32; c];
        for ch in 0..c {
            let (_, mu, var) = direct(&x, ch);
            assert!(
                (m.mean[ch] as f64 - mu).abs() < 1e-5,
                "mean of channel {ch}"
            );
            assert!(
                (m.var[ch] as f64 - var).abs() < 1e-5 * (1.0 + var),
                "var of {ch}"
            );
            mean[ch] = mu as f32;
            inv_std[ch] = (1.0 / (var + eps).sqrt()) as f32;
        }
        // The layer's view: f = γ·inv_std, dy = w, dw = Σdy·x, db = Σdy, gx = f·dy.
        let f: Vec<f32> = (0..c).map(|ch| gamma[ch] as f32 * inv_std[ch]).collect();
        let mut lg = LayerGrad {
            dw: vec![0.0; c],
            db: vec![0.0; c],
        };
        for (p, (&wv, &xv)) in w.iter().zip(&x).enumerate() {
            lg.dw[p % c] += (wv * xv) as f32;
            lg.db[p % c] += wv as f32;
        }
        let mut gx: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(p, &wv)| f[p % c] * wv as f32)
            .collect();
        let plain = gx.clone();
        let stats = BatchStats { mean, inv_std };
        normalized_input_grad(&mut gx, &batch, &info, &stats, &f, &lg);
        let h = 1e-5;
        let (mut worst, mut worst_plain) = (0f64, 0f64);
        for p in 0..n * c {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[p] += h;
            b[p] -= h;
            let num = (loss(&a) - loss(&b)) / (2.0 * h);
            worst = worst.max((num - gx[p] as f64).abs());
            worst_plain = worst_plain.max((num - plain[p] as f64).abs());
        }
        assert!(worst < 2e-3, "largest difference {worst}");
        // Without the correction the gradient is far off.
        assert!(
            worst_plain > 0.1,
            "the correction changed little: {worst_plain}"
        );
    }
}
