//! The C API (`include/qforget.h`, generated from this module by cbindgen).
//!
//! Why it looks the way it does, after onnxruntime's, tract's and wasmtime's C APIs:
//! - **Handles are ids, not pointers.** `QfSession`, `QfRequest` and `QfResult` are small
//!   structs holding a 64-bit id that qforget never reuses. Every call looks the id up in a
//!   registry, so a released or never-created handle is refused with
//!   `QF_ERR_INVALID_HANDLE`: a use-after-free or a double release is impossible by design,
//!   not undefined behaviour. The zero handle is "none"; releasing it is a no-op.
//! - **Every call returns a [`QfStatus`]**; `qf_last_error()` gives the message of the last
//!   failed call on the calling thread. No Rust panic crosses the boundary: each entry point
//!   runs under `catch_unwind` and a panic becomes `QF_ERR_INTERNAL`.
//! - **Memory qforget allocates stays qforget's**: strings it hands out live in the handle
//!   (or thread) that produced them and are freed with it.
//! - **Cancellation** is a flag: `qf_request_cancel` may be called from any thread, and a
//!   progress callback returning non-zero does the same; the run ends after the current step
//!   with `QF_ERR_CANCELLED` and writes nothing.
//!
//! Everything a request does is the library's [`crate::request`]: this module only converts.

mod chain;
mod error;
mod registry;
mod request;
mod result;
mod session;

pub use chain::{qf_chain_rebuild, qf_chain_verify};
pub use error::{qf_last_error, QfStatus};
pub use request::{
    qf_request_cancel, qf_request_new, qf_request_read_forget_ids, qf_request_release,
    qf_request_run, qf_request_set_dataset, qf_request_set_samples, QfProgress, QfProgressCallback,
    QfRequest,
};
pub use result::{
    qf_result_export, qf_result_json, qf_result_refused, qf_result_release, qf_result_write_delta,
    QfResult,
};
pub use session::{qf_session_open, qf_session_release, QfSession};

/// The library version; the header has it as the string macro `QF_VERSION`.
pub const QF_VERSION_STR: &str = env!("CARGO_PKG_VERSION");
/// Major, minor and patch of the version the header was made for.
pub const QF_VERSION_MAJOR: u32 = 0;
pub const QF_VERSION_MINOR: u32 = 1;
pub const QF_VERSION_PATCH: u32 = 0;

/// The version of the library linked at run time ("MAJOR.MINOR.PATCH"; compare with
/// `QF_VERSION` from the header the app was built with). Static; never free it.
#[no_mangle]
pub extern "C" fn qf_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests;
