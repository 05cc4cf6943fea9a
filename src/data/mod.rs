//! Datasets the model is evaluated and unlearned on. Today: the idx format of MNIST and
//! Fashion-MNIST (optionally gzip-compressed), read into memory as raw bytes.

pub mod forget;
mod ids;
mod idx;

pub use ids::{parse_ids, read_ids};
pub use idx::{parse_idx, read_idx, IdxArray};

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Which half of a dataset directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
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

/// Images (`n × rows × cols` bytes, one channel) and their labels.
#[derive(Debug, Clone)]
pub struct IdxDataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
    /// The image file, for messages.
    pub images_path: PathBuf,
}

impl IdxDataset {
    /// Load `{train,t10k}-images-idx3-ubyte[.gz]` and the matching labels from `dir`.
    pub fn load(dir: impl AsRef<Path>, split: Split) -> Result<Self> {
        let dir = dir.as_ref();
        let p = split.prefix();
        let images_path = find(dir, &format!("{p}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{p}-labels-idx1-ubyte"))?;
        let images = read_idx(&images_path)?;
        let labels = read_idx(&labels_path)?;
        if images.dims.len() != 3 {
            return Err(Error::Dataset {
                path: images_path,
                reason: format!(
                    "expected 3 dimensions (count, rows, cols), found {}",
                    images.dims.len()
                ),
            });
        }
        if labels.dims.len() != 1 {
            return Err(Error::Dataset {
                path: labels_path,
                reason: format!("expected 1 dimension (count), found {}", labels.dims.len()),
            });
        }
        if labels.dims[0] != images.dims[0] {
            return Err(Error::Dataset {
                path: labels_path,
                reason: format!(
                    "{} labels for {} images in {}",
                    labels.dims[0],
                    images.dims[0],
                    images_path.display()
                ),
            });
        }
        Ok(IdxDataset {
            n: images.dims[0],
            rows: images.dims[1],
            cols: images.dims[2],
            images: images.data,
            labels: labels.data,
            images_path,
        })
    }

    /// Bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.rows * self.cols;
        &self.images[i * l..(i + 1) * l]
    }
}

/// `name.gz` or `name` in `dir`, whichever exists (the compressed one first).
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(Error::Dataset {
        path: dir.to_path_buf(),
        reason: if dir.is_dir() {
            format!("no {name}.gz or {name} in this directory")
        } else {
            "not a directory".to_string()
        },
    })
}
