//! One error type for the library. Every variant names the file it is about and says what is
//! wrong in one line, because the person reading it is often looking at a device's log.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in qforget.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written. (The I/O error is part of the message, not a
    /// `source`, so that `main`'s `{:#}` chain does not print it twice.)
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// The file is not a readable ONNX model (not protobuf, truncated, no graph...).
    #[error("{}: not a valid ONNX model: {reason}", path.display())]
    InvalidModel { path: PathBuf, reason: String },
    /// A readable model that qforget cannot work with as a whole: its inputs or outputs are not
    /// those of a classifier with one image input and one output.
    #[error("{}: unsupported model: {reason}", path.display())]
    UnsupportedModel { path: PathBuf, reason: String },
    /// The model uses an operator or an attribute qforget does not implement.
    #[error("{}: unsupported {op} node '{node}': {detail}", path.display())]
    Unsupported {
        path: PathBuf,
        op: String,
        node: String,
        detail: String,
    },
    /// A node refers to a tensor that no initializer, input or earlier node provides.
    #[error("{}: node '{node}' ({op}) needs tensor '{tensor}', which the model does not define", path.display())]
    MissingTensor {
        path: PathBuf,
        op: String,
        node: String,
        tensor: String,
    },
    /// A node's inputs are inconsistent (shapes, quantization parameters, types).
    #[error("{}: node '{node}' ({op}): {detail}", path.display())]
    BadNode {
        path: PathBuf,
        op: String,
        node: String,
        detail: String,
    },
    /// A dataset file is malformed or does not fit the model.
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },
    /// Inputs given to a graph do not fit it (shape or count).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An initializer could not be read or replaced in a model's bytes (see `onnx::patch`).
    #[error("cannot patch the model: {0}")]
    Patch(String),
    /// A delta file is malformed, corrupt, or does not fit the model or chain it is applied to.
    #[error("{}: {reason}", path.display())]
    Delta { path: PathBuf, reason: String },
    /// The request journal is malformed or has been tampered with.
    #[error("{}: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
    /// The reference engine failed.
    #[error("reference engine: {0}")]
    Reference(String),
    /// A caller-supplied setting or selection is unusable (forget set, fraction, sizes...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A forget request did not meet its target within the retain budget: nothing may be written.
    #[error("request refused: {0}")]
    Refused(String),
    /// A request was cancelled (by its caller, through the progress callback or a cancel flag);
    /// nothing was written.
    #[error("request cancelled")]
    Cancelled,
    /// A metric could not be computed (e.g. the MIA classifier failed to train).
    #[error("metric {metric}: {reason}")]
    Metric {
        metric: &'static str,
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
