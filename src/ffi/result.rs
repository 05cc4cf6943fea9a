//! `QfResult`: a finished request: its JSON report, whether it was refused, and the writers
//! (delta + journal entry, exported model), which refuse a refused result.

use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex};

use super::error::{guard, null, path_arg, put, QfStatus};
use super::registry::Registry;
use crate::request::{Outcome, Session};

/// A finished request. `id` 0 is the empty handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QfResult {
    pub id: u64,
}

pub(crate) struct ResultObj {
    session: Arc<Session>,
    state: Mutex<State>,
}

struct State {
    outcome: Outcome,
    /// The last JSON handed out (its pointer stays valid until the next one or release).
    json: CString,
}

impl ResultObj {
    pub(crate) fn new(session: Arc<Session>, outcome: Outcome) -> Self {
        ResultObj {
            session,
            state: Mutex::new(State {
                outcome,
                json: CString::default(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) static RESULTS: Registry<ResultObj> = Registry::new("result");

/// The request's report as JSON: the same object `qforget forget --json` prints (after a
/// write, with the delta's or export's path filled in). The string belongs to the result and
/// stays valid until the next `qf_result_json` on it or its release.
///
/// # Safety
/// `json` is writable.
#[no_mangle]
pub unsafe extern "C" fn qf_result_json(result: QfResult, json: *mut *const c_char) -> QfStatus {
    guard("qf_result_json", || {
        if json.is_null() {
            return Err(null("json"));
        }
        let r = RESULTS.get(result.id)?;
        let mut st = r.state();
        st.json = CString::new(st.outcome.report.to_json()).unwrap_or_default();
        // SAFETY: checked non-NULL; writable per the contract. The pointer stays valid while
        // the result lives and until the next call replaces `json`.
        unsafe { put(json, st.json.as_ptr(), "json") }
    })
}

/// `*refused` = 1 if the request did not meet its forgetting target within the retain budget
/// (nothing may be written; the JSON's `refused` says why), else 0.
///
/// # Safety
/// `refused` is writable.
#[no_mangle]
pub unsafe extern "C" fn qf_result_refused(result: QfResult, refused: *mut i32) -> QfStatus {
    guard("qf_result_refused", || {
        let r = RESULTS.get(result.id)?;
        let v = i32::from(r.state().outcome.report.refused.is_some());
        // SAFETY: forwarded contract (NULL refused by put).
        unsafe { put(refused, v, "refused") }
    })
}

/// Write the request as a delta file at `out_delta` over the session's base model and append
/// it to the journal at `journal` (NULL: `qforget-journal.jsonl` beside the delta). Atomic: a
/// crash leaves the old state. `QF_ERR_REFUSED` for a refused result.
///
/// # Safety
/// `out_delta` is a NUL-terminated path; `journal` is NULL or one.
#[no_mangle]
pub unsafe extern "C" fn qf_result_write_delta(
    result: QfResult,
    out_delta: *const c_char,
    journal: *const c_char,
) -> QfStatus {
    guard("qf_result_write_delta", || {
        let r = RESULTS.get(result.id)?;
        // SAFETY: the caller's contract.
        let out = unsafe { path_arg(out_delta, "out_delta") }?;
        let journal = if journal.is_null() {
            None
        } else {
            // SAFETY: non-NULL C string per the contract.
            Some(unsafe { path_arg(journal, "journal") }?)
        };
        r.state()
            .outcome
            .record(&r.session, &out, journal.as_deref())?;
        Ok(())
    })
}

/// Write the unlearned model to `out_model` (the input file with its trained initializers
/// replaced), atomically. `QF_ERR_REFUSED` for a refused result.
///
/// # Safety
/// `out_model` is a NUL-terminated path.
#[no_mangle]
pub unsafe extern "C" fn qf_result_export(result: QfResult, out_model: *const c_char) -> QfStatus {
    guard("qf_result_export", || {
        let r = RESULTS.get(result.id)?;
        // SAFETY: the caller's contract.
        let out = unsafe { path_arg(out_model, "out_model") }?;
        r.state().outcome.export(&r.session, &out)?;
        Ok(())
    })
}

/// Release a result (and any JSON string it handed out). A zero handle is a no-op; a released
/// one is refused.
#[no_mangle]
pub extern "C" fn qf_result_release(result: QfResult) -> QfStatus {
    guard("qf_result_release", || RESULTS.remove(result.id))
}
