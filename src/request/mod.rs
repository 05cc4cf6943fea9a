//! One forget request, start to finish, as a library call.
//!
//! Why here and not in the CLI: a request is more than a method run. It checks the delta chain,
//! chooses the forget, retain and probe sets, derives the forgetting target, measures before and
//! after, decides whether the result may be handed back, and writes the export, the delta and
//! the journal entry. The CLI (`qforget forget`), the C API and `serve` are thin shells over
//! [`Session`] and [`Outcome`], so they cannot drift apart.
//!
//! ```no_run
//! use qforget::request::{Data, Options, Session};
//! let session = Session::open("model.onnx".as_ref(), &[])?;
//! let data = Data::load("data/fashion-mnist".as_ref(), None)?;
//! let opts = Options { forget_class: Some(3), ..Options::default() };
//! let mut outcome = session.forget(&data, &opts, &mut |_| {}, None)?;
//! if outcome.report.refused.is_none() {
//!     outcome.record(&session, "req1.qfd".as_ref(), None)?;
//! }
//! println!("{}", outcome.report.to_json());
//! # Ok::<(), qforget::Error>(())
//! ```

mod options;
mod outcome;
mod report;
mod run;

pub use options::Options;
pub use outcome::Outcome;
pub use report::{Report, Side};
pub use run::updates;

use std::path::{Path, PathBuf};

use crate::data::{IdxDataset, Split};
use crate::graph::{Graph, Normalization, Shape};
use crate::unlearn::{MethodName, Progress};
use crate::{Error, Result};

/// A model opened for forget requests: the untouched base file, the delta chain it continues,
/// and the integer graph of the state that chain gives.
#[derive(Debug, Clone)]
pub struct Session {
    model: PathBuf,
    parents: Vec<PathBuf>,
    /// The model bytes the chain gives (the base's own bytes for an empty chain).
    start_bytes: Vec<u8>,
    graph: Graph,
}

impl Session {
    /// Open `model`, continuing the chain of `parents` (earlier deltas of it, in request
    /// order): the chain is checked, and requests start from the model it gives.
    pub fn open(model: &Path, parents: &[PathBuf]) -> Result<Self> {
        let start_bytes = if parents.is_empty() {
            crate::onnx::read_model_bytes(model)?
        } else {
            crate::delta::apply_files(model, parents)?
        };
        let graph = crate::onnx::from_bytes(&start_bytes, model)?;
        Ok(Session {
            model: model.to_path_buf(),
            parents: parents.to_vec(),
            start_bytes,
            graph,
        })
    }

    /// The base model file.
    pub fn model_path(&self) -> &Path {
        &self.model
    }

    /// The delta chain this session continues.
    pub fn parents(&self) -> &[PathBuf] {
        &self.parents
    }

    /// The integer graph requests start from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Normalise the model's input by `norm` instead of what its metadata says (see
    /// [`crate::graph::normalize`]); `None` keeps the metadata's.
    pub fn override_normalization(&mut self, norm: Option<Normalization>) -> Result<()> {
        match norm {
            Some(n) => self.graph.set_normalization(Some(n)),
            None => Ok(()),
        }
    }

    /// Refuse outputs that cannot be written, before a long run rather than after it.
    pub fn check_outputs(
        &self,
        method: MethodName,
        export: Option<&Path>,
        out: Option<&Path>,
    ) -> Result<()> {
        if let Some(e) = export {
            if e.exists() && same_file(e, &self.model) {
                return Err(Error::InvalidArgument(format!(
                    "{}: exporting would overwrite the input model",
                    e.display()
                )));
            }
        }
        if (export.is_some() || out.is_some()) && method == MethodName::Retrain {
            return Err(Error::InvalidArgument(format!(
                "a retrained model has new scales and cannot be written as a weight patch of {}; \
                 run retrain without an export or delta (its JSON report serves as a reference)",
                self.model.display()
            )));
        }
        // An output that cannot be written is reported now, not after the training.
        for p in export.into_iter().chain(out) {
            crate::delta::check_writable(p)?;
        }
        Ok(())
    }
}

/// The samples a request works on: the device's training split (sample ids index it) and a
/// test split the metrics use.
#[derive(Debug, Clone)]
pub struct Data {
    pub train: IdxDataset,
    pub test: IdxDataset,
    /// How reports name it (the dataset directory, or what the caller says).
    pub name: String,
}

impl Data {
    /// The dataset at `dir` (idx, npy or image folder; see [`crate::data`]), using only the
    /// first `train_limit` training images if given.
    pub fn load(dir: &Path, train_limit: Option<usize>) -> Result<Self> {
        Self::load_for(dir, train_limit, None)
    }

    /// [`Data::load`] for a model whose input is `input` (it settles an ambiguous `.npy`
    /// layout; see [`crate::data::Dataset::load_for`]).
    pub fn load_for(dir: &Path, train_limit: Option<usize>, input: Option<Shape>) -> Result<Self> {
        let mut train = IdxDataset::load_for(dir, Split::Train, input)?;
        if let Some(n) = train_limit {
            if n == 0 || n > train.n {
                return Err(Error::InvalidArgument(format!(
                    "train limit {n}: the training split of {} has {} images",
                    dir.display(),
                    train.n
                )));
            }
            train.truncate(n);
        }
        let test = IdxDataset::load_for(dir, Split::Test, input)?;
        Ok(Data {
            train,
            test,
            name: dir.display().to_string(),
        })
    }
}

/// What a running request tells its caller.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The sets are chosen; the model is measured next (when metrics are on).
    Selected {
        forget: usize,
        retain: usize,
        train: usize,
        method: MethodName,
    },
    /// One optimizer step is done.
    Step(&'a Progress),
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
