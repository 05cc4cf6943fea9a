//! The record each request leaves in the state directory (`requests/NNNNNN.json`).
//!
//! Why one file per request, rewritten atomically at every change of state: it is what makes
//! ids survive a restart (the next id is one more than the highest recorded), what `status`
//! shows about requests of earlier runs, and what recovery reads to tell a request that was cut
//! off (recorded as queued or running, with no journal entry) from one that completed but
//! whose end was not written yet (its delta is in the journal). Atomic writes mean a record is
//! always whole; a record that does not parse is corruption and is reported, not guessed at.
//!
//! A record also keeps the training-split ids the request forgot: the journal holds only their
//! fingerprint (it may travel off the device), but the next request of the chain must not
//! retain or measure them, so the server needs the ids themselves. They are indices into the
//! device's own training split, never sample data.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delta::now_ms;
use crate::{Error, Result};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    /// Its result is being written (delta, journal entry, served model): too late to cancel.
    Recording,
    Done,
    Refused,
    Failed,
    Cancelled,
}

impl State {
    /// Has the request ended?
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Done | State::Refused | State::Failed | State::Cancelled
        )
    }

    /// The name `status` shows (recording is part of running).
    pub fn shown(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running | State::Recording => "running",
            State::Done => "done",
            State::Refused => "refused",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// One request as recorded on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    pub id: u64,
    pub state: State,
    /// The request options as the client sent them.
    pub options: Value,
    pub submitted_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    /// Why it failed (or a note on how it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The delta file's name in `deltas/` (recording and done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// The training-split ids it forgot (recording and done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_ids: Option<Vec<u64>>,
    /// The report (`forget --json`), for recording, done and refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

impl Ticket {
    /// A request just accepted.
    pub fn queued(id: u64, options: Value) -> Self {
        Ticket {
            id,
            state: State::Queued,
            options,
            submitted_unix_ms: now_ms(),
            finished_unix_ms: None,
            message: None,
            delta: None,
            forget_ids: None,
            report: None,
        }
    }

    /// Move to a final state now.
    pub fn end(&mut self, state: State, message: Option<String>) {
        self.state = state;
        self.message = message;
        self.finished_unix_ms = Some(now_ms());
    }

    /// Write it atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            err: std::io::Error::other(format!("cannot encode the request record: {e}")),
        })?;
        bytes.push(b'\n');
        crate::delta::write_atomic(path, &bytes)
    }

    /// Read the record at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            err: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a request record of qforget serve: {e}"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("qf-serve-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("000001.json");
        let mut t = Ticket::queued(1, serde_json::json!({"forget_class": 3}));
        t.forget_ids = Some(vec![4, 9]);
        t.end(State::Done, None);
        t.save(&p).unwrap();
        assert_eq!(Ticket::load(&p).unwrap(), t);
        std::fs::write(&p, b"{\"id\":1,\"state\":\"sleeping\"}").unwrap();
        let e = Ticket::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("000001.json") && e.contains("not a request record"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(State::Cancelled.is_final() && !State::Recording.is_final());
        assert_eq!(State::Recording.shown(), "running");
    }
}
