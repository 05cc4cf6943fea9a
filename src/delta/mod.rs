//! Forget requests as compact, verifiable deltas over an untouched base model, and the request
//! journal that records them.
//!
//! Why deltas: a device keeps one base .onnx (perhaps on read-only storage) and a chain of small
//! files, one per forget request; any earlier state is the base plus a shorter chain, and a
//! half-written model can never ship, because the model is only ever produced whole and
//! renamed into place. Each delta names the sha256 of the exact base bytes and the hash of its
//! parent delta, so applying it to the wrong model or out of order is an error that says which
//! hash does not match. Its body holds, per initializer name, the changed values (sparse or
//! dense, whichever is smaller) and is checksummed; see `docs/FORMAT.md`.
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! let base = Path::new("model.onnx");
//! let d1 = PathBuf::from("req1.qfd");
//! let model = qforget::delta::apply_files(base, &[d1])?; // patched .onnx bytes
//! # Ok::<(), qforget::Error>(())
//! ```

mod atomic;
mod diff;
pub mod format;
pub mod journal;
mod rc;
mod rc_grid;
mod rebuild;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use atomic::{check_writable, write_atomic};
pub use format::{hex, sha256, Change, DeltaBody, Hash, TensorDelta};
pub use rebuild::rebuild_to_file;
pub use verify::{verify, Finding};

use crate::onnx::patch::{self, InitializerUpdate};
use crate::{Error, Result};

/// A delta file as read: where it came from, what it says, its hash.
#[derive(Debug, Clone)]
pub struct Delta {
    pub path: PathBuf,
    pub body: DeltaBody,
    pub hash: Hash,
}

impl Delta {
    /// Read and check a delta file (magic, version, lengths, checksum, structure).
    pub fn open(path: &Path) -> Result<Self> {
        let (body, hash) = format::read(path)?;
        Ok(Delta {
            path: path.to_path_buf(),
            body,
            hash,
        })
    }

    fn err(&self, reason: String) -> Error {
        Error::Delta {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Check that `deltas` form a chain over the model whose bytes hash to `base_sha`: the first
/// has no parent, each next one names the previous one's hash, all name this base.
pub fn check_chain(model_path: &Path, base_sha: &Hash, deltas: &[Delta]) -> Result<()> {
    let mut prev: Option<&Delta> = None;
    for d in deltas {
        if d.body.base_sha256 != *base_sha {
            return Err(d.err(format!(
                "made for a base model with sha256 {}, but {} has sha256 {}",
                hex(&d.body.base_sha256),
                model_path.display(),
                hex(base_sha)
            )));
        }
        match (prev, d.body.parent) {
            (None, None) => {}
            (None, Some(p)) => {
                return Err(d.err(format!(
                    "its parent is delta {}, but it is given first (the chain must start with the delta made directly on the base)",
                    hex(&p)
                )))
            }
            (Some(q), None) => {
                return Err(d.err(format!(
                    "it applies directly to the base model, but it follows {} in the chain",
                    q.path.display()
                )))
            }
            (Some(q), Some(p)) if p != q.hash => {
                return Err(d.err(format!(
                    "its parent is delta {}, but the delta before it ({}) has hash {} (wrong order or a missing delta)",
                    hex(&p),
                    q.path.display(),
                    hex(&q.hash)
                )))
            }
            _ => {}
        }
        prev = Some(d);
    }
    Ok(())
}

/// Apply a checked chain of deltas to the base model's bytes.
pub fn apply_chain(base: &[u8], deltas: &[Delta]) -> Result<Vec<u8>> {
    let mut cur = base.to_vec();
    for d in deltas {
        let mut updates = Vec::with_capacity(d.body.tensors.len());
        for t in &d.body.tensors {
            let old = patch::read_initializer(&cur, &t.name).map_err(|e| d.err(e.to_string()))?;
            let values = diff::apply(t, &old).map_err(|e| d.err(e))?;
            updates.push(InitializerUpdate {
                name: t.name.clone(),
                values,
            });
        }
        cur = patch::patch_initializers(&cur, &updates).map_err(|e| d.err(e.to_string()))?;
    }
    Ok(cur)
}

/// Read the base model and the deltas, check the chain, return the patched model's bytes.
pub fn apply_files(base_model: &Path, deltas: &[PathBuf]) -> Result<Vec<u8>> {
    let base = crate::onnx::read_model_bytes(base_model)?;
    let ds = deltas
        .iter()
        .map(|p| Delta::open(p))
        .collect::<Result<Vec<_>>>()?;
    check_chain(base_model, &sha256(&base), &ds)?;
    apply_chain(&base, &ds)
}

/// What a forget request did, as the `forget` command reports it.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// Caller may pass empty → one is generated.
    pub request_id: String,
    pub method: String,
    pub settings: BTreeMap<String, String>,
    /// Training-set indices forgotten; ONLY their fingerprint is stored.
    pub forget_ids: Vec<u64>,
    pub metrics_before: BTreeMap<String, f64>,
    pub metrics_after: BTreeMap<String, f64>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): journal entries and
/// `serve`'s request records.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a request can be recorded at `out` in `journal`: the journal must verify, and a delta
/// it records is never overwritten (that would break the chain); an unrecorded file at `out` is a
/// leftover of an interrupted request and may be replaced. [`record_request`] checks this under
/// the journal's lock; a caller checks it before the work that makes the request too, so that a
/// refusal does not come after minutes of training.
pub fn check_recordable(out: &Path, journal: &Path) -> Result<()> {
    let j = journal::read(journal)?;
    if let Some(p) = j.problems.first() {
        return Err(Error::Journal {
            path: journal.to_path_buf(),
            reason: format!("refusing to record a request in a journal that does not verify: {p}"),
        });
    }
    if let Ok((_, h)) = format::read(out) {
        let h = hex(&h);
        if let Some((e, _)) = j.entries.iter().find(|(e, _)| e.delta_sha256 == h) {
            return Err(Error::Delta {
                path: out.to_path_buf(),
                reason: format!(
                    "refusing to overwrite the delta of request '{}' (journal entry {})",
                    e.request_id, e.seq
                ),
            });
        }
    }
    Ok(())
}

/// Diff `updates` against the model that `base` + `parents` chain gives, write the delta to `out`
/// atomically, append a journal entry to `journal` atomically. Returns the delta's hash (hex).
///
/// The delta is written first and the journal entry second; the journal entry is the commit
/// point. A crash in between leaves a delta that no journal entry names, which the next request
/// (re)writes. Initializers whose values do not change are left out of the delta.
pub fn record_request(
    base_model: &Path,
    parents: &[PathBuf],
    updates: &[InitializerUpdate],
    rec: &RequestRecord,
    out: &Path,
    journal: &Path,
) -> Result<String> {
    if out == base_model || parents.iter().any(|p| p == out) {
        return Err(Error::Delta {
            path: out.to_path_buf(),
            reason: "refusing to overwrite the base model or a parent delta".into(),
        });
    }
    // One writer at a time per journal, from the check below to the appended entry (two
    // requests recorded at once must both land, in one chain).
    let _lock = journal::lock(journal)?;
    check_recordable(out, journal)?;
    let base = crate::onnx::read_model_bytes(base_model)?;
    let base_sha = sha256(&base);
    let ds = parents
        .iter()
        .map(|p| Delta::open(p))
        .collect::<Result<Vec<_>>>()?;
    check_chain(base_model, &base_sha, &ds)?;
    let cur = apply_chain(&base, &ds)?;
    let bad_model = |e: Error| Error::InvalidModel {
        path: base_model.to_path_buf(),
        reason: e.to_string(),
    };
    let mut tensors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for u in updates {
        if !seen.insert(u.name.as_str()) {
            return Err(bad_model(Error::Patch(format!(
                "initializer '{}' is updated twice",
                u.name
            ))));
        }
        let (dims, old) = patch::read_initializer_dims(&cur, &u.name).map_err(bad_model)?;
        if let Some(t) =
            diff::diff(&u.name, &dims, &old, &u.values).map_err(|e| bad_model(Error::Patch(e)))?
        {
            tensors.push(t);
        }
    }
    let created = now_ms();
    let request_id = if rec.request_id.is_empty() {
        format!("req-{created}-{:05}", std::process::id() % 100_000)
    } else {
        rec.request_id.clone()
    };
    let (fp, count) = journal::fingerprint(&rec.forget_ids);
    let body = DeltaBody {
        base_sha256: base_sha,
        parent: ds.last().map(|d| d.hash),
        request_id: request_id.clone(),
        method: rec.method.clone(),
        settings: rec.settings.clone(),
        created_unix_ms: created,
        forget_fingerprint: fp,
        forget_count: count,
        tensors,
    };
    let (bytes, hash) = format::encode(&body);
    write_atomic(out, &bytes)?;
    journal::append_locked(
        journal,
        journal::Entry {
            seq: 0,
            request_id,
            created_unix_ms: created,
            method: rec.method.clone(),
            settings: rec.settings.clone(),
            forget_count: count,
            forget_fingerprint: hex(&fp),
            metrics_before: rec.metrics_before.clone(),
            metrics_after: rec.metrics_after.clone(),
            base_sha256: hex(&base_sha),
            parent_delta: body.parent.as_ref().map(hex),
            delta_sha256: hex(&hash),
            delta_file: out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            prev_entry: String::new(),
        },
    )?;
    Ok(hex(&hash))
}

#[cfg(test)]
mod tests;
