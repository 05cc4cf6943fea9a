//! The `qforget` command line: parse, run, print. All logic lives in the library; this file
//! only maps errors to one line on stderr and an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse_args();
    if !matches!(args.command, cli::Command::Serve(_)) {
        end_quietly_on_a_closed_pipe();
    }
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

/// A command whose reader has gone (`qforget inspect m.onnx | head`) ends quietly, as other Unix
/// tools do: SIGPIPE gets its default action back. Rust's runtime ignores SIGPIPE, so a write
/// to a closed pipe failed and `println!` panicked. `serve` keeps ignoring it: a client that
/// hangs up must not end the server.
#[cfg(unix)]
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` only changes this process's
    // disposition; it runs at start-up, before the program starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn end_quietly_on_a_closed_pipe() {}
