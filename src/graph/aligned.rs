//! A float buffer whose first value sits on a 64-byte boundary, without `unsafe`.
//!
//! Why: the float layers' onnxruntime-order sums ([`super::ort_order`]) load 32 weights at a
//! time with AVX-512, one weight row after another. A `Vec<f32>` of a few hundred kilobytes
//! comes from `mmap` sixteen bytes past a page boundary, so every one of those 64-byte loads
//! straddled two cache lines. Here the vector holds up to fifteen floats of slack in front and
//! the slice starts at the first 64-byte boundary; the vector is never grown, so the boundary
//! stays where it is.

use std::ops::{Deref, DerefMut};

/// Floats to skip so that a 64-byte boundary comes first.
const FLOATS_PER_LINE: usize = 16;

/// `len` floats starting on a 64-byte boundary.
#[derive(Debug, Default)]
pub(crate) struct Aligned {
    buf: Vec<f32>,
    at: usize,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> Self {
        let buf = vec![0f32; len + FLOATS_PER_LINE - 1];
        let misaligned = (buf.as_ptr() as usize % 64) / std::mem::size_of::<f32>();
        let at = (FLOATS_PER_LINE - misaligned) % FLOATS_PER_LINE;
        Aligned { buf, at, len }
    }

    /// A copy of `values`.
    pub(crate) fn copy_of(values: &[f32]) -> Self {
        let mut a = Aligned::zeros(values.len());
        a.copy_from_slice(values);
        a
    }
}

impl Clone for Aligned {
    fn clone(&self) -> Self {
        // The clone's vector lies elsewhere: its own boundary.
        Aligned::copy_of(self)
    }
}

impl Deref for Aligned {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buf[self.at..self.at + self.len]
    }
}

impl DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_starts_on_a_line_and_keeps_its_values() {
        for len in [0usize, 1, 15, 16, 17, 1000, 50_000] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            let a = Aligned::copy_of(&values);
            assert_eq!(a.as_ptr() as usize % 64, 0, "length {len}");
            assert_eq!(&a[..], &values[..]);
            let b = a.clone();
            assert_eq!(b.as_ptr() as usize % 64, 0, "clone, length {len}");
            assert_eq!(&b[..], &values[..]);
        }
    }
}
