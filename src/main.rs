//! The `qforget` command line: parse, run, print. All logic lives in the library; this file
//! only maps errors to one line on stderr and an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse_args();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(if args.verbose { "info" } else { "warn" }),
    )
    .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole chain, no backtrace.
            eprintln!("qforget: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
