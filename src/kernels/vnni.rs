//! x86_64 VNNI tiers: `vpdpbusd` on 256-bit registers, in its two encodings.
//!
//! - `avx512-vnni`: the EVEX form from AVX-512 VNNI with VL (Ice Lake, Sapphire Rapids, Zen 4
//!   and later);
//! - `avx-vnni`: the VEX form from AVX-VNNI (Alder Lake, N100-class boxes, Arrow Lake), for CPUs
//!   that have it without AVX-512.
//!
//! `vpdpbusd` multiplies four `u8 × s8` pairs and adds them to an i32 lane with no 16-bit
//! intermediate, so unlike `vpmaddubsw` it is exact over the full range; one instruction does
//! the work of `vpmaddwd` + `vpaddd` on twice as many values. Activations stay unsigned bytes;
//! the zero point is corrected from the weights' row sums: `Σ (a − zp)·b = Σ a·b − zp·Σ b`
//! (at most `k·255·128` in magnitude, exact in i32 for every `k < 65 793`).
//!
//! The two tiers compute the same thing on the same panels, so the micro-kernel body is written
//! once, generic over the encoding ([`Dpbusd`]), and each tier compiles it inside a function with
//! its own target features. Those features are what make LLVM emit the VEX or the EVEX
//! instruction: the `avx-vnni` tier must never contain an EVEX one, which would fault on a CPU
//! without AVX-512 (checked by disassembly: `{vex} vpdpbusd` only).
//!
//! Micro-kernel: 6 rows × 16 columns, 12 ymm accumulators, per group of 4 `k` two weight loads
//! and six 32-bit broadcasts.

use std::arch::x86_64::*;
use std::marker::PhantomData;

use super::driver::{self, Tile};
use super::{GemmKernel, PackedWeights};

/// The AVX-512 VNNI kernel, if this CPU has AVX-512 VNNI with 256-bit (VL) encodings.
pub(super) fn avx512_kernel() -> Option<GemmKernel> {
    (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")).then_some(
        GemmKernel {
            name: "avx512-vnni",
            run: gemm_u8i8::<Evex>,
        },
    )
}

/// The AVX-VNNI kernel, if this CPU has AVX-VNNI (and AVX2).
pub(super) fn avx_kernel() -> Option<GemmKernel> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("avxvnni")).then_some(
        GemmKernel {
            name: "avx-vnni",
            run: gemm_u8i8::<Vex>,
        },
    )
}

fn gemm_u8i8<D: Dpbusd>(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    // SAFETY: `gemm_u8i8::<Evex>` and `gemm_u8i8::<Vex>` are only reachable through the
    // `GemmKernel`s that `avx512_kernel()` and `avx_kernel()` return after checking the CPU for
    // the features that `D::tile` enables.
    unsafe { driver::gemm::<Vnni<D>>(m, a, a_zp, w, c) }
}

/// One encoding of `vpdpbusd`, and the micro-kernel compiled for it.
trait Dpbusd: Send + Sync + 'static {
    /// `acc + Σ_{t<4} a[4l+t]·b[4l+t]` in each i32 lane `l` (`a` unsigned, `b` signed bytes).
    ///
    /// # Safety
    /// The CPU must have this encoding's features, and the caller must be compiled with them
    /// (it is inlined there).
    unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;

    /// [`tile_6x16`] compiled with this encoding's target features.
    ///
    /// # Safety
    /// The CPU must have those features; `a`, `b` and `out` as [`tile_6x16`] requires.
    unsafe fn tile(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]);
}

/// EVEX `vpdpbusd` (AVX-512 VNNI + VL).
struct Evex;

impl Dpbusd for Evex {
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL are present and enabled here (this function's contract).
        unsafe { _mm256_dpbusd_epi32(acc, a, b) }
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    unsafe fn tile(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
        // SAFETY: forwarded from this function's contract; Evex's features are enabled here.
        unsafe { tile_6x16::<Self>(kgroups, a, b, out) }
    }
}

/// VEX `vpdpbusd` (AVX-VNNI).
struct Vex;

impl Dpbusd for Vex {
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX-VNNI is present and enabled here (this function's contract).
        unsafe { _mm256_dpbusd_avx_epi32(acc, a, b) }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn tile(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
        // SAFETY: forwarded from this function's contract; Vex's features are enabled here.
        unsafe { tile_6x16::<Self>(kgroups, a, b, out) }
    }
}

/// Either VNNI tier, told apart by its encoding `D`.
struct Vnni<D>(PhantomData<D>);

const MR: usize = 6;
const NR: usize = 16;

impl<D: Dpbusd> Tile for Vnni<D> {
    const MR: usize = MR;
    const NR: usize = NR;
    const ROW_MAJOR: bool = true;
    const KG: usize = 4;
    type A = u8;
    type B = i8;

    fn a_elem(x: u8, _zp: i32) -> u8 {
        x
    }

    fn a_in_place(a: &[u8]) -> Option<&[u8]> {
        Some(a)
    }

    fn zp_factor(zp: i32) -> i32 {
        -zp
    }

    fn panels(w: &PackedWeights) -> &[i8] {
        w.panels
            .i8_nr16_kg4
            .get_or_init(|| super::pack::pack_b::<_, 4>(w, NR, |v| v))
    }

    unsafe fn tile(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
        // SAFETY: forwarded from the trait's contract (D's features present, pointers valid).
        unsafe { D::tile(kgroups, a, b, out) }
    }
}

/// `out[i·16 + j] = Σ_g Σ_t a[i][g][t]·b[g][j][t]` (`vpdpbusd`; `a` is 6 rows of `kgroups`
/// groups, row-major, see `Tile::ROW_MAJOR`). Always inlined into a
/// [`Dpbusd::tile`], so it is compiled with that encoding's features.
///
/// # Safety
/// The CPU must have `D`'s features and the caller must be compiled with them; `a` must be
/// valid for `kgroups·24` reads, `b` for `kgroups·64`, and `out` must hold at least 96 values.
#[inline(always)]
unsafe fn tile_6x16<D: Dpbusd>(kgroups: usize, a: *const u8, b: *const i8, out: &mut [i32]) {
    assert!(out.len() >= MR * NR);
    // SAFETY: AVX2 is among D's features (this function's contract).
    let mut acc = unsafe { [[_mm256_setzero_si256(); 2]; MR] };
    for g in 0..kgroups {
        // SAFETY: g < kgroups, so these reads stay inside the packed blocks, and D's features
        // are enabled (this function's contract).
        unsafe {
            let bp = b.add(g * NR * 4);
            let b0 = _mm256_loadu_si256(bp as *const __m256i);
            let b1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
            let ap = a.add(g * 4) as *const i32;
            for (r, row) in acc.iter_mut().enumerate() {
                // Row r's group g: `kgroups` i32 units per row.
                let av = _mm256_set1_epi32(ap.add(r * kgroups).read_unaligned());
                row[0] = D::dpbusd(row[0], av, b0);
                row[1] = D::dpbusd(row[1], av, b1);
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
