//! The `qforget` command line: parse, run, print. All logic lives in the library; this file
//! only maps errors to one line on stderr and an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
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

/// Freed blocks of up to 32 MB stay in the process for the next allocation instead of going
/// back to the kernel. A training step allocates the same large gradient buffers again and again
/// (a batch's input gradient of a layer is megabytes); glibc served each from a fresh `mmap` and
/// every first touch of its pages faulted: 21 % of a MobileNetV2-style OEU run was kernel time,
/// most of it page faults in the first write of an input gradient (perf). Peak memory is the
/// same high-water mark either way. Only the CLI sets this: the library and its C API leave the
/// embedding process's allocator alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const KEEP: libc::c_int = 32 << 20;
    // SAFETY: `mallopt` only changes glibc's allocation thresholds; it runs at start-up, before
    // any other thread exists. A value it refuses leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * KEEP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
