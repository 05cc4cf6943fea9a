//! aarch64 dot-product tier (Cortex-A76 / Raspberry Pi 5 / Jetson Orin class): `sdot`.
//!
//! `sdot` adds four `s8 × s8` products into each i32 lane with no intermediate rounding or
//! saturation. Activations are shifted to signed (`a − 128`, a flip of the top bit) and the
//! result corrected exactly: `Σ (a − zp)·b = Σ (a − 128)·b + (128 − zp)·Σ b`, with `Σ b` the
//! weights' precomputed row sums. `vdotq_laneq_s32` is not stable on Rust 1.95, so the
//! instruction is emitted with `asm!`.
//!
//! Micro-kernel: 8 rows × 8 columns, 16 `int32x4` accumulators, per group of 4 `k` two 16-byte
//! weight loads (columns 0–3 and 4–7) and two 16-byte activation loads (rows 0–3 and 4–7).

use std::arch::aarch64::*;
use std::arch::asm;

use super::driver::{self, Tile};
use super::{GemmKernel, PackedWeights};

/// The `sdot` kernel, if this CPU has the dot-product extension.
pub(super) fn kernel() -> Option<GemmKernel> {
    std::arch::is_aarch64_feature_detected!("dotprod").then_some(GemmKernel {
        name: "neon-dotprod",
        run: gemm_u8i8,
    })
}

fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    // SAFETY: only reachable through the `GemmKernel` that `kernel()` returns after checking
    // for the dot-product extension.
    unsafe { driver::gemm::<NeonDot>(m, a, a_zp, w, c) }
}

struct NeonDot;

const MR: usize = 8;
const NR: usize = 8;

impl Tile for NeonDot {
    const MR: usize = MR;
    const NR: usize = NR;
    const ROW_MAJOR: bool = false;
    const KG: usize = 4;
    type A = i8;
    type B = i8;

    fn a_elem(x: u8, _zp: i32) -> i8 {
        (x ^ 0x80) as i8
    }

    fn zp_factor(zp: i32) -> i32 {
        128 - zp
    }

    fn panels(w: &PackedWeights) -> &[i8] {
        w.panels
            .i8_nr8_kg4
            .get_or_init(|| super::pack::pack_b::<_, 4>(w, NR, |v| v))
    }

    unsafe fn tile(kgroups: usize, a: *const i8, b: *const i8, out: &mut [i32]) {
        // SAFETY: forwarded from the trait's contract (dotprod present, pointers valid).
        unsafe { tile_8x8(kgroups, a, b, out) }
    }
}

/// `acc[l] += Σ_t b[4l + t] · a[4·LANE + t]` (one `sdot` by element).
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
unsafe fn sdot<const LANE: i32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a pure register operation; the caller guarantees the instruction exists.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            b = in(vreg) b,
            a = in(vreg) a,
            lane = const LANE,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `out[i·8 + j] = Σ_g Σ_t a[g][i][t]·b[g][j][t]`, signed bytes, i32 sums.
///
/// # Safety
/// The CPU must have NEON and the dot-product extension; `a` and `b` must be valid for
/// `kgroups·32` reads each, and `out` must hold at least 64 values.
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile_8x8(kgroups: usize, a: *const i8, b: *const i8, out: &mut [i32]) {
    assert!(out.len() >= MR * NR);
    let z = vdupq_n_s32(0);
    let mut lo = [z; MR];
    let mut hi = [z; MR];
    for g in 0..kgroups {
        // SAFETY: g < kgroups: the four 16-byte loads stay inside the packed blocks; `sdot` is
        // available per this function's contract.
        unsafe {
            let bp = b.add(g * NR * 4);
            let ap = a.add(g * MR * 4);
            let (b0, b1) = (vld1q_s8(bp), vld1q_s8(bp.add(16)));
            let (a0, a1) = (vld1q_s8(ap), vld1q_s8(ap.add(16)));
            macro_rules! row {
                ($r:literal, $av:ident, $lane:literal) => {
                    lo[$r] = sdot::<$lane>(lo[$r], b0, $av);
                    hi[$r] = sdot::<$lane>(hi[$r], b1, $av);
                };
            }
            row!(0, a0, 0);
            row!(1, a0, 1);
            row!(2, a0, 2);
            row!(3, a0, 3);
            row!(4, a1, 0);
            row!(5, a1, 1);
            row!(6, a1, 2);
            row!(7, a1, 3);
        }
    }
    for r in 0..MR {
        // SAFETY: out holds MR·NR values (asserted above); row r is out[r·8 .. r·8+8].
        unsafe {
            let o = out.as_mut_ptr().add(r * NR);
            vst1q_s32(o, lo[r]);
            vst1q_s32(o.add(4), hi[r]);
        }
    }
}
