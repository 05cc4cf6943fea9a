//! Delta chains without a session: rebuild the model a chain gives (apply; revert is a shorter
//! chain) and verify a chain with its journal.

use std::ffi::c_char;

use super::error::{guard, path_arg, paths_arg, put, QfStatus};

/// Write the model that `model` plus the first `n_deltas` deltas give to `out_model`
/// (atomically; never over the base or a delta). Reverting to the state after k requests is
/// this call with the first k deltas (k = 0: the base itself).
///
/// # Safety
/// `model` and `out_model` are NUL-terminated paths; `deltas` points to `n_deltas` of them.
#[no_mangle]
pub unsafe extern "C" fn qf_chain_rebuild(
    model: *const c_char,
    deltas: *const *const c_char,
    n_deltas: usize,
    out_model: *const c_char,
) -> QfStatus {
    guard("qf_chain_rebuild", || {
        // SAFETY: the caller's contract.
        let (model, deltas, out) = unsafe {
            (
                path_arg(model, "model")?,
                paths_arg(deltas, n_deltas, "deltas")?,
                path_arg(out_model, "out_model")?,
            )
        };
        crate::delta::rebuild_to_file(&model, &deltas, &out)?;
        Ok(())
    })
}

/// Verify `model`, its chain of `n_deltas` deltas and the journal (`journal`, or NULL for the
/// default beside the first delta): every hash, checksum, link and journal entry.
/// `*mismatches` = the number of checks that failed (0: verified); the details are in the
/// last error message when it is not 0.
///
/// # Safety
/// `model` is a NUL-terminated path; `deltas` points to `n_deltas` of them; `journal` is NULL
/// or one; `mismatches` is writable.
#[no_mangle]
pub unsafe extern "C" fn qf_chain_verify(
    model: *const c_char,
    deltas: *const *const c_char,
    n_deltas: usize,
    journal: *const c_char,
    mismatches: *mut usize,
) -> QfStatus {
    let mut found = 0usize;
    let mut detail = String::new();
    let status = guard("qf_chain_verify", || {
        // SAFETY: the caller's contract.
        let (model, deltas) = unsafe {
            (
                path_arg(model, "model")?,
                paths_arg(deltas, n_deltas, "deltas")?,
            )
        };
        let journal = if journal.is_null() {
            None
        } else {
            // SAFETY: non-NULL C string per the contract.
            Some(unsafe { path_arg(journal, "journal") }?)
        };
        if mismatches.is_null() {
            return Err(super::error::null("mismatches"));
        }
        let findings = crate::delta::verify(&model, &deltas, journal.as_deref())?;
        let bad: Vec<_> = findings.iter().filter(|f| f.kind == "mismatch").collect();
        found = bad.len();
        detail = bad
            .iter()
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { put(mismatches, found, "mismatches") }
    });
    if status == QfStatus::QF_OK && found > 0 {
        // Not a failed call, but the app wants to log what did not match.
        super::error::set_last_error(&format!("qf_chain_verify: {detail}"));
    }
    status
}
