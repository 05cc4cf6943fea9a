//! `QfSession`: a model opened for requests (the base file, the delta chain it continues, its
//! integer graph). Immutable once open, so any number of requests may use it at once.

use std::ffi::c_char;

use super::error::{guard, path_arg, paths_arg, put, QfStatus};
use super::registry::Registry;
use crate::request::Session;

/// A model opened for forget requests. `id` 0 is the empty handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QfSession {
    pub id: u64,
}

pub(crate) static SESSIONS: Registry<Session> = Registry::new("session");

/// Open `model` (a quantized .onnx file), continuing the chain of `n_parents` earlier deltas
/// of it (`parents` may be NULL when `n_parents` is 0). The chain is checked here.
///
/// # Safety
/// `model` is a NUL-terminated path; `parents` points to `n_parents` such paths; `out` is
/// writable.
#[no_mangle]
pub unsafe extern "C" fn qf_session_open(
    model: *const c_char,
    parents: *const *const c_char,
    n_parents: usize,
    out: *mut QfSession,
) -> QfStatus {
    guard("qf_session_open", || {
        // SAFETY: the caller's contract above.
        let (model, parents) = unsafe {
            (
                path_arg(model, "model")?,
                paths_arg(parents, n_parents, "parents")?,
            )
        };
        if out.is_null() {
            return Err(super::error::null("out"));
        }
        let s = Session::open(&model, &parents)?;
        let id = SESSIONS.insert(s);
        // SAFETY: `out` checked non-NULL; writable per the contract.
        unsafe { put(out, QfSession { id }, "out") }
    })
}

/// Release a session (requests and results made from it keep what they need). A zero handle
/// is a no-op; a handle already released is refused with `QF_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn qf_session_release(session: QfSession) -> QfStatus {
    guard("qf_session_release", || SESSIONS.remove(session.id))
}
