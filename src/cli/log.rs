//! `qforget log [--journal PATH] [--json]`: the recorded forget requests, oldest first.
//! A journal that does not verify is an error (`qforget verify` says what is wrong).

use std::path::Path;

use anyhow::bail;
use qforget::delta::journal;
use serde::Serialize;

#[derive(Serialize)]
struct Row<'a> {
    hash: &'a str,
    #[serde(flatten)]
    entry: &'a journal::Entry,
}

pub fn run(path: &Path, json: bool) -> anyhow::Result<()> {
    if !path.exists() {
        bail!(
            "{}: no journal here (pass --journal PATH; the default is {} in the working directory)",
            path.display(),
            journal::DEFAULT_NAME
        );
    }
    let j = journal::read(path)?;
    if let Some(p) = j.problems.first() {
        bail!(
            "{}: {p}{}",
            path.display(),
            if j.problems.len() > 1 {
                format!(" ({} problems; run qforget verify)", j.problems.len())
            } else {
                String::new()
            }
        );
    }
    if json {
        let rows: Vec<Row> = j
            .entries
            .iter()
            .map(|(e, h)| Row { hash: h, entry: e })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{}: {} request(s)", path.display(), j.entries.len());
    for (e, _) in &j.entries {
        let metrics = |m: &std::collections::BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "#{} {} t={}ms method={} forgot={} (ids sha256 {}) delta={} ({})",
            e.seq,
            e.request_id,
            e.created_unix_ms,
            e.method,
            e.forget_count,
            &e.forget_fingerprint[..e.forget_fingerprint.len().min(16)],
            &e.delta_sha256[..e.delta_sha256.len().min(16)],
            e.delta_file
        );
        if !e.settings.is_empty() {
            let s: Vec<String> = e.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("    settings: {}", s.join(" "));
        }
        println!(
            "    before: {}  after: {}",
            metrics(&e.metrics_before),
            metrics(&e.metrics_after)
        );
    }
    Ok(())
}
