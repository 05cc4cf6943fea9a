//! Argument parsing (clap) and the commands. Parsing does no I/O; each command resolves its
//! arguments into library calls and prints results, as text or as one JSON object.

mod bench;
mod eval;
mod forget;
mod inspect;
mod output;

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
    /// Measure a model's top-1 accuracy on an idx dataset directory.
    Eval {
        /// Quantized .onnx model (input float32 NCHW, pixels = byte / 255).
        model: PathBuf,
        /// Directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
        #[arg(long)]
        dataset: PathBuf,
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
    /// Measure kernel GOPS and end-to-end inference speed (ours against tract).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Run a parsed command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {t} threads: {e}"))?;
    }
    // A QFORGET_KERNEL this CPU cannot run is an error, not a silent fallback.
    qforget::kernels::select()?;
    match args.command {
        Command::Inspect { model, json } => inspect::run(&model, json),
        Command::Eval {
            model,
            dataset,
            split,
            json,
            predictions,
            engine,
        } => eval::run(eval::EvalArgs {
            model,
            dataset,
            split: match split {
                SplitArg::Train => qforget::data::Split::Train,
                SplitArg::Test => qforget::data::Split::Test,
            },
            json,
            predictions,
            engine,
        }),
        Command::Forget(a) => forget::run(*a),
        Command::Bench { what } => bench::run(what),
    }
}
