//! Which form a dataset directory is in, told apart by the files it holds, so `--dataset`
//! takes any of them without a flag. Checked per split, in this order:
//!
//! 1. idx: `train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]` (MNIST layout);
//! 2. npy: `train_images.npy` + `train_labels.npy` (or Keras's `x_train.npy` + `y_train.npy`),
//!    `test_…` likewise;
//! 3. image folder: a `train/` or `test/` subfolder with one subfolder per class.

use std::path::{Path, PathBuf};

use super::{bad, idx, Split};
use crate::Result;

/// The images and labels files of `split` in `dir` in the npy form: those of the first naming
/// convention whose images file exists (the labels file may still be missing; the reader says
/// so).
pub(super) fn npy_files(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let s = split.name();
    [
        (format!("{s}_images.npy"), format!("{s}_labels.npy")),
        (format!("x_{s}.npy"), format!("y_{s}.npy")),
    ]
    .into_iter()
    .map(|(i, l)| (dir.join(i), dir.join(l)))
    .find(|(i, _)| i.is_file())
}

/// The form of a dataset directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Idx,
    Npy,
    ImageFolder,
}

impl Format {
    /// What the form is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Idx => "an idx",
            Format::Npy => "a .npy",
            Format::ImageFolder => "an image-folder",
        }
    }

    /// The cargo feature that reads the form (idx needs none).
    pub fn feature(self) -> &'static str {
        match self {
            Format::Idx => "",
            Format::Npy => "npy",
            Format::ImageFolder => "images",
        }
    }

    /// The form `split` of the dataset at `dir` is in; an error naming the directory and the
    /// forms it looked for when it is none of them.
    pub fn detect(dir: &Path, split: Split) -> Result<Format> {
        if !dir.is_dir() {
            return Err(bad(
                dir,
                if dir.exists() {
                    "not a directory (--dataset takes a folder of idx files, .npy files or images)"
                } else {
                    "no such directory"
                },
            ));
        }
        if idx::images_file(dir, split).is_some() {
            return Ok(Format::Idx);
        }
        if npy_files(dir, split).is_some() {
            return Ok(Format::Npy);
        }
        if dir.join(split.name()).is_dir() {
            return Ok(Format::ImageFolder);
        }
        let s = split.name();
        let idx_prefix = idx::prefix(split);
        Err(bad(
            dir,
            format!(
                "no {idx_prefix}-images-idx3-ubyte[.gz] (idx), {s}_images.npy or x_{s}.npy \
                 (npy), or {s}/ folder of class folders (images) in this directory"
            ),
        ))
    }
}
