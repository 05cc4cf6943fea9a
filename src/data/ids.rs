//! Id lists: which training samples to forget, one 0-based index per line. Blank lines and
//! `#` comments (whole-line or trailing) are allowed; anything else — a non-number, an index
//! outside the dataset, a duplicate — is an error naming the file and the line.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Largest id file read (10 M ids of 100 bytes each is far beyond any dataset here).
pub const MAX_ID_FILE: u64 = 1 << 30;

/// Read the ids in `path`; each must be `< limit_exclusive`. Returned in file order.
pub fn read_ids(path: &Path, limit_exclusive: usize) -> Result<Vec<usize>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_ID_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_ID_FILE {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            reason: format!("more than {} MiB; not an id list", MAX_ID_FILE >> 20),
        });
    }
    parse_ids(&bytes, limit_exclusive).map_err(|reason| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parse id-list text; the error names the line.
pub fn parse_ids(bytes: &[u8], limit_exclusive: usize) -> std::result::Result<Vec<usize>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("line {line}: not UTF-8 text (an id list has one number per line)")
    })?;
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let s = raw.split('#').next().unwrap_or("").trim();
        if s.is_empty() {
            continue;
        }
        let id: usize = s.parse().map_err(|_| {
            let shown: String = s.chars().take(40).collect();
            format!("line {n}: '{shown}' is not a sample index (a non-negative integer)")
        })?;
        if id >= limit_exclusive {
            return Err(format!(
                "line {n}: sample index {id} is out of range (the dataset has {limit_exclusive} samples, 0..{})",
                limit_exclusive.saturating_sub(1)
            ));
        }
        if let Some(first) = seen.insert(id, n) {
            return Err(format!(
                "line {n}: sample index {id} is listed twice (first on line {first})"
            ));
        }
        out.push(id);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_and_blanks() {
        let ids = parse_ids(b"# forget these\n3\n\n  7  # trailing\n0\n", 10).unwrap();
        assert_eq!(ids, vec![3, 7, 0]);
        assert_eq!(parse_ids(b"", 10).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&[u8], &str); 6] = [
            (b"1\nx\n", "line 2: 'x' is not"),
            (b"1\n-3\n", "line 2: '-3'"),
            (b"1\n10\n", "line 2: sample index 10 is out of range"),
            (
                b"1\n2\n1\n",
                "line 3: sample index 1 is listed twice (first on line 1)",
            ),
            (b"1\n\xff\n", "line 2: not UTF-8"),
            (b"99999999999999999999999\n", "line 1"),
        ];
        for (b, want) in cases {
            let e = parse_ids(b, 10).unwrap_err();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }
}
