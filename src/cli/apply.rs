//! `qforget apply MODEL DELTA... --out NEW.onnx` and `qforget revert MODEL DELTA... --to N
//! --out NEW.onnx`: rebuild a model from the untouched base and a chain of deltas.
//!
//! Revert is apply of a shorter chain: the state after the first N requests is the base plus
//! the first N deltas (N = 0 gives the base back). Neither ever writes over MODEL or a delta.

use std::path::{Path, PathBuf};

use anyhow::bail;
use qforget::delta::{hex, rebuild_to_file};

/// Rebuild MODEL + DELTAS and write it atomically to `out`.
pub fn run(model: &Path, deltas: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let sha = rebuild_to_file(model, deltas, out)?;
    println!(
        "{}: base {} + {} delta(s) → sha256 {}",
        out.display(),
        model.display(),
        deltas.len(),
        hex(&sha)
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
