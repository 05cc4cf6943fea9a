//! x86_64 AVX-512 VNNI tier (Ice Lake, Sapphire Rapids, Zen 4 and later), on 256-bit registers.
//!
//! `vpdpbusd` multiplies four `u8 × s8` pairs and adds them to an i32 lane with no 16-bit
//! intermediate, so unlike `vpmaddubsw` it is exact over the full range; one instruction does
//! the work of `vpmaddwd` + `vpaddd` on twice as many values. Activations stay unsigned bytes;
//! the zero point is corrected from the weights' row sums: `Σ (a − zp)·b = Σ a·b − zp·Σ b`
//! (at most `k·255·128` in magnitude, exact in i32 for every `k < 65 793`).
//!
//! Micro-kernel: 6 rows × 16 columns, 12 ymm accumulators, per group of 4 `k` two weight loads
//! and six 32-bit broadcasts.

use std::arch::x86_64::*;

use super::driver::{self, Tile};
use super::{GemmKernel, PackedWeights};

/// The VNNI kernel, if this CPU has AVX-512 VNNI with 256-bit (VL) encodings.
pub(super) fn kernel() -> Option<GemmKernel> {
    (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")).then_some(
        GemmKernel {
            name: "avx512-vnni",
            run: gemm_u8i8,
        },
    )
}

fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    // SAFETY: only reachable through the `GemmKernel` that `kernel()` returns after checking
    // for AVX-512 VNNI and VL.
    unsafe { driver::gemm::<Vnni>(m, a, a_zp, w, c) }
}

struct Vnni;

const MR: usize = 6;
const NR: usize = 16;

impl Tile for Vnni {
    const MR: usize = MR;
    const NR: usize = NR;
    const KG: usize = 4;
    type A = u8;
    type B = i8;

    fn a_elem(x: u8, _zp: i32) -> u8 {
        x
    }

    fn zp_factor(zp: i32) -> i32 {
        -zp
    }

    fn panels(w: &PackedWeights) -> &[i8] {
        w.panels
            .i8_nr16_kg4
            .get_or_init(|| super::pack::pack_b(w, NR, 4, |v| v))
    }

    unsafe fn tile(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
        // SAFETY: forwarded from the trait's contract (VNNI present, pointers valid).
        unsafe { tile_6x16(kgroups, a, b, out) }
    }
}

/// `out[i·16 + j] = Σ_g Σ_t a[g][i][t]·b[g][j][t]` (`vpdpbusd`).
///
/// # Safety
/// The CPU must have AVX-512 VNNI and VL; `a` must be valid for `kgroups·24` reads, `b` for
/// `kgroups·64`, and `out` must hold at least 96 values.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
unsafe fn tile_6x16(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
    assert!(out.len() >= MR * NR);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    for g in 0..kgroups {
        // SAFETY: g < kgroups, so these reads stay inside the packed blocks (caller's contract).
        unsafe {
            let bp = b.add(g * NR * 4);
            let b0 = _mm256_loadu_si256(bp as *const __m256i);
            let b1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
            let ap = a.add(g * MR * 4) as *const i32;
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(ap.add(r).read_unaligned());
                row[0] = _mm256_dpbusd_epi32(row[0], av, b0);
                row[1] = _mm256_dpbusd_epi32(row[1], av, b1);
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
