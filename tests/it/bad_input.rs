//! The malformed-input suite (issue 5): truncated and bit-flipped models and deltas, wrong
//! base, broken chains, wrong magic/version, huge length fields in delta/onnx/idx headers,
//! out-of-range labels and ids, wrong image sizes, a tampered journal — all through the CLI.
//! Every case must exit 1 with one stderr line naming the file and the problem, must not
//! panic, and must leave every file it could touch byte-identical (sha256 before and after).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qforget::delta::format::{self, Change, DeltaBody, TensorDelta};
use qforget::delta::{journal, record_request, sha256, RequestRecord};
use qforget::onnx::patch::{self, InitializerUpdate, TensorValues};

use super::{dataset, model, qforget, s, tempdir};

const BASE: &str = "fmnist_cnn_qdq.onnx";

/// One malformed input: the arguments, and what the error line must contain.
struct Case {
    what: String,
    args: Vec<String>,
    names: String,
    says: String,
}

fn case(what: &str, args: &[&str], names: &str, says: &str) -> Case {
    Case {
        what: what.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        names: names.into(),
        says: says.into(),
    }
}

/// sha256 of every file under `dirs` (recursively), by path.
fn snapshot(dirs: &[&Path]) -> BTreeMap<PathBuf, [u8; 32]> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if p.is_file() {
            out.insert(p.clone(), sha256(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

/// Run one case; `None` when it meets the contract, else what went wrong.
fn check(c: &Case, watched: &[&Path]) -> Option<String> {
    let before = snapshot(watched);
    let args: Vec<&str> = c.args.iter().map(|s| s.as_str()).collect();
    let out = qforget(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let after = snapshot(watched);
    eprintln!("[{}] {}", c.what, err.trim_end());
    let mut why = Vec::new();
    if out.status.code() != Some(1) {
        why.push(format!("exit code {:?}", out.status.code()));
    }
    if err.trim_end().lines().count() != 1 {
        why.push("not exactly one stderr line".into());
    }
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        why.push("panicked".into());
    }
    if !err.contains(&c.names) {
        why.push(format!("does not name {:?}", c.names));
    }
    if !err.to_lowercase().contains(&c.says.to_lowercase()) {
        why.push(format!("does not say {:?}", c.says));
    }
    if before != after {
        why.push("files changed".into());
    }
    (!why.is_empty()).then(|| format!("{}: {} — stderr: {err}", c.what, why.join(", ")))
}

fn rec(id: &str) -> RequestRecord {
    RequestRecord {
        request_id: id.into(),
        method: "synthetic".into(),
        settings: BTreeMap::new(),
        forget_ids: vec![1, 2, 3],
        metrics_before: BTreeMap::from([("acc".into(), 0.9)]),
        metrics_after: BTreeMap::from([("acc".into(), 0.8)]),
    }
}

/// Add `k` to every 50th element of every int8 initializer.
fn bump(model: &[u8], k: i8) -> Vec<InitializerUpdate> {
    patch::initializers(model)
        .unwrap()
        .into_iter()
        .filter_map(|(name, v)| match v {
            TensorValues::I8(mut w) => {
                w.iter_mut()
                    .step_by(50)
                    .for_each(|x| *x = x.saturating_add(k));
                Some(InitializerUpdate {
                    name,
                    values: TensorValues::I8(w),
                })
            }
            _ => None,
        })
        .collect()
}

/// Recompute the trailing checksum (so a crafted header or body gets past it).
fn resign(mut b: Vec<u8>) -> Vec<u8> {
    let n = b.len() - 32;
    let h = sha256(&b[..n]);
    b[n..].copy_from_slice(&h);
    b
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn fifty_malformed_inputs_fail_cleanly_and_change_nothing() {
    let dir = tempdir("bad-input");
    let base_path = dir.join("base.onnx");
    std::fs::copy(model(BASE), &base_path).unwrap();
    let base = std::fs::read(&base_path).unwrap();
    let base_s = s(&base_path).to_string();
    let j = dir.join(journal::DEFAULT_NAME);
    // A good chain d1 → d2 → d3 with its journal.
    let mut cur = base.clone();
    let mut chain = Vec::new();
    for k in 1..=3 {
        let upd = bump(&cur, k as i8);
        let out = dir.join(format!("d{k}.qfd"));
        record_request(&base_path, &chain, &upd, &rec(&format!("r{k}")), &out, &j).unwrap();
        cur = patch::patch_initializers(&cur, &upd).unwrap();
        chain.push(out);
    }
    let d1b = std::fs::read(&chain[0]).unwrap();
    let d1 = s(&chain[0]).to_string();
    let d2 = s(&chain[1]).to_string();
    let d3 = s(&chain[2]).to_string();
    let out = s(&dir.join("out.onnx")).to_string();
    let (body, _) = format::decode(&d1b).unwrap();
    let mut cases = Vec::new();
    let apply = |what: &str, m: &str, ds: &[&str], names: &str, says: &str| {
        let mut a = vec!["apply", m];
        a.extend_from_slice(ds);
        a.extend_from_slice(&["--out", &out]);
        case(what, &a, names, says)
    };

    // --- ONNX models: truncated, bit-flipped (caught by the base hash), huge lengths.
    for (i, cut) in [10, 1000, base.len() / 2, base.len() - 3]
        .into_iter()
        .enumerate()
    {
        let p = put(&dir, &format!("cut{i}.onnx"), &base[..cut]);
        cases.push(case(
            "truncated onnx (inspect)",
            &["inspect", s(&p)],
            &format!("cut{i}.onnx"),
            "not a valid ONNX model",
        ));
    }
    for (i, cut) in [500, base.len() - 1].into_iter().enumerate() {
        let p = put(&dir, &format!("cutapply{i}.onnx"), &base[..cut]);
        cases.push(apply(
            "truncated onnx (apply)",
            s(&p),
            &[&d1],
            "d1.qfd",
            "made for a base model with sha256",
        ));
    }
    for (i, pos) in [0, 7, 1234, base.len() / 3, base.len() - 1]
        .into_iter()
        .enumerate()
    {
        let mut b = base.clone();
        b[pos] ^= 0x10;
        let p = put(&dir, &format!("flip{i}.onnx"), &b);
        cases.push(apply(
            "bit-flipped onnx (apply)",
            s(&p),
            &[&d1],
            "d1.qfd",
            "made for a base model with sha256",
        ));
        cases.push(case(
            "bit-flipped onnx (verify)",
            &["verify", s(&p), &d1],
            "d1.qfd",
            "made for a base model",
        ));
    }
    let p = put(
        &dir,
        "huge.onnx",
        &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2],
    );
    cases.push(case(
        "onnx with a huge length field",
        &["inspect", s(&p)],
        "huge.onnx",
        "not a valid ONNX model",
    ));
    let p = put(&dir, "empty.onnx", b"");
    cases.push(case(
        "empty onnx",
        &["inspect", s(&p)],
        "empty.onnx",
        "empty",
    ));
    let p = put(&dir, "text.onnx", b"hello, I am not a model\n");
    cases.push(case(
        "text as onnx",
        &["inspect", s(&p)],
        "text.onnx",
        "not a valid ONNX model",
    ));
    cases.push(case(
        "missing model (verify)",
        &["verify", s(&dir.join("nope.onnx"))],
        "nope.onnx",
        "cannot read",
    ));

    // --- Deltas: truncated, bit-flipped, wrong magic/version/flags, huge lengths.
    for (i, cut) in [0, 5, 27, 40, d1b.len() / 2, d1b.len() - 1]
        .into_iter()
        .enumerate()
    {
        let name = format!("dcut{i}.qfd");
        let p = put(&dir, &name, &d1b[..cut]);
        let says = match cut {
            0 => "empty",
            c if c < 60 => "truncated delta",
            _ => "header says",
        };
        cases.push(apply("truncated delta", &base_s, &[s(&p)], &name, says));
    }
    for (i, (pos, says)) in [
        (0, "magic"),
        (9, "version"),
        (10, "unknown flags"),
        (13, "header says"),
        (40, "checksum mismatch"),
        (d1b.len() / 2, "checksum mismatch"),
        (d1b.len() - 1, "checksum mismatch"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = d1b.clone();
        b[pos] ^= 0x04;
        let name = format!("dflip{i}.qfd");
        let p = put(&dir, &name, &b);
        cases.push(apply("bit-flipped delta", &base_s, &[s(&p)], &name, says));
    }
    let mut b = d1b.clone();
    b[..8].copy_from_slice(b"PK\x03\x04zip!");
    let p = put(&dir, "magic.qfd", &b);
    cases.push(apply(
        "wrong magic",
        &base_s,
        &[s(&p)],
        "magic.qfd",
        "not a qforget delta",
    ));
    let mut b = d1b.clone();
    b[8..10].copy_from_slice(&3u16.to_le_bytes());
    let p = put(&dir, "v3.qfd", &resign(b));
    cases.push(apply(
        "future version",
        &base_s,
        &[s(&p)],
        "v3.qfd",
        "version 3 is not supported",
    ));
    let mut b = d1b.clone();
    b[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = put(&dir, "hugelen.qfd", &resign(b));
    cases.push(apply(
        "huge stored length",
        &base_s,
        &[s(&p)],
        "hugelen.qfd",
        "header says 18446744073709551615 body bytes",
    ));
    let mut b = d1b.clone();
    b[20..28].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let p = put(&dir, "hugeplain.qfd", &resign(b));
    cases.push(apply(
        "huge decoded length",
        &base_s,
        &[s(&p)],
        "hugeplain.qfd",
        "limit",
    ));
    let mut b = d1b.clone();
    b[20..28].copy_from_slice(&(1u64 << 29).to_le_bytes());
    let p = put(&dir, "bomb.qfd", &resign(b));
    cases.push(apply(
        "decoded length beyond deflate's ratio",
        &base_s,
        &[s(&p)],
        "bomb.qfd",
        "impossible for",
    ));
    // A valid header and checksum around garbage, and around a body that does not fit.
    let garbage = {
        let mut f = d1b[..28].to_vec();
        f[10..12].copy_from_slice(&0u16.to_le_bytes());
        f[12..20].copy_from_slice(&40u64.to_le_bytes());
        f[20..28].copy_from_slice(&40u64.to_le_bytes());
        f.extend(std::iter::repeat_n(0xffu8, 40));
        f.extend([0u8; 32]);
        resign(f)
    };
    let p = put(&dir, "garbage.qfd", &garbage);
    cases.push(apply(
        "garbage body",
        &base_s,
        &[s(&p)],
        "garbage.qfd",
        "body does not decode",
    ));
    let crafted = |name: &str, tensors: Vec<TensorDelta>| {
        let b = DeltaBody {
            tensors,
            ..body.clone()
        };
        put(&dir, name, &format::encode(&b).0)
    };
    let w = body.tensors[0].name.clone();
    let wl = body.tensors[0].len;
    let p = crafted(
        "oob.qfd",
        vec![TensorDelta {
            name: w.clone(),
            len: wl,
            change: Change::Sparse {
                gaps: vec![wl as u32 + 5],
                values: TensorValues::I8(vec![1]),
            },
        }],
    );
    cases.push(apply(
        "index out of range",
        &base_s,
        &[s(&p)],
        "oob.qfd",
        "out of range",
    ));
    let p = crafted(
        "unknown.qfd",
        vec![TensorDelta {
            name: "no.such.tensor".into(),
            len: 1,
            change: Change::Dense(TensorValues::I8(vec![1])),
        }],
    );
    cases.push(apply(
        "unknown initializer",
        &base_s,
        &[s(&p)],
        "unknown.qfd",
        "no initializer named 'no.such.tensor'",
    ));
    let p = crafted(
        "dtype.qfd",
        vec![TensorDelta {
            name: w.clone(),
            len: wl,
            change: Change::Sparse {
                gaps: vec![0],
                values: TensorValues::F32(vec![1.0]),
            },
        }],
    );
    cases.push(apply(
        "wrong dtype",
        &base_s,
        &[s(&p)],
        "dtype.qfd",
        "the delta holds float",
    ));
    let p = crafted(
        "len.qfd",
        vec![TensorDelta {
            name: w.clone(),
            len: wl + 1,
            change: Change::Sparse {
                gaps: vec![0],
                values: TensorValues::I8(vec![1]),
            },
        }],
    );
    cases.push(apply(
        "wrong element count",
        &base_s,
        &[s(&p)],
        "len.qfd",
        "the delta expects",
    ));
    let p = put(&dir, "empty.qfd", b"");
    cases.push(apply(
        "empty delta",
        &base_s,
        &[s(&p)],
        "empty.qfd",
        "empty",
    ));
    cases.push(apply(
        "missing delta",
        &base_s,
        &[s(&dir.join("gone.qfd"))],
        "gone.qfd",
        "No such file",
    ));
    cases.push(apply(
        "a directory as delta",
        &base_s,
        &[s(&dir)],
        "bad-input",
        "not a regular file",
    ));

    // --- Wrong base, broken chains, refused outputs.
    let qop = s(&model("fmnist_cnn_qop.onnx")).to_string();
    cases.push(apply(
        "wrong base",
        &qop,
        &[&d1],
        "d1.qfd",
        "made for a base model with sha256",
    ));
    cases.push(apply(
        "chain without its first delta",
        &base_s,
        &[&d2],
        "d2.qfd",
        "given first",
    ));
    cases.push(apply(
        "chain out of order",
        &base_s,
        &[&d2, &d1],
        "d2.qfd",
        "given first",
    ));
    cases.push(apply(
        "chain with a gap",
        &base_s,
        &[&d1, &d3],
        "d3.qfd",
        "wrong order or a missing delta",
    ));
    cases.push(apply(
        "chain with a repeat",
        &base_s,
        &[&d1, &d1],
        "d1.qfd",
        "applies directly to the base model",
    ));
    cases.push(case(
        "verify a broken chain",
        &["verify", &base_s, &d1, &d3],
        "d3.qfd",
        "wrong order or a missing delta",
    ));
    cases.push(case(
        "apply over the base",
        &["apply", &base_s, &d1, "--out", &base_s],
        "base.onnx",
        "refusing to write over the base model",
    ));
    cases.push(case(
        "apply over a delta",
        &["apply", &base_s, &d1, "--out", &d1],
        "d1.qfd",
        "refusing to write over a delta",
    ));
    cases.push(case(
        "revert too far",
        &["revert", &base_s, &d1, &d2, "--to", "3", "--out", &out],
        "--to 3",
        "only 2 delta(s)",
    ));
    // A request whose delta would overwrite a recorded one is refused before anything else is
    // read (the dataset named here does not exist: a refusal after loading it would name it).
    let missing = s(&dir.join("no-such-dataset")).to_string();
    cases.push(case(
        "forget --out onto a recorded delta",
        &[
            "forget",
            &base_s,
            "--dataset",
            &missing,
            "--forget-class",
            "3",
            "--out",
            &d1,
        ],
        "d1.qfd",
        "refusing to overwrite the delta of request 'r1'",
    ));

    // --- Journal: tampering of every kind.
    let jtext = std::fs::read_to_string(&j).unwrap();
    let lines: Vec<&str> = jtext.lines().collect();
    let jdir = |name: &str, text: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        put(&d, journal::DEFAULT_NAME, text.as_bytes())
    };
    let edited = jtext.replacen("\"request_id\":\"r2\"", "\"request_id\":\"rX\"", 1);
    let p = jdir("j-edit", &edited);
    cases.push(case(
        "edited journal entry (verify)",
        &["verify", &base_s, &d1, "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 2 (line 2): its content hashes to",
    ));
    cases.push(case(
        "edited journal entry (log)",
        &["log", "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 2",
    ));
    let p = jdir("j-drop", &format!("{}\n{}\n", lines[0], lines[2]));
    cases.push(case(
        "removed journal entry",
        &["verify", &base_s, "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 2 (line 2): records sequence number 3",
    ));
    let p = jdir(
        "j-swap",
        &format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
    );
    cases.push(case(
        "reordered journal",
        &["verify", &base_s, "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 1 (line 1)",
    ));
    let p = jdir("j-cut", &jtext[..jtext.len() - 20]);
    cases.push(case(
        "truncated journal",
        &["verify", &base_s, "--journal", s(&p)],
        "qforget-journal.jsonl",
        "not terminated",
    ));
    let p = jdir("j-junk", &format!("{jtext}garbage line\n"));
    cases.push(case(
        "junk line in journal",
        &["log", "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 4 (line 4): not a journal line",
    ));
    let metric = jtext.replacen("\"acc\":0.8", "\"acc\":0.95", 1);
    let p = jdir("j-metric", &metric);
    cases.push(case(
        "forged metric",
        &["verify", &base_s, "--journal", s(&p)],
        "qforget-journal.jsonl",
        "entry 1 (line 1): its content hashes to",
    ));
    let p = jdir("j-other", &format!("{}\n", lines[0]));
    cases.push(case(
        "delta missing from journal",
        &["verify", &base_s, &d1, &d2, "--journal", s(&p)],
        "d2.qfd",
        "no journal entry",
    ));
    cases.push(case(
        "journal given but missing",
        &["verify", &base_s, "--journal", s(&dir.join("nojournal"))],
        "nojournal",
        "journal not found",
    ));
    cases.push(case(
        "journal of another base",
        &["verify", &qop, "--journal", s(&j)],
        "qforget-journal.jsonl",
        "records base model sha256",
    ));
    cases.push(case(
        "log without journal",
        &["log", "--journal", s(&dir.join("nojournal"))],
        "nojournal",
        "no journal here",
    ));

    // --- idx datasets: huge dims, truncation, wrong magic, wrong sizes, bad labels.
    let ddir = |name: &str, images: &[u8], labels: &[u8]| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        put(&d, "t10k-images-idx3-ubyte", images);
        put(&d, "t10k-labels-idx1-ubyte", labels);
        s(&d).to_string()
    };
    let good_lab = idx(&[2], &[1, 2]);
    let good_img = idx(&[2, 28, 28], &[0; 2 * 28 * 28]);
    let eval = |what: &str, d: &str, names: &str, says: &str| {
        case(what, &["eval", &base_s, "--dataset", d], names, says)
    };
    let d = ddir(
        "ds-huge",
        &idx(&[u32::MAX, u32::MAX, u32::MAX], &[]),
        &good_lab,
    );
    cases.push(eval(
        "idx with huge dims",
        &d,
        "t10k-images-idx3-ubyte",
        "overflow",
    ));
    let d = ddir("ds-big", &idx(&[4_000_000, 28, 28], &[0; 100]), &good_lab);
    cases.push(eval(
        "idx dims larger than the file",
        &d,
        "t10k-images-idx3-ubyte",
        "truncated?",
    ));
    let d = ddir("ds-trunc", &good_img[..good_img.len() - 7], &good_lab);
    cases.push(eval(
        "truncated idx images",
        &d,
        "t10k-images-idx3-ubyte",
        "truncated",
    ));
    let d = ddir("ds-magic", &[0x12, 0x34, 8, 3, 0, 0], &good_lab);
    cases.push(eval(
        "idx wrong magic",
        &d,
        "t10k-images-idx3-ubyte",
        "not an idx file",
    ));
    let d = ddir("ds-size", &idx(&[2, 32, 32], &[0; 2 * 32 * 32]), &good_lab);
    cases.push(eval(
        "wrong image size",
        &d,
        "t10k-images-idx3-ubyte",
        "images are 1×32×32 but the model",
    ));
    let d = ddir("ds-label", &good_img, &idx(&[2], &[1, 200]));
    cases.push(eval(
        "out-of-range label",
        &d,
        "t10k-images-idx3-ubyte",
        "label 200 is out of range",
    ));
    let d = ddir("ds-count", &good_img, &idx(&[3], &[1, 2, 3]));
    cases.push(eval(
        "label count mismatch",
        &d,
        "t10k-labels-idx1-ubyte",
        "3 labels for 2 images",
    ));
    let d = ddir("ds-dims", &good_img, &idx(&[2, 1], &[1, 2]));
    cases.push(eval(
        "labels with 2 dims",
        &d,
        "t10k-labels-idx1-ubyte",
        "expected 1 dimension",
    ));

    // --- id lists.
    let ids = |what: &str, name: &str, text: &[u8], says: &str| {
        let p = put(&dir, name, text);
        case(what, &["ids", s(&p), "--count", "100"], name, says)
    };
    cases.push(ids(
        "id not a number",
        "ids-nan.txt",
        b"1\n2\nthree\n",
        "line 3: 'three' is not a sample index",
    ));
    cases.push(ids("negative id", "ids-neg.txt", b"-1\n", "line 1: '-1'"));
    cases.push(ids(
        "id out of range",
        "ids-oob.txt",
        b"# ok\n99\n100\n",
        "line 3: sample index 100 is out of range",
    ));
    cases.push(ids(
        "duplicate id",
        "ids-dup.txt",
        b"4\n5\n4\n",
        "line 3: sample index 4 is listed twice",
    ));
    cases.push(ids(
        "binary id file",
        "ids-bin.txt",
        b"1\n\xff\xfe\n",
        "line 2: not UTF-8",
    ));
    cases.push(ids(
        "huge id",
        "ids-huge.txt",
        b"184467440737095516160\n",
        "line 1",
    ));
    let mnist = s(&dataset("fashion-mnist")).to_string();
    let p = put(&dir, "ids-test.txt", b"10000\n");
    cases.push(case(
        "id beyond the test split",
        &["ids", s(&p), "--dataset", &mnist, "--split", "test"],
        "ids-test.txt",
        "out of range (the dataset has 10000 samples",
    ));

    let fixtures = model(BASE);
    let watched = [dir.as_path(), fixtures.as_path()];
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c, &watched)).collect();
    eprintln!(
        "malformed-input suite: {} cases, {} failed",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 50, "only {} cases", cases.len());
}
