//! Datasets the model is evaluated and unlearned on, in the forms devices hold them: the idx
//! files of MNIST and Fashion-MNIST (optionally gzip-compressed), a folder of `.npy` arrays
//! (`npy.rs`), or a folder of PNG/JPEG images with one subfolder per class (`folder.rs`); the
//! README's "Datasets" section is the user's version of these rules. Each is
//! read into memory as raw bytes in one layout, channels first (`n × c × h × w`), so everything
//! downstream (batching, the forward, training) is independent of where the images came from.
//! [`Dataset::load`] tells the forms apart by the files a directory holds ([`format`]).

#[cfg(feature = "images")]
mod folder;
pub mod forget;
mod format;
mod ids;
mod idx;
#[cfg(feature = "npy")]
mod npy;

pub use format::Format;
pub use ids::{parse_ids, read_ids};
pub use idx::{parse_idx, read_idx, IdxArray};

use std::path::{Path, PathBuf};

use crate::graph::Shape;
use crate::{Error, Result};

/// Which half of a dataset directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// Its name in file and folder names (`train`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split '{s}' (expected train or test)")),
        }
    }
}

/// Images (`n × channels × rows × cols` bytes, channels first) and their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    /// Channels per image (1 for grey, 3 for RGB).
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// The image file (or folder), for messages.
    pub images_path: PathBuf,
    /// The labels file (or the folder of class folders), for messages.
    pub labels_path: PathBuf,
}

/// The name [`Dataset`] had when idx was the only form; kept so existing callers compile.
pub type IdxDataset = Dataset;

impl Dataset {
    /// Load `split` of the dataset at `path` (an idx, npy or image folder; see [`Format`]).
    pub fn load(path: impl AsRef<Path>, split: Split) -> Result<Self> {
        Self::load_for(path, split, None)
    }

    /// Load `split` of the dataset at `path` for a model whose input is `input`: an `.npy`
    /// array whose layout could be read both as `N×H×W×C` and as `N×C×H×W` takes the one that
    /// fits the model (README, "Datasets"). Whether the dataset fits is checked later
    /// ([`crate::eval::check_fits`]).
    pub fn load_for(path: impl AsRef<Path>, split: Split, input: Option<Shape>) -> Result<Self> {
        let path = path.as_ref();
        match Format::detect(path, split)? {
            Format::Idx => idx::load_split(path, split),
            #[cfg(feature = "npy")]
            Format::Npy => npy::load_split(path, split, input),
            #[cfg(feature = "images")]
            Format::ImageFolder => folder::load_split(path, split),
            #[allow(unreachable_patterns)]
            f => {
                let _ = input;
                Err(bad(
                    path,
                    format!(
                        "{} dataset, but this qforget was built without the `{}` feature \
                         (cargo build --features {})",
                        f.describe(),
                        f.feature(),
                        f.feature()
                    ),
                ))
            }
        }
    }

    /// Bytes per image (`channels · rows · cols`).
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// Bytes of image `i` (channels first).
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }

    /// Per-image shape as the model sees it (`c × h × w`).
    pub fn shape(&self) -> Shape {
        Shape {
            h: self.rows,
            w: self.cols,
            c: self.channels,
        }
    }

    /// Keep only the first `n` images (`n ≤ self.n`).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.n);
        self.images.truncate(n * self.image_len());
        self.labels.truncate(n);
        self.n = n;
    }
}

/// A dataset error about `path`.
pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
