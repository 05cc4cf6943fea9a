//! 4-bit weights (W4A8, issue 11): the INT4/UINT4 fixtures made by onnxruntime's quantizer
//! (`onnx-models/generate_w4.py`, references in `onnx-models/expected/w4/`, apart from the
//! 8-bit ones because tract cannot load INT4), export and deltas at 4 bits, and malformed 4-bit
//! data.

use prost::Message;
use qforget::onnx::patch::{initializers, TensorValues};
use qforget::onnx::pb;

use super::fixtures::matches_reference;
use super::{dataset, fixtures_in, model, qforget, root, s, tempdir};

fn w4_dir() -> std::path::PathBuf {
    root().join("onnx-models").join("expected").join("w4")
}

#[test]
fn w4_fixtures_match_onnxruntime_within_one_lsb() {
    let dir = w4_dir();
    let all = fixtures_in(&dir);
    for (stem, x) in &all {
        assert!(
            x.reference.starts_with("onnxruntime"),
            "{stem}: {}",
            x.reference
        );
        eprintln!("{}", matches_reference(&dir, stem, x));
    }
    for want in ["fmnist_cnn_w4", "mnist_res_w4", "fmnist_overfit_w4"] {
        assert!(
            all.iter().any(|(s, _)| s == want),
            "{want} has no reference"
        );
    }
}

#[test]
fn w4_weights_import_as_four_bit_and_inspect_says_so() {
    for (m, unsigned) in [
        ("fmnist_cnn_w4.onnx", false),
        ("fmnist_cnn_w4u_pt.onnx", true),
    ] {
        let g = qforget::onnx::load(model(m)).unwrap();
        let bound: Vec<_> = g.layers.iter().filter_map(|l| l.binding.as_ref()).collect();
        assert_eq!(bound.len(), 4, "{m}");
        for b in bound {
            assert_eq!((b.bits, b.unsigned), (4, unsigned), "{m}: {}", b.weight);
            let (lo, hi) = b.range_of(0);
            assert_eq!(hi - lo, 15, "{m}: 16 levels");
        }
        let o = qforget(&["inspect", s(&model(m)), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let bits: Vec<u64> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["weights"]["bits"].as_u64())
            .collect();
        assert_eq!(bits, vec![4; 4], "{m}");
    }
    let g8 = qforget::onnx::load(model("fmnist_cnn_qdq.onnx")).unwrap();
    assert!(g8
        .layers
        .iter()
        .filter_map(|l| l.binding.as_ref())
        .all(|b| b.bits == 8));
}

/// A small random-forgetting request (seconds): exports the model and writes a delta.
fn small_request(
    m: &str,
    dir: &std::path::Path,
    metrics: bool,
) -> (serde_json::Value, Vec<u8>, Vec<u8>) {
    let (export, delta) = (
        dir.join(format!("{m}.out.onnx")),
        dir.join(format!("{m}.qfd")),
    );
    let (mp, dp) = (model(m), dataset("fashion-mnist"));
    let mut args = vec![
        "forget",
        s(&mp),
        "--dataset",
        s(&dp),
        "--train-limit",
        "3000",
        "--forget-random",
        "0.05",
        "--seed",
        "3",
        "--epochs",
        "1",
        "--no-stop",
        "--export",
        s(&export),
        "--out",
        s(&delta),
        "--json",
    ];
    if !metrics {
        args.push("--no-metrics");
    }
    let o = qforget(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = serde_json::from_slice(&o.stdout).unwrap();
    let rebuilt = dir.join(format!("{m}.rebuilt.onnx"));
    let a = qforget(&["apply", s(&model(m)), s(&delta), "--out", s(&rebuilt)]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let exported = std::fs::read(&export).unwrap();
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        exported,
        "{m}: apply of the delta differs from the export"
    );
    (r, exported, std::fs::read(&delta).unwrap())
}

#[test]
fn w4_export_stays_packed_int4_evaluates_as_reported_and_its_delta_is_smaller() {
    let dir = tempdir("w4-export");
    let m = "fmnist_cnn_w4.onnx";
    let (r, exported, delta4) = small_request(m, &dir, true);
    let changed = r["changed_weights"].as_u64().unwrap();
    assert!(changed > 0, "nothing changed at 4 bits");

    // Every byte outside the trained initializers is the base model's: same length, and
    // every initializer but the trained ones identical; 4-bit tensors stay 4-bit.
    let base = std::fs::read(model(m)).unwrap();
    assert_eq!(exported.len(), base.len(), "packed INT4 keeps its size");
    let (old, new) = (
        initializers(&base).unwrap(),
        initializers(&exported).unwrap(),
    );
    assert_eq!(old.len(), new.len());
    let mut differing = vec![];
    for ((n0, v0), (n1, v1)) in old.iter().zip(&new) {
        assert_eq!(n0, n1);
        assert_eq!(v0.type_name(), v1.type_name(), "{n0}");
        if v0 != v1 {
            differing.push(n0.clone());
        }
    }
    assert!(!differing.is_empty());
    for n in &differing {
        assert!(
            n.ends_with("weight_quantized") || n.ends_with("bias_quantized"),
            "{n} changed"
        );
    }
    let w4_changed = old
        .iter()
        .zip(&new)
        .filter(|((_, a), (_, b))| matches!(a, TensorValues::I4(_)) && a != b)
        .count();
    assert!(w4_changed > 0, "no INT4 tensor changed: {differing:?}");

    // The exported model evaluates (in qforget, a fresh import of the packed bytes) to the
    // accuracy `forget` reported. onnxruntime was checked by hand (see onnx-models/README.md).
    let out = dir.join(format!("{m}.out.onnx"));
    let o = qforget(&[
        "eval",
        s(&out),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let evaluated = v["accuracy"].as_f64().unwrap() * 100.0;
    let reported = r["after"]["test_acc"].as_f64().unwrap();
    assert!(
        (evaluated - reported).abs() < 1e-9,
        "{evaluated} vs {reported}"
    );

    // The same request on the 8-bit model of the same float network writes a larger delta.
    let (r8, _, delta8) = small_request("fmnist_cnn_qdq.onnx", &dir, false);
    eprintln!(
        "W4 delta {} bytes ({changed} weights changed), W8 delta {} bytes ({} weights changed)",
        delta4.len(),
        delta8.len(),
        r8["changed_weights"]
    );
    assert!(delta4.len() < delta8.len());
}

/// The W4 CNN with `edit` applied, written under `dir` as `name`.
fn edited(
    dir: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut pb::GraphProto),
) -> std::path::PathBuf {
    let bytes = std::fs::read(model("fmnist_cnn_w4.onnx")).unwrap();
    let mut m = pb::ModelProto::decode(&bytes[..]).unwrap();
    edit(m.graph.as_mut().unwrap());
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn init<'a>(g: &'a mut pb::GraphProto, name: &str) -> &'a mut pb::TensorProto {
    g.initializer.iter_mut().find(|t| t.name == name).unwrap()
}

fn dq_of<'a>(g: &'a mut pb::GraphProto, weight: &str) -> &'a mut pb::NodeProto {
    g.node
        .iter_mut()
        .find(|n| n.op_type == "DequantizeLinear" && n.input[0] == weight)
        .unwrap()
}

/// Run `inspect` on a malformed model: one error line naming the file and the problem.
fn fails(p: &std::path::Path, says: &str) {
    let o = qforget(&["inspect", s(p)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let file = p.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(file), "{err:?} should name {file}");
    assert!(err.contains(says), "{err:?} should say {says:?}");
}

#[test]
fn malformed_four_bit_data_is_a_clear_error() {
    let dir = tempdir("w4-bad");
    let trunc = edited(&dir, "truncated.onnx", |g| {
        let t = init(g, "conv1.weight_quantized");
        t.raw_data.truncate(t.raw_data.len() - 1);
    });
    fails(
        &trunc,
        "'conv1.weight_quantized' holds 71 bytes of packed 4-bit data",
    );
    fails(&trunc, "(truncated)");

    // A zero point of a wider type with a value outside INT4's range.
    let zp = edited(&dir, "zero_point.onnx", |g| {
        let t = init(g, "fc2.weight_zero_point");
        t.data_type = pb::tensor_proto::DataType::Int8 as i32;
        t.int32_data = vec![0; 10];
        t.int32_data[3] = 12;
    });
    fails(
        &zp,
        "zero point 'fc2.weight_zero_point' holds 12, out of the int4 range",
    );

    // An int32_data entry that is not a byte of two packed values.
    let entry = edited(&dir, "entry.onnx", |g| {
        init(g, "fc2.weight_zero_point").int32_data[1] = 300;
    });
    fails(&entry, "int32_data entry 1 is 300");

    // block_size 3 on axis 1 of fc2's [10, 128] weights.
    let block = edited(&dir, "block.onnx", |g| {
        let n = dq_of(g, "fc2.weight_quantized");
        n.attribute.retain(|a| a.name != "axis");
        n.attribute.push(int_attr("axis", 1));
        n.attribute.push(int_attr("block_size", 3));
    });
    fails(&block, "block_size 3 does not divide axis 1 of length 128");
}

fn int_attr(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// fc2's per-channel scales and zero points rewritten as blocks of 32 along the input axis
/// (scale `[10, 4]`); `vary` changes one block's scale.
fn blocked_fc2(g: &mut pb::GraphProto, vary: bool) {
    let s = init(g, "fc2.weight_scale");
    let per: Vec<f32> = if s.raw_data.is_empty() {
        s.float_data.clone()
    } else {
        s.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut blocks: Vec<f32> = per.iter().flat_map(|&v| [v; 4]).collect();
    if vary {
        blocks[5] *= 1.5;
    }
    s.raw_data.clear();
    s.float_data = blocks;
    s.dims = vec![10, 4];
    let z = init(g, "fc2.weight_zero_point");
    z.dims = vec![10, 4];
    z.raw_data.clear();
    z.int32_data = vec![0; 20]; // 40 packed zeros
    let n = dq_of(g, "fc2.weight_quantized");
    n.attribute.retain(|a| a.name != "axis");
    n.attribute.push(int_attr("axis", 1));
    n.attribute.push(int_attr("block_size", 32));
}

#[test]
fn blocked_scales_run_exactly_when_each_channel_has_one_scale() {
    let dir = tempdir("w4-blocked");
    let same = edited(&dir, "blocked.onnx", |g| blocked_fc2(g, false));
    let data =
        qforget::data::IdxDataset::load(dataset("fashion-mnist"), qforget::data::Split::Test)
            .unwrap();
    let a = qforget::onnx::load(model("fmnist_cnn_w4.onnx")).unwrap();
    let b = qforget::onnx::load(&same).unwrap();
    let logits = |g: &qforget::graph::Graph| {
        let mut out = vec![];
        let idx: Vec<usize> = (0..500).collect();
        qforget::eval::run(g, &data, Some(&idx), |batch, l| {
            for r in 0..batch.len() {
                out.push(l.model_row(r));
            }
        })
        .unwrap();
        out
    };
    let la = logits(&a);
    assert_eq!(la.len(), 500);
    assert_eq!(la, logits(&b));

    let vary = edited(&dir, "blocked_vary.onnx", |g| blocked_fc2(g, true));
    fails(&vary, "differ within an output channel");
}

#[test]
fn w4_shadow_requantizes_onto_the_four_bit_grid() {
    use qforget::graph::params::Shadow;
    use qforget::graph::Op;
    let mut g = qforget::onnx::load(model("fmnist_cnn_w4.onnx")).unwrap();
    let mut sh = Shadow::new(&g);
    // Push every weight far beyond any range: alternately up and down by 100 of its own size.
    for (k, v) in sh.theta.iter_mut().enumerate() {
        *v *= if k % 2 == 0 { 100.0 } else { -100.0 };
    }
    sh.apply(&mut g);
    let mut seen = (0i8, 0i8);
    for l in &g.layers {
        let w: Vec<i8> = match &l.op {
            Op::Conv(c) => c.weights.iter().flat_map(|p| p.data.clone()).collect(),
            Op::Linear(f) => f.weights.data.clone(),
            _ => continue,
        };
        for &x in &w {
            assert!(
                (-8..=7).contains(&x),
                "{}: {x} is off the INT4 grid",
                l.name
            );
            seen = (seen.0.min(x), seen.1.max(x));
        }
    }
    assert_eq!(seen, (-8, 7), "the clamp is reached at both ends");
    // and the export writes them back as INT4
    let ex = sh.exports(&g);
    assert!(ex
        .iter()
        .any(|e| e.dtype == qforget::graph::params::ExportType::I4));
}

/// 4-bit weights train in grid units (`graph::metric`): each output channel's weights in steps
/// of its own scale, `D = G/s_c` with `G` the geometric mean of the layer's scales, while 8-bit
/// per-channel weights keep `D = 1` (no factors at all on a model without 4-bit layers).
#[test]
fn four_bit_weights_train_in_grid_units() {
    use qforget::graph::params::{ParamKind, Shadow};
    use qforget::graph::Op;
    let g = qforget::onnx::load(model("fmnist_overfit_w4.onnx")).unwrap();
    let sh = Shadow::new(&g);
    assert_eq!(sh.metric.len(), sh.theta.len());
    let mut checked = 0;
    for seg in &sh.segments {
        let d = &sh.metric[seg.range.clone()];
        let scales: Vec<f64> = match &g.layers[seg.layer].op {
            Op::Conv(c) => (0..c.out_shape.c).map(|ch| c.scale_of(ch) as f64).collect(),
            Op::Linear(l) => (0..l.out_features)
                .map(|ch| l.scale_of(ch) as f64)
                .collect(),
            _ => unreachable!(),
        };
        if seg.kind != ParamKind::Weight {
            assert!(d.iter().all(|&m| m == 1.0), "{}", seg.initializer);
            continue;
        }
        let gm = (scales.iter().map(|s| s.ln()).sum::<f64>() / scales.len() as f64).exp();
        let per = seg.range.len() / scales.len();
        for (k, &m) in d.iter().enumerate() {
            let want = gm / scales[k / per];
            assert!(
                (m as f64 - want).abs() <= 1e-6 * want,
                "{} value {k}: {m} vs {want}",
                seg.initializer
            );
        }
        // Per-channel scales differ, so the factors do too.
        assert!(d.iter().any(|&m| m != d[0]), "{}", seg.initializer);
        checked += 1;
    }
    assert_eq!(checked, 4, "conv1, conv2, fc1, fc2");
    for stem in ["fmnist_overfit_qdq.onnx", "fmnist_cnn_qdq.onnx"] {
        let g = qforget::onnx::load(model(stem)).unwrap();
        assert!(Shadow::new(&g).metric.is_empty(), "{stem}");
    }
}

/// The default sample-wise request on the memorizing W4 CNN (random 10 %, the ids its PyTorch
/// reference left out) meets its target within the retain budget and lands near the retrained
/// model (issue 11: Avg. Gap ≤ 2 pp). Regression: with the 8-bit optimizer coordinates the same
/// request was refused on every seed (forget accuracy 97.4 % after 480 steps against a target
/// of 89.7 %, gap 4.9 pp on seed 0): the coarse channels' integers never moved.
#[test]
fn w4_sample_wise_default_meets_its_target() {
    let o = qforget(&[
        "forget",
        s(&model("fmnist_overfit_w4.onnx")),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--forget-ids",
        s(&model("retrain/ids/random10_seed0.txt")),
        "--seed",
        "0",
        "--reference",
        s(&model("retrain/random10_fmnist_overfit_w4_seed0.onnx")),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stderr));
    });
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let (b, a) = (&r["before"], &r["after"]);
    eprintln!(
        "exit {:?}, {} steps, FA {:.2} → {:.2}, RA {:.2} → {:.2}, TA {:.2} → {:.2}, gap {:.2} → {:.2}; {}",
        o.status.code(),
        r["steps"],
        num(b, "forget_acc"),
        num(a, "forget_acc"),
        num(b, "retain_acc"),
        num(a, "retain_acc"),
        num(b, "test_acc"),
        num(a, "test_acc"),
        num(b, "gap"),
        num(a, "gap"),
        r["target"]
    );
    assert!(o.status.success(), "refused: {}", r["refused"]);
    assert_eq!(r["target_met"], true);
    assert!(num(a, "gap") <= 2.0, "gap {}", num(a, "gap"));
    assert!(num(b, "retain_acc") - num(a, "retain_acc") <= 2.0);
}

/// The re-quantization band is at most one step for 4-bit weights (`graph::params::layer_band`):
/// under OEU's class-wise band of 4, a shadow pushed 2 steps from its integer moves a 4-bit
/// weight (beyond `0.5 + 1`) but not an 8-bit one (within `0.5 + 4`).
#[test]
fn four_bit_weights_get_a_narrow_band() {
    use qforget::graph::params::Shadow;
    for (stem, moves) in [("fmnist_cnn_w4.onnx", true), ("fmnist_cnn_qdq.onnx", false)] {
        let mut g = qforget::onnx::load(model(stem)).unwrap();
        let mut sh = Shadow::new(&g);
        sh.hysteresis = 4.0;
        let entries = sh.weight_entries(&g);
        let (i, q, step) = entries[entries.len() / 2];
        let lo_half = q <= 0;
        sh.theta[i] = (q as f32 + if lo_half { 2.0 } else { -2.0 }) * step;
        sh.apply(&mut g);
        let now = sh.weight_entries(&g)[entries.len() / 2].1;
        assert_eq!(now != q, moves, "{stem}: {q} → {now}");
        // Narrowing the band to 0.5 pulls a shadow 3 steps out back to the edge (1 step) on
        // both widths (4-bit: band 1 → 0.5, 8-bit: 4 → 0.5).
        let mut far = Shadow::new(&g);
        far.hysteresis = 4.0;
        let (j, qj, sj) = far.weight_entries(&g)[0];
        far.theta[j] = (qj as f32 + 3.0) * sj;
        far.narrow_band(&g, 0.5);
        let d = far.theta[j] / sj - qj as f32;
        assert!(d > 0.99 && d < 1.0, "{stem}: pulled to {d} steps");
    }
}
