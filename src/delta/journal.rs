//! The request journal: one JSON line per forget request, each carrying the sha256 of the
//! previous line's entry, so editing, removing or reordering any entry breaks the chain.
//!
//! Line format: `{"hash":"<64 hex>","entry":<JSON of Entry>}` where `hash` is the sha256 of the
//! exact `<JSON of Entry>` bytes. Hashing the bytes as written (not a re-serialization) keeps
//! verification independent of JSON float formatting.
//!
//! Crash safety: an append reads the whole journal, checks it, and atomically replaces the file
//! with old contents + the new line (temp file, fsync, rename, fsync directory). A crash leaves
//! the old journal or the new one, so there is never a torn tail to recover, and any line that
//! does not verify is corruption or tampering, never a half-written append. The cost is
//! O(journal) per request, a few hundred bytes per entry.
//!
//! What it cannot show: an attacker who rewrites the *last* entry and recomputes its hash. The
//! entry's `delta_sha256` still has to match the delta file, which `qforget verify` checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{hex, sha256, Hash};
use crate::{Error, Result};

/// Default journal file name (placed beside the deltas, or in the working directory).
pub const DEFAULT_NAME: &str = "qforget-journal.jsonl";
/// Largest journal read (about a million requests).
pub const MAX_JOURNAL: u64 = 512 << 20;
const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One forget request as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1-based position in the journal.
    pub seq: u64,
    pub request_id: String,
    pub created_unix_ms: u64,
    pub method: String,
    pub settings: BTreeMap<String, String>,
    /// Number of forgotten samples.
    pub forget_count: u64,
    /// sha256 of the count and the sorted sample ids (see [`fingerprint`]); never the samples.
    pub forget_fingerprint: String,
    pub metrics_before: BTreeMap<String, f64>,
    pub metrics_after: BTreeMap<String, f64>,
    pub base_sha256: String,
    /// Hash of the delta this request built on; `None` when it applies to the base directly.
    pub parent_delta: Option<String>,
    pub delta_sha256: String,
    /// The delta's file name as written (for `log`; the hash is what counts).
    pub delta_file: String,
    /// Hash of the previous entry; 64 zeros for the first.
    pub prev_entry: String,
}

/// The forget-set fingerprint: sha256 over the count (u64 LE) then the sorted, de-duplicated
/// ids (u64 LE each). Returns (fingerprint, count).
pub fn fingerprint(ids: &[u64]) -> (Hash, u64) {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut bytes = Vec::with_capacity(8 * (v.len() + 1));
    bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
    for id in &v {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    (sha256(&bytes), v.len() as u64)
}

/// The default journal for a delta file (beside it), or the working directory's.
pub fn default_path(delta: Option<&Path>) -> PathBuf {
    match delta.and_then(|d| d.parent()) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(DEFAULT_NAME),
        _ => PathBuf::from(DEFAULT_NAME),
    }
}

/// A journal read back: the entries that parsed, with their hashes, and what does not verify.
#[derive(Debug, Default)]
pub struct Journal {
    pub entries: Vec<(Entry, String)>,
    pub problems: Vec<String>,
}

impl Journal {
    /// Hash of the last entry (64 zeros when empty).
    pub fn head(&self) -> String {
        self.entries
            .last()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| ZERO.to_string())
    }
}

/// Read and verify a journal (a missing file is an empty journal). I/O errors are errors;
/// content problems are listed in [`Journal::problems`], one line each, naming the entry.
pub fn read(path: &Path) -> Result<Journal> {
    let bytes = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) if m.len() > MAX_JOURNAL => {
            return Err(Error::Journal {
                path: path.to_path_buf(),
                reason: format!("{} bytes is too large for a journal", m.len()),
            })
        }
        Ok(_) => std::fs::read(path).map_err(|e| Error::io(path, e))?,
    };
    Ok(parse(&bytes))
}

/// Verify journal bytes.
pub fn parse(bytes: &[u8]) -> Journal {
    let mut j = Journal::default();
    if bytes.is_empty() {
        return j;
    }
    if !bytes.ends_with(b"\n") {
        j.problems
            .push("the last line is not terminated (truncated or edited)".into());
    }
    let mut prev = ZERO.to_string();
    for (i, line) in bytes
        .strip_suffix(b"\n")
        .unwrap_or(bytes)
        .split(|&b| b == b'\n')
        .enumerate()
    {
        let n = i + 1;
        let (stored, body) = match split_line(line) {
            Some(x) => x,
            None => {
                j.problems.push(format!(
                    "entry {n} (line {n}): not a journal line ({{\"hash\":\"<sha256>\",\"entry\":{{...}}}})"
                ));
                continue;
            }
        };
        let got = hex(&sha256(body));
        if got != stored {
            j.problems.push(format!(
                "entry {n} (line {n}): its content hashes to {got}, but the line records {stored} (edited after it was written)"
            ));
        }
        let e: Entry = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(err) => {
                j.problems
                    .push(format!("entry {n} (line {n}): does not parse: {err}"));
                prev = stored.to_string();
                continue;
            }
        };
        if e.seq != n as u64 {
            j.problems.push(format!(
                "entry {n} (line {n}): records sequence number {}, expected {n} (entries removed or reordered)",
                e.seq
            ));
        }
        if e.prev_entry != prev {
            j.problems.push(format!(
                "entry {n} (line {n}, request '{}'): records previous-entry hash {}, but the entry before it hashes to {prev} (an earlier entry was edited, removed or reordered)",
                e.request_id, e.prev_entry
            ));
        }
        prev = stored.to_string();
        j.entries.push((e, stored.to_string()));
    }
    j
}

/// `{"hash":"<64 hex>","entry":BODY}` → (hash, BODY).
fn split_line(line: &[u8]) -> Option<(&str, &[u8])> {
    let rest = line.strip_prefix(b"{\"hash\":\"")?;
    let (h, rest) = rest.split_at_checked(64)?;
    let h = std::str::from_utf8(h).ok()?;
    if !h
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let body = rest.strip_prefix(b"\",\"entry\":")?.strip_suffix(b"}")?;
    Some((h, body))
}

/// An exclusive advisory lock on a journal, held while a writer reads, checks and replaces it.
///
/// Why a side file (`<journal>.lock`): the journal itself is replaced by rename on every append,
/// so a lock on its inode would not exclude a writer that opened the new one. Advisory
/// (`flock`-style) locks are released by the OS when the process dies, so a writer killed
/// mid-request never leaves the journal locked; the empty lock file stays behind, harmlessly.
pub struct Lock {
    _file: std::fs::File,
}

/// Wait for and take the lock of the journal at `path`.
pub fn lock(path: &Path) -> Result<Lock> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lp = std::path::PathBuf::from(name);
    let file = open_lock_file(&lp)?;
    file.lock().map_err(|e| Error::io(&lp, e))?;
    Ok(Lock { _file: file })
}

/// Open (creating it, never truncating) the file at `path` that an advisory lock is taken on;
/// the caller chooses whether to wait for the lock (`lock`) or to fail (`try_lock`).
pub fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Append one entry (its `seq` and `prev_entry` are filled in here) atomically, under the
/// journal's [`lock`]. Refuses to append to a journal that does not verify. Returns the new
/// entry's hash.
pub fn append(path: &Path, entry: Entry) -> Result<String> {
    let _lock = lock(path)?;
    append_locked(path, entry)
}

/// [`append`] for a caller that already holds the journal's [`lock`].
pub(crate) fn append_locked(path: &Path, mut entry: Entry) -> Result<String> {
    let old = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let j = parse(&old);
    if let Some(p) = j.problems.first() {
        return Err(Error::Journal {
            path: path.to_path_buf(),
            reason: format!("refusing to append to a journal that does not verify: {p}"),
        });
    }
    for (k, v) in entry.metrics_before.iter().chain(&entry.metrics_after) {
        if !v.is_finite() {
            return Err(Error::Journal {
                path: path.to_path_buf(),
                reason: format!("metric '{k}' is {v}, which JSON cannot hold"),
            });
        }
    }
    entry.seq = j.entries.len() as u64 + 1;
    entry.prev_entry = j.head();
    let body = serde_json::to_vec(&entry).expect("entry serializes");
    let h = hex(&sha256(&body));
    let mut out = old;
    out.extend_from_slice(b"{\"hash\":\"");
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(b"\",\"entry\":");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"}\n");
    super::atomic::write_atomic(path, &out)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            seq: 0,
            request_id: id.into(),
            created_unix_ms: 1,
            method: "oeu".into(),
            settings: BTreeMap::from([("lr".into(), "0.01".into())]),
            forget_count: 3,
            forget_fingerprint: hex(&fingerprint(&[3, 1, 2]).0),
            metrics_before: BTreeMap::from([("acc".into(), 0.9123456789)]),
            metrics_after: BTreeMap::from([("acc".into(), 0.1 + 0.2)]),
            base_sha256: ZERO.into(),
            parent_delta: None,
            delta_sha256: ZERO.into(),
            delta_file: "d1.qfd".into(),
            prev_entry: String::new(),
        }
    }

    #[test]
    fn appends_verify_and_tampering_is_named() {
        let dir = std::env::temp_dir().join(format!("qf-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(DEFAULT_NAME);
        let _ = std::fs::remove_file(&p);
        for id in ["a", "b", "c"] {
            append(&p, entry(id)).unwrap();
        }
        let j = read(&p).unwrap();
        assert!(j.problems.is_empty(), "{:?}", j.problems);
        assert_eq!(j.entries.len(), 3);
        assert_eq!(j.entries[0].0.metrics_after["acc"], 0.1 + 0.2);
        let text = std::fs::read_to_string(&p).unwrap();
        // Edit a metric in entry 2.
        let bad = text.replacen("\"request_id\":\"b\"", "\"request_id\":\"B\"", 1);
        let j = parse(bad.as_bytes());
        assert!(j.problems[0].starts_with("entry 2"), "{:?}", j.problems);
        // Drop entry 1.
        let lines: Vec<&str> = text.lines().collect();
        let j = parse(format!("{}\n{}\n", lines[1], lines[2]).as_bytes());
        assert!(j.problems[0].contains("entry 1"), "{:?}", j.problems);
        // Truncated tail.
        let j = parse(&text.as_bytes()[..text.len() - 10]);
        assert!(!j.problems.is_empty());
        let e = append(&p, entry("d"));
        assert!(e.is_ok());
        std::fs::write(&p, bad).unwrap();
        let e = append(&p, entry("e")).unwrap_err().to_string();
        assert!(e.contains("refusing"), "{e}");
        assert_eq!(fingerprint(&[2, 1, 1]), fingerprint(&[1, 2]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_appends_lose_nothing() {
        // Four writers, each with its own open lock file (as separate processes would have),
        // appending at once: every entry must land, in one verifying chain.
        let dir = std::env::temp_dir().join(format!("qf-journal-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(DEFAULT_NAME);
        let _ = std::fs::remove_file(&p);
        std::thread::scope(|s| {
            for t in 0..4 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..25 {
                        append(p, entry(&format!("t{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        let j = read(&p).unwrap();
        assert!(j.problems.is_empty(), "{:?}", j.problems);
        assert_eq!(j.entries.len(), 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
