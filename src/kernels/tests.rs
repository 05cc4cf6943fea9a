//! Every kernel this host can run, against [`reference::gemm_u8i8`]: edge sizes around each
//! tier's tile, extreme values, and random shapes (proptest). Kernels that exist in qforget but
//! cannot run here are reported as skipped on stderr, with the reason; never silently passed.

use std::io::Write;
use std::sync::Once;

use proptest::prelude::*;

use super::{available, by_name, known_names, reference, GemmKernel, PackedWeights};

/// Runnable kernels. The ones skipped, and why, are written once to stderr directly (past the
/// test harness's capture, so they show in every run's log).
fn kernels() -> Vec<GemmKernel> {
    static REPORT: Once = Once::new();
    REPORT.call_once(|| {
        let mut err = std::io::stderr();
        for name in known_names() {
            match by_name(name) {
                Ok(_) => writeln!(err, "kernel tests: testing `{name}`"),
                Err(e) => writeln!(err, "kernel tests: SKIPPED `{name}`: {e}"),
            }
            .ok();
        }
    });
    available()
}

fn check(kernel: GemmKernel, m: usize, n: usize, k: usize, a: &[u8], zp: i32, b: &[i8]) {
    let mut want = vec![0; m * n];
    reference::gemm_u8i8(m, n, k, a, zp, b, &mut want);
    let mut got = vec![i32::MIN; m * n];
    kernel.run(m, a, zp, &PackedWeights::new(b.to_vec(), n, k), &mut got);
    assert_eq!(
        got, want,
        "kernel {} m={m} n={n} k={k} zp={zp}",
        kernel.name
    );
}

/// Deterministic bytes that hit both ends of each range often.
fn extremes(len: usize, seed: usize) -> (Vec<u8>, Vec<i8>) {
    let a = (0..len)
        .map(|i| match (i * 7 + seed) % 5 {
            0 | 1 => 255,
            2 => 0,
            3 => 128,
            _ => (i * 31 + seed) as u8,
        })
        .collect();
    let b = (0..len)
        .map(|i| match (i * 3 + seed) % 4 {
            0 => -128,
            1 => 127,
            2 => -128,
            _ => (i * 17 + seed) as u8 as i8,
        })
        .collect();
    (a, b)
}

/// Sizes 0, 1, and one below / at / above every tier's tile sizes (MR ∈ {6, 8}, NR ∈ {8, 16},
/// k groups of 2 and 4).
const EDGE: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33];

#[test]
fn every_kernel_matches_reference_on_edge_sizes_and_extremes() {
    for kernel in kernels() {
        for &m in EDGE {
            for &n in EDGE {
                for &k in &[0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 300] {
                    let (a, _) = extremes(m * k, m + k);
                    let (_, b) = extremes(n * k, n);
                    for zp in [0, 128, 255] {
                        check(kernel, m, n, k, &a, zp, &b);
                    }
                }
            }
        }
    }
}

#[test]
fn every_kernel_is_exact_at_the_saturation_corner() {
    // 255 × −128 and 0 × 127 everywhere with zero points at both ends: the sums a saturating
    // 16-bit pair (`vpmaddubsw`) gets wrong.
    for kernel in kernels() {
        for &(m, n, k) in &[(7, 17, 64), (13, 33, 1568), (1, 1, 4096)] {
            for (av, bv) in [(255u8, -128i8), (255, 127), (0, 127), (0, -128)] {
                let a = vec![av; m * k];
                let b = vec![bv; n * k];
                for zp in [0, 128, 255] {
                    check(kernel, m, n, k, &a, zp, &b);
                }
            }
        }
    }
}

#[test]
fn every_kernel_matches_reference_when_split_over_threads() {
    // Big enough to cross the parallel threshold; a 3-thread pool forces uneven row blocks.
    let (m, n, k) = (203, 77, 131);
    let (a, _) = extremes(m * k, 1);
    let (_, b) = extremes(n * k, 2);
    for kernel in kernels() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| check(kernel, m, n, k, &a, 3, &b));
    }
}

#[test]
fn transposed_weights_are_the_transpose_and_multiply_like_it() {
    for &(n, k) in &[(0, 0), (0, 3), (3, 0), (1, 1), (5, 7), (16, 33), (17, 9)] {
        let (_, b) = extremes(n * k, n + k);
        let w = PackedWeights::new(b.clone(), n, k);
        let t = w.transposed();
        assert_eq!((t.n, t.k), (k, n));
        for j in 0..n {
            for kk in 0..k {
                assert_eq!(t.data[kk * n + j], b[j * k + kk]);
            }
        }
        assert!(std::ptr::eq(t, w.transposed()), "built once");
        // The product with the cached transpose, on every tier, against the reference.
        let m = 7;
        let (a, _) = extremes(m * n, 3);
        for kernel in kernels() {
            let mut want = vec![0; m * k];
            reference::gemm_u8i8(m, k, n, &a, 128, &t.data, &mut want);
            let mut got = vec![i32::MIN; m * k];
            kernel.run(m, &a, 128, t, &mut got);
            assert_eq!(got, want, "kernel {} n={n} k={k}", kernel.name);
        }
    }
}

#[test]
fn forced_kernel_names_give_clear_errors() {
    assert!(by_name("no-such-kernel")
        .unwrap_err()
        .to_string()
        .contains("unknown int8 kernel `no-such-kernel`"));
    for name in known_names() {
        if let Err(e) = by_name(name) {
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}

#[test]
fn the_best_tier_is_the_last_known_one() {
    // `select` takes the last kernel `available` returns, so `known_names` is the preference
    // order: avx512-vnni > avx-vnni > avx2 > scalar, and neon-dotprod > neon > scalar.
    let pos = |name| known_names().iter().position(|&n| n == name).unwrap();
    for pair in [
        ["scalar", "avx2"],
        ["avx2", "avx-vnni"],
        ["avx-vnni", "avx512-vnni"],
        ["scalar", "neon"],
        ["neon", "neon-dotprod"],
    ] {
        assert!(pos(pair[0]) < pos(pair[1]), "{pair:?}");
    }
    let names: Vec<_> = available().iter().map(|k| k.name).collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|&n| pos(n));
    assert_eq!(names, sorted);
}

fn shape() -> impl Strategy<Value = (usize, usize, usize, Vec<u8>, Vec<i8>, i32)> {
    (0usize..40, 0usize..40, 0usize..80).prop_flat_map(|(m, n, k)| {
        let a = prop::collection::vec(
            prop_oneof![Just(0u8), Just(255u8), any::<u8>()],
            m * k..=m * k,
        );
        let b = prop::collection::vec(
            prop_oneof![Just(-128i8), Just(127i8), any::<i8>()],
            n * k..=n * k,
        );
        let zp = prop_oneof![Just(0), Just(128), Just(255), 0i32..=255];
        (Just(m), Just(n), Just(k), a, b, zp)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_kernel_matches_reference_on_random_shapes((m, n, k, a, b, zp) in shape()) {
        for kernel in kernels() {
            check(kernel, m, n, k, &a, zp, &b);
        }
    }
}

/// Device runs name the kernels the emulated CPU must offer (`QFORGET_EXPECT_KERNELS=neon,…`),
/// so a CPU model that silently lacks a feature fails instead of skipping its tier.
#[test]
fn expected_kernels_are_available() {
    let Ok(list) = std::env::var("QFORGET_EXPECT_KERNELS") else {
        return;
    };
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Err(e) = by_name(name) {
            panic!("QFORGET_EXPECT_KERNELS lists `{name}`: {e}");
        }
    }
}

/// One zero point per weight row in `-128..=127` (an asymmetric uint8 tensor stored as
/// `w − 128` has `zp − 128` there), hitting both ends.
fn row_zeros(n: usize, seed: usize) -> Vec<i32> {
    (0..n)
        .map(|j| match (j + seed) % 4 {
            0 => -128,
            1 => 127,
            _ => ((j * 37 + seed * 11) % 256) as i32 - 128,
        })
        .collect()
}

#[test]
fn every_kernel_subtracts_weight_zero_points_like_the_reference() {
    for kernel in kernels() {
        for &m in &[0, 1, 5, 9, 17] {
            for &n in &[0, 1, 7, 16, 33] {
                for &k in &[0, 1, 3, 8, 31, 300] {
                    let (a, _) = extremes(m * k, m + k);
                    let (_, b) = extremes(n * k, n);
                    let zr = row_zeros(n, m + n + k);
                    let w = PackedWeights::with_zero_points(b.clone(), n, k, zr.clone());
                    for zp in [0, 77, 128, 255] {
                        let mut want = vec![0; m * n];
                        reference::gemm_u8i8_zp((m, n, k), &a, zp, &b, &zr, &[], &mut want);
                        let mut got = vec![i32::MIN; m * n];
                        kernel.run(m, &a, zp, &w, &mut got);
                        assert_eq!(
                            got, want,
                            "kernel {} m={m} n={n} k={k} zp={zp}",
                            kernel.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn transposed_weights_carry_their_zero_points_to_the_columns() {
    for &(n, k) in &[(1, 1), (5, 7), (16, 33), (17, 9), (10, 300)] {
        let (_, b) = extremes(n * k, n + k);
        let zr = row_zeros(n, k);
        let w = PackedWeights::with_zero_points(b.clone(), n, k, zr.clone());
        let t = w.transposed();
        assert_eq!((&t.row_zero, &t.col_zero), (&vec![], &zr));
        // Its values are the transpose of the original's values.
        let (v, tv) = (w.values(), t.values());
        for j in 0..n {
            for kk in 0..k {
                assert_eq!(tv[kk * n + j], v[j * k + kk]);
                assert_eq!(v[j * k + kk], b[j * k + kk] as i32 - zr[j]);
            }
        }
        let m = 6;
        let (a, _) = extremes(m * n, 5);
        for kernel in kernels() {
            let mut want = vec![0; m * k];
            reference::gemm_u8i8_zp((m, k, n), &a, 128, &t.data, &[], &zr, &mut want);
            let mut got = vec![i32::MIN; m * k];
            kernel.run(m, &a, 128, t, &mut got);
            assert_eq!(got, want, "kernel {} n={n} k={k}", kernel.name);
        }
    }
}

#[test]
fn all_zero_zero_points_are_the_plain_weights() {
    let w = PackedWeights::with_zero_points(vec![1, -2, 3, 4], 2, 2, vec![0, 0]);
    assert!(!w.has_zero_points());
    assert_eq!(w.values(), vec![1, -2, 3, 4]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    #[test]
    fn every_kernel_matches_the_zero_point_reference_on_random_shapes(
        (m, n, k, a, b, zp) in shape(), seed in 0usize..1000,
    ) {
        let zr = row_zeros(n, seed);
        let w = PackedWeights::with_zero_points(b.clone(), n, k, zr.clone());
        let mut want = vec![0; m * n];
        reference::gemm_u8i8_zp((m, n, k), &a, zp, &b, &zr, &[], &mut want);
        for kernel in kernels() {
            let mut got = vec![i32::MIN; m * n];
            kernel.run(m, &a, zp, &w, &mut got);
            prop_assert_eq!(&got, &want, "kernel {}", kernel.name);
        }
    }
}
