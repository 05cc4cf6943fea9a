//! Crash test (issue 5): a child process (`examples/crash_writer.rs`) writes forget requests
//! — delta file, then journal entry, each atomically — and is SIGKILLed at random moments,
//! over and over. After every kill the journal must verify, every request completed before
//! must still be there unchanged, `qforget verify` must pass on the base, the recorded deltas
//! and the journal, and the base model must be untouched. At least 10 requests must complete
//! across the rounds, so that "nothing completed is lost" is actually exercised.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qforget::delta::{journal, sha256};

use super::{model, qforget, s, tempdir};

/// The example binary, built by `cargo test` next to the test binaries.
fn writer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join("crash_writer");
    assert!(p.is_file(), "{} not built", p.display());
    p
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    const KILLS: usize = 120;
    let dir = tempdir("crash");
    let base = dir.join("base.onnx");
    std::fs::copy(model("fmnist_cnn_qdq.onnx"), &base).unwrap();
    let base_hash = sha256(&std::fs::read(&base).unwrap());
    let jpath = dir.join(journal::DEFAULT_NAME);
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = Instant::now();
    let mut done: Vec<String> = Vec::new();
    let mut killed_running = 0;
    let mut stalled = 0u64;
    for round in 0..KILLS {
        let mut child = Command::new(writer())
            .args([s(&base), s(&dir), "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Kill at a random moment; the window widens while the writer makes no progress (a
        // loaded machine), so kills land in every phase and requests still complete.
        let window = 40_000 + 30_000 * stalled.min(15);
        std::thread::sleep(Duration::from_micros(next() % window));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                killed_running += 1;
            }
            Some(st) => {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("round {round}: writer exited by itself ({st}): {err}");
            }
        }
        child.wait().unwrap();
        let j = journal::read(&jpath).unwrap();
        assert!(j.problems.is_empty(), "round {round}: {:?}", j.problems);
        let hashes: Vec<String> = j
            .entries
            .iter()
            .map(|(e, _)| e.delta_sha256.clone())
            .collect();
        assert!(
            hashes.len() >= done.len() && hashes[..done.len()] == done[..],
            "round {round}: a completed request was lost or changed"
        );
        stalled = if hashes.len() > done.len() {
            0
        } else {
            stalled + 1
        };
        done = hashes;
        if round % 10 == 9 || round == KILLS - 1 {
            let mut args = vec!["verify".to_string(), s(&base).to_string()];
            args.extend(
                j.entries
                    .iter()
                    .map(|(e, _)| s(&dir.join(&e.delta_file)).to_string()),
            );
            args.extend(["--journal".to_string(), s(&jpath).to_string()]);
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let out = qforget(&a);
            assert!(
                out.status.success(),
                "round {round}: verify failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(
        sha256(&std::fs::read(&base).unwrap()),
        base_hash,
        "base model changed"
    );
    let strays = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count();
    eprintln!(
        "crash test: {KILLS} rounds, {killed_running} SIGKILLs of a running writer, {} requests completed, {strays} stray temp files, {:.1} s",
        done.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(killed_running >= 100);
    assert!(done.len() >= 10, "only {} requests completed", done.len());
}
