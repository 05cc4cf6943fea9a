//! aarch64 NEON tier (Cortex-A72 / Raspberry Pi 4 class, no dot product): exact by widening.
//!
//! Activations are packed as `a − zp` (i16, `−255..=255`) and weights as i16; each step
//! multiplies an 8-column weight row by one activation lane with `smlal`/`smlal2`
//! (`vmlal_laneq_s16`), accumulating in i32. Nothing is ever held in a 16-bit sum, so the
//! result equals the reference for the full `u8 × s8` range.
//!
//! Micro-kernel: 8 rows × 8 columns, 16 `int32x4` accumulators, per `k` one 8-lane weight load
//! and one 8-lane activation load.

use std::arch::aarch64::*;

use super::driver::{self, Tile};
use super::{GemmKernel, PackedWeights};

/// The NEON kernel, if this CPU has Advanced SIMD (every aarch64 Linux CPU does; still checked).
pub(super) fn kernel() -> Option<GemmKernel> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(GemmKernel {
        name: "neon",
        run: gemm_u8i8,
    })
}

fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    // SAFETY: only reachable through the `GemmKernel` that `kernel()` returns after checking
    // for NEON.
    unsafe { driver::gemm::<Neon>(m, a, a_zp, w, c) }
}

struct Neon;

const MR: usize = 8;
const NR: usize = 8;

impl Tile for Neon {
    const MR: usize = MR;
    const NR: usize = NR;
    const ROW_MAJOR: bool = false;
    const KG: usize = 1;
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
            .i16_nr8_kg1
            .get_or_init(|| super::pack::pack_b::<_, 1>(w, NR, |v| v as i16))
    }

    unsafe fn tile(kgroups: usize, a: *const i16, b: *const i16, out: &mut [i32]) {
        // SAFETY: forwarded from the trait's contract (NEON present, pointers valid).
        unsafe { tile_8x8(kgroups, a, b, out) }
    }
}

/// `out[i·8 + j] = Σ_k a[k][i]·b[k][j]`, all i16 products widened to i32.
///
/// # Safety
/// The CPU must have NEON; `a` and `b` must be valid for `kgroups·8` reads each, and `out` must
/// hold at least 64 values.
#[target_feature(enable = "neon")]
unsafe fn tile_8x8(kgroups: usize, a: *const i16, b: *const i16, out: &mut [i32]) {
    assert!(out.len() >= MR * NR);
    let z = vdupq_n_s32(0);
    let mut lo = [z; MR];
    let mut hi = [z; MR];
    for g in 0..kgroups {
        // SAFETY: g < kgroups: both 8-lane loads stay inside the packed blocks.
        let (av, bv) = unsafe { (vld1q_s16(a.add(g * MR)), vld1q_s16(b.add(g * NR))) };
        let (bl, bh) = (vget_low_s16(bv), vget_high_s16(bv));
        macro_rules! row {
            ($r:literal) => {
                lo[$r] = vmlal_laneq_s16::<$r>(lo[$r], bl, av);
                hi[$r] = vmlal_laneq_s16::<$r>(hi[$r], bh, av);
            };
        }
        row!(0);
        row!(1);
        row!(2);
        row!(3);
        row!(4);
        row!(5);
        row!(6);
        row!(7);
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
