//! The state directory's layout, and the lock that gives one server at a time a directory.
//!
//! ```text
//! STATE/
//!   model.onnx              the served model: base + every journaled delta (replaced atomically)
//!   qforget-journal.jsonl   the request journal (delta::journal's format, hash-chained)
//!   deltas/000001.qfd       one delta per recorded request, named by request id
//!   requests/000001.json    one record per request (see record.rs)
//!   serve.lock              held (flock) while a server runs on this directory
//!   qforget.sock            the default socket
//! ```
//!
//! Why a lock: two servers on one directory would each believe they own the chain and the
//! served model. The lock is advisory and the OS drops it when the process dies, so a server
//! killed with `kill -9` never keeps a restarted one out.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::record::Ticket;
use crate::{Error, Result};

/// Paths of a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
    pub deltas: PathBuf,
    pub requests: PathBuf,
    pub journal: PathBuf,
    /// The served model.
    pub model: PathBuf,
}

/// The held lock of a state directory (released when dropped or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl StateDir {
    /// The layout under `root` (nothing is touched).
    pub fn new(root: &Path) -> Self {
        StateDir {
            root: root.to_path_buf(),
            deltas: root.join("deltas"),
            requests: root.join("requests"),
            journal: root.join(crate::delta::journal::DEFAULT_NAME),
            model: root.join("model.onnx"),
        }
    }

    /// Create the directories and take the lock; a directory another server holds is an error.
    pub fn open(root: &Path) -> Result<(Self, DirLock)> {
        let d = StateDir::new(root);
        for p in [&d.root, &d.deltas, &d.requests] {
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
        }
        let lp = d.root.join("serve.lock");
        let file = crate::delta::journal::open_lock_file(&lp)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::io(
                    &lp,
                    std::io::Error::other(format!(
                        "another qforget serve is running on the state directory {}",
                        d.root.display()
                    )),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lp, e)),
        }
        Ok((d, DirLock { _file: file }))
    }

    /// Default socket path.
    pub fn socket(&self) -> PathBuf {
        self.root.join("qforget.sock")
    }

    /// The delta file of request `id`.
    pub fn delta_name(id: u64) -> String {
        format!("{id:06}.qfd")
    }

    /// The request id a delta file name stands for (`000007.qfd` → 7).
    pub fn delta_id(name: &str) -> Option<u64> {
        let stem = name.strip_suffix(".qfd")?;
        (stem.len() >= 6 && stem.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stem.parse().ok())
            .flatten()
    }

    /// The record of request `id`.
    pub fn ticket_path(&self, id: u64) -> PathBuf {
        self.requests.join(format!("{id:06}.json"))
    }

    /// Write a request's record atomically.
    pub fn save(&self, t: &Ticket) -> Result<()> {
        t.save(&self.ticket_path(t.id))
    }

    /// Every request record, by id. A file whose name is not `NNNNNN.json`, or whose record
    /// names another id, is an error naming it.
    pub fn tickets(&self) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        for name in list(&self.requests)? {
            if is_temp(&name) {
                continue;
            }
            let p = self.requests.join(&name);
            let id = name
                .strip_suffix(".json")
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty())
                .and_then(|s| s.parse::<u64>().ok());
            let Some(id) = id else {
                return Err(bad(&p, "not a request record (expected NNNNNN.json)"));
            };
            let t = Ticket::load(&p)?;
            if t.id != id {
                return Err(bad(&p, &format!("records request {}, not {id}", t.id)));
            }
            out.push(t);
        }
        out.sort_by_key(|t| t.id);
        Ok(out)
    }

    /// Remove temporary files that a writer killed mid-write left (`.NAME.tmp-PID-N`, see
    /// `delta::write_atomic`); returns their paths.
    pub fn remove_temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut gone = Vec::new();
        for dir in [&self.root, &self.deltas, &self.requests] {
            for name in list(dir)? {
                if is_temp(&name) {
                    let p = dir.join(&name);
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                    gone.push(p);
                }
            }
        }
        Ok(gone)
    }
}

/// A temporary file of `delta::write_atomic`.
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// File names in `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

fn bad(path: &Path, reason: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_lock() {
        assert_eq!(StateDir::delta_name(7), "000007.qfd");
        assert_eq!(StateDir::delta_id("000007.qfd"), Some(7));
        assert_eq!(StateDir::delta_id("1234567.qfd"), Some(1234567));
        assert_eq!(StateDir::delta_id("7.qfd"), None);
        assert_eq!(StateDir::delta_id("00000x.qfd"), None);
        assert!(is_temp(".model.onnx.tmp-12-0") && !is_temp("model.onnx"));
        let root = std::env::temp_dir().join(format!("qf-serve-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (d, lock) = StateDir::open(&root).unwrap();
        let e = StateDir::open(&root).unwrap_err().to_string();
        assert!(e.contains("another qforget serve"), "{e}");
        drop(lock);
        let (_d2, _lock) = StateDir::open(&root).unwrap();
        std::fs::write(d.requests.join("notes.txt"), b"x").unwrap();
        let e = d.tickets().unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
