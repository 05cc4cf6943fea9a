//! Integer matrix products: the one narrow door through which every layer reaches the CPU.
//!
//! Layers ask for "the int8 GEMM" ([`gemm_u8i8`]) and never name an instruction set. The
//! implementation is chosen once per process ([`active`]) from what the CPU supports at run time
//! (never from compile-time flags: one binary must run, and run fast, on every board of its
//! architecture). Every kernel gives i32 results bit-identical to [`reference::gemm_u8i8`], the
//! dead-simple definition; `tests.rs` checks every kernel the host can run against it.
//!
//! Operand conventions (shared by every tier):
//! - `a` is the activation matrix, `m × k`, row-major, **unsigned** bytes with a zero point
//!   `a_zp` in `0..=255` (signed activations are shifted by +128 before they get here, which
//!   turns `x − zp` into `(x+128) − (zp+128)` exactly);
//! - `b` is the weight matrix, `n × k`, row-major, **signed** bytes over the full range
//!   `-128..=127`; the micro-kernels take it as symmetric (zero point 0);
//! - `c` is `m × n`, row-major i32: `c[i][j] = Σ_k (a[i][k] − a_zp) · b[j][k]`.
//!
//! Weights may carry zero points ([`PackedWeights::with_zero_points`]): per row (`zr[j]`, an
//! asymmetric uint8 weight tensor stored as `w − 128` with `zr = zp − 128`) or, in the
//! transposed weights the int8 backward uses, per column (`zc[k]`). The product is then
//! `c[i][j] = Σ_k (a[i][k] − a_zp) · (b[j][k] − zr[j] − zc[k])`, computed as the symmetric
//! kernel's result minus `zr[j]·Σ_k (a[i][k] − a_zp) + Σ_k (a[i][k] − a_zp)·zc[k]`, an
//! `O(m·k)` epilogue in [`GemmKernel::run`], the same on every tier (no micro-kernel changes, so
//! every tier stays exact: the correction is integer arithmetic on the same operands).
//!
//! The int8 hazard every SIMD tier must dodge: x86's `vpmaddubsw` adds two `u8 × s8` products
//! in a saturating i16, and `255·(−128)·2` does not fit. The AVX2 tier therefore widens both
//! operands to i16 (`a − zp` fits in i16) and uses `vpmaddwd`, whose pair sums are i32; NEON widens
//! to i16 too (`vmlal`); `sdot` multiplies `s8 × s8` into i32 after shifting `a` by −128, and
//! `vpdpbusd` (AVX-512 VNNI or AVX-VNNI) adds four `u8 × s8` products straight into i32, both
//! corrected exactly with the weights' row sums. No tier ever saturates.
//!
//! The source files under this folder use nothing of the crate outside it (only `std`, `rayon`
//! and `log`), so `device-tests/kernels` can compile them alone for emulated ARM targets.

mod dispatch;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod driver;
mod pack;
mod par;
pub mod reference;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_dot;
#[cfg(target_arch = "x86_64")]
mod vnni;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub use dispatch::{
    active, available, by_name, current, known_names, select, with_kernel, KernelError, ENV_VAR,
};

/// Weights prepared once for repeated products: the bytes, their row sums (for zero-point
/// corrections), and lazily built SIMD panel layouts (one per kernel family that asks).
///
/// Treat a value as immutable: the panels are derived from `data` on first use, so changing
/// `data` afterwards would leave them stale. Build a new one with [`PackedWeights::new`].
#[derive(Debug, Clone)]
pub struct PackedWeights {
    /// `n × k` row-major.
    pub data: Vec<i8>,
    /// Number of rows (output channels).
    pub n: usize,
    /// Row length (reduction depth).
    pub k: usize,
    /// `Σ_k b[j][k]` for every row `j`, built on first use by [`PackedWeights::row_sums`]:
    /// only a product with an activation zero point reads them, and the int8 backward builds
    /// weights from a batch's gradient (a long `k`) on every call.
    row_sums: OnceLock<Vec<i32>>,
    /// Zero point of every row (`n` values), or empty: all 0. The weight a product uses is
    /// `data[j][k] − row_zero[j]` (minus `col_zero[k]`).
    pub row_zero: Vec<i32>,
    /// Zero point of every column (`k` values), or empty: all 0 (the transposed weights of
    /// a matrix with row zero points).
    pub col_zero: Vec<i32>,
    // Empty (and unread) on targets without a SIMD tier, such as armv7.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    panels: pack::PanelCache,
    /// `data` transposed (`k × n`), built on first use by [`PackedWeights::transposed`].
    transposed: OnceLock<Box<PackedWeights>>,
    /// Which weights these are ([`PackedWeights::id`]).
    id: u64,
}

/// The next [`PackedWeights::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl PackedWeights {
    /// Prepare `n × k` row-major weights.
    ///
    /// # Panics
    /// If `data.len() != n * k` (a programming error, not an input error).
    pub fn new(data: Vec<i8>, n: usize, k: usize) -> Self {
        assert_eq!(data.len(), n * k, "weights must be n × k");
        PackedWeights {
            data,
            n,
            k,
            row_sums: OnceLock::new(),
            row_zero: Vec::new(),
            col_zero: Vec::new(),
            panels: pack::PanelCache::default(),
            transposed: OnceLock::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A number no other weights built in this process carry (a clone keeps it: it holds the
    /// same weights). Training replaces a layer's weights with new ones rather than changing
    /// them, so a cache keyed on it (onnxruntime-order constants built from a layer's current
    /// weights, see `graph::ort_rows`) is stale exactly when the id changed.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prepare `n × k` row-major stored weights with one zero point per row: the weight
    /// a product uses is `data[j][k] − row_zero[j]`. All-zero zero points are dropped (the
    /// plain [`PackedWeights::new`]).
    ///
    /// # Panics
    /// If `data.len() != n * k` or `row_zero` has neither 0 nor `n` values.
    pub fn with_zero_points(data: Vec<i8>, n: usize, k: usize, row_zero: Vec<i32>) -> Self {
        assert!(
            row_zero.is_empty() || row_zero.len() == n,
            "one zero point per row"
        );
        let mut w = Self::new(data, n, k);
        if row_zero.iter().any(|&z| z != 0) {
            w.row_zero = row_zero;
        }
        w
    }

    /// `Σ_k data[j][k]` for every row `j` (the stored bytes, zero points not subtracted).
    pub fn row_sums(&self) -> &[i32] {
        self.row_sums.get_or_init(|| {
            if self.k == 0 {
                vec![0; self.n]
            } else {
                self.data
                    .chunks_exact(self.k)
                    .map(|r| r.iter().map(|&v| v as i32).sum())
                    .collect()
            }
        })
    }

    /// Zero point of row `j` (0 without zero points).
    #[inline]
    pub fn zero_of(&self, j: usize) -> i32 {
        self.row_zero.get(j).copied().unwrap_or(0)
    }

    /// True when the weights carry zero points (row or column).
    pub fn has_zero_points(&self) -> bool {
        !self.row_zero.is_empty() || !self.col_zero.is_empty()
    }

    /// The weights a product uses, `data[j][k] − row_zero[j] − col_zero[k]`, row-major `n × k`.
    pub fn values(&self) -> Vec<i32> {
        let k = self.k.max(1);
        let mut out: Vec<i32> = self.data.iter().map(|&v| v as i32).collect();
        // Row by row, so no element pays a division for its row and column.
        for (j, row) in out.chunks_mut(k).enumerate() {
            let z = self.zero_of(j);
            for (kk, v) in row.iter_mut().enumerate() {
                *v -= z + self.col_zero.get(kk).copied().unwrap_or(0);
            }
        }
        out
    }

    /// The transposed weights (`k × n`) as weights of their own, built once and cached like
    /// the panels. The int8 backward's input gradient `G·W` is a product with `Wᵀ` as the
    /// weight operand; a layer's weights change at most once per training step, but the
    /// backward runs twice or more per step (forget and retain batches), and it used to
    /// transpose and repack them on every call.
    pub fn transposed(&self) -> &PackedWeights {
        self.transposed.get_or_init(|| {
            let (n, k) = (self.n, self.k);
            let mut t = vec![0i8; n * k];
            for (j, row) in self.data.chunks_exact(k.max(1)).enumerate().take(n) {
                for (kk, &v) in row.iter().enumerate() {
                    t[kk * n + j] = v;
                }
            }
            let mut t = PackedWeights::new(t, k, n);
            // Row zero points become column zero points of the transpose, and vice versa.
            t.row_zero = self.col_zero.clone();
            t.col_zero = self.row_zero.clone();
            Box::new(t)
        })
    }
}

/// The signature every kernel entry point has (see [`GemmKernel::run`]).
pub(crate) type GemmFn = fn(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]);

/// One GEMM implementation: a name (for logs and `QFORGET_KERNEL`) and its entry point.
///
/// A value of this type is only handed out for a kernel this CPU can run ([`available`],
/// [`by_name`]), which is what makes calling it safe.
#[derive(Clone, Copy)]
pub struct GemmKernel {
    /// Stable name, e.g. `scalar`, `avx2`, `avx-vnni`, `avx512-vnni`, `neon`,
    /// `neon-dotprod`.
    pub name: &'static str,
    run: GemmFn,
}

impl std::fmt::Debug for GemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for GemmKernel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl GemmKernel {
    /// `c (m × n) = (a (m × k) − a_zp) · wᵀ`. Splits output rows over rayon's current pool when
    /// the product is large enough to pay for it.
    ///
    /// # Panics
    /// If slice lengths do not match `m`, `w.n`, `w.k`, or `a_zp` is outside `0..=255`
    /// (programming errors).
    pub fn run(&self, m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
        assert_eq!(a.len(), m * w.k, "a must be m × k");
        assert_eq!(c.len(), m * w.n, "c must be m × n");
        assert!((0..=255).contains(&a_zp), "a_zp must be a u8 zero point");
        (self.run)(m, a, a_zp, w, c);
        if w.has_zero_points() {
            zero_point_epilogue(m, a, a_zp, w, c);
        }
    }
}

/// Subtract the weights' zero points from a symmetric product `c = (a − a_zp)·bᵀ`:
/// `c[i][j] −= row_zero[j]·Σ_k (a[i][k] − a_zp) + Σ_k (a[i][k] − a_zp)·col_zero[k]`.
/// Wrapping like the kernels' own i32 sums (the exact result fits i32 whenever the product
/// with the effective weights does).
fn zero_point_epilogue(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { epilogue_avx2(m, a, a_zp, w, c) };
    }
    epilogue(m, a, a_zp, w, c)
}

/// [`epilogue`] compiled with AVX2 (the per-output update is an i32 multiply, which SSE2
/// lacks; measured on the asymmetric-uint8 CNN fixture, whose 1-channel first conv makes the
/// epilogue a large share of the work).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn epilogue_avx2(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    epilogue(m, a, a_zp, w, c)
}

#[inline(always)]
fn epilogue(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    let (n, k) = (w.n, w.k);
    if n == 0 || k == 0 {
        return; // nothing to correct: every sum is empty
    }
    for (row, out) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)).take(m) {
        // Σ_k a as u32 (no overflow below 16 M columns), then − k·a_zp.
        let raw = byte_sum(row);
        let sum = (raw as i32).wrapping_sub((k as i32).wrapping_mul(a_zp));
        let col: i32 = if w.col_zero.is_empty() {
            0
        } else {
            row.iter().zip(&w.col_zero).fold(0i32, |s, (&v, &z)| {
                s.wrapping_add((v as i32 - a_zp).wrapping_mul(z))
            })
        };
        if w.row_zero.is_empty() {
            out.iter_mut().for_each(|o| *o = o.wrapping_sub(col));
        } else {
            for (o, &z) in out.iter_mut().zip(&w.row_zero) {
                *o = o.wrapping_sub(z.wrapping_mul(sum)).wrapping_sub(col);
            }
        }
    }
}

/// `Σ row` over 16 lanes, a shape the compiler vectorizes (a plain `.sum()` of widened bytes
/// stayed a scalar loop and was most of the epilogue's time in a profile).
#[inline(always)]
fn byte_sum(row: &[u8]) -> u32 {
    let mut lanes = [0u32; 16];
    let mut chunks = row.chunks_exact(16);
    for ch in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(ch) {
            *l += v as u32;
        }
    }
    lanes.iter().sum::<u32>() + chunks.remainder().iter().map(|&v| v as u32).sum::<u32>()
}

/// The portable kernel, available everywhere.
pub const SCALAR: GemmKernel = GemmKernel {
    name: "scalar",
    run: scalar::gemm_u8i8,
};

/// Convenience: run the kernel in force on this thread ([`current`]).
pub fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    current().run(m, a, a_zp, w, c)
}
