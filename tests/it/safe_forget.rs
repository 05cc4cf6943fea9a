//! A default forget request is safe (issue 9): it meets the target the request implies without
//! silencing the network, a request whose settings diverge is refused and writes nothing, the
//! losses see the output layer's real logits, and a chain of requests keeps the model whole.
//!
//! Regression: on `mnist_res_s8` the default class-wise request used to hand back a network that
//! predicts one class for every input (retain accuracy 11 %, every gradient exactly zero after
//! ~18 steps); on the bundled 10k it fell to RA 11 % within 51 steps.

use qforget::graph::{GradPath, Op};
use qforget::train::{Sgd, TrainState};

use super::{dataset, model, qforget, s, tempdir};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `qforget ARGS`, which must succeed, and its `--json` report.
fn forget_json(args: &[&str]) -> serde_json::Value {
    let o = qforget(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    json(&o)
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

/// A file (in a fresh temporary directory named after `tag`) listing the ids of every training
/// sample of `classes` in dataset `data`, one per line.
fn ids_of_classes(data: &std::path::Path, classes: &[u8], tag: &str) -> std::path::PathBuf {
    let train = qforget::data::IdxDataset::load(data, qforget::data::Split::Train).unwrap();
    let ids: Vec<String> = (0..train.n)
        .filter(|&i| classes.contains(&train.labels[i]))
        .map(|i| i.to_string())
        .collect();
    let file = tempdir(tag).join("ids.txt");
    std::fs::write(&file, ids.join("\n")).unwrap();
    file
}

/// "FA x → y %, RA …, TA …" of a `forget --json` report.
fn accuracies(r: &serde_json::Value) -> String {
    let (b, a) = (&r["before"], &r["after"]);
    let pair = |k| format!("{:.2} → {:.2} %", f(b, k), f(a, k));
    format!(
        "FA {}, RA {}, TA {}",
        pair("forget_acc"),
        pair("retain_acc"),
        pair("test_acc")
    )
}

/// Default class-wise OEU on a fixture (bundled 10k training images): the target is met, retain
/// and test accuracy stay within 2 pp of the start, and no unit of the network is silenced.
fn class_wise_default(stem: &str, data: &str, class: &str) {
    let r = forget_json(&[
        "forget",
        s(&model(stem)),
        "--dataset",
        s(&dataset(data)),
        "--forget-class",
        class,
        "--json",
    ]);
    let (b, a) = (&r["before"], &r["after"]);
    eprintln!(
        "{stem} class {class}: {}, {} steps, guard {}, notes {}",
        accuracies(&r),
        r["steps"],
        r["guard"],
        r["notes"]
    );
    assert_eq!(r["target_met"], true, "{stem}");
    assert!(
        f(a, "forget_acc") <= 1.0,
        "{stem}: FA {}",
        f(a, "forget_acc")
    );
    assert!(
        f(b, "retain_acc") - f(a, "retain_acc") <= 2.0,
        "{stem}: retain accuracy fell {:.2} pp",
        f(b, "retain_acc") - f(a, "retain_acc")
    );
    assert!(
        f(b, "test_acc") - f(a, "test_acc") <= 2.0,
        "{stem}: test accuracy fell {:.2} pp",
        f(b, "test_acc") - f(a, "test_acc")
    );
    let g = &r["guard"];
    assert!(f(g, "start_acc") - f(g, "final_acc") <= f(g, "budget_pp"));
    // No dead network: the notes count the units clamped for every probe input, at the end and
    // at the start ("dead units: X at the end, Z at the start, of Y (...N retain samples)").
    let dead = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.starts_with("dead units:"))
        .expect("dead-unit note")
        .to_string();
    let counts: Vec<usize> = dead
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (end, start, total) = (counts[0], counts[1], counts[2]);
    assert!(
        end * 10 <= start * 10 + total,
        "{stem}: {dead} (the run silenced a tenth or more of the network)"
    );
}

#[test]
fn class_wise_default_keeps_residual_s8_alive() {
    class_wise_default("mnist_res_s8.onnx", "mnist", "3");
}

#[test]
fn class_wise_default_keeps_residual_u8_alive() {
    class_wise_default("mnist_res_qdq_u8.onnx", "mnist", "3");
}

/// Polish leaves the forgotten class where a model that never saw it would: true-class
/// probability near zero on the forget samples, and a membership attack that calls them
/// unseen. Before polish held the forget samples away from their class (`Anchor::without`),
/// their mean true-class probability stayed near the 0.020 it had when the target was met
/// (0.016–0.022 at the checks of a 60-step polish of this request), and the attack's verdict
/// on such states swung with small changes: MIA-efficacy 97 %, 77 % and 0 % in three polish
/// variants measured on this request (`a60ea3a` with 120 steps; the confidence check without
/// the class held away, budget 60 and 120).
#[test]
fn a_long_polish_gives_no_forgetting_back() {
    let r = forget_json(&[
        "forget",
        s(&model("mnist_res_qdq_u8.onnx")),
        "--dataset",
        s(&dataset("mnist")),
        "--forget-class",
        "3",
        "--seed",
        "0",
        "--polish-steps",
        "120",
        "--json",
    ]);
    let (b, a) = (&r["before"], &r["after"]);
    let note = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.starts_with("polish:"))
        .expect("polish note")
        .to_string();
    eprintln!("{}, MIA {:.2} %; {note}", accuracies(&r), f(a, "mia"));
    assert!(f(a, "forget_acc") <= 1.0);
    assert!(f(a, "mia") >= 95.0, "MIA-efficacy {:.2} %", f(a, "mia"));
    // "… forget-set mean true-class probability A → B (…)": B is the kept state's.
    let end: f64 = note
        .split(" → ")
        .last()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no end confidence in {note}"));
    assert!(end <= 0.01, "forget-set mean true-class probability {end}");
    assert!(f(b, "retain_acc") - f(a, "retain_acc") <= 2.0);
}

/// The CNN that kept its BatchNormalization as layers of their own (onnxruntime's Q/DQ between
/// conv and BN). Before the optimizer worked in folded coordinates (`graph::metric`) this
/// request lost 2.11 pp of retain accuracy (95.57 → 93.46 %, one back-off) and two seeds of
/// three were refused: SGD moved conv1 up to 61² times faster than on the folded model.
#[test]
fn class_wise_default_on_kept_batchnorm() {
    class_wise_default("fmnist_cnn_bn_qdq.onnx", "fashion-mnist", "3");
}

#[test]
fn class_wise_default_on_the_cnn_variants() {
    for stem in ["fmnist_cnn_qdq.onnx", "fmnist_cnn_relu6_qdq.onnx"] {
        class_wise_default(stem, "fashion-mnist", "3");
    }
}

#[test]
fn class_wise_default_on_the_mlp() {
    class_wise_default("mnist_mlp_matmul_qdq.onnx", "mnist", "3");
}

#[test]
fn diverging_settings_are_refused_and_write_nothing() {
    let dir = tempdir("guard-refuse");
    let (out, delta, journal) = (
        dir.join("x.onnx"),
        dir.join("d.qfd"),
        dir.join("journal.jsonl"),
    );
    let o = qforget(&[
        "forget",
        s(&model("fmnist_cnn_qdq.onnx")),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--forget-class",
        "3",
        "--lr",
        "1e9",
        "--epochs",
        "1",
        "--export",
        s(&out),
        "--out",
        s(&delta),
        "--journal",
        s(&journal),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a diverging request exited 0");
    assert!(
        err.contains("could not meet the forgetting target") && err.contains("nothing was written"),
        "{err}"
    );
    for p in [&out, &delta, &journal] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let r = json(&o);
    eprintln!("refused: {}\nguard: {}", r["refused"], r["guard"]);
    assert_eq!(r["target_met"], false);
    assert!(r["refused"].is_string());
    let g = &r["guard"];
    assert!(f(g, "backoffs") >= 1.0, "the guard never backed off: {g}");
    // What is handed back (to no file) is still within budget.
    assert!(f(g, "start_acc") - f(g, "final_acc") <= f(g, "budget_pp"));
    assert!(f(&r["before"], "retain_acc") - f(&r["after"], "retain_acc") <= 2.0);
}

#[test]
fn without_the_guard_the_same_request_breaks_the_model() {
    // The control for the test above: the guard, not luck, keeps the model.
    let o = qforget(&[
        "forget",
        s(&model("fmnist_cnn_qdq.onnx")),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--train-limit",
        "3000",
        "--forget-class",
        "3",
        "--lr",
        "1e9",
        "--epochs",
        "1",
        "--no-guard",
        "--no-stop",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&o);
    let drop = f(&r["before"], "retain_acc") - f(&r["after"], "retain_acc");
    assert!(drop > 20.0, "lr 1e9 unguarded only cost {drop:.2} pp");
    assert!(r.get("guard").is_none() || r["guard"].is_null());
}

/// Losses are taken on the output layer's real logits, before requantization (DESIGN.md): with
/// the output clamp narrowed until every deployed logit saturates, the training gradient is
/// unchanged, while the deployed output has lost its information.
#[test]
fn losses_see_the_logits_before_output_requantization() {
    let g = qforget::onnx::load(model("fmnist_cnn_qdq.onnx")).unwrap();
    let d = qforget::data::IdxDataset::load(dataset("fashion-mnist"), qforget::data::Split::Train)
        .unwrap();
    let idx: Vec<usize> = (0..64).collect();
    let mut narrow = g.clone();
    let out = narrow.output;
    let last = narrow
        .layers
        .iter_mut()
        .rev()
        .find(|l| l.output == out)
        .unwrap();
    let Op::Linear(l) = &mut last.op else {
        panic!("the fixture's output is not a linear layer");
    };
    let zp = narrow.acts[out].q.zero_point as u8;
    l.requant.lo = zp.saturating_sub(1);
    l.requant.hi = zp.saturating_add(1);
    let state =
        |g: qforget::graph::Graph| TrainState::new(g, Sgd::new(0.01, 0.9, 0.0), GradPath::Int8);
    let (a, b) = (state(g), state(narrow));
    let (ga, gb) = (
        a.grad(&d, &idx, false, None).unwrap(),
        b.grad(&d, &idx, false, None).unwrap(),
    );
    // The deployed logits of the narrowed model are clamped to three levels...
    let (images, _) = qforget::train::gather(&d, &idx);
    let deployed = b.graph.forward(&images, idx.len()).unwrap();
    assert!(deployed
        .data
        .iter()
        .all(|&q| q >= zp.saturating_sub(1) && q <= zp.saturating_add(1)));
    // ...but the loss and its gradient are those of the real logits: identical to the original's.
    assert_eq!(ga.logits, gb.logits);
    assert_eq!(ga.loss, gb.loss);
    assert_eq!(ga.grad, gb.grad);
    let norm = qforget::train::norm_sq(&gb.grad).sqrt();
    eprintln!(
        "CE {:.4}, ‖g‖ {norm:.3e} through a saturated output",
        gb.loss
    );
    assert!(norm > 1e-3, "no gradient through the saturated output");
    // The real logits agree with the requantized ones of the original model within half a
    // step (where those are not clamped): the integer forward, which training runs (the
    // deployed forward gives onnxruntime's bytes, a step apart from it on rare values).
    let q = a.graph.acts[a.graph.output].q;
    let dep = a.graph.forward_integer(&images, idx.len()).unwrap();
    for (z, &byte) in ga.logits.iter().zip(&dep.data) {
        if byte > 0 && byte < 255 {
            assert!(
                (z - q.dequantize(byte)).abs() <= 0.5 * q.scale + 1e-4,
                "{z} vs {byte}"
            );
        }
    }
}

/// Ten requests in one delta chain, class-wise and sample-wise mixed: each meets its target,
/// retain accuracy after the tenth is within 2 pp of the start, and `apply` of the chain
/// rebuilds the last export byte for byte.
#[test]
fn ten_chained_requests_keep_the_model_and_rebuild_exactly() {
    let dir = tempdir("chain10");
    let base = model("fmnist_cnn_qdq.onnx");
    let data = dataset("fashion-mnist");
    let labels = qforget::data::IdxDataset::load(&data, qforget::data::Split::Train)
        .unwrap()
        .labels;
    let limit = 4000usize;
    let journal = dir.join("journal.jsonl");
    let forgotten = dir.join("forgotten.txt");
    let mut gone: Vec<usize> = Vec::new();
    let mut deltas: Vec<String> = Vec::new();
    let mut first_ra = None;
    let mut last_ra = 0.0;
    // Requests: classes 3 and 7, and eight sets of 50 samples of the classes still known.
    let mut plan: Vec<Result<u8, Vec<usize>>> = Vec::new();
    let mut next = 0usize;
    for k in 0..10 {
        if k == 2 || k == 6 {
            plan.push(Ok(if k == 2 { 3 } else { 7 }));
        } else {
            let ids: Vec<usize> = (next..limit)
                .filter(|&i| labels[i] != 3 && labels[i] != 7)
                .step_by(7)
                .take(50)
                .collect();
            next = ids.last().unwrap() + 1;
            plan.push(Err(ids));
        }
    }
    for (k, req) in plan.iter().enumerate() {
        let delta = dir.join(format!("d{k}.qfd"));
        let export = dir.join(format!("m{k}.onnx"));
        std::fs::write(
            &forgotten,
            gone.iter().map(|i| format!("{i}\n")).collect::<String>(),
        )
        .unwrap();
        let ids_file = dir.join(format!("ids{k}.txt"));
        let mut args: Vec<String> = [
            "forget",
            s(&base),
            "--dataset",
            s(&data),
            "--train-limit",
            &limit.to_string(),
            "--seed",
            &k.to_string(),
            "--export",
            s(&export),
            "--out",
            s(&delta),
            "--journal",
            s(&journal),
            "--forgotten",
            s(&forgotten),
            "--json",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        match req {
            Ok(class) => {
                args.extend(["--forget-class".into(), class.to_string()]);
                gone.extend((0..limit).filter(|&i| labels[i] == *class));
            }
            Err(ids) => {
                std::fs::write(
                    &ids_file,
                    ids.iter().map(|i| format!("{i}\n")).collect::<String>(),
                )
                .unwrap();
                args.extend(["--forget-ids".into(), s(&ids_file).into()]);
                gone.extend(ids);
            }
        }
        for d in &deltas {
            args.extend(["--parent".into(), d.clone()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = qforget(&a);
        assert!(
            o.status.success(),
            "request {k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = json(&o);
        eprintln!(
            "request {k} ({}): target {} met {}, FA {:.2} → {:.2} %, RA {:.2} → {:.2} %, {} steps",
            if req.is_ok() { "class" } else { "samples" },
            r["target"],
            r["target_met"],
            f(&r["before"], "forget_acc"),
            f(&r["after"], "forget_acc"),
            f(&r["before"], "retain_acc"),
            f(&r["after"], "retain_acc"),
            r["steps"]
        );
        assert_eq!(r["target_met"], true, "request {k}");
        first_ra.get_or_insert(f(&r["before"], "retain_acc"));
        last_ra = f(&r["after"], "retain_acc");
        deltas.push(s(&delta).to_string());
    }
    let start = first_ra.unwrap();
    eprintln!(
        "retain accuracy {start:.2} % before the first request, {last_ra:.2} % after the tenth"
    );
    // On the same samples: what is still on the device after the tenth request.
    gone.sort_unstable();
    let kept: Vec<usize> = (0..limit)
        .filter(|i| gone.binary_search(i).is_err())
        .collect();
    let train = qforget::data::IdxDataset::load(&data, qforget::data::Split::Train).unwrap();
    let acc = |p: &std::path::Path| {
        let g = qforget::onnx::load(p).unwrap();
        qforget::unlearn::accuracy_on(&g, &train, &kept).unwrap()
    };
    let (a0, a9) = (acc(&base), acc(&dir.join("m9.onnx")));
    eprintln!(
        "on the {} samples kept: base {a0:.2} %, after ten requests {a9:.2} %",
        kept.len()
    );
    assert!(a0 - a9 <= 2.0, "{a0} → {a9}");
    assert!(start - last_ra <= 2.0, "{start} → {last_ra}");
    let rebuilt = dir.join("rebuilt.onnx");
    let mut args = vec!["apply".to_string(), s(&base).to_string()];
    args.extend(deltas.iter().cloned());
    args.extend(["--out".into(), s(&rebuilt).into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = qforget(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(dir.join("m9.onnx")).unwrap(),
        "apply of the chain differs from the last export"
    );
}

/// The fixtures of other quantizers and float activations (issue 10): float lookup layers in
/// both QDQ and QOperator form, LayerNormalization, and Intel Neural Compressor's
/// external-data models.
#[test]
fn class_wise_default_on_float_activations_and_inc_models() {
    for (stem, data) in [
        ("mnist_act_qdq.onnx", "mnist"),
        ("mnist_act_qop.onnx", "mnist"),
        ("mnist_gelu_qdq.onnx", "mnist"),
        ("mnist_gelu_qop.onnx", "mnist"),
        // NNCF: SiLU/GELU and HardSwish/LeakyRelu/Sigmoid on a quantized layer's float result
        ("mnist_gelu_nncf.onnx", "mnist"),
        ("mnist_act_nncf.onnx", "mnist"),
        // LayerNormalization: QDQ (int8 gamma, int32 beta) and NNCF (on a Gemm's float result)
        ("mnist_ln_qdq.onnx", "mnist"),
        ("mnist_ln_nncf.onnx", "mnist"),
        ("mnist_ln13_qop.onnx", "mnist"),
        // NNCF, per-channel QuantizeLinear of float HardSwish and squeeze-excitation results
        ("mnist_mnv3_nncf.onnx", "mnist"),
        // NNCF preset MIXED: a Concat of two convs' float results before their QuantizeLinear
        ("fmnist_cat_nncf_mixed.onnx", "fashion-mnist"),
        // NNCF preset MIXED: per-channel zero points before the depthwise convs (float)
        ("mnist_mnv3_nncf_mixed.onnx", "mnist"),
        // Flattens as Shape → Gather → Mul → Unsqueeze → Concat → Reshape on the batch size
        ("mnist_dynview_qdq.onnx", "mnist"),
        ("fmnist_cnn_inc.onnx", "fashion-mnist"),
        ("mnist_res_inc_qdq.onnx", "mnist"),
    ] {
        class_wise_default(stem, data, "3");
    }
}

/// Random 10 % on the memorizing Fashion-MNIST CNN (seed 1's forget set, gold standard the
/// committed PyTorch retrain): the default request meets its target with the Avg. Gap ≤ 1.5 pp
/// and test accuracy within 1.2 pp of the start. Regression: without the retain logit anchor
/// (`--retain-anchor 0`, what the default was) the retain cross-entropy of a memorized model is
/// ~0 and cannot hold the function; measured: refused after 240 steps, TA 88.67 → 86.50 %,
/// gap 2.16 pp (with the anchor: met in 159 steps, TA 87.67 %, gap 0.48 pp). Its delta is at
/// most 5 % of the model file: the request changed 29.0 % of the weights before `sparsify` gave
/// back what the target does not need (3.0 % after, delta 3.73 %, gap 0.51 pp, 292 steps).
#[test]
fn sample_wise_default_holds_test_accuracy_on_a_memorizing_model() {
    let ids = model("retrain/ids/random10_seed1.txt");
    let gold = model("retrain/random10_fmnist_overfit_seed1.onnx");
    let (base, data) = (model("fmnist_overfit_qdq.onnx"), dataset("fashion-mnist"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "forget",
            s(&base),
            "--dataset",
            s(&data),
            "--forget-ids",
            s(&ids),
            "--seed",
            "1",
            "--reference",
            s(&gold),
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = qforget(&args);
        let r = json(&o);
        let a = &r["after"];
        eprintln!(
            "{extra:?}: exit {:?}, {}, MIA {:.2}, gap {:.2}, {} steps",
            o.status.code(),
            accuracies(&r),
            f(a, "mia"),
            f(a, "gap"),
            r["steps"],
        );
        (o.status.success(), r)
    };
    let dir = tempdir("sample-wise-default");
    let delta = dir.join("d.qfd");
    let (ok, r) = run(&["--out", s(&delta), "--journal", s(&dir.join("j.jsonl"))]);
    assert!(ok, "default request refused: {}", r["refused"]);
    // The delta gives back the changes the target does not need (`unlearn::sparsify`); before
    // it, this request changed 24.6 % of the weights and wrote a delta of 14.7 % of the file.
    let note = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .find(|n| n.starts_with("sparser delta"))
        .unwrap_or_else(|| panic!("no sparser-delta note: {}", r["notes"]))
        .to_string();
    eprintln!("{note}");
    let pct = 100.0 * std::fs::metadata(&delta).unwrap().len() as f64
        / std::fs::metadata(&base).unwrap().len() as f64;
    assert!(pct <= 5.0, "delta is {pct:.2} % of the model file ({note})");
    assert_eq!(r["settings"]["retain_anchor"], "0.1");
    assert_eq!(r["settings"]["lr_growth"], "false");
    let (b, a) = (&r["before"], &r["after"]);
    assert!(f(a, "gap") <= 1.5, "gap {}", f(a, "gap"));
    let ta_loss = f(b, "test_acc") - f(a, "test_acc");
    assert!(ta_loss <= 1.2, "test accuracy fell {ta_loss:.2} pp");
    let (_, plain) = run(&["--retain-anchor", "0"]);
    let plain_loss = f(&plain["before"], "test_acc") - f(&plain["after"], "test_acc");
    assert!(
        plain_loss > ta_loss + 0.5,
        "without the anchor TA fell {plain_loss:.2} pp, with it {ta_loss:.2} pp"
    );
}

/// Ids that cover two classes whole are a class-wise request (target FA ≤ 1 %), and the test
/// accuracy it reports leaves both classes out, as `--forget-class` does for one (it used to
/// count the forgotten classes' test images: TA 91.97 → 72.96 % for a request that kept
/// the other classes at 91.2 %).
#[test]
fn ids_covering_two_classes_are_class_wise() {
    let data = dataset("fashion-mnist");
    let test = qforget::data::IdxDataset::load(&data, qforget::data::Split::Test).unwrap();
    let file = ids_of_classes(&data, &[3, 5], "two-classes");
    let o = qforget(&[
        "forget",
        s(&model("fmnist_cnn_qdq.onnx")),
        "--dataset",
        s(&data),
        "--forget-ids",
        s(&file),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&o);
    eprintln!("two classes: {}, notes {}", accuracies(&r), r["notes"]);
    assert_eq!(r["target"], "forget accuracy ≤ 1 %");
    assert!(f(&r["after"], "forget_acc") <= 1.0);
    // TA is over the 8 other classes: the model's accuracy on exactly those test images.
    let g = qforget::onnx::load(model("fmnist_cnn_qdq.onnx")).unwrap();
    let others: Vec<usize> = (0..test.n)
        .filter(|&i| !matches!(test.labels[i], 3 | 5))
        .collect();
    let want = qforget::unlearn::accuracy_on(&g, &test, &others).unwrap();
    let (b, a) = (f(&r["before"], "test_acc"), f(&r["after"], "test_acc"));
    assert!(
        (b - want).abs() < 1e-9,
        "TA before {b}, other classes {want}"
    );
    assert!(
        b - a <= 2.0,
        "test accuracy of the other classes fell {:.2} pp",
        b - a
    );
    assert!(f(&r["after"], "test_forgotten_class_acc") <= 5.0);
}

/// A class-wise request whose entropy ascent leaves a few percent of the class on its label is
/// finished by steps that move the forgotten class's share onto the others (`unlearn::finish`).
/// Before, this request (MobileNetV2-style network, class 3, seed 1) took 115 steps, a learning
/// rate grown 14.5× and a roll-back, changed 48 % of the weights before the sparser delta, and
/// ended at retain accuracy 90.69 % (seeds 0 and 2: 92.51 and 91.55 %); with the finisher it
/// stops at step 20 (91.69 %).
#[test]
fn a_stalled_class_wise_request_is_finished() {
    let r = forget_json(&[
        "forget",
        s(&model("fmnist_mnv2_qdq.onnx")),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--forget-class",
        "3",
        "--seed",
        "1",
        "--no-metrics",
        "--json",
    ]);
    let g = &r["guard"];
    eprintln!("{} steps, stopped: {}, guard {g}", r["steps"], r["stopped"]);
    assert_eq!(r["target_met"], true);
    let stopped = r["stopped"].as_str().unwrap();
    assert!(stopped.contains("finishing step"), "{stopped}");
    assert!(f(&r, "steps") <= 40.0, "{} steps", r["steps"]);
    assert_eq!(f(g, "backoffs"), 0.0, "{g}");
    assert!(f(g, "start_acc") - f(g, "final_acc") <= f(g, "budget_pp"));
}

/// A run that spends its step budget on the way to its target gets another budget (`extend`),
/// one that does not keep to a budget typed in. The memorizing Fashion-MNIST CNN, random 10 %
/// (the ids of `onnx-models/retrain/`, seed 0), 5 epochs: measured, forget accuracy 100 → 93.1 %
/// (quick look) in the budget's 102 steps, target 90.67 %; with extensions met after 278 steps.
#[test]
fn a_run_on_pace_gets_another_budget() {
    let dir = tempdir("extend");
    let ids = super::root().join("onnx-models/retrain/ids/random10_seed0.txt");
    let run = |extensions: &str, delta: &std::path::Path| {
        qforget(&[
            "forget",
            s(&model("fmnist_overfit_qdq.onnx")),
            "--dataset",
            s(&dataset("fashion-mnist")),
            "--forget-ids",
            s(&ids),
            "--epochs",
            "5",
            "--budget-extensions",
            extensions,
            "--no-metrics",
            "--out",
            s(delta),
            "--journal",
            s(&dir.join("journal.jsonl")),
            "--json",
        ])
    };
    let capped = dir.join("capped.qfd");
    let o = run("0", &capped);
    assert!(!o.status.success(), "5 epochs alone met the target");
    let r = json(&o);
    assert!(r["refused"].is_string(), "{r}");
    assert!(!capped.exists(), "a refused request wrote its delta");
    let notes = r["notes"].to_string();
    assert!(
        !notes.contains("extended"),
        "no extension was allowed: {notes}"
    );

    let extended = dir.join("extended.qfd");
    let o = run("3", &extended);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&o);
    assert_eq!(r["target_met"], true, "{r}");
    assert!(extended.exists());
    let notes = r["notes"].to_string();
    let granted = ["1", "2", "3"]
        .iter()
        .any(|n| notes.contains(&format!("extended {n} time(s) of 3")));
    assert!(granted, "the budget was not extended: {notes}");
    assert!(r["steps"].as_u64().unwrap() > 102, "{}", r["steps"]);
}

/// A class forgotten by a request is scored by the membership attack like the unseen test
/// images of that class (`eval::forgetting`): the attacker's non-members keep the forgotten
/// classes' test images. Without them, this request (digits 2 and 7 of the residual MNIST CNN,
/// forget accuracy 99.32 → 0.00 %) reported MIA-efficacy 1.26 → 0.00 %: every non-member was
/// a confident image of a class the model still knows, and the SVM called a confidence near 0
/// a member.
#[test]
fn a_forgotten_class_is_scored_like_its_unseen_images() {
    let data = dataset("mnist");
    let file = ids_of_classes(&data, &[2, 7], "mia-two-classes");
    let r = forget_json(&[
        "forget",
        s(&model("mnist_res_qdq_u8.onnx")),
        "--dataset",
        s(&data),
        "--forget-ids",
        s(&file),
        "--json",
    ]);
    let (b, a) = (f(&r["before"], "mia"), f(&r["after"], "mia"));
    eprintln!("digits 2 and 7: {}, MIA {b:.2} → {a:.2} %", accuracies(&r));
    assert!(f(&r["after"], "forget_acc") <= 1.0);
    assert!(
        b < 20.0,
        "before forgetting, the classes look like members: {b}"
    );
    assert!(a >= 90.0, "after forgetting, like unseen data: {a}");
}

/// A single typical sample (bundled CNN, training image 17: predicted right with confidence
/// 0.997, the held-out median) is already what unseen data of its kind looks like: the
/// default target is the accuracy unseen data has at its confidence quantile (100 %), not the
/// held-out accuracy plus margin (93.97 %), which a single sample can only meet by coming out
/// wrong. Regression: the request ran its 100 steps and was refused, writing nothing. A set of
/// 25 keeps the held-out target (92 % of unseen data at their quantiles is right, below it).
#[test]
fn a_single_typical_sample_is_not_asked_to_come_out_wrong() {
    let dir = tempdir("one_sample");
    let (base, data) = (model("fmnist_cnn_qdq.onnx"), dataset("fashion-mnist"));
    let run = |ids: &[usize], tag: &str| {
        let file = dir.join(format!("{tag}.txt"));
        let text: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        std::fs::write(&file, text.join("\n")).unwrap();
        forget_json(&[
            "forget",
            s(&base),
            "--dataset",
            s(&data),
            "--forget-ids",
            s(&file),
            "--json",
        ])
    };
    let r = run(&[17], "one");
    eprintln!(
        "one sample: target {}, {}, notes {}",
        r["target"],
        accuracies(&r),
        r["notes"]
    );
    assert_eq!(r["target_met"], true);
    assert_eq!(r["steps"], 0);
    assert_eq!(r["changed_weights"], 0);
    assert!(
        r["notes"]
            .to_string()
            .contains("target raised from 93.97 %"),
        "{}",
        r["notes"]
    );
    // Seeded choice of 25 of the bundled training images.
    let mut state = 0x5eedu64;
    let mut few: Vec<usize> = Vec::new();
    while few.len() < 25 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let i = (state % 10_000) as usize;
        if !few.contains(&i) {
            few.push(i);
        }
    }
    let r = run(&few, "few");
    eprintln!("25 samples: target {}, {}", r["target"], accuracies(&r));
    assert_eq!(r["target_met"], true);
    assert!(
        !r["notes"].to_string().contains("target raised"),
        "{}",
        r["notes"]
    );
    assert!(f(&r["after"], "forget_acc") <= 93.97, "{}", accuracies(&r));
}
