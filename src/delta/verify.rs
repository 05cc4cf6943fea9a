//! Verifying a model's delta chain and its journal: every hash, checksum and chain link, and
//! every journal entry against the delta it records. Each check is one [`Finding`], so the CLI
//! (`qforget verify`) prints them and the C API returns them, from the same code.

use std::path::{Path, PathBuf};

use super::{apply_chain, check_chain, hex, journal, sha256, Delta};
use crate::{Error, Result};

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// `ok`, `mismatch` or `note` (a check that could not run, e.g. no journal at the default
    /// path).
    pub kind: &'static str,
    pub text: String,
}

struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, kind: &'static str, text: String) {
        self.0.push(Finding { kind, text });
    }
    fn ok(&mut self, s: impl Into<String>) {
        self.push("ok", s.into());
    }
    fn bad(&mut self, s: impl Into<String>) {
        self.push("mismatch", s.into());
    }
    fn note(&mut self, s: impl Into<String>) {
        self.push("note", s.into());
    }
}

/// Check `model`, its chain of `deltas` and the journal (`journal_arg`, or the default journal
/// beside the first delta). An unreadable model is an error; everything else is a finding.
pub fn verify(
    model: &Path,
    deltas: &[PathBuf],
    journal_arg: Option<&Path>,
) -> Result<Vec<Finding>> {
    let mut f = Findings(Vec::new());
    let base = std::fs::read(model).map_err(|e| {
        Error::io(
            model,
            std::io::Error::new(e.kind(), format!("cannot read: {e}")),
        )
    })?;
    let base = crate::onnx::inline_external(base, model)?;
    let base_sha = sha256(&base);
    f.ok(format!("{}: sha256 {}", model.display(), hex(&base_sha)));
    // Each delta on its own (magic, version, lengths, checksum), then the chain.
    let mut ds = Vec::new();
    for p in deltas {
        match Delta::open(p) {
            Ok(d) => {
                f.ok(format!(
                    "{}: checksum {} ({} tensor(s), request '{}')",
                    p.display(),
                    hex(&d.hash),
                    d.body.tensors.len(),
                    d.body.request_id
                ));
                ds.push(d);
            }
            Err(e) => f.bad(e.to_string()),
        }
    }
    if ds.len() == deltas.len() {
        match check_chain(model, &base_sha, &ds) {
            Err(e) => f.bad(e.to_string()),
            Ok(()) if !ds.is_empty() => {
                f.ok(format!(
                    "chain of {} delta(s) over {}",
                    ds.len(),
                    model.display()
                ));
                match apply_chain(&base, &ds) {
                    Ok(b) => match crate::onnx::decode_model(&b) {
                        Ok(_) => f.ok(format!("patched model: sha256 {}", hex(&sha256(&b)))),
                        Err(e) => f.bad(format!(
                            "{}: the patched model does not decode: {e}",
                            model.display()
                        )),
                    },
                    Err(e) => f.bad(e.to_string()),
                }
            }
            Ok(()) => {}
        }
    }
    check_journal(&mut f, model, &base_sha, deltas, &ds, journal_arg)?;
    Ok(f.0)
}

fn check_journal(
    f: &mut Findings,
    model: &Path,
    base_sha: &super::Hash,
    deltas: &[PathBuf],
    ds: &[Delta],
    journal_arg: Option<&Path>,
) -> Result<()> {
    let path = journal_arg
        .map(Path::to_path_buf)
        .unwrap_or_else(|| journal::default_path(deltas.first().map(|p| p.as_path())));
    if !path.exists() {
        if journal_arg.is_some() {
            f.bad(format!("{}: journal not found", path.display()));
        } else {
            f.note(format!(
                "no journal at {} (not checked; pass a journal path)",
                path.display()
            ));
        }
        return Ok(());
    }
    let j = journal::read(&path)?;
    for p in &j.problems {
        f.bad(format!("{}: {p}", path.display()));
    }
    if j.problems.is_empty() {
        f.ok(format!(
            "{}: {} entr{} chained, head {}",
            path.display(),
            j.entries.len(),
            if j.entries.len() == 1 { "y" } else { "ies" },
            j.head()
        ));
    }
    let jp = path.display();
    let model_sha = hex(base_sha);
    for (e, _) in &j.entries {
        if e.base_sha256 != model_sha {
            f.bad(format!(
                "{jp}: entry {} (request '{}') records base model sha256 {}, but {} has sha256 {model_sha}",
                e.seq,
                e.request_id,
                e.base_sha256,
                model.display()
            ));
        }
    }
    for d in ds {
        let h = hex(&d.hash);
        let Some((e, _)) = j.entries.iter().find(|(e, _)| e.delta_sha256 == h) else {
            f.bad(format!(
                "{}: no journal entry in {jp} records this delta (hash {h})",
                d.path.display()
            ));
            continue;
        };
        let mut same = |what: &str, journal: &str, delta: &str| {
            if journal != delta {
                f.bad(format!(
                    "{}: journal entry {} in {jp} records {what} {journal}, the delta says {delta}",
                    d.path.display(),
                    e.seq
                ));
                false
            } else {
                true
            }
        };
        let parent = d
            .body
            .parent
            .as_ref()
            .map(hex)
            .unwrap_or_else(|| "none".into());
        let mut good = same("request id", &e.request_id, &d.body.request_id);
        good &= same("base sha256", &e.base_sha256, &hex(&d.body.base_sha256));
        good &= same(
            "parent delta",
            e.parent_delta.as_deref().unwrap_or("none"),
            &parent,
        );
        good &= same(
            "forget-set fingerprint",
            &e.forget_fingerprint,
            &hex(&d.body.forget_fingerprint),
        );
        good &= same("method", &e.method, &d.body.method);
        if good {
            f.ok(format!(
                "{}: journal entry {} matches",
                d.path.display(),
                e.seq
            ));
        }
    }
    Ok(())
}
