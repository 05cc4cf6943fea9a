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

/// A batch of `n` quantized samples of one shape, stored as bytes (see `qparams`).
#[derive(Debug, Clone)]
pub struct QBatch {
    pub n: usize,
    pub shape: Shape,
    pub data: Vec<u8>,
}

impl QBatch {
    /// A batch filled with `fill`.
    pub fn filled(n: usize, shape: Shape, fill: u8) -> Self {
        QBatch {
            n,
            shape,
            data: vec![fill; n * shape.len()],
        }
    }

    /// A batch of real values: the activation of a float segment ([`super::ActInfo::float`]),
    /// each value's four bytes (native byte order) in `data`, so a tape keeps one type of batch.
    pub fn from_real(n: usize, shape: Shape, vals: &[f32]) -> Self {
        QBatch {
            n,
            shape,
            // One copy of the values' bytes (native order, which `reals` reads back): the
            // `flat_map(to_le_bytes)` this replaces stayed a scalar loop, a fifth of an
            // inference whose middle runs in float.
            data: bytemuck::cast_slice::<f32, u8>(vals).to_vec(),
        }
    }

    /// The real values of a batch made by [`QBatch::from_real`].
    pub fn reals(&self) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.data)
    }

    /// Sample `i`.
    pub fn sample(&self, i: usize) -> &[u8] {
        let l = self.shape.len();
        &self.data[i * l..(i + 1) * l]
    }
}
