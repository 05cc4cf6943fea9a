//! Rebuilding a model file from the untouched base and a chain of deltas (`apply`; `revert` is
//! the same with a shorter chain). Shared by the CLI and the C API so both refuse the same
//! things: writing over the base or a delta of the chain, a broken chain, a result that does
//! not decode.

use std::path::Path;

use super::{apply_chain, check_chain, sha256, write_atomic, Delta, Hash};
use crate::{Error, Result};

/// Does `out` name the same file as `other` (when both exist), or the same path?
fn same_file(out: &Path, other: &Path) -> bool {
    match (out.canonicalize(), other.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => out == other,
    }
}

/// Rebuild `model` + `deltas` and write it atomically to `out`; returns the new file's sha256.
pub fn rebuild_to_file(model: &Path, deltas: &[impl AsRef<Path>], out: &Path) -> Result<Hash> {
    let refuse = |what: &str| {
        Error::InvalidArgument(format!(
            "{}: refusing to write over {what} (choose another output)",
            out.display()
        ))
    };
    if same_file(out, model) {
        return Err(refuse("the base model"));
    }
    if deltas.iter().any(|d| same_file(out, d.as_ref())) {
        return Err(refuse("a delta of the chain"));
    }
    let base = crate::onnx::read_model_bytes(model)?;
    let ds = deltas
        .iter()
        .map(|p| Delta::open(p.as_ref()))
        .collect::<Result<Vec<_>>>()?;
    check_chain(model, &sha256(&base), &ds)?;
    let bytes = apply_chain(&base, &ds)?;
    crate::onnx::decode_model(&bytes).map_err(|reason| Error::InvalidModel {
        path: out.to_path_buf(),
        reason: format!("the patched model does not decode: {reason}"),
    })?;
    write_atomic(out, &bytes)?;
    Ok(sha256(&bytes))
}
