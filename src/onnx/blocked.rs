//! Blocked quantization (DequantizeLinear's `block_size`, opset 21): one scale and zero point per
//! run of `block_size` elements along `axis`, the scale tensor having the data's rank with that
//! axis divided by the block size.
//!
//! The integer kernels take one scale per output channel. A blocked weight runs on them exactly
//! when every block of an output channel has the same scale and zero point (then it *is* a
//! per-channel weight, written another way); anything else would need one accumulator per block
//! and is refused with a message that says so, never approximated. Float uses of a blocked
//! constant (a bias, a BatchNormalization parameter) just dequantize it element by element.

/// The block layout of a dequantized constant.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocks {
    /// Elements per block along `axis`.
    pub size: usize,
    /// Dimensions of the scale (and zero-point) tensor.
    pub scale_dims: Vec<usize>,
}

/// Check a blocked scale of dimensions `scale_dims` (and zero point of `zp_dims`, if any) against
/// data of dimensions `dims`; the error says what does not fit.
pub fn check(
    dims: &[usize],
    axis: usize,
    block: i64,
    scale_dims: &[usize],
    zp_dims: Option<&[usize]>,
) -> Result<Blocks, String> {
    let Some(&len) = dims.get(axis) else {
        return Err(format!(
            "axis {axis} is outside the data's {} dimensions",
            dims.len()
        ));
    };
    let size = usize::try_from(block)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("block_size {block} is not positive"))?;
    if !len.is_multiple_of(size) {
        return Err(format!(
            "block_size {size} does not divide axis {axis} of length {len} (dimensions {dims:?})"
        ));
    }
    let want: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if i == axis { d / size } else { d })
        .collect();
    if scale_dims != want.as_slice() {
        return Err(format!(
            "blocked scale has dimensions {scale_dims:?}; data {dims:?} with block_size {size} on axis {axis} needs {want:?}"
        ));
    }
    if let Some(z) = zp_dims.filter(|z| *z != want.as_slice()) {
        return Err(format!(
            "blocked zero point has dimensions {z:?}, the scale {want:?}"
        ));
    }
    Ok(Blocks {
        size,
        scale_dims: want,
    })
}

impl Blocks {
    /// Index into the scale tensor of data element `i` (data dimensions `dims`).
    pub fn scale_index(&self, dims: &[usize], axis: usize, i: usize) -> usize {
        let mut rest = i;
        let mut idx = 0;
        let mut stride = 1;
        for d in (0..dims.len()).rev() {
            let k = rest % dims[d].max(1);
            rest /= dims[d].max(1);
            let k = if d == axis { k / self.size } else { k };
            idx += k * stride;
            stride *= self.scale_dims[d];
        }
        idx
    }

    /// Per-output-channel scale and zero point when every block of a channel agrees (output
    /// channels along `out_axis` of data `dims`); `None` when some channel's blocks differ.
    pub fn per_channel(
        &self,
        dims: &[usize],
        axis: usize,
        out_axis: usize,
        scale: &[f32],
        zero_point: &[i64],
    ) -> Option<(Vec<f32>, Vec<i64>)> {
        let out = *dims.get(out_axis)?;
        let inner: usize = dims[out_axis + 1..].iter().product();
        let n: usize = dims.iter().product();
        let mut s: Vec<Option<f32>> = vec![None; out];
        let mut z: Vec<Option<i64>> = vec![None; out];
        for i in 0..n {
            let c = (i / inner.max(1)) % out.max(1);
            let k = self.scale_index(dims, axis, i);
            let zk = zero_point.get(if zero_point.len() == 1 { 0 } else { k })?;
            let sk = scale.get(k)?;
            if *s[c].get_or_insert(*sk) != *sk || *z[c].get_or_insert(*zk) != *zk {
                return None;
            }
        }
        Some((
            s.into_iter().map(|v| v.unwrap_or(1.0)).collect(),
            z.into_iter().map(|v| v.unwrap_or(0)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let b = check(&[4, 6], 1, 3, &[4, 2], Some(&[4, 2])).unwrap();
        assert_eq!(b.size, 3);
        let e = check(&[4, 6], 1, 4, &[4, 2], None).unwrap_err();
        assert!(e.contains("does not divide axis 1 of length 6"), "{e}");
        assert!(check(&[4, 6], 1, 3, &[4, 3], None).is_err());
        assert!(check(&[4, 6], 1, 0, &[4, 2], None).is_err());
        assert!(check(&[4, 6], 2, 3, &[4, 2], None).is_err());
    }

    #[test]
    fn scale_index_and_collapse() {
        // [out=2][in=4], blocks of 2 along axis 1: scale [2][2].
        let b = check(&[2, 4], 1, 2, &[2, 2], None).unwrap();
        let idx: Vec<usize> = (0..8).map(|i| b.scale_index(&[2, 4], 1, i)).collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 3, 3]);
        let same = b.per_channel(&[2, 4], 1, 0, &[0.5, 0.5, 0.25, 0.25], &[0]);
        assert_eq!(same, Some((vec![0.5, 0.25], vec![0, 0])));
        assert_eq!(
            b.per_channel(&[2, 4], 1, 0, &[0.5, 0.4, 0.25, 0.25], &[0]),
            None
        );
        assert_eq!(
            b.per_channel(&[2, 4], 1, 0, &[0.5, 0.5, 0.25, 0.25], &[1, 2, 3, 3]),
            None
        );
        // MatMul [in=4][out=2] with blocks along axis 0 (scale [2][2]), out axis 1.
        let m = check(&[4, 2], 0, 2, &[2, 2], None).unwrap();
        let per = m.per_channel(&[4, 2], 0, 1, &[0.5, 0.25, 0.5, 0.25], &[0]);
        assert_eq!(per, Some((vec![0.5, 0.25], vec![0, 0])));
    }
}
