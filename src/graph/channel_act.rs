//! Activations quantized per channel.
//!
//! NNCF quantizes the input of a depthwise convolution with one scale per channel (on axis 1,
//! the channel axis): each channel of that tensor only ever meets its own scale, so the integer
//! network stays exact as long as the tensor's producer requantizes per output channel (a conv
//! or linear layer does: its multipliers already are per channel) and every reader is a
//! per-channel op (a depthwise conv folds `s_in[c]` into its per-channel multiplier). The
//! importer (`crate::onnx`) refuses every other reader or producer, and a zero point that
//! differs between channels (the padding value of the depthwise conv is the zero point).
//!
//! Such an activation keeps a per-tensor [`super::QParams`] for its zero point, type and clamp
//! ranges, with `scale` set to the largest channel scale (a display value only); the real scale
//! of channel `c` is [`ActInfo::scale_of`], which every consumer of real values goes through.

use super::ActInfo;

impl ActInfo {
    /// Whether the activation has one scale per channel.
    pub fn per_channel(&self) -> bool {
        !self.channel_scales.is_empty()
    }

    /// Real step of channel `c` (`q.scale` for a per-tensor activation).
    #[inline]
    pub fn scale_of(&self, c: usize) -> f32 {
        if self.channel_scales.is_empty() {
            self.q.scale
        } else {
            self.channel_scales[c]
        }
    }

    /// The per-channel scales, or the one per-tensor scale.
    pub fn scales(&self) -> Vec<f32> {
        if self.channel_scales.is_empty() {
            vec![self.q.scale]
        } else {
            self.channel_scales.clone()
        }
    }

    /// Real values of stored bytes (NHWC, so element `i` is of channel `i % c`).
    pub fn dequantize_all(&self, data: &[u8]) -> Vec<f32> {
        let q = self.q;
        if self.channel_scales.is_empty() {
            return data.iter().map(|&b| q.dequantize(b)).collect();
        }
        // Pixel by pixel (a run of `c` values, one per channel), not `i % c` per element: that
        // took a division per value and was an eighth of an NNCF MobileNetV3's inference.
        let c = self.shape.c.max(1);
        let mut out = Vec::with_capacity(data.len());
        for px in data.chunks(c) {
            out.extend(
                px.iter()
                    .zip(&self.channel_scales)
                    .map(|(&b, &s)| s * super::qparams::centered(b, q.zero_point) as f32),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{QParams, Shape};
    use super::*;

    /// Per-channel dequantization, pixel by pixel: element `i` meets channel `i mod c`'s scale.
    #[test]
    fn per_channel_values_take_each_element_s_channel_scale() {
        let c = 3;
        let info = ActInfo {
            name: "x".to_string(),
            shape: Shape { h: 1, w: 2, c },
            q: QParams::unsigned(0.5, 7),
            channel_scales: vec![0.5, 0.25, 2.0],
            float: false,
        };
        let data: Vec<u8> = (0..12).map(|i| (i * 37 % 256) as u8).collect();
        let want: Vec<f32> = data
            .iter()
            .enumerate()
            .map(|(i, &b)| info.channel_scales[i % c] * (b as i32 - 7) as f32)
            .collect();
        assert_eq!(info.dequantize_all(&data), want);
    }
}
