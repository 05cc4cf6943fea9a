//! LayerNormalization over the features of a flat activation, in float:
//! `y = (x − mean) / √(var + ε) · γ + β`, with mean and variance over each sample's features.
//!
//! Why float: the statistics mix every feature of a sample, so an output byte is no function of
//! one input byte; quantizers leave the op in float between a DequantizeLinear and a
//! QuantizeLinear (onnxruntime's `quantize_static` quantizes its γ and β as constants, NNCF
//! keeps them float, either way the op itself runs on reals). The layer writes a float
//! activation (see [`super::float_seg`]) and a following QuantizeLinear is its own layer.
//!
//! Numerics: onnxruntime 1.32's CPU kernel (x86-64), found by matching its optional mean and
//! inverse-deviation outputs bit for bit on 20,000 rows each of 64, 100 and 128 features: the
//! mean is the correctly rounded f32 of the exact mean (summed here in f64); the variance is a
//! second pass, `(x − mean)²` summed by fused multiply-adds in eight f32 lanes (feature `k` in
//! lane `k mod 8`), the lanes added pairwise (0+4, 1+5, …, then halves again), the last
//! `F mod 8` features added one by one after that, divided by `F` in f32; then `1 / √(var + ε)`
//! in f32; the output is `(x − mean)·inv` and one fused multiply-add with γ and β. Every mean,
//! inverse deviation and output of those rows agreed for `F` a multiple of 8 or 4 more; with
//! other tails 98–99.9 % of the inverse deviations did (their exact tail order is not known).
//! Below 8 features its kernel takes another path, not matched (here the f64 statistics).
//! The one-pass `E[x²] − mean²` in f32 or f64 and every plain `1/√` variant tried matched 63–85 %.
//!
//! γ and β are frozen (the file's values); the backward is the exact gradient of the forward
//! with respect to `x`, `∂x = (g·γ − mean(g·γ) − x̂·mean(g·γ·x̂)) / σ` with `x̂ = (x − mean) / σ`,
//! in f64 per sample.

/// LayerNormalization of `[N, F]` activations over `F`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale per feature.
    pub gamma: Vec<f32>,
    /// Shift per feature (zeros when the node has none).
    pub beta: Vec<f32>,
    pub epsilon: f32,
}

impl LayerNorm {
    /// Features per sample.
    fn features(&self) -> usize {
        self.gamma.len().max(1)
    }

    /// Mean and `√(var + ε)` of one sample, in f64.
    fn stats(&self, x: &[f32]) -> (f64, f64) {
        let n = x.len().max(1) as f64;
        let (mut s, mut sq) = (0f64, 0f64);
        for &v in x {
            let v = v as f64;
            s += v;
            sq += v * v;
        }
        let mean = s / n;
        let var = (sq / n - mean * mean).max(0.0);
        (mean, (var + self.epsilon as f64).sqrt())
    }

    /// Mean and `1 / √(var + ε)` of one sample as onnxruntime computes them (module docs).
    #[inline(always)]
    fn ort_stats(&self, x: &[f32]) -> (f32, f32) {
        const LANES: usize = 8;
        let n = x.len();
        if n < LANES {
            let (mean, sd) = self.stats(x);
            return (mean as f32, 1.0 / sd as f32);
        }
        let mean = (x.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
        let mut acc = [0f32; LANES];
        let body = n / LANES * LANES;
        for chunk in x[..body].chunks_exact(LANES) {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                let d = v - mean;
                *a = d.mul_add(d, *a);
            }
        }
        let half = [
            acc[0] + acc[4],
            acc[1] + acc[5],
            acc[2] + acc[6],
            acc[3] + acc[7],
        ];
        let mut s = (half[0] + half[2]) + (half[1] + half[3]);
        for &v in &x[body..] {
            let d = v - mean;
            s += d * d;
        }
        let var = s / n as f32;
        (mean, 1.0 / (var + self.epsilon).sqrt())
    }

    /// The normalized, scaled and shifted values of `x` (samples of [`Self::gamma`]`.len()`
    /// features one after another).
    pub fn forward_real(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { self.forward_fma(x, &mut y) };
            return y;
        }
        self.forward_into(x, &mut y);
        y
    }

    /// [`Self::forward_into`] compiled with FMA and AVX2: the baseline x86-64 target has no
    /// fused multiply-add instruction, so each `mul_add` was a call into the library's `fmaf`
    /// (an eighth of an MLP's `eval` with two LayerNorms). The same operations, the same
    /// values.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_fma(&self, x: &[f32], y: &mut [f32]) {
        self.forward_into(x, y)
    }

    /// [`Self::forward_real`] into `y` (as long as `x`).
    #[inline(always)]
    fn forward_into(&self, x: &[f32], y: &mut [f32]) {
        let f = self.features();
        for (o, row) in y.chunks_exact_mut(f).zip(x.chunks_exact(f)) {
            let (mean, inv) = self.ort_stats(row);
            // onnxruntime forms `(x − mean)·inv` and then one fused multiply-add with γ and β
            // (given its mean and inv, that reproduced all 192,000 outputs of two layers of
            // an NNCF MLP; `· γ + β` in two roundings differed in 26 %).
            for (((o, &v), &g), &b) in o.iter_mut().zip(row).zip(&self.gamma).zip(&self.beta) {
                *o = ((v - mean) * inv).mul_add(g, b);
            }
        }
    }

    /// Gradient with respect to the input, from the saved input `x` and the output gradient.
    pub fn backward(&self, x: &[f32], gy: &[f32]) -> Vec<f32> {
        let f = self.features();
        let mut dx = vec![0f32; x.len()];
        for ((d, row), g) in dx
            .chunks_exact_mut(f)
            .zip(x.chunks_exact(f))
            .zip(gy.chunks_exact(f))
        {
            let (mean, sd) = self.stats(row);
            let (n, inv) = (f as f64, 1.0 / sd);
            let (mut m1, mut m2) = (0f64, 0f64);
            for ((&v, &g), &gam) in row.iter().zip(g).zip(&self.gamma) {
                let gg = g as f64 * gam as f64;
                m1 += gg;
                m2 += gg * (v as f64 - mean) * inv;
            }
            let (m1, m2) = (m1 / n, m2 / n);
            for (((d, &v), &g), &gam) in d.iter_mut().zip(row).zip(g).zip(&self.gamma) {
                let xhat = (v as f64 - mean) * inv;
                *d = ((g as f64 * gam as f64 - m1 - xhat * m2) * inv) as f32;
            }
        }
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::LayerNorm;

    fn ln() -> LayerNorm {
        LayerNorm {
            gamma: vec![1.5, -0.5, 2.0, 1.0],
            beta: vec![0.1, 0.0, -0.2, 0.3],
            epsilon: 1e-5,
        }
    }

    /// Each sample is normalized on its own: the definition, in f64.
    #[test]
    fn forward_is_the_definition_per_sample() {
        let l = ln();
        let x = [1.0f32, 2.0, 4.0, -3.0, 0.5, 0.5, 0.5, 0.25];
        let y = l.forward_real(&x);
        for (row, out) in x.chunks(4).zip(y.chunks(4)) {
            let m = row.iter().map(|&v| v as f64).sum::<f64>() / 4.0;
            let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 4.0;
            for (k, (&v, &o)) in row.iter().zip(out).enumerate() {
                let want =
                    (v as f64 - m) / (var + 1e-5).sqrt() * l.gamma[k] as f64 + l.beta[k] as f64;
                assert!((o as f64 - want).abs() < 1e-5, "{o} vs {want}");
            }
        }
    }

    /// Rows and onnxruntime's outputs (1.32, graph optimizations off, x86-64 with FMA), made by
    /// `onnx-models/generate_layer_norm.py`: every mean, inverse deviation and output must
    /// have the same bits, at 64, 100 (a tail of 4 after the eight lanes) and 128 features.
    #[test]
    fn every_bit_agrees_with_onnxruntime() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-models/expected");
        let read = |f: usize, what: &str| -> Vec<f32> {
            let a: ndarray::ArrayD<f32> =
                ndarray_npy::read_npy(root.join(format!("layer_norm_{f}_{what}.npy"))).unwrap();
            a.iter().copied().collect()
        };
        for f in [64usize, 100, 128] {
            let (x, y) = (read(f, "x"), read(f, "y"));
            let l = LayerNorm {
                gamma: read(f, "g"),
                beta: read(f, "b"),
                epsilon: 1e-5,
            };
            let (mean, istd) = (read(f, "mean"), read(f, "istd"));
            assert_eq!(x.len(), 200 * f);
            for (r, row) in x.chunks_exact(f).enumerate() {
                let (m, i) = l.ort_stats(row);
                assert_eq!(
                    (m.to_bits(), i.to_bits()),
                    (mean[r].to_bits(), istd[r].to_bits()),
                    "{f} features, row {r}: ours ({m}, {i}), onnxruntime ({}, {})",
                    mean[r],
                    istd[r]
                );
            }
            let ours = l.forward_real(&x);
            let bad = ours
                .iter()
                .zip(&y)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(bad, 0, "{f} features: {bad} outputs differ");
        }
    }

    /// The backward against central finite differences of `Σ w·y`.
    #[test]
    fn backward_matches_finite_differences() {
        let l = ln();
        let x = [0.3f32, -1.2, 2.5, 0.7, 1.0, 1.1, 0.9, -0.4];
        let w = [0.7f32, -1.3, 0.4, 2.0, -0.6, 0.9, 1.5, -0.2];
        let loss = |x: &[f32]| -> f64 {
            let y = l.forward_real(x);
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let dx = l.backward(&x, &w);
        for i in 0..x.len() {
            let h = 1e-2f32;
            let (mut p, mut m) = (x, x);
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p) - loss(&m)) / (2.0 * h as f64);
            assert!(
                (dx[i] as f64 - fd).abs() < 2e-3 * (1.0 + fd.abs()),
                "x[{i}]: backward {} vs finite difference {fd}",
                dx[i]
            );
        }
    }
}
