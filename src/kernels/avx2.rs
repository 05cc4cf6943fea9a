//! x86_64 AVX2 tier: exact `u8 × s8` products without `vpmaddubsw`.
//!
//! `vpmaddubsw` would add two `u8 × s8` products in a saturating i16, and `255·(−128)·2`
//! overflows it; onnxruntime's AVX2 path loses accuracy exactly there. Here activations are
//! packed as `a − zp` (in `−255..=255`, an i16) and weights as sign-extended i16, two `k` values
//! per 32-bit lane, and `vpmaddwd` sums each pair straight into i32 (at most `2·255·128`). The zero
//! point is subtracted while packing, so no row-sum correction is needed.
//!
//! Micro-kernel: 6 rows × 16 columns, i.e. 12 ymm accumulators, two weight loads and six 32-bit
//! broadcasts per pair of `k`.

use std::arch::x86_64::*;

use super::driver::{self, Tile};
use super::{GemmKernel, PackedWeights};

/// The AVX2 kernel, if this CPU has AVX2.
pub(super) fn kernel() -> Option<GemmKernel> {
    is_x86_feature_detected!("avx2").then_some(GemmKernel {
        name: "avx2",
        run: gemm_u8i8,
    })
}

fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    // SAFETY: this function is only reachable through the `GemmKernel` that `kernel()` returns
    // after checking that the CPU has AVX2.
    unsafe { driver::gemm::<Avx2>(m, a, a_zp, w, c) }
}

struct Avx2;

const MR: usize = 6;
const NR: usize = 16;

impl Tile for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const ROW_MAJOR: bool = true;
    const KG: usize = 2;
    type A = i16;
    type B = i16;

    fn a_elem(x: u8, zp: i32) -> i16 {
        // Wrapping: a zero point is a byte, so this never overflows; a checked `-` (the test
        // build's overflow checks) kept the packing loop scalar there.
        (x as i32).wrapping_sub(zp) as i16
    }

    fn zp_factor(_zp: i32) -> i32 {
        0
    }

    fn panels(w: &PackedWeights) -> &[i16] {
        w.panels
            .i16_nr16_kg2
            .get_or_init(|| super::pack::pack_b::<_, 2>(w, NR, |v| v as i16))
    }

    unsafe fn tile(kgroups: usize, a: *const i16, b: *const i16, out: &mut [i32]) {
        // SAFETY: forwarded from the trait's contract (AVX2 present, pointers valid).
        unsafe { tile_6x16(kgroups, a, b, out) }
    }
}

/// `out[i·16 + j] = Σ_g a[i][g]·b[g][j]` where each element is a pair of i16 (`vpmaddwd`);
/// `a` is 6 rows of `kgroups` pairs (row-major: no regrouping of the activations, see
/// `Tile::ROW_MAJOR`).
///
/// # Safety
/// The CPU must have AVX2; `a` must be valid for `kgroups·6·2` reads, `b` for `kgroups·16·2`,
/// and `out` must hold at least 96 values.
#[target_feature(enable = "avx2")]
unsafe fn tile_6x16(kgroups: usize, a: *const i16, b: *const i16, out: &mut [i32]) {
    assert!(out.len() >= MR * NR);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    for g in 0..kgroups {
        // SAFETY: g < kgroups, so these reads stay inside the packed blocks (caller's contract);
        // unaligned loads and reads are used throughout.
        unsafe {
            let bp = b.add(g * NR * 2);
            let b0 = _mm256_loadu_si256(bp as *const __m256i);
            let b1 = _mm256_loadu_si256(bp.add(16) as *const __m256i);
            let ap = a.add(g * 2) as *const i32;
            for (r, row) in acc.iter_mut().enumerate() {
                // Row r's pair g: `kgroups` i32 units per row.
                let av = _mm256_set1_epi32(ap.add(r * kgroups).read_unaligned());
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(av, b0));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(av, b1));
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: out holds MR·NR values (asserted above); row r covers out[r·16 .. r·16+16].
        unsafe {
            let o = out.as_mut_ptr().add(r * NR) as *mut __m256i;
            _mm256_storeu_si256(o, row[0]);
            _mm256_storeu_si256(o.add(1), row[1]);
        }
    }
}
