//! Which kernel runs: the table of kernels this CPU supports, the one chosen per process
//! (best available, or forced with `QFORGET_KERNEL`), and a scoped override for tests and
//! benchmarks that must run the same graph on every tier.
//!
//! "Compiled for this target" (the `cfg`s below) is kept apart from "supported by this CPU"
//! (each tier's `detect()`); a [`GemmKernel`] value only exists for a kernel that passed both.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

use super::{GemmKernel, SCALAR};

/// Environment variable that forces a kernel by name.
pub const ENV_VAR: &str = "QFORGET_KERNEL";

/// Why a requested kernel cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// No kernel of that name exists in qforget.
    Unknown { name: String },
    /// The kernel exists but this binary or CPU cannot run it.
    Unsupported { name: String, reason: String },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Unknown { name } => write!(
                f,
                "unknown int8 kernel `{name}` (known: {})",
                known_names().join(", ")
            ),
            KernelError::Unsupported { name, reason } => {
                write!(f, "int8 kernel `{name}` cannot run here: {reason}")
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// Every kernel name qforget knows, on any architecture, least preferred first: [`available`]
/// keeps this order and [`select`] takes the last one this CPU runs (on x86_64: `avx512-vnni`,
/// then `avx-vnni`, then `avx2`, then `scalar`).
pub fn known_names() -> &'static [&'static str] {
    &[
        "scalar",
        "avx2",
        "avx-vnni",
        "avx512-vnni",
        "neon",
        "neon-dotprod",
    ]
}

/// Look a kernel up by name and check that this CPU can run it.
pub fn by_name(name: &str) -> Result<GemmKernel, KernelError> {
    let unsupported = |reason: &str| KernelError::Unsupported {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    match name {
        "scalar" => Ok(SCALAR),
        "avx2" => {
            #[cfg(target_arch = "x86_64")]
            {
                super::avx2::kernel().ok_or_else(|| unsupported("this CPU has no AVX2"))
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Err(unsupported("AVX2 exists only on x86_64 builds"))
            }
        }
        "avx-vnni" => {
            #[cfg(target_arch = "x86_64")]
            {
                super::vnni::avx_kernel().ok_or_else(|| unsupported("this CPU has no AVX-VNNI"))
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Err(unsupported("AVX-VNNI exists only on x86_64 builds"))
            }
        }
        "avx512-vnni" => {
            #[cfg(target_arch = "x86_64")]
            {
                super::vnni::avx512_kernel()
                    .ok_or_else(|| unsupported("this CPU has no AVX-512 VNNI (with VL)"))
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                Err(unsupported("AVX-512 VNNI exists only on x86_64 builds"))
            }
        }
        "neon" => {
            #[cfg(target_arch = "aarch64")]
            {
                super::neon::kernel().ok_or_else(|| unsupported("this CPU has no NEON"))
            }
            #[cfg(not(target_arch = "aarch64"))]
            {
                Err(unsupported("the NEON kernel exists only on aarch64 builds"))
            }
        }
        "neon-dotprod" => {
            #[cfg(target_arch = "aarch64")]
            {
                super::neon_dot::kernel()
                    .ok_or_else(|| unsupported("this CPU has no dot-product extension (sdot)"))
            }
            #[cfg(not(target_arch = "aarch64"))]
            {
                Err(unsupported("the sdot kernel exists only on aarch64 builds"))
            }
        }
        _ => Err(KernelError::Unknown {
            name: name.to_string(),
        }),
    }
}

/// Every kernel this CPU can run, portable first, fastest last.
pub fn available() -> Vec<GemmKernel> {
    known_names()
        .iter()
        .filter_map(|n| by_name(n).ok())
        .collect()
}

/// The kernel this process should use: `QFORGET_KERNEL` if set (an error if this CPU cannot
/// run it), else the fastest available. Call it at startup to turn a bad request into an error.
pub fn select() -> Result<GemmKernel, KernelError> {
    match std::env::var(ENV_VAR) {
        Ok(name) if !name.trim().is_empty() => by_name(name.trim()),
        _ => Ok(*available().last().expect("scalar kernel always exists")),
    }
}

/// The kernel used by the graph, chosen once per process and logged once. A `QFORGET_KERNEL`
/// this CPU cannot run is logged as an error (one line) and the best kernel is used instead;
/// front ends that prefer to stop call [`select`] first.
pub fn active() -> GemmKernel {
    static CHOSEN: OnceLock<GemmKernel> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let k = select().unwrap_or_else(|e| {
            let best = *available().last().expect("scalar kernel always exists");
            log::error!("{ENV_VAR}: {e}; using `{}`", best.name);
            best
        });
        log::info!("int8 GEMM kernel: {}", k.name);
        k
    })
}

thread_local! {
    static OVERRIDE: Cell<Option<GemmKernel>> = const { Cell::new(None) };
}

/// The kernel in force on this thread: a [`with_kernel`] override, else [`active`].
pub fn current() -> GemmKernel {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(active)
}

/// Run `f` with every GEMM it reaches using `kernel`, on a dedicated rayon pool of `threads`
/// workers (0 = rayon's default). The override lives in each worker's thread-local state, so
/// it covers nested parallel work and cannot leak into other tests or callers.
pub fn with_kernel<R: Send>(
    kernel: GemmKernel,
    threads: usize,
    f: impl FnOnce() -> R + Send,
) -> Result<R, rayon::ThreadPoolBuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |_| OVERRIDE.with(|o| o.set(Some(kernel))))
        .build()?;
    Ok(pool.install(f))
}
