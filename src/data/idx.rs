//! The idx file format (big-endian magic `0x00 0x00 type ndims`, `ndims` u32 sizes, then
//! the data), unsigned-byte variant only, optionally gzip-compressed. Sizes are checked against
//! the actual length before anything is allocated from them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{bad, Dataset, Split};
use crate::{Error, Result};

/// File name prefix of a split in the MNIST layout.
pub(super) fn prefix(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "t10k",
    }
}

/// The images file of `split` in `dir`, if there is one (`.gz` first).
pub(super) fn images_file(dir: &Path, split: Split) -> Option<PathBuf> {
    find(dir, &format!("{}-images-idx3-ubyte", prefix(split)))
}

/// Load `{train,t10k}-images-idx3-ubyte[.gz]` and the matching labels from `dir`.
pub(super) fn load_split(dir: &Path, split: Split) -> Result<Dataset> {
    let p = prefix(split);
    let missing = |name: String| bad(dir, format!("no {name}.gz or {name} in this directory"));
    let images_name = format!("{p}-images-idx3-ubyte");
    let labels_name = format!("{p}-labels-idx1-ubyte");
    let images_path = find(dir, &images_name).ok_or_else(|| missing(images_name))?;
    let labels_path = find(dir, &labels_name).ok_or_else(|| missing(labels_name))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    if images.dims.len() != 3 {
        return Err(bad(
            &images_path,
            format!(
                "expected 3 dimensions (count, rows, cols), found {}",
                images.dims.len()
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(bad(
            &labels_path,
            format!("expected 1 dimension (count), found {}", labels.dims.len()),
        ));
    }
    if labels.dims[0] != images.dims[0] {
        return Err(bad(
            &labels_path,
            format!(
                "{} labels for {} images in {}",
                labels.dims[0],
                images.dims[0],
                images_path.display()
            ),
        ));
    }
    Ok(Dataset {
        n: images.dims[0],
        channels: 1,
        rows: images.dims[1],
        cols: images.dims[2],
        images: images.data,
        labels: labels.data,
        images_path,
        labels_path,
    })
}

/// `name.gz` or `name` in `dir`, whichever exists (the compressed one first).
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Largest decompressed idx file accepted (a gzip bomb must not exhaust a device's memory).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// A decoded idx array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read an idx file of unsigned bytes (`.gz` is decompressed by its magic, not its name).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bad = |reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(|e| Error::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gzip data is corrupt or truncated: {e}")))?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(bad(format!(
                "decompresses to more than {} MiB; refusing (not an image dataset?)",
                MAX_DECOMPRESSED >> 20
            )));
        }
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(bad)
}

/// Parse idx bytes; the error string says what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!(
            "not an idx file: {} bytes, shorter than the 4-byte magic",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!(
            "not an idx file: magic starts with {:02x} {:02x}, expected 00 00",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "idx element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
            bytes[2]
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err("idx header declares 0 dimensions".to_string());
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format!(
            "truncated idx header: {} bytes, need {header} for {ndims} dimensions",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("idx dimensions {dims:?} overflow"))?;
    let have = bytes.len() - header;
    if have != want {
        return Err(format!(
            "idx header says {dims:?} = {want} bytes of data, file has {have}{}",
            if have < want { " (truncated?)" } else { "" }
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn parses_a_small_array() {
        let a = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_malformed_headers() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0], "shorter than"),
            (vec![1, 0, 8, 1], "magic"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 0], "element type"),
            (vec![0, 0, 8, 2, 0, 0, 0, 1], "truncated idx header"),
            (idx(&[2, 3], &[1, 2, 3]), "truncated"),
            (idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), "overflow"),
            (idx(&[1_000_000, 28, 28], &[0; 10]), "bytes of data"),
        ];
        for (bytes, want) in cases {
            let e = parse_idx(&bytes).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
    }
}
