//! A float depthwise conv (one input and one output channel per group) summed as MLAS's
//! `M = 1` kernel sums it ([`super::ort_fix::m1_sum`]), eight channels at a time.
//!
//! Why: run channel by channel, each output gathered its taps into a patch and summed them
//! one value after another, a third of an NNCF MobileNetV3's inference. In NHWC the same tap of
//! neighbouring channels is contiguous, so eight channels' sums run side by side, each lane
//! doing exactly the operations of [`super::ort_fix::m1_sum`] on its own channel (products
//! rounded, added four at a time, then a pair and a single, slice by slice): the same bits,
//! and a loop the compiler vectorizes.

/// The weights and tap offsets of a depthwise float conv, in onnxruntime's patch order.
pub(crate) struct DepthwiseM1 {
    /// Weights `[k][c]`: tap `k` of channel `g` at `k·c + g`.
    pub wk: Vec<f32>,
    /// Offset of tap `k` from a pixel's base in the padded image (`(ky·dil·wp + kx·dil)·c`).
    pub taps: Vec<usize>,
    /// Bias per channel.
    pub bias: Vec<f32>,
    /// Channels.
    pub c: usize,
    /// MLAS's slice of K (all taps when the slices are longer).
    pub stride: usize,
}

/// Channels summed side by side.
const LANES: usize = 8;

impl DepthwiseM1 {
    /// Outputs `o` (`[pixels][c]`) of the padded image `padded` (`[hp][wp][c]`), pixel `p`'s
    /// window starting at `bases[p]`.
    pub fn run(&self, padded: &[f32], bases: &[usize], o: &mut [f32]) {
        let c = self.c;
        let body = c / LANES * LANES;
        for (&base, out) in bases.iter().zip(o.chunks_exact_mut(c.max(1))) {
            for g0 in (0..body).step_by(LANES) {
                let y = self.sums::<LANES>(padded, base, g0);
                for (l, v) in y.iter().enumerate() {
                    out[g0 + l] = v + self.bias[g0 + l];
                }
            }
            for (g, y) in out.iter_mut().enumerate().skip(body) {
                *y = self.sums::<1>(padded, base, g)[0] + self.bias[g];
            }
        }
    }

    /// The `M = 1` sums of channels `g0..g0 + L` at the pixel whose window starts at `base`.
    #[inline(always)]
    fn sums<const L: usize>(&self, padded: &[f32], base: usize, g0: usize) -> [f32; L] {
        let c = self.c;
        let p = |i: usize| -> [f32; L] {
            let x = &padded[base + self.taps[i] + g0..][..L];
            let w = &self.wk[i * c + g0..][..L];
            std::array::from_fn(|l| w[l] * x[l])
        };
        let add = |a: [f32; L], b: [f32; L]| -> [f32; L] { std::array::from_fn(|l| a[l] + b[l]) };
        let k = self.taps.len();
        let mut y = [0f32; L];
        let mut s = 0;
        while s < k {
            let e = (s + self.stride.max(1)).min(k);
            let quads = s + (e - s) / 4 * 4;
            let mut i = s;
            while i < quads {
                y = add(y, add(add(add(p(i), p(i + 1)), p(i + 2)), p(i + 3)));
                i += 4;
            }
            if (e - i) & 2 != 0 {
                y = add(y, add(p(i), p(i + 1)));
                i += 2;
            }
            if (e - i) & 1 != 0 {
                y = add(y, p(i));
            }
            s = e;
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::super::ort_fix::m1_sum;
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every channel count around the lane width, every slice length: the bits of
    /// [`m1_sum`] on each channel's gathered patch.
    #[test]
    fn lanes_give_m1_sums_bits_per_channel() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for c in [1, 3, 7, 8, 9, 16, 21] {
            for (k, stride) in [(9, 9), (9, 256), (9, 4), (9, 5), (25, 7), (1, 1), (2, 8)] {
                let pixels = 6;
                let span = k * c + pixels * c;
                let padded: Vec<f32> = (0..span).map(|_| rng.random_range(-3.0..3.0)).collect();
                let taps: Vec<usize> = (0..k).map(|t| t * c).collect();
                let bases: Vec<usize> = (0..pixels).map(|p| p * c).collect();
                let wk: Vec<f32> = (0..k * c).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bias: Vec<f32> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();
                let dw = DepthwiseM1 {
                    wk: wk.clone(),
                    taps: taps.clone(),
                    bias: bias.clone(),
                    c,
                    stride,
                };
                let mut o = vec![0f32; pixels * c];
                dw.run(&padded, &bases, &mut o);
                for (p, &base) in bases.iter().enumerate() {
                    for g in 0..c {
                        let patch: Vec<f32> = taps.iter().map(|&t| padded[base + t + g]).collect();
                        let w: Vec<f32> = (0..k).map(|i| wk[i * c + g]).collect();
                        let want = m1_sum(&patch, &w, stride) + bias[g];
                        assert_eq!(
                            o[p * c + g].to_bits(),
                            want.to_bits(),
                            "c {c} k {k} s {stride}"
                        );
                    }
                }
            }
        }
    }
}
