//! A dataset as a folder of images, one subfolder per class: what a camera device accumulates,
//! and torchvision's `ImageFolder` layout. Images are decoded by the `image` crate (PNG and
//! JPEG only), by their content, not their extension.
//!
//! `DIR/train/<class>/*` and `DIR/test/<class>/*`. The classes are the training split's
//! subfolder names sorted byte-wise, as `ImageFolder` sorts them: class index k is the k-th
//! name (`0`…`9` give indices 0…9; with more than ten numbered classes, zero-pad the names).
//! The test split's folders must be among the training split's. Sample ids follow the same
//! order: classes in turn, each class's files sorted by name. Names starting with `.` are
//! skipped; any other file that is not a PNG or JPEG image is an error naming it.
//!
//! Every image must have the size and the channels of the first: 8-bit grey (one channel) or
//! 8-bit RGB (three). Images with an alpha channel or 16-bit samples are refused rather than
//! converted, so what the model sees is always what the file holds.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};
use rayon::prelude::*;

use super::{bad, Dataset, Split};
use crate::{Error, Result};

/// Load `split` from `dir/{train,test}/<class>/`.
pub(super) fn load_split(dir: &Path, split: Split) -> Result<Dataset> {
    let root = dir.join(split.name());
    let classes = class_names(&dir.join(Split::Train.name()))?;
    // (label, file) in sample order: classes in turn, files sorted within each.
    let mut files = Vec::new();
    for sub in subfolders(&root)? {
        let name = file_name(&sub);
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            bad(
                &sub,
                format!(
                    "class folder '{name}' is not among the training split's classes ({})",
                    classes.join(", ")
                ),
            )
        })?;
        for file in sorted_entries(&sub)? {
            if file.is_dir() {
                return Err(bad(
                    &file,
                    "a folder inside a class folder (expected images)",
                ));
            }
            files.push((label as u8, file));
        }
    }
    // Decoding is most of the time; images are independent. Errors are reported in sample
    // order, so the first bad file is always the one named.
    let decoded: Vec<Result<Decoded>> = files.par_iter().map(|(_, f)| decode(f)).collect();
    let mut images = Vec::new();
    let mut labels = Vec::with_capacity(files.len());
    let mut shape: Option<(usize, usize, usize, &Path)> = None;
    for ((label, file), d) in files.iter().zip(decoded) {
        let (c, h, w, chw) = d?;
        match shape {
            None => shape = Some((c, h, w, file)),
            Some((c0, h0, w0, first)) if (c0, h0, w0) != (c, h, w) => {
                return Err(bad(
                    file,
                    format!(
                        "{} but {} is {} (every image must have the same size and channels)",
                        describe(c, h, w),
                        first.display(),
                        describe(c0, h0, w0)
                    ),
                ))
            }
            Some(_) => {}
        }
        images.extend_from_slice(&chw);
        labels.push(*label);
    }
    let (channels, rows, cols, _) =
        shape.ok_or_else(|| bad(&root, "no images in the class folders"))?;
    Ok(Dataset {
        n: labels.len(),
        images,
        labels,
        channels,
        rows,
        cols,
        images_path: root.clone(),
        labels_path: root,
    })
}

/// The class names: the subfolders of the training split, sorted. At most 256 classes.
fn class_names(train: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = subfolders(train)?.iter().map(|p| file_name(p)).collect();
    if names.is_empty() {
        return Err(bad(
            train,
            "no class folders (expected one subfolder per class)",
        ));
    }
    if names.len() > 256 {
        return Err(bad(
            train,
            format!("{} class folders; at most 256 classes", names.len()),
        ));
    }
    Ok(names)
}

/// The subfolders of `dir`, sorted by name; a file beside them is an error.
fn subfolders(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(bad(
            dir,
            "no such folder (an image dataset has train/ and test/ folders of class folders)",
        ));
    }
    let entries = sorted_entries(dir)?;
    if let Some(f) = entries.iter().find(|p| !p.is_dir()) {
        return Err(bad(
            f,
            "a file among the class folders (expected one subfolder per class)",
        ));
    }
    Ok(entries)
}

/// The entries of `dir` not starting with `.`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Channels, height, width and channels-first bytes of one image.
type Decoded = (usize, usize, usize, Vec<u8>);

/// Decode one image.
fn decode(path: &Path) -> Result<Decoded> {
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(bad(path, "not a PNG or JPEG image"));
    }
    let img = reader
        .decode()
        .map_err(|e| bad(path, format!("cannot decode the image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (c, hwc) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        other => {
            return Err(bad(
                path,
                format!(
                    "{:?} pixels: qforget reads 8-bit grey or 8-bit RGB images (no alpha, no \
                     16-bit samples)",
                    other.color()
                ),
            ))
        }
    };
    let plane = h * w;
    let mut chw = vec![0u8; hwc.len()];
    for (p, px) in hwc.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            chw[ch * plane + p] = v;
        }
    }
    Ok((c, h, w, chw))
}

fn describe(c: usize, h: usize, w: usize) -> String {
    let kind = match c {
        1 => "grey",
        3 => "RGB",
        _ => "",
    };
    format!("{kind} {w}×{h} pixels")
}
