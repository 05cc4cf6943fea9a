//! Element-wise loops compiled twice: with AVX2 where the CPU has it, as plain code elsewhere.
//!
//! Why: the binary targets baseline x86-64 (SSE2) so it runs on every x86 box, but the training
//! step's element-wise passes (gradient quantization, clamp masks, depthwise channel loops) are
//! long and memory-bound, and SSE2 lacks the 32-bit vector multiply and byte widenings they
//! need, so they vectorize poorly or not at all. Running them 8 lanes wide where AVX2 exists
//! costs one runtime check per call. Each body runs the same operations per element in the
//! same order on both paths, so integer results are identical and every f32 value is formed
//! alike.

/// Defines `pub(crate) fn $name(args)`, which runs `$body` compiled with AVX2 enabled when the
/// CPU has it (so its channel loops vectorize 8 lanes wide: the baseline x86-64 target has no
/// 32-bit vector multiply) and as plain code otherwise. Same operations per element in the same
/// order either way: integer results are identical and every f32 sum is formed alike.
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) {
            /// The body compiled with AVX2 enabled.
            ///
            /// # Safety
            /// The CPU must support AVX2.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            $body($($arg),*)
        }
    };
}

pub(crate) use avx2_dispatch;

/// Defines `pub(crate) fn $name(args)`, which runs `$body::<16>` compiled with AVX-512F when the
/// CPU has it and `$wide` holds (a block of sixteen lanes has work to fill it), else
/// `$body::<8>` compiled with AVX2 where the CPU has it, else `$body::<8>` as plain code. The
/// body does the same operations per lane whatever its block, so every path gives the same
/// values ([`avx2_dispatch`], one block size wider).
macro_rules! lanes_dispatch {
    ($(#[$doc:meta])* $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?) if $wide:expr) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// The body on blocks of sixteen lanes, compiled with AVX-512F enabled.
                ///
                /// # Safety
                /// The CPU must support AVX-512F.
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<16>($($arg),*)
                }
                /// The body on blocks of eight lanes, compiled with AVX2 enabled.
                ///
                /// # Safety
                /// The CPU must support AVX2.
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<8>($($arg),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if $wide && has!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if has!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body::<8>($($arg),*)
        }
    };
}

pub(crate) use lanes_dispatch;
