//! Status codes, the per-thread last error message, and the guard every entry point runs under
//! (argument checks, error mapping, panics caught).

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use crate::Error;

/// What a call did. The numbers are stable: new codes are only ever added.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum QfStatus {
    /// Success.
    QF_OK = 0,
    /// A required pointer argument was NULL.
    QF_ERR_NULL_ARGUMENT = 1,
    /// A handle that was never created, already released, or of no live object.
    QF_ERR_INVALID_HANDLE = 2,
    /// An argument or option is unusable (bad JSON, out-of-range id, not UTF-8, ...).
    QF_ERR_INVALID_ARGUMENT = 3,
    /// A file could not be read or written.
    QF_ERR_IO = 4,
    /// The model is not a valid or supported quantized ONNX file.
    QF_ERR_MODEL = 5,
    /// The samples are malformed or do not fit the model.
    QF_ERR_DATASET = 6,
    /// A delta, the chain or the journal does not verify.
    QF_ERR_DELTA = 7,
    /// The request did not meet its forgetting target within the retain budget: nothing may
    /// be written.
    QF_ERR_REFUSED = 8,
    /// The request was cancelled; nothing was written.
    QF_ERR_CANCELLED = 9,
    /// The request is already running (on another thread).
    QF_ERR_BUSY = 10,
    /// A bug in qforget (a caught panic, a metric that failed).
    QF_ERR_INTERNAL = 11,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last call that failed on this thread ("" if none did). The string
/// belongs to qforget and stays valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn qf_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// An error of the C API: a status and its message.
pub(crate) struct Fail(pub QfStatus, pub String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        use QfStatus::*;
        let s = match &e {
            Error::Io { .. } => QF_ERR_IO,
            Error::InvalidModel { .. }
            | Error::UnsupportedModel { .. }
            | Error::Unsupported { .. }
            | Error::MissingTensor { .. }
            | Error::BadNode { .. }
            | Error::Patch(_) => QF_ERR_MODEL,
            Error::Dataset { .. } | Error::Shape(_) => QF_ERR_DATASET,
            Error::Delta { .. } | Error::Journal { .. } => QF_ERR_DELTA,
            Error::Refused(_) => QF_ERR_REFUSED,
            Error::Cancelled => QF_ERR_CANCELLED,
            Error::InvalidArgument(_) | Error::Reference(_) => QF_ERR_INVALID_ARGUMENT,
            Error::Metric { .. } => QF_ERR_INTERNAL,
        };
        Fail(s, e.to_string())
    }
}

pub(crate) type FfiResult<T = ()> = std::result::Result<T, Fail>;

pub(crate) fn null(what: &str) -> Fail {
    Fail(QfStatus::QF_ERR_NULL_ARGUMENT, format!("{what} is NULL"))
}

/// Run an entry point's body: errors become a status plus the thread's last error, a panic
/// becomes `QF_ERR_INTERNAL`.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> FfiResult) -> QfStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => QfStatus::QF_OK,
        Ok(Err(Fail(s, msg))) => {
            set_last_error(&format!("{name}: {msg}"));
            s
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!(
                "{name}: internal error (a bug in qforget): {what}"
            ));
            QfStatus::QF_ERR_INTERNAL
        }
    }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| {
        Fail(
            QfStatus::QF_ERR_INVALID_ARGUMENT,
            format!("{what} is not UTF-8"),
        )
    })
}

/// A C string argument as a path.
///
/// # Safety
/// As [`str_arg`].
pub(crate) unsafe fn path_arg(p: *const c_char, what: &str) -> FfiResult<PathBuf> {
    // SAFETY: forwarded contract.
    Ok(PathBuf::from(unsafe { str_arg(p, what) }?))
}

/// An array of `n` C strings as paths (`p` may be NULL when `n` is 0).
///
/// # Safety
/// `p` is NULL (only if `n` is 0) or points to `n` valid C string pointers.
pub(crate) unsafe fn paths_arg(
    p: *const *const c_char,
    n: usize,
    what: &str,
) -> FfiResult<Vec<PathBuf>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: `p` points to `n` pointers per this function's contract.
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each element is a C string per the contract (NULL is refused by path_arg).
        .map(|(i, &q)| unsafe { path_arg(q, &format!("{what}[{i}]")) })
        .collect()
}

/// Write `v` through an out-parameter.
///
/// # Safety
/// `out` is NULL (refused) or valid for a write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, v: T, what: &str) -> FfiResult {
    if out.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and writable per this function's contract.
    unsafe { out.write(v) };
    Ok(())
}
