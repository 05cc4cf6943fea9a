//! qforget: make a deployed int8-quantized ONNX classifier forget chosen training data, on the
//! device itself.
//!
//! The crate is organised by stage (see `DESIGN.md`): [`onnx`] reads a quantized ONNX file into
//! our own integer [`graph`], whose layers run on the int8 GEMMs in [`kernels`]; [`data`] reads the
//! datasets the model is evaluated and unlearned on.
//!
//! ```no_run
//! let graph = qforget::onnx::load("model.onnx")?;
//! let test = qforget::data::IdxDataset::load("data/fashion-mnist", qforget::data::Split::Test)?;
//! let acc = qforget::eval::accuracy(&graph, &test)?;
//! println!("{:.2} %", acc.accuracy * 100.0);
//! # Ok::<(), qforget::Error>(())
//! ```

pub mod data;
pub mod delta;
pub mod error;
pub mod eval;
pub mod ffi;
pub mod graph;
pub mod kernels;
pub mod onnx;
pub mod profile;
pub mod request;
#[cfg(unix)]
pub mod serve;
pub mod train;
pub mod unlearn;

pub use error::{Error, Result};
