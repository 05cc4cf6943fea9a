//! MLAS's sum for a product with one output column (`N = 1`): how onnxruntime computes a float
//! convolution whose output has a single pixel, such as the 1×1 convs of a squeeze-excitation
//! gate after a global average pool.
//!
//! Why its own order: MLAS hands such a product to its `M = 1` kernel with the operands
//! swapped (`MlasSgemmKernelM1TransposeBAvx`), which keeps eight partial sums per output (input
//! `k` goes to lane `k mod 8`, each product rounded, then added), and folds the lanes in an
//! order that depends on where the output row falls in its block of four, two or one rows.
//! The FMA chain of the other float layers differed from onnxruntime in 70 % and 49 % of the
//! outputs of an NNCF MobileNetV3's two gate convs (K = 72 and 18; 500 images, 45,000
//! values); this order in none.

/// Lanes of the kernel (one AVX register of f32).
const LANES: usize = 8;

/// How output row `j` of `rows` is folded: the kernel takes rows four at a time, then two,
/// then one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fold {
    Four,
    Two,
    One,
}

impl Fold {
    /// The fold of output row `j` of `rows`.
    pub(crate) fn of(j: usize, rows: usize) -> Fold {
        let fours = rows / 4 * 4;
        if j < fours {
            Fold::Four
        } else if (rows - fours) & 2 != 0 && j < fours + 2 {
            Fold::Two
        } else {
            Fold::One
        }
    }
}

/// `Σ x[k]·w[k]` as the kernel computes one output: in slices of `stride_k` (each slice's
/// result added to the output), eight lanes per slice, each product rounded.
pub(crate) fn m1t_sum(x: &[f32], w: &[f32], fold: Fold, stride_k: usize) -> f32 {
    let mut y = 0f32;
    for (xs, ws) in x.chunks(stride_k.max(1)).zip(w.chunks(stride_k.max(1))) {
        let mut l = [0f32; LANES];
        for (k, (&a, &b)) in xs.iter().zip(ws).enumerate() {
            l[k % LANES] += a * b;
        }
        let s = match fold {
            // Transposed, then the lanes of each 128-bit half in sequence, then the halves.
            Fold::Four => (((l[0] + l[1]) + l[2]) + l[3]) + (((l[4] + l[5]) + l[6]) + l[7]),
            // Interleaved: even and odd lanes of each half, the halves, then even + odd.
            Fold::Two => ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7])),
            // Two horizontal adds, then the halves.
            Fold::One => ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])),
        };
        y += s;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fold_in_fours_then_two_then_one() {
        let folds: Vec<Fold> = (0..7).map(|j| Fold::of(j, 7)).collect();
        assert_eq!(
            folds,
            [
                Fold::Four,
                Fold::Four,
                Fold::Four,
                Fold::Four,
                Fold::Two,
                Fold::Two,
                Fold::One
            ]
        );
        assert_eq!(Fold::of(0, 1), Fold::One);
        assert_eq!(Fold::of(1, 2), Fold::Two);
        assert_eq!(Fold::of(17, 18), Fold::Two);
    }

    /// The lanes and folds, checked on values whose sums are exact in f32 (so the order is
    /// visible only through which products go where), and against a sum in f64 on random ones.
    #[test]
    fn lanes_take_every_eighth_input() {
        // Input k contributes 2^k: each lane's sum, and the total, are exact.
        let x: Vec<f32> = (0..20).map(|k| (1u32 << k) as f32).collect();
        let w = vec![1f32; 20];
        for fold in [Fold::Four, Fold::Two, Fold::One] {
            assert_eq!(m1t_sum(&x, &w, fold, 1024), ((1u32 << 20) - 1) as f32);
            assert_eq!(m1t_sum(&x, &w, fold, 8), ((1u32 << 20) - 1) as f32);
        }
        // Cancellation shows the order: lane 0 holds 1e8 + 1 − 1e8 (the 1 is lost in f32),
        // lane 1 holds 1.
        let mut x = vec![0f32; 9];
        x[0] = 1e8;
        x[8] = -1e8;
        x[1] = 1.0;
        let w = vec![1f32; 9];
        assert_eq!(m1t_sum(&x, &w, Fold::Four, 1024), 1.0);
        let x: Vec<f32> = (0..77)
            .map(|k| ((k * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let w: Vec<f32> = (0..77)
            .map(|k| ((k * 53 % 97) as f32 - 48.0) * 0.021)
            .collect();
        let exact: f64 = x.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum();
        for fold in [Fold::Four, Fold::Two, Fold::One] {
            assert!((m1t_sum(&x, &w, fold, 1024) as f64 - exact).abs() < 1e-4);
        }
    }
}
