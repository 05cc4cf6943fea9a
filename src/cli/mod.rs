//! Argument parsing (clap) and the commands. Parsing does no I/O; each command resolves its
//! arguments into library calls and prints results, as text or as one JSON object.

mod apply;
mod bench;
mod eval;
mod forget;
mod ids;
mod inspect;
mod log;
mod norm;
mod output;
#[cfg(unix)]
mod serve;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Make a deployed int8-quantized ONNX classifier forget chosen training data, on the device.
#[derive(Debug, Parser)]
#[command(name = "qforget", version, about)]
pub struct Args {
    /// Worker threads (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Log what is happening (kernel choice, timings) on stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Args {
    /// Parse the process arguments (exits with clap's usage message on bad arguments).
    pub fn parse_args() -> Self {
        Args::parse()
    }
}

/// Dataset split.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
}

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum Engine {
    /// qforget's own int8 graph.
    Qforget,
    /// tract's inference engine on the same .onnx (a reference; needs the `tract-engine` feature).
    Tract,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's layers, shapes and quantization.
    Inspect {
        /// Quantized .onnx model.
        model: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure a model's top-1 accuracy on a dataset directory.
    Eval {
        /// Quantized .onnx model (input float32 NCHW, pixels = byte / 255, normalised).
        model: PathBuf,
        /// Dataset directory: idx files, .npy files, or train/ and test/ folders of class
        /// folders of images (README, "Datasets").
        #[arg(long)]
        dataset: PathBuf,
        #[command(flatten)]
        norm: norm::NormArgs,
        /// Which split to evaluate.
        #[arg(long, value_enum, default_value = "test")]
        split: SplitArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Write the predicted label of every image, one per line, in dataset order.
        #[arg(long)]
        predictions: Option<PathBuf>,
        /// Engine to run the model with.
        #[arg(long, value_enum, default_value = "qforget")]
        engine: Engine,
    },
    /// Make a model forget training samples (OEU or a baseline); measure before and after.
    Forget(Box<forget::ForgetArgs>),
    /// Rebuild a model from the untouched base and a chain of deltas (checks the chain).
    Apply {
        /// The base .onnx the first delta was made on (never written).
        model: PathBuf,
        /// Deltas in request order.
        #[arg(required = true)]
        deltas: Vec<PathBuf>,
        /// Where to write the patched model (atomically; must not be MODEL).
        #[arg(long)]
        out: PathBuf,
    },
    /// Return to an earlier state: the base plus the first N deltas (apply of a shorter chain).
    Revert {
        /// The base .onnx (never written).
        model: PathBuf,
        /// The whole chain of deltas, in request order.
        deltas: Vec<PathBuf>,
        /// How many requests to keep (0 = the base model).
        #[arg(long)]
        to: usize,
        /// Where to write the model (atomically; must not be MODEL).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the request journal, oldest first.
    Log {
        /// Journal file (default: qforget-journal.jsonl in the working directory).
        #[arg(long, default_value = qforget::delta::journal::DEFAULT_NAME)]
        journal: PathBuf,
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a model, its deltas and the journal: hashes, checksums, chain; exit 1 on any mismatch.
    Verify {
        /// The base .onnx.
        model: PathBuf,
        /// Deltas in request order.
        deltas: Vec<PathBuf>,
        /// Journal file (default: qforget-journal.jsonl beside the first delta, else in the
        /// working directory).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Check a list of sample ids to forget (one 0-based index per line, `#` comments).
    Ids {
        /// The id list.
        file: PathBuf,
        /// Number of samples the ids index into.
        #[arg(long)]
        count: Option<usize>,
        /// Or: the dataset directory (any form) whose split the ids index into.
        #[arg(long, conflicts_with = "count")]
        dataset: Option<PathBuf>,
        /// Which split of --dataset.
        #[arg(long, value_enum, default_value = "train")]
        split: SplitArg,
    },
    /// Serve forget requests over a Unix socket, one at a time (JSON lines; docs/SERVE.md).
    #[cfg(unix)]
    Serve(Box<serve::ServeArgs>),
    /// Measure kernel GOPS and end-to-end inference speed (ours against tract).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Stack of each rayon worker: 8 MiB, what Linux gives the main thread.
const WORKER_STACK: usize = 8 << 20;

/// Run `f` on a worker thread of rayon's global pool, the main thread waiting for it.
///
/// Why: from the main thread, every parallel loop hands its work to the pool and puts the main
/// thread to sleep until the work is done, a wake-up and a context switch per loop, and an OEU
/// step runs thousands of loops (measured on the memorizing Fashion-MNIST CNN at `--threads 1`:
/// 5 % of the run's CPU time in the kernel's wake-up path, under rayon's latches). On a worker,
/// the loops start where they are called; at one thread they run inline.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Run a parsed command.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Workers get the main thread's stack size, since commands run on them (`on_pool`).
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.map_or(0, |t| t.max(1)))
        .stack_size(WORKER_STACK)
        .build_global()
        .map_err(|e| match args.threads {
            Some(t) => anyhow::anyhow!("cannot start {t} threads: {e}"),
            None => anyhow::anyhow!("cannot start the worker threads: {e}"),
        })?;
    // A QFORGET_KERNEL this CPU cannot run is an error, not a silent fallback.
    qforget::kernels::select()?;
    match args.command {
        Command::Inspect { model, json } => inspect::run(&model, json),
        Command::Eval {
            model,
            dataset,
            norm,
            split,
            json,
            predictions,
            engine,
        } => {
            let eval_args = eval::EvalArgs {
                model,
                dataset,
                norm,
                split: match split {
                    SplitArg::Train => qforget::data::Split::Train,
                    SplitArg::Test => qforget::data::Split::Test,
                },
                json,
                predictions,
                engine,
            };
            on_pool(move || eval::run(eval_args))
        }
        Command::Forget(a) => on_pool(move || forget::run(*a)),
        Command::Apply { model, deltas, out } => apply::run(&model, &deltas, &out),
        Command::Revert {
            model,
            deltas,
            to,
            out,
        } => apply::revert(&model, &deltas, to, &out),
        Command::Log { journal, json } => log::run(&journal, json),
        Command::Verify {
            model,
            deltas,
            journal,
        } => verify::run(&model, &deltas, journal.as_deref()),
        Command::Ids {
            file,
            count,
            dataset,
            split,
        } => ids::run(
            &file,
            count,
            dataset,
            match split {
                SplitArg::Train => qforget::data::Split::Train,
                SplitArg::Test => qforget::data::Split::Test,
            },
        ),
        #[cfg(unix)]
        Command::Serve(a) => serve::run(*a),
        Command::Bench { what } => bench::run(what),
    }
}
