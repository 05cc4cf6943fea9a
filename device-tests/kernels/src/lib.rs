//! The real `src/kernels/` of qforget, compiled on its own so its tests (`src/kernels/tests.rs`)
//! can run for ARM targets under qemu without cross-compiling the rest of the crate.

#[path = "../../../src/kernels/mod.rs"]
pub mod kernels;
