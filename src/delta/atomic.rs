//! Crash-safe file replacement: a crash or power cut at any moment leaves either the old file or
//! the new one at `path`, never a torn mix.
//!
//! Steps: write a temporary file in the same directory (so the rename cannot cross file
//! systems), fsync it, rename it over the target, fsync the directory so the rename itself is
//! durable. A killed writer can leave a stray `.NAME.tmp-PID-N` file beside the target; it is
//! never read, and the next write does not reuse its name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Atomically replace (or create) `path` with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

/// Check, before any work is done, that [`write_atomic`] could create `path`: it is not a
/// directory and its directory exists and takes a new file (one is created and removed).
/// Nothing is written at `path` itself.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |e: std::io::Error, what: String| {
        Error::io(path, std::io::Error::new(e.kind(), format!("{what}: {e}")))
    };
    if path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory, not a file path",
            ),
        ));
    }
    let probe = dir.join(format!(
        ".qforget-probe-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| fail(e, format!("cannot write to directory {}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// fsync a directory so a rename in it survives a power cut. File systems that cannot sync a
/// directory (EINVAL) are accepted: there the rename is as durable as the platform allows.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir)?.sync_all() {
            Err(e) if e.raw_os_error() == Some(22) => Ok(()),
            r => r,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, File::open);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("qf-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let n = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(n, 1);
        let e = write_atomic(&dir.join("no-such-dir").join("y"), b"z").unwrap_err();
        assert!(e.to_string().contains("no-such-dir"), "{e}");
        // The up-front check says the same, and leaves nothing behind.
        check_writable(&dir.join("z.bin")).unwrap();
        let e = check_writable(&dir.join("no-such-dir").join("y")).unwrap_err();
        assert!(
            e.to_string()
                .contains("no-such-dir/y: cannot write to directory"),
            "{e}"
        );
        assert!(check_writable(&dir).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
