//! Startup: bring the state directory to a consistent state after whatever stopped the last
//! server (a clean exit, `kill -9`, a power cut).
//!
//! Why it is safe, step by step, given the order the worker writes in (record the request →
//! run → write its delta → append the journal entry → replace the served model → record the
//! end), where every write is atomic and the journal entry is the commit point:
//! - the journal must verify, with every delta it names present and matching
//!   (`delta::verify`); anything else is damage this server will not paper over;
//! - a delta file no journal entry names was written by a request cut off before its commit
//!   point: it is removed (it was never part of the chain);
//! - a request recorded as queued, running or recording with no journal entry was cut off:
//!   it is marked failed ("interrupted by a restart"), and nothing of it is in the chain; one
//!   with a journal entry had committed: it is marked done;
//! - the served model is rebuilt from the base and the journaled chain when it is missing or
//!   differs, so it is always exactly that rebuild, whichever moment the crash hit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::record::{State, Ticket};
use super::state::{list, StateDir};
use crate::delta::{self, hex, journal};
use crate::{Error, Result};

/// What the worker continues from.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The journaled deltas, in request order.
    pub deltas: Vec<PathBuf>,
    /// Training-split ids forgotten by those requests.
    pub forgotten: Vec<u64>,
}

/// The state after recovery.
#[derive(Debug)]
pub struct Recovered {
    pub chain: Chain,
    /// Every request record (ended ones included), by id.
    pub tickets: Vec<Ticket>,
    pub next_id: u64,
    /// What recovery did, one line each, for the log.
    pub notes: Vec<String>,
}

/// Recover `dir` (already locked) for the base model `base`.
pub fn recover(dir: &StateDir, base: &Path) -> Result<Recovered> {
    let mut notes = Vec::new();
    for p in dir.remove_temp_files()? {
        notes.push(format!(
            "removed {} (a write cut off by a crash)",
            p.display()
        ));
    }
    let j = journal::read(&dir.journal)?;
    if let Some(p) = j.problems.first() {
        return Err(Error::Journal {
            path: dir.journal.clone(),
            reason: format!("does not verify ({p}); refusing to serve from it"),
        });
    }
    let mut tickets: BTreeMap<u64, Ticket> =
        dir.tickets()?.into_iter().map(|t| (t.id, t)).collect();
    let mut chain = Chain::default();
    let mut journaled = Vec::new();
    for (e, _) in &j.entries {
        let jerr = |reason: String| Error::Journal {
            path: dir.journal.clone(),
            reason: format!("entry {}: {reason}", e.seq),
        };
        let id = StateDir::delta_id(&e.delta_file).ok_or_else(|| {
            jerr(format!(
                "delta file '{}' was not written by qforget serve (expected NNNNNN.qfd)",
                e.delta_file
            ))
        })?;
        let path = dir.deltas.join(&e.delta_file);
        if !path.is_file() {
            return Err(jerr(format!("its delta {} is missing", path.display())));
        }
        let t = tickets.get(&id).ok_or_else(|| {
            jerr(format!(
                "no request record {} (the samples it forgot are unknown)",
                dir.ticket_path(id).display()
            ))
        })?;
        let ids = t.forget_ids.as_ref().ok_or_else(|| {
            jerr(format!(
                "the request record {} lists no forgotten samples",
                dir.ticket_path(id).display()
            ))
        })?;
        let (fp, _) = journal::fingerprint(ids);
        if hex(&fp) != e.forget_fingerprint {
            return Err(jerr(format!(
                "the samples listed in {} do not match the journal's fingerprint",
                dir.ticket_path(id).display()
            )));
        }
        chain.forgotten.extend_from_slice(ids);
        chain.deltas.push(path);
        journaled.push(id);
    }
    // The chain and the journal, checked as `qforget verify` checks them (a fresh state
    // directory has neither).
    let findings = if chain.deltas.is_empty() {
        Vec::new()
    } else {
        delta::verify(base, &chain.deltas, Some(&dir.journal))?
    };
    if let Some(f) = findings.iter().find(|f| f.kind == "mismatch") {
        return Err(Error::Journal {
            path: dir.journal.clone(),
            reason: format!("the chain does not verify: {}", f.text),
        });
    }
    // Deltas of requests cut off before their journal entry.
    for name in list(&dir.deltas)? {
        if !chain
            .deltas
            .iter()
            .any(|p| p.file_name() == Some(name.as_ref()))
        {
            let p = dir.deltas.join(&name);
            if StateDir::delta_id(&name).is_some() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                notes.push(format!(
                    "removed {} (written by a request cut off before its journal entry)",
                    p.display()
                ));
            } else {
                notes.push(format!(
                    "ignored {} (not a delta of this server)",
                    p.display()
                ));
            }
        }
    }
    for t in tickets.values_mut() {
        let committed = journaled.contains(&t.id);
        if t.state == State::Done && !committed {
            return Err(Error::Journal {
                path: dir.journal.clone(),
                reason: format!(
                    "request {} is recorded done ({}), but no journal entry records its delta",
                    t.id,
                    dir.ticket_path(t.id).display()
                ),
            });
        }
        if t.state.is_final() {
            continue;
        }
        if committed {
            t.delta = Some(StateDir::delta_name(t.id));
            t.end(
                State::Done,
                Some("completed; the server restarted before it could report it".into()),
            );
            notes.push(format!(
                "request {}: its delta was journaled before the restart; done",
                t.id
            ));
        } else {
            t.forget_ids = None;
            t.report = None;
            t.delta = None;
            t.end(State::Failed, Some("interrupted by a restart".into()));
            notes.push(format!(
                "request {}: interrupted by a restart; marked failed (nothing of it was applied)",
                t.id
            ));
        }
        dir.save(t)?;
    }
    // The served model: exactly base + journaled chain.
    let bytes = if chain.deltas.is_empty() {
        crate::onnx::read_model_bytes(base)?
    } else {
        delta::apply_files(base, &chain.deltas)?
    };
    let served = match std::fs::read(&dir.model) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&dir.model, e)),
    };
    if served.as_deref() != Some(&bytes[..]) {
        delta::write_atomic(&dir.model, &bytes)?;
        notes.push(format!(
            "{} {} (base + {} delta(s))",
            if served.is_some() { "rebuilt" } else { "wrote" },
            dir.model.display(),
            chain.deltas.len()
        ));
    }
    let next_id = tickets.keys().chain(&journaled).max().map_or(1, |m| m + 1);
    Ok(Recovered {
        chain,
        tickets: tickets.into_values().collect(),
        next_id,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::RequestRecord;
    use crate::onnx::patch::{self, InitializerUpdate, TensorValues};

    /// The first int8 initializer of `model` with `k` elements nudged: a delta's worth of change.
    fn nudge(model: &[u8], k: usize) -> Vec<InitializerUpdate> {
        let (name, v) = patch::initializers(model)
            .unwrap()
            .into_iter()
            .find(|(_, v)| matches!(v, TensorValues::I8(_)))
            .unwrap();
        let TensorValues::I8(mut w) = v else {
            unreachable!()
        };
        for x in w.iter_mut().take(k) {
            *x = if *x < 0 { *x + 1 } else { *x - 1 };
        }
        vec![InitializerUpdate {
            name,
            values: TensorValues::I8(w),
        }]
    }

    fn record(id: u64, ids: &[u64]) -> RequestRecord {
        RequestRecord {
            request_id: format!("serve-{id}"),
            method: "oeu".into(),
            forget_ids: ids.to_vec(),
            ..RequestRecord::default()
        }
    }

    fn ticket(id: u64, state: State, ids: Option<&[u64]>) -> Ticket {
        let mut t = Ticket::queued(id, serde_json::json!({"forget_ids": ids}));
        t.state = state;
        t.forget_ids = ids.map(<[u64]>::to_vec);
        t.delta = ids.map(|_| StateDir::delta_name(id));
        t
    }

    /// Every state a `kill -9` can leave, at once: a request that committed but did not
    /// record its end (and whose served model was not replaced), one cut off between its
    /// delta and its journal entry, one still queued, and a torn temporary file.
    #[test]
    fn a_crash_in_any_phase_recovers_to_the_journaled_chain() {
        let root = std::env::temp_dir().join(format!("qf-serve-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (dir, _lock) = StateDir::open(&root).unwrap();
        let base = root.join("base.onnx");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-models/mnist_mlp_matmul_qdq.onnx"),
            &base,
        )
        .unwrap();
        let base_bytes = std::fs::read(&base).unwrap();

        // A fresh directory: the served model is the base.
        let r = recover(&dir, &base).unwrap();
        assert_eq!(r.next_id, 1);
        assert!(r.chain.deltas.is_empty());
        assert_eq!(std::fs::read(&dir.model).unwrap(), base_bytes);

        // Request 1 committed (delta + journal entry), its record still says recording.
        let d1 = dir.deltas.join(StateDir::delta_name(1));
        dir.save(&ticket(1, State::Recording, Some(&[4, 2])))
            .unwrap();
        delta::record_request(
            &base,
            &[],
            &nudge(&base_bytes, 10),
            &record(1, &[4, 2]),
            &d1,
            &dir.journal,
        )
        .unwrap();
        // Request 2 wrote its delta, but the crash came before its journal entry.
        let chain1 = delta::apply_files(&base, std::slice::from_ref(&d1)).unwrap();
        let d2 = dir.deltas.join(StateDir::delta_name(2));
        let elsewhere = root.join("elsewhere.jsonl");
        dir.save(&ticket(2, State::Recording, Some(&[7]))).unwrap();
        delta::record_request(
            &base,
            std::slice::from_ref(&d1),
            &nudge(&chain1, 30),
            &record(2, &[7]),
            &d2,
            &elsewhere,
        )
        .unwrap();
        std::fs::remove_file(&elsewhere).unwrap();
        // Request 3 was queued; a model write was torn.
        dir.save(&ticket(3, State::Queued, None)).unwrap();
        let torn = root.join(".model.onnx.tmp-99-0");
        std::fs::write(&torn, b"half a model").unwrap();

        let r = recover(&dir, &base).unwrap();
        assert_eq!(r.chain.deltas, vec![d1.clone()]);
        assert_eq!(r.chain.forgotten, vec![4, 2]);
        assert_eq!(r.next_id, 4);
        assert!(!d2.exists() && !torn.exists(), "{:?}", r.notes);
        assert_eq!(std::fs::read(&dir.model).unwrap(), chain1);
        let states: Vec<_> = r.tickets.iter().map(|t| (t.id, t.state)).collect();
        assert_eq!(
            states,
            [(1, State::Done), (2, State::Failed), (3, State::Failed)]
        );
        assert_eq!(
            r.tickets[1].message.as_deref(),
            Some("interrupted by a restart")
        );
        assert_eq!(r.tickets[1].forget_ids, None);
        // What recovery wrote is what the next start reads, and it changes nothing then.
        let again = recover(&dir, &base).unwrap();
        assert!(again.notes.is_empty(), "{:?}", again.notes);
        assert_eq!(again.tickets, r.tickets);

        // Damage is refused, not repaired: a record that disagrees with the journal's
        // fingerprint, and a done request whose delta the journal does not have.
        let good = Ticket::load(&dir.ticket_path(1)).unwrap();
        let mut bad = good.clone();
        bad.forget_ids = Some(vec![4]);
        dir.save(&bad).unwrap();
        let e = recover(&dir, &base).unwrap_err().to_string();
        assert!(e.contains("fingerprint"), "{e}");
        dir.save(&good).unwrap();
        let mut ghost = ticket(5, State::Done, Some(&[1]));
        ghost.end(State::Done, None);
        dir.save(&ghost).unwrap();
        let e = recover(&dir, &base).unwrap_err().to_string();
        assert!(
            e.contains("request 5") && e.contains("no journal entry"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
