//! `qforget verify MODEL [DELTA...] [--journal PATH]`: check every hash, checksum and chain
//! link, and the journal, and say exactly what does not match.
//!
//! Each finding is one stdout line (`ok ...` or `MISMATCH ...`); any mismatch makes the command
//! fail with the first one (and the count) as its single error line. Journal: `--journal`, or
//! `qforget-journal.jsonl` beside the first delta (or in the working directory without
//! deltas); a default journal that does not exist is reported as not checked. The checks
//! themselves are the library's (`qforget::delta::verify`).

use std::path::{Path, PathBuf};

use anyhow::bail;

pub fn run(model: &Path, deltas: &[PathBuf], journal: Option<&Path>) -> anyhow::Result<()> {
    let findings = qforget::delta::verify(model, deltas, journal)?;
    let mut bad = Vec::new();
    for f in &findings {
        match f.kind {
            "ok" => println!("ok        {}", f.text),
            "note" => println!("note      {}", f.text),
            _ => {
                println!("MISMATCH  {}", f.text);
                bad.push(&f.text);
            }
        }
    }
    match bad.first() {
        None => {
            println!("verified: no mismatch");
            Ok(())
        }
        Some(first) if bad.len() == 1 => bail!("{first}"),
        Some(first) => bail!(
            "{first} (and {} more mismatches, listed above)",
            bad.len() - 1
        ),
    }
}
