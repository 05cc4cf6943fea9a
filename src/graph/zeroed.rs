//! Gradient buffers zeroed piece by piece, by the thread that fills each piece.
//!
//! Why: a backward pass used to allocate its input gradient as one zeroed vector (`vec![0.0;
//! n]`, a `memset` of the whole batch, megabytes) and then walk it image by image, adding into
//! it. By the time an image's turn came, its zeros had left the caches, so every first addition
//! missed: measured on the memorizing Fashion-MNIST CNN, the max pool's routing stalled on
//! three quarters of its stores, and the `memset` itself was a tenth of the backward. Zeroing
//! each image's part just before it is filled keeps it in L1/L2 for the additions.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `len` values, built in parallel chunks of `chunk` values: each chunk is zeroed,
/// then handed to `fill(chunk index, chunk)` on the thread that zeroed it.
pub(crate) fn par_zeroed_chunks(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let zero_then_fill = |i: usize, part: &mut [MaybeUninit<f32>]| {
        for x in part.iter_mut() {
            x.write(0.0);
        }
        // SAFETY: every element of `part` was initialized just above, and `MaybeUninit<f32>`
        // has the layout of `f32`.
        let part = unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) };
        fill(i, part);
    };
    // SAFETY: `zero_then_fill` writes every element of its chunk.
    unsafe { par_written_chunks(len, chunk, zero_then_fill) }
}

/// [`par_zeroed_chunks`] for a `fill` that writes every value of its chunk: no zeroing pass.
///
/// # Safety
/// `fill(chunk index, chunk)` must initialize every element of the chunk it is given.
pub(crate) unsafe fn par_written_chunks(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| fill(i, part));
    // SAFETY: the chunks cover `..len` of the capacity, and `fill` initialized each of them
    // (this function's contract).
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod tests {
    use super::{par_written_chunks, par_zeroed_chunks};

    #[test]
    fn written_chunks_hold_what_fill_wrote() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (12, 4), (7, 100)] {
            // SAFETY: the closure writes every element of its chunk.
            let v = unsafe {
                par_written_chunks(len, chunk, |i, part| {
                    for (j, x) in part.iter_mut().enumerate() {
                        x.write((i * 1000 + j) as f32);
                    }
                })
            };
            let want: Vec<f32> = (0..len)
                .map(|k| ((k / chunk) * 1000 + k % chunk) as f32)
                .collect();
            assert_eq!(v, want, "len {len} chunk {chunk}");
        }
    }

    #[test]
    fn every_chunk_starts_at_zero_and_keeps_what_fill_writes() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 3), (12, 4), (7, 100)] {
            let v = par_zeroed_chunks(len, chunk, |i, part| {
                assert!(part.iter().all(|&x| x == 0.0));
                for (j, x) in part.iter_mut().enumerate() {
                    if j % 2 == 0 {
                        *x += (i * 1000 + j) as f32;
                    }
                }
            });
            assert_eq!(v.len(), len);
            for (k, &x) in v.iter().enumerate() {
                let (i, j) = (k / chunk, k % chunk);
                let want = if j % 2 == 0 {
                    (i * 1000 + j) as f32
                } else {
                    0.0
                };
                assert_eq!(x, want, "len {len} chunk {chunk} at {k}");
            }
        }
    }
}
