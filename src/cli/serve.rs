//! `qforget serve MODEL --dataset DIR --state DIR [--socket PATH] [--train-limit N]`: the
//! long-running request mode (the library's `serve` module; protocol in docs/SERVE.md). This
//! file only maps flags to the library's config and prints what start-up did.

use std::io::Write;
use std::path::PathBuf;

use qforget::serve::{Config, Server};

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Quantized .onnx base model (never modified; the served model is STATE/model.onnx).
    pub model: PathBuf,
    /// Dataset directory (idx files, .npy files or image folders); sample ids in requests
    /// index its training split.
    #[arg(long)]
    pub dataset: PathBuf,
    #[command(flatten)]
    pub norm: super::norm::NormArgs,
    /// State directory: delta chain, journal, request records, served model (created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// Unix socket to listen on (default: STATE/qforget.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Use only the first N images of the training split.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let server = Server::open(&Config {
        model: a.model,
        dataset: a.dataset,
        state: a.state,
        socket: a.socket,
        train_limit: a.train_limit,
        norm: a.norm.resolve()?,
    })?;
    let mut err = std::io::stderr().lock();
    for n in server.notes() {
        let _ = writeln!(err, "qforget serve: {n}");
    }
    drop(err);
    server.run()?;
    Ok(())
}
