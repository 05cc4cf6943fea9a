//! `qforget serve` end to end (issue 13, part 3): the binary on a state directory, clients on
//! its Unix socket. Two clients at once, a cancel, and a `kill -9` mid-request then a restart.
//! Small on purpose (the MLP fixture, 2,000 MNIST training images, no metrics): CI has little
//! time left.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{dataset, model, qforget, s, tempdir};

/// A running `qforget serve`, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(state: &Path, base: &Path) -> Server {
        Self::start_with(state, base, &dataset("mnist"), &["--train-limit", "2000"])
    }

    /// Start on `data` with `extra` flags.
    fn start_with(state: &Path, base: &Path, data: &Path, extra: &[&str]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.with_extension("log"))
            .unwrap();
        // The default socket, unless the checkout is so deep that its path would pass the
        // 107 bytes a Unix socket path may have.
        let mut socket = state.join("qforget.sock");
        let mut args = vec![
            "serve".to_string(),
            s(base).into(),
            "--dataset".into(),
            s(data).into(),
            "--state".into(),
            s(state).into(),
            "--threads".into(),
            "2".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        if socket.as_os_str().len() > 100 {
            let name = state
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy();
            socket = std::env::temp_dir().join(format!("qf-{name}.sock"));
            args.extend(["--socket".into(), s(&socket).into()]);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_qforget"))
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server { child, socket };
        let t0 = Instant::now();
        while UnixStream::connect(&server.socket).is_err() {
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!(
                    "serve exited ({st}): {}",
                    std::fs::read_to_string(state.with_extension("log")).unwrap()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "serve never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn connect(&self) -> Client {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            stream: s,
            pending: Default::default(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// Lines read while looking for another one (progress of a running request).
    pending: std::collections::VecDeque<Value>,
}

impl Client {
    fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line from the server within 60 s");
        assert!(line.ends_with('\n'), "connection closed: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn ask(&mut self, v: Value) -> Value {
        self.send(&v.to_string());
        self.recv()
    }

    /// Submit a forget request; returns its id and queue position.
    fn forget(&mut self, options: Value) -> (u64, u64) {
        self.send(&json!({"op": "forget", "options": options}).to_string());
        // Lines of a request this client already runs may come first; keep them for later.
        let mut skipped = Vec::new();
        let r = loop {
            let mut line = String::new();
            self.reader
                .read_line(&mut line)
                .expect("a line within 60 s");
            let r: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if r["event"] == "queued" {
                break r;
            }
            assert_eq!(r["event"], "progress", "{r}");
            skipped.push(r);
        };
        self.pending.extend(skipped);
        (r["id"].as_u64().unwrap(), r["position"].as_u64().unwrap())
    }

    /// Every line about request `id` up to its final one.
    fn until_final(&mut self, id: u64) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let r = self.recv();
            assert_eq!(r["id"], id, "a line for another request: {r}");
            let end = ["done", "refused", "cancelled", "failed"]
                .contains(&r["event"].as_str().unwrap_or(""));
            lines.push(r);
            if end {
                return lines;
            }
        }
    }
}

fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

/// A state directory and a private copy of the base model beside it.
fn setup(tag: &str) -> (PathBuf, PathBuf) {
    let dir = tempdir(tag);
    let base = dir.join("base.onnx");
    std::fs::copy(model("mnist_mlp_matmul_qdq.onnx"), &base).unwrap();
    (dir.join("state"), base)
}

/// The RGB fixture on its `.npy` dataset, normalised by options: a request runs and is
/// recorded; a dataset that does not fit the model is refused before the state exists.
#[test]
fn serves_an_rgb_npy_dataset_and_refuses_one_that_does_not_fit() {
    let dir = tempdir("serve-rgb");
    let base = dir.join("base.onnx");
    std::fs::copy(model("rgb_digits_qdq.onnx"), &base).unwrap();
    let state = dir.join("state");
    let out = qforget(&[
        "serve",
        s(&base),
        "--dataset",
        s(&dataset("mnist")),
        "--state",
        s(&state),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("[3×14×14]"),
        "{err}"
    );
    assert!(!state.exists(), "the state directory must not be created");

    let npy = dataset("rgb-digits").join("npy");
    let norm = ["--mean", "0.149,0.215,0.321", "--std", "0.215,0.173,0.130"];
    let server = Server::start_with(&state, &base, &npy, &norm);
    let mut c = server.connect();
    let (id, _) = c.forget(short(3));
    let lines = c.until_final(id);
    assert_eq!(events(&lines).last(), Some(&"done"), "{lines:?}");
    assert_eq!(delta_files(&state).len(), 1);
}

/// A short request (one epoch, no target, no metrics) that is recorded.
fn short(class: u8) -> Value {
    json!({"forget_class": class, "epochs": 1, "no_stop": true, "no_metrics": true})
}

/// A request that runs until it is cancelled or killed.
fn long(class: u8) -> Value {
    json!({"forget_class": class, "epochs": 500, "no_stop": true, "no_metrics": true,
           "no_guard": true})
}

/// `qforget verify` of the state directory's chain (in journal order), and the model that
/// `qforget apply` rebuilds from it.
fn verify_and_rebuild(state: &Path, base: &Path, deltas: &[&str]) -> Vec<u8> {
    let paths: Vec<PathBuf> = deltas
        .iter()
        .map(|d| state.join("deltas").join(d))
        .collect();
    let journal = state.join("qforget-journal.jsonl");
    let mut args = vec!["verify", s(base)];
    args.extend(paths.iter().map(|p| s(p)));
    args.extend(["--journal", s(&journal)]);
    let o = qforget(&args);
    assert!(
        o.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if deltas.is_empty() {
        return std::fs::read(base).unwrap();
    }
    let out = state.with_extension("rebuilt.onnx");
    let mut args = vec!["apply", s(base)];
    args.extend(paths.iter().map(|p| s(p)));
    args.extend(["--out", s(&out)]);
    let o = qforget(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

fn delta_files(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("deltas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn two_clients_at_once_each_get_their_own_lines_in_order() {
    let (state, base) = setup("serve-two");
    let base_bytes = std::fs::read(&base).unwrap();
    let server = Server::start(&state, &base);
    let (mut a, mut b) = (server.connect(), server.connect());
    let (ia, pa) = a.forget(short(3));
    let (ib, pb) = b.forget(short(5));
    assert_eq!((ia, pa), (1, 0));
    assert_eq!((ib, pb), (2, 1), "the second request waits for the first");
    // Both read at once, as two apps would.
    let (la, lb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| a.until_final(ia));
        let hb = sc.spawn(|| b.until_final(ib));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for (lines, id) in [(&la, ia), (&lb, ib)] {
        let ev = events(lines);
        assert_eq!(ev.first(), Some(&"running"), "{id}: {ev:?}");
        assert_eq!(ev.last(), Some(&"done"), "{id}: {lines:?}");
        assert!(ev.contains(&"progress"), "{id}: {ev:?}");
        let p = lines.iter().find(|l| l["event"] == "progress").unwrap();
        assert!(
            p["step"].as_u64().unwrap() >= 1 && p["loss"].is_number(),
            "{p}"
        );
    }
    let (ra, rb) = (&la.last().unwrap()["report"], &lb.last().unwrap()["report"]);
    assert_eq!(ra["method"], "oeu");
    assert!(la.last().unwrap()["delta"]
        .as_str()
        .unwrap()
        .ends_with("000001.qfd"));
    // The second request continued the chain without the first one's samples: they are
    // neither forgotten again nor retained.
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap();
    assert_eq!(n(ra, "forget_count") + n(ra, "retain_count"), 2000);
    assert_eq!(
        n(rb, "forget_count") + n(rb, "retain_count") + n(ra, "forget_count"),
        2000
    );
    // Status from a third client: both done, in order.
    let mut c = server.connect();
    let st = c.ask(json!({"op": "status"}));
    let reqs = st["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2, "{st}");
    assert!(reqs.iter().all(|r| r["state"] == "done"), "{st}");
    assert!(
        reqs[0]["finished_unix_ms"].as_u64() <= reqs[1]["finished_unix_ms"].as_u64(),
        "{st}"
    );
    let one = c.ask(json!({"op": "status", "id": 2}));
    assert_eq!(one["request"]["report"]["forget_count"], rb["forget_count"]);
    // Bad lines get an error and the connection stays usable.
    for bad in [
        "{not json",
        r#"{"op":"reboot"}"#,
        r#"{"op":"forget","options":{"forget_klass":1}}"#,
    ] {
        c.send(bad);
        let r = c.recv();
        assert_eq!(r["event"], "error", "{bad}: {r}");
    }
    let r = c.ask(json!({"op": "status", "id": 99}));
    assert_eq!(
        (r["event"].as_str(), r["id"].as_u64()),
        (Some("error"), Some(99))
    );
    assert_eq!(c.ask(json!({"op": "status"}))["event"], "status");
    // The served model is the chain's rebuild; the base is untouched.
    let rebuilt = verify_and_rebuild(&state, &base, &["000001.qfd", "000002.qfd"]);
    assert_eq!(std::fs::read(state.join("model.onnx")).unwrap(), rebuilt);
    assert_ne!(rebuilt, base_bytes);
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);
}

#[test]
fn a_cancelled_request_writes_nothing() {
    let (state, base) = setup("serve-cancel");
    let base_bytes = std::fs::read(&base).unwrap();
    let server = Server::start(&state, &base);
    let mut a = server.connect();
    let (id, _) = a.forget(long(3));
    assert_eq!(a.recv()["event"], "running");
    assert_eq!(a.recv()["event"], "progress");
    // A queued request is cancelled at once (its submitter is told first).
    let (queued, pos) = a.forget(short(5));
    assert_eq!(pos, 1);
    let mut c = server.connect();
    let r = c.ask(json!({"op": "status", "id": id}));
    assert_eq!(r["request"]["state"], "running", "{r}");
    assert!(r["request"]["progress"]["step"].as_u64().is_some(), "{r}");
    let r = c.ask(json!({"op": "cancel", "id": queued}));
    assert_eq!(
        (r["event"].as_str(), r["state"].as_str()),
        (Some("cancel"), Some("cancelled"))
    );
    // The running one through its cancel flag.
    let r = c.ask(json!({"op": "cancel", "id": id}));
    assert_eq!(r["state"], "cancelling", "{r}");
    let mut lines = Vec::new();
    loop {
        let r = a.recv();
        let ev = r["event"].as_str().unwrap().to_string();
        lines.push(r);
        if ev == "cancelled" && lines.iter().filter(|l| l["event"] == "cancelled").count() == 2 {
            break;
        }
        assert!(ev == "progress" || ev == "cancelled", "{lines:?}");
    }
    let ended: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "cancelled")
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ended, [queued, id]);
    let r = c.ask(json!({"op": "cancel", "id": id}));
    assert_eq!(r["event"], "error");
    assert!(
        r["message"].as_str().unwrap().contains("already ended"),
        "{r}"
    );
    let st = c.ask(json!({"op": "status"}));
    let states: Vec<&str> = st["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["cancelled", "cancelled"]);
    // Nothing written: no delta, no journal, the served model is the base.
    assert!(delta_files(&state).is_empty());
    assert!(!state.join("qforget-journal.jsonl").exists());
    assert_eq!(std::fs::read(state.join("model.onnx")).unwrap(), base_bytes);
}

#[test]
fn kill_9_mid_request_then_restart_reports_it_failed() {
    let (state, base) = setup("serve-kill");
    let base_bytes = std::fs::read(&base).unwrap();
    let mut server = Server::start(&state, &base);
    let mut a = server.connect();
    let (first, _) = a.forget(short(3));
    assert_eq!(events(&a.until_final(first)).last(), Some(&"done"));
    let served = std::fs::read(state.join("model.onnx")).unwrap();
    let (cut, _) = a.forget(long(5));
    assert_eq!(a.recv()["event"], "running");
    assert_eq!(a.recv()["event"], "progress");
    server.kill();
    drop(a);
    // The socket file is stale now; the restart replaces it.
    assert!(server.socket.exists());
    let server = Server::start(&state, &base);
    let mut c = server.connect();
    let r = c.ask(json!({"op": "status", "id": cut}));
    assert_eq!(r["request"]["state"], "failed", "{r}");
    assert_eq!(r["request"]["message"], "interrupted by a restart");
    assert_eq!(
        c.ask(json!({"op": "status", "id": first}))["request"]["state"],
        "done"
    );
    // Only the journaled chain counts, and the served model is exactly its rebuild.
    assert_eq!(delta_files(&state), ["000001.qfd"]);
    let rebuilt = verify_and_rebuild(&state, &base, &["000001.qfd"]);
    let now = std::fs::read(state.join("model.onnx")).unwrap();
    assert_eq!(now, rebuilt);
    assert_eq!(now, served);
    assert_eq!(std::fs::read(&base).unwrap(), base_bytes);
    // Ids go on after the restart, and the chain continues.
    let (next, _) = c.forget(short(7));
    assert_eq!(next, cut + 1);
    assert_eq!(events(&c.until_final(next)).last(), Some(&"done"));
    let next_delta = format!("{next:06}.qfd");
    let rebuilt = verify_and_rebuild(&state, &base, &["000001.qfd", &next_delta]);
    assert_eq!(std::fs::read(state.join("model.onnx")).unwrap(), rebuilt);
}
