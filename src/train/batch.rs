//! Seeded shuffling and batching. "Same seed, same inputs → identical exported weights" is an
//! acceptance rule, so the order of samples must not depend on the platform, the thread count or
//! the `rand` version's choice of default generator: the generator is ChaCha8 (a specified stream),
//! seeded from a `u64`, and the shuffle is our own Fisher–Yates drawing `u64` bounds, so 32-bit
//! and 64-bit targets draw the same numbers.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator every seeded choice in qforget uses.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Fisher–Yates in place, from the last element down, with `u64` draws.
fn shuffle_in_place(v: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        v.swap(i, j);
    }
}

/// A seeded permutation of `items` (copied).
pub fn shuffled(items: &[usize], seed: u64) -> Vec<usize> {
    let mut v = items.to_vec();
    shuffle_in_place(&mut v, &mut rng(seed));
    v
}

/// Seeded shuffle of `items` cut into batches of `size` (last one may be short; none empty).
///
/// Panics if `size == 0`.
pub fn batches(items: &[usize], size: usize, seed: u64) -> Vec<Vec<usize>> {
    assert!(size > 0, "batch size must be at least 1");
    shuffled(items, seed)
        .chunks(size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// An endless seeded stream of batches: reshuffles with seed+epoch each time it wraps.
///
/// Epoch 0 uses `seed` itself, so its batches are exactly `batches(items, size, seed)`; every
/// epoch ends with its own (possibly short) batch, so each sample is seen once per epoch.
#[derive(Debug, Clone)]
pub struct BatchStream {
    items: Vec<usize>,
    size: usize,
    seed: u64,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
}

impl BatchStream {
    /// Panics if `items` is empty or `size == 0` (no batch could ever be produced).
    pub fn new(items: Vec<usize>, size: usize, seed: u64) -> Self {
        assert!(size > 0, "batch size must be at least 1");
        assert!(!items.is_empty(), "a batch stream needs at least one item");
        let order = shuffled(&items, seed);
        BatchStream {
            items,
            size,
            seed,
            epoch: 0,
            order,
            pos: 0,
        }
    }

    /// The next batch; starts a new epoch (and a new shuffle) when the current one is used up.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.pos >= self.order.len() {
            self.epoch += 1;
            self.order = shuffled(&self.items, self.seed.wrapping_add(self.epoch));
            self.pos = 0;
        }
        let end = (self.pos + self.size).min(self.order.len());
        let batch = self.order[self.pos..end].to_vec();
        self.pos = end;
        batch
    }

    /// Epochs started before the current one (0 during the first pass).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let items: Vec<usize> = (100..200).collect();
        let a = shuffled(&items, 42);
        assert_eq!(a, shuffled(&items, 42));
        assert_ne!(a, shuffled(&items, 43));
        assert_ne!(a, items);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, items);
        assert!(shuffled(&[], 1).is_empty());
        assert_eq!(shuffled(&[7], 1), [7]);
    }

    #[test]
    fn shuffle_is_stable_across_platforms_and_versions() {
        // Pinned output: if this changes (a rand / rand_chacha update, a different target), runs
        // with the same seed no longer reproduce earlier ones. Regenerate only deliberately.
        let items: Vec<usize> = (0..10).collect();
        assert_eq!(shuffled(&items, 0), PINNED_SEED0);
    }
    const PINNED_SEED0: [usize; 10] = [6, 1, 8, 3, 2, 9, 0, 5, 4, 7];

    #[test]
    fn batches_cover_everything_once() {
        let items: Vec<usize> = (0..10).collect();
        let b = batches(&items, 4, 9);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(b.concat(), shuffled(&items, 9));
        assert_eq!(batches(&items, 10, 9).len(), 1);
        assert_eq!(batches(&items, 11, 9), [shuffled(&items, 9)]);
        assert!(batches(&[], 3, 9).is_empty());
    }

    #[test]
    fn stream_reshuffles_each_epoch() {
        let items: Vec<usize> = (0..7).collect();
        let mut s = BatchStream::new(items.clone(), 3, 5);
        let first: Vec<_> = (0..3).map(|_| s.next_batch()).collect();
        assert_eq!(first, batches(&items, 3, 5));
        assert_eq!(s.epoch(), 0);
        let second: Vec<_> = (0..3).map(|_| s.next_batch()).collect();
        assert_eq!(s.epoch(), 1);
        assert_eq!(second, batches(&items, 3, 6));
        assert_ne!(first, second);
        // Deterministic: a second stream with the same seed gives the same sequence.
        let mut t = BatchStream::new(items, 3, 5);
        let again: Vec<_> = (0..6).map(|_| t.next_batch()).collect();
        assert_eq!(again, [first, second].concat());
    }
}
