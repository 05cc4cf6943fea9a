//! How pixel bytes become the model's float input: `byte / 255`, then per channel
//! `(x − mean[c]) / std[c]` when the model was trained on normalised images.
//!
//! Why it is part of the graph: the float input is quantized once, by the first QuantizeLinear,
//! through a 256-entry table per channel, so normalisation costs nothing per pixel; and every
//! path that feeds images (forward, training, metrics, the input pooling of
//! [`super::Graph::quantize_images`]) must see the same values. The arithmetic is f32 in the
//! order PyTorch's `Normalize` and numpy use, `((b / 255) − mean) / std`, so a reference
//! computed in numpy float32 gets bit-identical inputs.
//!
//! Where the numbers come from: the command line (`--mean`, `--std`), else the model's ONNX
//! `metadata_props` keys `mean` and `std` (see [`Normalization::from_metadata`]), else none.

use serde::Serialize;

use crate::{Error, Result};

/// Per-channel mean and standard deviation of the float input (pixel = byte / 255).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalization {
    /// One value for every channel, or one per channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// A normalisation with `mean` and `std` (each one value, or one per channel; both the same
    /// length unless one of them is a single value). Every std must be finite and positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let bad = |m: String| Error::InvalidArgument(format!("normalization: {m}"));
        if mean.is_empty() || std.is_empty() {
            return Err(bad("mean and std need at least one value".into()));
        }
        if mean.len() != std.len() && mean.len() != 1 && std.len() != 1 {
            return Err(bad(format!(
                "{} mean values and {} std values (give one, or one per channel)",
                mean.len(),
                std.len()
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(bad(format!("mean {m} is not a finite number")));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!("std {s} is not a positive number")));
        }
        Ok(Normalization { mean, std })
    }

    /// Parse `--mean` / `--std` values: numbers separated by commas (or spaces), optionally in
    /// brackets, as `0.485,0.456,0.406` or `[0.485, 0.456, 0.406]`.
    pub fn parse_values(s: &str) -> std::result::Result<Vec<f32>, String> {
        let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
        let v: std::result::Result<Vec<f32>, String> = inner
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<f32>()
                    .map_err(|_| format!("'{t}' is not a number (in '{s}')"))
            })
            .collect();
        let v = v?;
        if v.is_empty() {
            return Err(format!("no numbers in '{s}'"));
        }
        Ok(v)
    }

    /// From `--mean` and `--std` as given on a command line: both or neither (a missing mean
    /// is 0, a missing std is 1, so one alone is allowed too).
    pub fn from_options(mean: Option<&[f32]>, std: Option<&[f32]>) -> Result<Option<Self>> {
        match (mean, std) {
            (None, None) => Ok(None),
            (m, s) => Self::new(
                m.map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0]),
                s.map(<[f32]>::to_vec).unwrap_or_else(|| vec![1.0]),
            )
            .map(Some),
        }
    }

    /// From a model's `metadata_props` (key, value) pairs: keys `mean` and `std` (either may be
    /// missing: 0 and 1), values as [`Normalization::parse_values`] reads them. `None` when the
    /// model carries neither key; an error naming the key when a value does not parse.
    pub fn from_metadata<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> std::result::Result<Option<Self>, String> {
        let (mut mean, mut std) = (None, None);
        for (k, v) in props {
            match k {
                "mean" => {
                    mean = Some(Self::parse_values(v).map_err(|e| format!("metadata 'mean': {e}"))?)
                }
                "std" => {
                    std = Some(Self::parse_values(v).map_err(|e| format!("metadata 'std': {e}"))?)
                }
                _ => {}
            }
        }
        Self::from_options(mean.as_deref(), std.as_deref()).map_err(|e| format!("metadata: {e}"))
    }

    /// Check that it fits a model input of `channels` channels.
    pub fn check_channels(&self, channels: usize) -> Result<()> {
        for (what, n) in [("mean", self.mean.len()), ("std", self.std.len())] {
            if n != 1 && n != channels {
                return Err(Error::InvalidArgument(format!(
                    "normalization has {n} {what} values but the model takes {channels} \
                     channel{} (give one value, or one per channel)",
                    if channels == 1 { "" } else { "s" }
                )));
            }
        }
        Ok(())
    }

    /// Mean and std of channel `c`.
    fn of(&self, c: usize) -> (f32, f32) {
        let pick = |v: &[f32]| if v.len() == 1 { v[0] } else { v[c] };
        (pick(&self.mean), pick(&self.std))
    }
}

/// The float input value of byte `b` in channel `c`: `b / 255`, normalised when `norm` says so.
/// Without a normalisation this is exactly `b as f32 / 255.0` (the bytes of every model without
/// one stay what they were).
#[inline]
pub fn pixel_value(norm: Option<&Normalization>, c: usize, b: u8) -> f32 {
    let x = b as f32 / 255.0;
    match norm {
        None => x,
        Some(n) => {
            let (m, s) = n.of(c);
            (x - m) / s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_values_follow_the_formula() {
        let n = Normalization::new(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]).unwrap();
        for (c, (m, s)) in [(0.485f32, 0.229f32), (0.456, 0.224), (0.406, 0.225)]
            .into_iter()
            .enumerate()
        {
            for b in [0u8, 1, 77, 128, 254, 255] {
                assert_eq!(pixel_value(Some(&n), c, b), (b as f32 / 255.0 - m) / s);
            }
        }
        // One value applies to every channel; no normalisation is byte / 255.
        let one = Normalization::new(vec![0.5], vec![0.25]).unwrap();
        assert_eq!(pixel_value(Some(&one), 2, 255), (1.0 - 0.5) / 0.25);
        assert_eq!(pixel_value(None, 0, 51), 51.0 / 255.0);
    }

    #[test]
    fn parses_lists_and_refuses_bad_values() {
        assert_eq!(
            Normalization::parse_values("[0.5, 0.25,1]").unwrap(),
            vec![0.5, 0.25, 1.0]
        );
        assert!(Normalization::parse_values("0.5,x")
            .unwrap_err()
            .contains("'x'"));
        assert!(Normalization::parse_values(" ").is_err());
        assert!(Normalization::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalization::new(vec![0.1, 0.2], vec![0.3, 0.4, 0.5]).is_err());
        let n = Normalization::new(vec![0.1, 0.2], vec![0.3]).unwrap();
        assert!(n.check_channels(2).is_ok());
        assert!(n
            .check_channels(3)
            .unwrap_err()
            .to_string()
            .contains("2 mean values"));
    }

    #[test]
    fn reads_model_metadata() {
        let props = [("author", "x"), ("mean", "0.1,0.2,0.3"), ("std", "0.5")];
        let n = Normalization::from_metadata(props).unwrap().unwrap();
        assert_eq!(n.mean, vec![0.1, 0.2, 0.3]);
        assert_eq!(n.std, vec![0.5]);
        assert_eq!(
            Normalization::from_metadata([("author", "x")]).unwrap(),
            None
        );
        let e = Normalization::from_metadata([("std", "0.5,abc")]).unwrap_err();
        assert!(e.contains("metadata 'std'"), "{e}");
    }
}
