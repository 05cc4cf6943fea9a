//! Per-thread buffers for the int8 backward's large temporaries (a chunk's transposed patches,
//! its input-gradient accumulators), reused across calls and steps.
//!
//! Why: allocated fresh, these megabyte buffers were zeroed on every backward call (and, above
//! the allocator's mmap threshold, faulted in page by page): `memset` and page faults were a
//! tenth of the conv backward's samples in a profile of an OEU run. Callers overwrite every
//! element they read, so a buffer's old contents never matter.

use std::cell::RefCell;

thread_local! {
    static BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static INTS: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on a buffer of `len` bytes whose contents are unspecified.
pub(crate) fn with_bytes<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BYTES.with(|b| with(b, len, f))
}

/// Run `f` on a buffer of `len` i32 values whose contents are unspecified.
pub(crate) fn with_ints<R>(len: usize, f: impl FnOnce(&mut [i32]) -> R) -> R {
    INTS.with(|b| with(b, len, f))
}

fn with<T: Copy + Default, R>(
    cell: &RefCell<Vec<T>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
            f(&mut buf[..len])
        }
        // Busy: rayon let this thread pick up another chunk while a GEMM of the first one
        // waits inside a join. Use a fresh buffer rather than share.
        Err(_) => f(&mut vec![T::default(); len]),
    }
}

#[cfg(test)]
mod tests {
    use super::{with_bytes, with_ints};

    #[test]
    fn nested_use_gets_a_buffer_of_its_own() {
        with_bytes(10, |a| {
            a.fill(1);
            with_bytes(20, |b| {
                assert_eq!(b.len(), 20);
                b.fill(2);
            });
            assert!(a.iter().all(|&v| v == 1));
        });
        with_ints(3, |a| assert_eq!(a.len(), 3));
    }
}
