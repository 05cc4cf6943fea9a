//! Writes forget requests (synthetic weight changes) as deltas + journal entries, one after
//! another, for the crash test (`tests/it/crash.rs`), which SIGKILLs it at random moments.
//!
//! `crash_writer BASE.onnx DIR MAX_REQUESTS`: resumes from DIR's journal (entry k names delta
//! `d{k}.qfd`), so a killed run is simply started again; stops when the journal holds
//! MAX_REQUESTS entries. Each request changes ~1 % of every int8 initializer by ±1.

use std::path::{Path, PathBuf};

use qforget::delta::{self, journal, RequestRecord};
use qforget::onnx::patch::{self, InitializerUpdate, TensorValues};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 4,
        "usage: crash_writer BASE.onnx DIR MAX_REQUESTS"
    );
    let (base, dir, max) = (Path::new(&a[1]), Path::new(&a[2]), a[3].parse::<u64>()?);
    let jpath = dir.join(journal::DEFAULT_NAME);
    loop {
        let j = journal::read(&jpath)?;
        anyhow::ensure!(j.problems.is_empty(), "journal: {:?}", j.problems);
        let k = j.entries.len() as u64;
        if k >= max {
            return Ok(());
        }
        let parents: Vec<PathBuf> = j
            .entries
            .iter()
            .map(|(e, _)| dir.join(&e.delta_file))
            .collect();
        let cur = delta::apply_files(base, &parents)?;
        let updates = synthetic(&cur, k + 1)?;
        let rec = RequestRecord {
            request_id: format!("crash-{}", k + 1),
            method: "synthetic".into(),
            settings: [("seed".to_string(), (k + 1).to_string())].into(),
            forget_ids: vec![k, k + 100],
            metrics_before: [("acc".to_string(), 0.9)].into(),
            metrics_after: [("acc".to_string(), 0.9 - 0.001 * (k + 1) as f64)].into(),
        };
        let out = dir.join(format!("d{}.qfd", k + 1));
        delta::record_request(base, &parents, &updates, &rec, &out, &jpath)?;
    }
}

/// Deterministic change of ~1 % of each int8 initializer's elements by ±1.
fn synthetic(model: &[u8], seed: u64) -> anyhow::Result<Vec<InitializerUpdate>> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    for (name, v) in patch::initializers(model)? {
        if let TensorValues::I8(mut w) = v {
            for x in w.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if s.is_multiple_of(100) {
                    *x = if s & 256 == 0 {
                        x.saturating_add(1)
                    } else {
                        x.saturating_sub(1)
                    };
                }
            }
            out.push(InitializerUpdate {
                name,
                values: TensorValues::I8(w),
            });
        }
    }
    Ok(out)
}
