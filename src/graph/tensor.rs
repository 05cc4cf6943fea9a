//! Activation batches. Layout is NHWC (`[n][h][w][c]`): a pixel's channels are contiguous, which
//! is what im2col and the GEMM kernels want. A flat feature vector is `h = w = 1`.

use serde::Serialize;

/// Per-sample shape of an activation, channels last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Shape {
    /// `h × w × c`.
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// True for an empty shape.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A flat vector of `c` features.
    pub fn flat(c: usize) -> Self {
        Shape { h: 1, w: 1, c }
    }

    /// The shape as ONNX would write it for one sample: `[c, h, w]`, or `[c]` when flat.
    pub fn onnx_dims(&self) -> Vec<usize> {
        if self.h == 1 && self.w == 1 {
            vec![self.c]
        } else {
            vec![self.c, self.h, self.w]
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.onnx_dims();
        let s: Vec<String> = d.iter().map(|v| v.to_string()).collect();
        write!(f, "[{}]", s.join("×"))
    }
}

/// A batch's storage: the bytes of a quantized activation, or the f32 values of a float
/// activation ([`super::ActInfo::float`]).
///
/// Why an enum: a float segment's ops read and write f32. Kept as bytes, each op copied its
/// input out to f32 and its output back in (with a zeroed allocation for each), a third of an
/// inference whose middle runs in float (NNCF's GELU model). Both variants read as bytes
/// ([`std::ops::Deref`]; a value's four bytes in native order), so a tape, a clone or a
/// length check handles every batch alike.
#[derive(Debug, Clone)]
pub enum Store {
    Bytes(Vec<u8>),
    Reals(Vec<f32>),
}

impl Store {
    /// The bytes, as an owned vector (a copy only for real values).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Store::Bytes(b) => b,
            Store::Reals(r) => bytemuck::cast_slice::<f32, u8>(&r).to_vec(),
        }
    }
}

impl From<Vec<u8>> for Store {
    fn from(b: Vec<u8>) -> Self {
        Store::Bytes(b)
    }
}

impl FromIterator<u8> for Store {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> Self {
        Store::Bytes(it.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Store {
    type Item = &'a u8;
    type IntoIter = std::slice::Iter<'a, u8>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::ops::Deref for Store {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Store::Bytes(b) => b,
            Store::Reals(r) => bytemuck::cast_slice(r),
        }
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Store::Bytes(b) => b,
            Store::Reals(r) => bytemuck::cast_slice_mut(r),
        }
    }
}

impl PartialEq for Store {
    /// Equal bytes, whichever variant holds them.
    fn eq(&self, other: &Store) -> bool {
        **self == **other
    }
}

impl PartialEq<Vec<u8>> for Store {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

/// A batch of `n` samples of one shape: quantized bytes (see `qparams`), or the real values
/// of a float activation.
#[derive(Debug, Clone)]
pub struct QBatch {
    pub n: usize,
    pub shape: Shape,
    pub data: Store,
}

impl QBatch {
    /// A batch filled with `fill`.
    pub fn filled(n: usize, shape: Shape, fill: u8) -> Self {
        QBatch {
            n,
            shape,
            data: vec![fill; n * shape.len()].into(),
        }
    }

    /// A batch of real values: the activation of a float segment ([`super::ActInfo::float`]),
    /// kept as they are (no copy).
    pub fn from_real(n: usize, shape: Shape, vals: Vec<f32>) -> Self {
        QBatch {
            n,
            shape,
            data: Store::Reals(vals),
        }
    }

    /// The real values of a batch made by [`QBatch::from_real`] (borrowed), or of bytes read as
    /// native-order f32 (copied).
    pub fn reals(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.data {
            Store::Reals(r) => std::borrow::Cow::Borrowed(r),
            Store::Bytes(b) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(b)),
        }
    }

    /// Sample `i`.
    pub fn sample(&self, i: usize) -> &[u8] {
        let l = self.shape.len();
        &self.data[i * l..(i + 1) * l]
    }
}
