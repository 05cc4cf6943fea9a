//! Integer matrix products: the one narrow door through which every layer reaches the CPU.
//!
//! Layers ask for "the int8 GEMM" ([`gemm_u8i8`]) and never name an instruction set. The
//! implementation is chosen once per process ([`active`]); today that is the portable scalar
//! kernel (SIMD tiers are added behind the same door). Every kernel must give i32 results
//! bit-identical to [`reference::gemm_u8i8`], the dead-simple definition.
//!
//! Operand conventions (shared by every tier):
//! - `a` is the activation matrix, `m × k`, row-major, **unsigned** bytes with a zero point
//!   `a_zp` in `0..=255` (signed activations are shifted by +128 before they get here, which
//!   turns `x − zp` into `(x+128) − (zp+128)` exactly);
//! - `b` is the weight matrix, `n × k`, row-major, **signed** bytes, zero point 0 (symmetric);
//! - `c` is `m × n`, row-major i32: `c[i][j] = Σ_k (a[i][k] − a_zp) · b[j][k]`.
//!
//! Both operands run along `k` contiguously, which is what im2col patches and `[out, in]`
//! weight rows give for free and what dot-product instructions want.

pub mod reference;
mod scalar;

use std::sync::OnceLock;

/// Weights prepared once for repeated products: the bytes plus their row sums (for the
/// activation zero-point correction).
#[derive(Debug, Clone)]
pub struct PackedWeights {
    /// `n × k` row-major.
    pub data: Vec<i8>,
    /// Number of rows (output channels).
    pub n: usize,
    /// Row length (reduction depth).
    pub k: usize,
    /// `Σ_k b[j][k]` for every row `j`.
    pub row_sums: Vec<i32>,
}

impl PackedWeights {
    /// Prepare `n × k` row-major weights.
    ///
    /// # Panics
    /// If `data.len() != n * k` (a programming error, not an input error).
    pub fn new(data: Vec<i8>, n: usize, k: usize) -> Self {
        assert_eq!(data.len(), n * k, "weights must be n × k");
        let row_sums = if k == 0 {
            vec![0; n]
        } else {
            data.chunks_exact(k)
                .map(|r| r.iter().map(|&v| v as i32).sum())
                .collect()
        };
        PackedWeights {
            data,
            n,
            k,
            row_sums,
        }
    }
}

/// One GEMM implementation: a name (for logs and `QFORGET_KERNEL`) and its entry point.
#[derive(Clone, Copy)]
pub struct GemmKernel {
    /// Stable name, e.g. `scalar`.
    pub name: &'static str,
    run: fn(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]),
}

impl std::fmt::Debug for GemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl GemmKernel {
    /// `c (m × n) = (a (m × k) − a_zp) · wᵀ`.
    ///
    /// # Panics
    /// If slice lengths do not match `m`, `w.n`, `w.k` (programming errors).
    pub fn run(&self, m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
        assert_eq!(a.len(), m * w.k, "a must be m × k");
        assert_eq!(c.len(), m * w.n, "c must be m × n");
        (self.run)(m, a, a_zp, w, c)
    }
}

/// The portable kernel, available everywhere.
pub const SCALAR: GemmKernel = GemmKernel {
    name: "scalar",
    run: scalar::gemm_u8i8,
};

/// Every kernel this CPU can run, portable first.
pub fn available() -> Vec<GemmKernel> {
    vec![SCALAR]
}

/// The kernel used by the graph, chosen once per process and logged once.
pub fn active() -> GemmKernel {
    static CHOSEN: OnceLock<GemmKernel> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let k = *available().last().expect("scalar kernel always exists");
        log::info!("int8 GEMM kernel: {}", k.name);
        k
    })
}

/// Convenience: run the active kernel.
pub fn gemm_u8i8(m: usize, a: &[u8], a_zp: i32, w: &PackedWeights, c: &mut [i32]) {
    active().run(m, a, a_zp, w, c)
}
