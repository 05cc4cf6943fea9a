//! Writing result files without ever leaving a half-written one behind: the library's
//! [`qforget::delta::write_atomic`] (temp file in the same directory, fsync, rename, fsync the
//! directory), with an anyhow error for the commands.

use std::path::Path;

/// Atomically replace `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(qforget::delta::write_atomic(path, bytes)?)
}
