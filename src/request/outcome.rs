//! The result of a request and the only way to write it: the unlearned model (a patched copy of
//! the input file) and the delta plus its journal entry. A refused request has nothing to
//! write, and every writer says so rather than writing a model the guard rejected.

use std::path::Path;

use super::{Report, Session};
use crate::delta::RequestRecord;
use crate::onnx::patch::{patch_initializers, InitializerUpdate};
use crate::unlearn::MethodName;
use crate::{Error, Result};

/// A finished request: its report, and the weights it would write.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    updates: Vec<InitializerUpdate>,
    record: RequestRecord,
    method: MethodName,
}

impl Outcome {
    pub(super) fn new(
        report: Report,
        updates: Vec<InitializerUpdate>,
        record: RequestRecord,
        method: MethodName,
    ) -> Self {
        Outcome {
            report,
            updates,
            record,
            method,
        }
    }

    /// The training-split indices this request forgot (what a later request in the same chain
    /// passes as [`Options::forgotten`](super::Options::forgotten)). The journal keeps only
    /// their fingerprint; a caller that continues the chain keeps the ids itself.
    pub fn forget_ids(&self) -> &[u64] {
        &self.record.forget_ids
    }

    /// Name the request in its delta and journal entry (default: a generated `req-…` id).
    pub fn set_request_id(&mut self, id: impl Into<String>) {
        self.record.request_id = id.into();
    }

    fn writable(&self) -> Result<()> {
        match &self.report.refused {
            Some(why) => Err(Error::Refused(why.clone())),
            None => Ok(()),
        }
    }

    /// The unlearned model's bytes: the session's model with the trained initializers replaced.
    pub fn model_bytes(&self, session: &Session) -> Result<Vec<u8>> {
        self.writable()?;
        patch_initializers(&session.start_bytes, &self.updates)
    }

    /// Write the unlearned model to `path` atomically (never over the input model).
    pub fn export(&mut self, session: &Session, path: &Path) -> Result<()> {
        session.check_outputs(self.method, Some(path), None)?;
        let bytes = self.model_bytes(session)?;
        crate::delta::write_atomic(path, &bytes)?;
        self.report.export = Some(path.display().to_string());
        Ok(())
    }

    /// Write the request as a delta over the session's base model at `out` and append it to
    /// `journal` (default: the journal beside `out`). Returns the delta's sha256 (hex).
    pub fn record(
        &mut self,
        session: &Session,
        out: &Path,
        journal: Option<&Path>,
    ) -> Result<String> {
        self.writable()?;
        session.check_outputs(self.method, None, Some(out))?;
        let journal = journal.map(Path::to_path_buf).unwrap_or_else(|| {
            out.parent()
                .unwrap_or(Path::new("."))
                .join(crate::delta::journal::DEFAULT_NAME)
        });
        let sha = crate::delta::record_request(
            &session.model,
            &session.parents,
            &self.updates,
            &self.record,
            out,
            &journal,
        )?;
        self.report.delta = Some(out.display().to_string());
        self.report.delta_sha256 = Some(sha.clone());
        Ok(sha)
    }
}
