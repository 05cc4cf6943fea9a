//! `qforget apply MODEL DELTA... --out NEW.onnx` and `qforget revert MODEL DELTA... --to N
//! --out NEW.onnx`: rebuild a model from the untouched base and a chain of deltas.
//!
//! Revert is apply of a shorter chain: the state after the first N requests is the base plus
//! the first N deltas (N = 0 gives the base back). Neither ever writes over MODEL or a delta.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use qforget::delta::{self, hex, sha256, Delta};

/// Does `out` name the same file as `other` (when both exist), or the same path?
fn same_file(out: &Path, other: &Path) -> bool {
    match (out.canonicalize(), other.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => out == other,
    }
}

/// Rebuild MODEL + DELTAS and write it atomically to `out`.
pub fn run(model: &Path, deltas: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    if same_file(out, model) {
        bail!(
            "{}: refusing to write over the base model (choose another --out)",
            out.display()
        );
    }
    if let Some(d) = deltas.iter().find(|d| same_file(out, d)) {
        bail!(
            "{}: refusing to write over a delta of the chain (choose another --out)",
            d.display()
        );
    }
    let base = std::fs::read(model).with_context(|| format!("{}: cannot read", model.display()))?;
    let ds = deltas
        .iter()
        .map(|p| Delta::open(p))
        .collect::<qforget::Result<Vec<_>>>()?;
    delta::check_chain(model, &sha256(&base), &ds)?;
    let bytes = delta::apply_chain(&base, &ds)?;
    qforget::onnx::decode_model(&bytes).map_err(|reason| qforget::Error::InvalidModel {
        path: out.to_path_buf(),
        reason: format!("the patched model does not decode: {reason}"),
    })?;
    delta::write_atomic(out, &bytes)?;
    println!(
        "{}: base {} + {} delta(s) → sha256 {}",
        out.display(),
        model.display(),
        ds.len(),
        hex(&sha256(&bytes))
    );
    Ok(())
}

/// The model after the first `to` requests of the chain.
pub fn revert(model: &Path, deltas: &[PathBuf], to: usize, out: &Path) -> anyhow::Result<()> {
    if to > deltas.len() {
        bail!(
            "--to {to}: only {} delta(s) given (0 = the base model)",
            deltas.len()
        );
    }
    run(model, &deltas[..to], out)
}
