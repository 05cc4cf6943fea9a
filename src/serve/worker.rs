//! The worker: one thread, one request at a time, in submission order.
//!
//! Why one: a request trains the whole model and each continues the chain the previous one
//! left (its deltas are the next one's parents, its forgotten samples the next one's
//! `forgotten`), so requests cannot overlap; and a device has no cores to spare for two
//! anyway (the method itself uses every core through rayon).
//!
//! The order of writes is what makes a `kill -9` at any moment safe (see recover.rs): the
//! request is recorded as running → it runs (nothing is written) → its record gets the ids
//! and report (`recording`) → the delta file is written → the journal entry is appended (the
//! commit point) → the served model is replaced → the record says `done`. Each write is
//! atomic.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::protocol::{Reply, Step};
use super::queue::{Job, Queue};
use super::record::State;
use super::recover::Chain;
use super::state::StateDir;
use crate::delta::{self, journal};
use crate::request::{Data, Event, Report, Session};
use crate::{Error, Result};

/// What the worker needs besides the queue.
pub struct Worker {
    pub base: PathBuf,
    pub data: Arc<Data>,
    pub dir: StateDir,
    pub chain: Chain,
    /// Set after a panic: the chain in memory may no longer match the journal, so every
    /// further request fails until a restart recovers the state from disk.
    pub broken: Option<String>,
    /// The input normalisation replacing the model's metadata, if the server was given one.
    pub norm: Option<crate::graph::Normalization>,
}

/// How a request ended.
enum End {
    Done {
        delta: PathBuf,
        report: Box<Report>,
        warning: Option<String>,
    },
    Refused(Box<Report>),
    Cancelled,
    Failed(String),
}

impl Worker {
    /// Run requests from `queue` forever.
    pub fn run(mut self, queue: &Queue) {
        loop {
            let job = queue.next();
            let id = job.id;
            let end = match &self.broken {
                Some(why) => End::Failed(format!(
                    "the server needs a restart after an internal error ({why})"
                )),
                None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.process(queue, job)
                }))
                .unwrap_or_else(|p| {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let msg = format!("internal error (a bug in qforget): {what}");
                    self.broken = Some(msg.clone());
                    End::Failed(msg)
                }),
            };
            match end {
                End::Done {
                    delta,
                    report,
                    warning,
                } => queue.finish(
                    id,
                    State::Done,
                    warning.clone(),
                    Some(json(&report)),
                    Reply::Done {
                        id,
                        delta: delta.display().to_string(),
                        model: self.dir.model.display().to_string(),
                        warning,
                        report,
                    },
                ),
                End::Refused(report) => queue.finish(
                    id,
                    State::Refused,
                    report.refused.clone(),
                    Some(json(&report)),
                    Reply::Refused { id, report },
                ),
                End::Cancelled => {
                    queue.finish(id, State::Cancelled, None, None, Reply::Cancelled { id })
                }
                End::Failed(message) => queue.finish(
                    id,
                    State::Failed,
                    Some(message.clone()),
                    None,
                    Reply::Failed { id, message },
                ),
            }
        }
    }

    fn process(&mut self, queue: &Queue, job: Job) -> End {
        let Job {
            id,
            mut options,
            cancel,
        } = job;
        let n = self.data.train.n as u64;
        // Earlier requests' samples are gone from the device: neither retained nor measured.
        // (Ids past a smaller --train-limit than theirs are not in the data at all.)
        options.forgotten.extend(
            self.chain
                .forgotten
                .iter()
                .filter(|&&i| i < n)
                .map(|&i| i as usize),
        );
        options.forgotten.sort_unstable();
        options.forgotten.dedup();
        let session = match Session::open(&self.base, &self.chain.deltas).and_then(|mut s| {
            s.override_normalization(self.norm.clone())?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => return End::Failed(e.to_string()),
        };
        let name = StateDir::delta_name(id);
        let out = self.dir.deltas.join(&name);
        if let Err(e) = session.check_outputs(options.method, None, Some(&out)) {
            return End::Failed(e.to_string());
        }
        let mut on_event = |e: &Event| {
            if let Event::Step(p) = e {
                queue.progress(id, Step::from(*p));
            }
        };
        // On a worker of rayon's pool, so the request's parallel loops do not each hand off to
        // the pool and wait (see the CLI's `on_pool`).
        let ran =
            rayon::scope(|_| session.forget(&self.data, &options, &mut on_event, Some(&cancel)));
        let mut outcome = match ran {
            Ok(o) => o,
            Err(Error::Cancelled) => return End::Cancelled,
            Err(e) => return End::Failed(e.to_string()),
        };
        if outcome.report.refused.is_some() {
            return End::Refused(Box::new(outcome.report));
        }
        if cancel.load(Ordering::SeqCst) {
            return End::Cancelled;
        }
        let ids = outcome.forget_ids().to_vec();
        match queue.begin_recording(id, &name, ids.clone(), json(&outcome.report)) {
            Ok(true) => {}
            Ok(false) => return End::Cancelled,
            Err(e) => return End::Failed(e.to_string()),
        }
        outcome.set_request_id(format!("serve-{id}"));
        if let Err(e) = outcome.record(&session, &out, Some(&self.dir.journal)) {
            // An error can come after the journal was replaced (e.g. syncing its directory):
            // the journal decides whether the request committed.
            if !journaled(&self.dir.journal, &name) {
                let _ = std::fs::remove_file(&out);
                return End::Failed(e.to_string());
            }
            log::warn!("request {id}: recorded despite an error: {e}");
            outcome
                .report
                .delta
                .get_or_insert_with(|| out.display().to_string());
        }
        self.chain.deltas.push(out.clone());
        self.chain.forgotten.extend(ids);
        let warning = self.replace_model().err().map(|e| {
            // Committed all the same: the next start rebuilds the served model.
            let msg = format!("the served model was not replaced: {e}");
            log::error!("request {id}: {msg}");
            msg
        });
        End::Done {
            delta: out,
            report: Box::new(outcome.report),
            warning,
        }
    }

    /// Rebuild the served model from the base and the chain, and put it in place atomically.
    fn replace_model(&self) -> Result<()> {
        let bytes = delta::apply_files(&self.base, &self.chain.deltas)?;
        crate::onnx::decode_model(&bytes).map_err(|reason| Error::InvalidModel {
            path: self.dir.model.clone(),
            reason: format!("the rebuilt model does not decode: {reason}"),
        })?;
        delta::write_atomic(&self.dir.model, &bytes)
    }
}

/// A report as the request's record keeps it.
fn json(r: &Report) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// Does the journal at `path` record the delta file `name`?
fn journaled(path: &Path, name: &str) -> bool {
    journal::read(path)
        .map(|j| j.entries.iter().any(|(e, _)| e.delta_file == name))
        .unwrap_or(false)
}
