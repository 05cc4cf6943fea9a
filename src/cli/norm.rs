//! `--mean` / `--std`: the input normalisation a model was trained with, for models whose file
//! does not carry it (see `qforget::graph::normalize`). Shared by every command that feeds a
//! dataset to a model, so they all read the same numbers the same way.

use qforget::graph::{Graph, Normalization};

/// Values of one option: numbers separated by commas.
#[derive(Debug, Clone)]
pub struct Values(pub Vec<f32>);

fn values(s: &str) -> Result<Values, String> {
    Normalization::parse_values(s).map(Values)
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct NormArgs {
    /// Per-channel mean subtracted from pixel = byte / 255 before the model: one value, or one
    /// per channel, comma-separated (e.g. 0.485,0.456,0.406). With --mean or --std the model's
    /// metadata `mean`/`std` are ignored; a missing one is 0 (mean) or 1 (std).
    #[arg(long, value_parser = values, allow_hyphen_values = true, value_name = "M[,M...]")]
    pub mean: Option<Values>,
    /// Per-channel standard deviation the centred pixel is divided by (as --mean).
    #[arg(long, value_parser = values, value_name = "S[,S...]")]
    pub std: Option<Values>,
}

impl NormArgs {
    /// The normalisation the options ask for; `None`: keep the model's own (its metadata, or
    /// byte / 255).
    pub fn resolve(&self) -> qforget::Result<Option<Normalization>> {
        Normalization::from_options(
            self.mean.as_ref().map(|v| &v.0[..]),
            self.std.as_ref().map(|v| &v.0[..]),
        )
    }

    /// Apply the options to `graph` (nothing when none was given).
    pub fn apply(&self, graph: &mut Graph) -> qforget::Result<()> {
        match self.resolve()? {
            Some(n) => graph.set_normalization(Some(n)),
            None => Ok(()),
        }
    }
}
