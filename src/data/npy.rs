//! A dataset as numpy arrays: what a device app or a Python pipeline most often has at hand
//! (`np.save` of the image and label arrays). The files are parsed by `ndarray-npy` (numpy's
//! format, header and data checked against each other); only the layout rules are ours.
//!
//! Per split (`train`, `test`) the folder holds `{split}_images.npy` and `{split}_labels.npy`,
//! or Keras's `x_{split}.npy` and `y_{split}.npy`:
//! - images: uint8, `N×H×W` (one channel), `N×H×W×C` or `N×C×H×W`. A 4-D array is channels
//!   last when its last axis is 1, 3 or 4, channels first when its second axis is; when both
//!   are (images of at most 4 pixels a side), the layout that matches the model's input wins,
//!   and channels last otherwise;
//! - labels: any integer dtype (uint8, int32, int64, ...), shape `N` or `N×1`, values 0–255.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement};

use super::{bad, Dataset, Split};
use crate::graph::Shape;
use crate::Result;

/// Load `split` from the `.npy` files in `dir`; `input` (the model's input shape) settles an
/// ambiguous 4-D layout.
pub(super) fn load_split(dir: &Path, split: Split, input: Option<Shape>) -> Result<Dataset> {
    let (images_path, labels_path) = super::format::npy_files(dir, split)
        .ok_or_else(|| bad(dir, format!("no {} .npy files", split.name())))?;
    if !labels_path.is_file() {
        return Err(bad(
            &labels_path,
            format!("missing: it holds the labels of {}", images_path.display()),
        ));
    }
    let raw = read_array::<u8>(&images_path).map_err(|e| match e {
        ReadError::Dtype(d) => bad(
            &images_path,
            format!("images must be uint8 (numpy dtype '|u1'), this array is {d}"),
        ),
        ReadError::Other(m) => bad(&images_path, m),
    })?;
    let (shape, images) = to_nchw(raw, input).map_err(|m| bad(&images_path, m))?;
    let labels = read_labels(&labels_path)?;
    let n = images.len() / shape.len().max(1);
    if labels.len() != n {
        return Err(bad(
            &labels_path,
            format!(
                "{} labels for {n} images in {}",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok(Dataset {
        images,
        labels,
        n,
        channels: shape.c,
        rows: shape.h,
        cols: shape.w,
        images_path,
        labels_path,
    })
}

enum ReadError {
    /// The array's dtype is not the one asked for (numpy's descriptor).
    Dtype(String),
    Other(String),
}

/// Read a whole `.npy` file as an array of `T`.
fn read_array<T: ReadableElement>(path: &Path) -> std::result::Result<ArrayD<T>, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::Other(e.to_string()))?;
    parse::<T>(&bytes)
}

fn parse<T: ReadableElement>(bytes: &[u8]) -> std::result::Result<ArrayD<T>, ReadError> {
    ArrayD::<T>::read_npy(bytes).map_err(|e| match e {
        ReadNpyError::WrongDescriptor(d) => ReadError::Dtype(d.to_string()),
        ReadNpyError::MissingData => ReadError::Other(
            "truncated: the file holds less data than its header's shape says".to_string(),
        ),
        ReadNpyError::ExtraBytes(n) => ReadError::Other(format!(
            "{n} bytes after the data its header's shape describes"
        )),
        ReadNpyError::ParseHeader(h) => {
            ReadError::Other(format!("not a valid .npy file (header: {h})"))
        }
        e => ReadError::Other(format!("not a valid .npy file: {e}")),
    })
}

/// Labels of any integer dtype as bytes 0–255.
fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    let fail = |m: String| bad(path, m);
    let arr = int_labels(&bytes).map_err(|e| match e {
        ReadError::Dtype(d) => fail(format!("labels must be integers, this array is {d}")),
        ReadError::Other(m) => fail(m),
    })?;
    let n = match arr.shape() {
        [n] | [n, 1] => *n,
        s => {
            return Err(fail(format!(
                "labels must have shape N or N×1, this array is {}",
                dims(s)
            )))
        }
    };
    let mut out = Vec::with_capacity(n);
    for (i, &v) in arr.iter().enumerate() {
        let b = u8::try_from(v)
            .map_err(|_| fail(format!("label {v} at index {i} is not a class index 0–255")))?;
        out.push(b);
    }
    Ok(out)
}

/// The labels as i128 (every integer dtype numpy writes fits), trying each dtype in turn.
fn int_labels(bytes: &[u8]) -> std::result::Result<ArrayD<i128>, ReadError> {
    type Reader = fn(&[u8]) -> std::result::Result<ArrayD<i128>, ReadError>;
    fn widened<T: ReadableElement + Copy + Into<i128>>(
        b: &[u8],
    ) -> std::result::Result<ArrayD<i128>, ReadError> {
        parse::<T>(b).map(|a| a.mapv(Into::into))
    }
    let readers: [Reader; 8] = [
        widened::<u8>,
        widened::<i8>,
        widened::<u16>,
        widened::<i16>,
        widened::<u32>,
        widened::<i32>,
        widened::<u64>,
        widened::<i64>,
    ];
    let mut dtype = String::new();
    for read in readers {
        match read(bytes) {
            Err(ReadError::Dtype(d)) => dtype = d,
            other => return other,
        }
    }
    Err(ReadError::Dtype(dtype))
}

/// `N×H×W`, `N×H×W×C` or `N×C×H×W` bytes → the per-image shape and NCHW bytes.
fn to_nchw(a: ArrayD<u8>, input: Option<Shape>) -> std::result::Result<(Shape, Vec<u8>), String> {
    let s = a.shape().to_vec();
    let chw = |c, h, w| Shape { h, w, c };
    let (shape, perm): (Shape, Vec<usize>) = match s[..] {
        [_, h, w] => (chw(1, h, w), vec![0, 1, 2]),
        [_, d1, d2, d3] => {
            let last = (is_channels(d3), chw(d3, d1, d2), vec![0, 3, 1, 2]);
            let first = (is_channels(d1), chw(d1, d2, d3), vec![0, 1, 2, 3]);
            match (last.0, first.0) {
                (true, true) if input == Some(first.1) && input != Some(last.1) => {
                    (first.1, first.2)
                }
                (true, _) => (last.1, last.2),
                (false, true) => (first.1, first.2),
                (false, false) => {
                    return Err(format!(
                        "images are {}: neither the last axis (N×H×W×C) nor the second \
                         (N×C×H×W) is 1, 3 or 4 channels",
                        dims(&s)
                    ))
                }
            }
        }
        _ => {
            return Err(format!(
                "images must be N×H×W, N×H×W×C or N×C×H×W, this array is {}",
                dims(&s)
            ))
        }
    };
    if shape.is_empty() || s[0] == 0 {
        return Err(format!("images are {}: no images", dims(&s)));
    }
    let v = a.permuted_axes(IxDyn(&perm));
    Ok((shape, v.iter().copied().collect()))
}

fn is_channels(d: usize) -> bool {
    matches!(d, 1 | 3 | 4)
}

fn dims(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    v.join("×")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;
    use ndarray_npy::WriteNpyExt;

    fn npy<T: ndarray_npy::WritableElement>(a: ArrayD<T>) -> Vec<u8> {
        let mut v = Vec::new();
        a.write_npy(&mut v).unwrap();
        v
    }

    fn images(shape: &[usize]) -> ArrayD<u8> {
        let n: usize = shape.iter().product();
        Array::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as u8).collect()).unwrap()
    }

    #[test]
    fn layouts_become_nchw() {
        // N×H×W×C: pixel (h, w) channel c at h·W·C + w·C + c.
        let (s, b) = to_nchw(images(&[1, 2, 2, 3]), None).unwrap();
        assert_eq!((s.c, s.h, s.w), (3, 2, 2));
        assert_eq!(b, vec![0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
        // N×C×H×W stays as it is; N×H×W is one channel.
        let (s, b) = to_nchw(images(&[2, 3, 5, 5]), None).unwrap();
        assert_eq!((s.c, s.h, s.w), (3, 5, 5));
        assert_eq!(b, images(&[2, 3, 5, 5]).iter().copied().collect::<Vec<_>>());
        let (s, _) = to_nchw(images(&[2, 5, 6]), None).unwrap();
        assert_eq!((s.c, s.h, s.w), (1, 5, 6));
    }

    #[test]
    fn ambiguous_layout_follows_the_model() {
        // 3×4×4 images (channels first) or 4×4... read as N×H×W×C: 3×4 images of 4 channels.
        let a = images(&[1, 3, 4, 4]);
        let (s, _) = to_nchw(a.clone(), None).unwrap();
        assert_eq!((s.c, s.h, s.w), (4, 3, 4));
        let model = Shape { c: 3, h: 4, w: 4 };
        let (s, b) = to_nchw(a.clone(), Some(model)).unwrap();
        assert_eq!(s, model);
        assert_eq!(b, a.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn refuses_bad_shapes() {
        for shape in [&[2usize, 7, 5, 5][..], &[2, 5], &[1, 1, 1, 1, 1]] {
            let e = to_nchw(images(shape), None).unwrap_err();
            assert!(e.contains("×"), "{e}");
        }
    }

    #[test]
    fn labels_of_any_integer_dtype() {
        let want = vec![0u8, 9, 3];
        for bytes in [
            npy(Array::from_vec(vec![0u8, 9, 3]).into_dyn()),
            npy(Array::from_vec(vec![0i32, 9, 3]).into_dyn()),
            npy(Array::from_vec(vec![0i64, 9, 3]).into_dyn()),
            npy(Array::from_shape_vec((3, 1), vec![0u16, 9, 3])
                .unwrap()
                .into_dyn()),
        ] {
            let a = int_labels(&bytes).ok().unwrap();
            let got: Vec<u8> = a.iter().map(|&v| v as u8).collect();
            assert_eq!(got, want);
        }
        let floats = npy(Array::from_vec(vec![0.0f32, 1.0]).into_dyn());
        assert!(matches!(int_labels(&floats), Err(ReadError::Dtype(d)) if d.contains("f4")));
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let full = npy(images(&[2, 4, 4]));
        let msg = |r: std::result::Result<ArrayD<u8>, ReadError>| match r {
            Err(ReadError::Other(m)) => m,
            Err(ReadError::Dtype(d)) => panic!("dtype {d}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(msg(parse::<u8>(&full[..full.len() - 3])).contains("truncated"));
        assert!(msg(parse::<u8>(&full[..20])).contains("not a valid .npy"));
        assert!(msg(parse::<u8>(b"hello world, not numpy")).contains("not a valid .npy"));
    }
}
