//! Channel concatenation of quantized activations: an ONNX `Concat` along channels between
//! DequantizeLinear and QuantizeLinear (each branch of an inception-style block keeps its own
//! scale), or onnxruntime's `QLinearConcat`.
//!
//! Why a layer of its own rather than a requantize per input and a copy: the branches meet in
//! one output tensor with one set of parameters, and both the forward (one lookup table per
//! input) and the backward (the output gradient split back by channel ranges) are cheap in
//! the storage layout, where a pixel's channels are contiguous (NHWC).
//!
//! Forward, as onnxruntime computes it with graph optimizations off: each input byte is
//! dequantized in f32 (`(q − z_i)·s_i`), the floats are concatenated, and QuantizeLinear gives
//! `saturate(round_half_even(x / s) + z)`. Backward: straight through, gated where the output
//! sits on its clamp bounds (the generic STE mask); the float twin concatenates real values.

use super::qparams::QParams;
use super::tensor::{QBatch, Shape};

/// One input of a [`Concat`]: its channel count and quantization.
#[derive(Debug, Clone)]
pub struct ConcatPart {
    pub channels: usize,
    pub q: QParams,
}

/// Concatenation along channels, every input requantized to `out`.
#[derive(Debug, Clone)]
pub struct Concat {
    pub parts: Vec<ConcatPart>,
    pub out: QParams,
    /// Output byte range (a fused Relu/Clip after the concat narrows it).
    pub lo: u8,
    pub hi: u8,
}

impl Concat {
    /// Channels of the output.
    pub fn channels(&self) -> usize {
        self.parts.iter().map(|p| p.channels).sum()
    }

    /// The byte map of part `k`: input byte → output byte.
    fn table(&self, k: usize) -> [u8; 256] {
        let qi = self.parts[k].q;
        let mut t = [0u8; 256];
        for (b, o) in t.iter_mut().enumerate() {
            *o = self
                .out
                .quantize(qi.dequantize(b as u8))
                .clamp(self.lo, self.hi);
        }
        t
    }

    /// Run on the inputs (one batch per part, same `n`, `h`, `w`).
    pub fn forward(&self, xs: &[&QBatch]) -> QBatch {
        let first = xs[0];
        let (n, h, w) = (first.n, first.shape.h, first.shape.w);
        let shape = Shape {
            h,
            w,
            c: self.channels(),
        };
        let pixels = n * h * w;
        let mut data = vec![0u8; pixels * shape.c];
        let mut off = 0;
        for (k, (part, x)) in self.parts.iter().zip(xs).enumerate() {
            let t = self.table(k);
            let c = part.channels;
            for (o, i) in data.chunks_exact_mut(shape.c).zip(x.data.chunks_exact(c)) {
                for (d, &s) in o[off..off + c].iter_mut().zip(i) {
                    *d = t[s as usize];
                }
            }
            off += c;
        }
        QBatch {
            n,
            shape,
            data: data.into(),
        }
    }

    /// Real-valued concatenation (the float twin): `xs[k]` holds `pixels × channels_k` values.
    pub fn forward_real(&self, xs: &[&[f32]]) -> Vec<f32> {
        let c = self.channels();
        let pixels = xs[0].len() / self.parts[0].channels.max(1);
        let mut y = vec![0f32; pixels * c];
        let mut off = 0;
        for (part, x) in self.parts.iter().zip(xs) {
            let ck = part.channels;
            for (o, i) in y.chunks_exact_mut(c).zip(x.chunks_exact(ck)) {
                o[off..off + ck].copy_from_slice(i);
            }
            off += ck;
        }
        y
    }

    /// The output gradient split back into one gradient per input.
    pub fn backward(&self, gy: &[f32]) -> Vec<Vec<f32>> {
        let c = self.channels().max(1);
        let pixels = gy.len() / c;
        let mut off = 0;
        self.parts
            .iter()
            .map(|part| {
                let ck = part.channels;
                let mut g = Vec::with_capacity(pixels * ck);
                for row in gy.chunks_exact(c) {
                    g.extend_from_slice(&row[off..off + ck]);
                }
                off += ck;
                g
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(scale: f32, zero_point: i32) -> QParams {
        QParams {
            scale,
            zero_point,
            signed: false,
        }
    }

    /// The definition, one element at a time, in f32 as onnxruntime runs it.
    fn reference(op: &Concat, xs: &[&QBatch]) -> Vec<u8> {
        let pixels = xs[0].n * xs[0].shape.h * xs[0].shape.w;
        let mut out = vec![];
        for p in 0..pixels {
            for (part, x) in op.parts.iter().zip(xs) {
                for ch in 0..part.channels {
                    let b = x.data[p * part.channels + ch];
                    let real = (b as i32 - part.q.zero_point) as f32 * part.q.scale;
                    out.push(op.out.quantize(real).clamp(op.lo, op.hi));
                }
            }
        }
        out
    }

    fn batch(n: usize, h: usize, w: usize, c: usize, seed: u32) -> QBatch {
        let shape = Shape { h, w, c };
        let data = (0..n * shape.len())
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
            .collect();
        QBatch { n, shape, data }
    }

    #[test]
    fn forward_matches_the_definition_and_the_backward_splits_channels() {
        let op = Concat {
            parts: vec![
                ConcatPart {
                    channels: 3,
                    q: q(0.0058, 0),
                },
                ConcatPart {
                    channels: 1,
                    q: q(0.0025, 7),
                },
                ConcatPart {
                    channels: 5,
                    q: q(0.0218, 128),
                },
            ],
            out: q(0.0218, 3),
            lo: 0,
            hi: 255,
        };
        let xs = [
            batch(2, 3, 2, 3, 1),
            batch(2, 3, 2, 1, 2),
            batch(2, 3, 2, 5, 3),
        ];
        let refs: Vec<&QBatch> = xs.iter().collect();
        let y = op.forward(&refs);
        assert_eq!(y.shape, Shape { h: 3, w: 2, c: 9 });
        assert_eq!(y.data, reference(&op, &refs));
        // Saturation happens: part 2's bytes below its zero point map under the output's.
        assert!(y.data.contains(&0));

        let gy: Vec<f32> = (0..y.data.len()).map(|i| i as f32).collect();
        let g = op.backward(&gy);
        assert_eq!(g.len(), 3);
        assert_eq!(&g[1][..2], &[3.0, 12.0]);
        assert_eq!(&g[0][..4], &[0.0, 1.0, 2.0, 9.0]);
        assert_eq!(g[2].len(), 12 * 5);

        let reals: Vec<Vec<f32>> = xs.iter().map(|x| x.reals().into_owned()).collect();
        let slices: Vec<&[f32]> = reals.iter().map(|r| &r[..]).collect();
        let yr = op.forward_real(&slices);
        assert_eq!(op.backward(&yr), reals);
    }
}
