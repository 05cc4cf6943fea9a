//! qforget's C API (`include/qforget.h`) as a static library, `libqforget_c.a`.
//!
//! Why a crate of its own: a `staticlib` archive bundles every upstream rlib, so linking the
//! lean qforget library that the device CLI already compiled gives the same `qforget_*` symbols
//! without compiling qforget again. The C entry points are qforget's own (`src/ffi/`); this
//! crate only makes sure the library is linked in.

pub use qforget::ffi;
