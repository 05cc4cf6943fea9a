//! Asymmetric uint8 weights, one zero point per tensor anywhere in 0..=255
//! (`fmnist_cnn_qdq_wu8pt.onnx`: onnxruntime `quantize_static` with `weight_type=QUInt8,
//! per_channel=False`). `w − zp` spans up to −255..=255, so the graph stores the file's byte
//! re-centred, `w − 128`, with a per-channel weight zero point `zp − 128` that the GEMM
//! subtracts in its epilogue (`kernels::PackedWeights::with_zero_points`). Before, the file was
//! refused: "weights ... minus their zero point leave the int8 range".

use prost::Message;
use qforget::graph::{Graph, Op, Shadow};
use qforget::onnx::patch::{initializers, TensorValues};
use qforget::onnx::pb;

use super::fixtures::matches_reference;
use super::malformed::fails_cleanly;
use super::{class3_request_with, dataset, fixtures, model, qforget, root, s, tempdir};

const FIXTURE: &str = "fmnist_cnn_qdq_wu8pt.onnx";

/// The uint8 values of initializer `name` in a model file.
fn u8_init(bytes: &[u8], name: &str) -> Vec<u8> {
    match initializers(bytes)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
    {
        Some((_, TensorValues::U8(v))) => v,
        other => panic!("{name}: not a uint8 initializer: {other:?}"),
    }
}

/// `(weight initializer, file-order integers the graph holds, zero point)` of every bound layer.
fn bound_weights(g: &Graph) -> Vec<(String, Vec<i64>, i64)> {
    g.layers
        .iter()
        .filter_map(|l| {
            let b = l.binding.as_ref()?;
            let (w, c_out, row): (Vec<i32>, usize, usize) = match &l.op {
                Op::Conv(c) => (
                    c.weights.iter().flat_map(|p| p.values()).collect(),
                    c.out_shape.c,
                    c.weights[0].k,
                ),
                Op::Linear(x) => (x.weights.values(), x.out_features, x.in_features),
                _ => return None,
            };
            Some((
                b.weight.clone(),
                b.to_file_order(&w, c_out, row),
                b.zero_point[0],
            ))
        })
        .collect()
}

#[test]
fn asymmetric_uint8_weights_import_exactly_and_match_onnxruntime() {
    let g = qforget::onnx::load(model(FIXTURE)).unwrap();
    let bytes = std::fs::read(model(FIXTURE)).unwrap();
    let bound = bound_weights(&g);
    assert_eq!(bound.len(), 4, "every conv and Gemm trains");
    let mut far = 0;
    for (name, ints, zp) in &bound {
        // The graph's integers, back in file order plus the zero point, are the file's bytes.
        let file = u8_init(&bytes, name);
        assert_eq!(ints.len(), file.len());
        assert!(
            ints.iter().zip(&file).all(|(&a, &b)| a == b as i64),
            "{name}"
        );
        assert_ne!(*zp, 128, "{name}: per tensor, the zero point is not 128");
        far += file
            .iter()
            .filter(|&&v| !(-128..=127).contains(&(v as i64 - zp)))
            .count();
    }
    // Weights an int8 `w − zp` cannot hold: the case this import exists for.
    assert!(far > 0, "no weight leaves the int8 range of w − zp");
    // The layers carry their zero points into the GEMM.
    for l in &g.layers {
        match &l.op {
            Op::Conv(c) => assert!(c.weights.iter().all(|w| w.has_zero_points()), "{}", l.name),
            Op::Linear(x) => assert!(x.weights.has_zero_points(), "{}", l.name),
            _ => {}
        }
    }
    // `inspect` says what the file holds: uint8 per tensor, with its zero points.
    let zps: Vec<Vec<i64>> = g
        .summary()
        .layers
        .iter()
        .filter_map(|l| l.weights.as_ref())
        .inspect(|w| assert!(w.unsigned && w.bits == 8))
        .map(|w| w.zero_points.clone())
        .collect();
    assert_eq!(zps, bound.iter().map(|b| vec![b.2]).collect::<Vec<_>>());
    let o = qforget(&["inspect", s(&model(FIXTURE))]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("uint8 per-tensor zp={}", bound[0].2)),
        "{text}"
    );
    // Logits within 1 LSB of onnxruntime, top-1 identical on the full test set.
    let stem = FIXTURE.trim_end_matches(".onnx");
    let (_, x) = fixtures()
        .into_iter()
        .find(|(st, _)| st == stem)
        .expect("expected outputs of the fixture");
    let report = matches_reference(&root().join("onnx-models/expected"), stem, &x);
    eprintln!("{report} ({far} weights with |w − zp| beyond int8)");
}

#[test]
fn asymmetric_uint8_backward_matches_finite_differences_and_the_f32_path() {
    super::grads::fd_fixture(FIXTURE);
    let (total, worst) = super::grads::int8_vs_f32(FIXTURE);
    eprintln!("{FIXTURE}: int8 vs f32 backward cosine {total:.5} overall, worst tensor {worst:.5}");
    assert!(total >= 0.99 && worst >= 0.95, "{total} / {worst}");
}

#[test]
fn shadow_weights_requantize_onto_the_files_own_uint8_grid() {
    let mut g = qforget::onnx::load(model(FIXTURE)).unwrap();
    let mut sh = Shadow::new(&g);
    let seg = sh
        .segments
        .iter()
        .find(|s| s.initializer == "fc2.weight_quantized")
        .unwrap()
        .clone();
    let li = seg.layer;
    let (zp, step) = match &g.layers[li].op {
        Op::Linear(l) => (
            g.layers[li].binding.as_ref().unwrap().zero_point[0],
            l.weight_scales[0],
        ),
        _ => panic!("fc2 is linear"),
    };
    // Far above and far below the grid: the integers stop at 255 − zp and −zp (beyond int8 on
    // one side for a zero point other than 128), and export as 255 and 0.
    let (i, j, k) = (seg.range.start, seg.range.start + 1, seg.range.start + 2);
    sh.theta[i] = 1000.0 * step;
    sh.theta[j] = -1000.0 * step;
    sh.theta[k] = (200 - zp) as f32 * step;
    sh.apply(&mut g);
    let w = bound_weights(&g);
    let (_, ints, _) = w
        .iter()
        .find(|(n, _, _)| n == "fc2.weight_quantized")
        .unwrap();
    // fc2 is a Gemm with transB = 1: file order is graph order.
    assert_eq!(&ints[..3], &[255, 0, 200]);
    let ex = sh
        .exports(&g)
        .into_iter()
        .find(|e| e.name == "fc2.weight_quantized")
        .unwrap();
    assert_eq!(&ex.values[..3], &[255, 0, 200]);
    assert_eq!(ex.dtype, qforget::graph::params::ExportType::U8);
}

#[test]
fn class_wise_request_exports_uint8_with_the_same_zero_points_and_apply_rebuilds_it() {
    let dir = tempdir("wu8pt-export");
    let (out, delta, rebuilt) = (
        dir.join("forgot.onnx"),
        dir.join("forgot.qfd"),
        dir.join("rebuilt.onnx"),
    );
    let base = model(FIXTURE);
    let r = class3_request_with(&base, "fashion-mnist", &out, &["--out", s(&delta)]);
    let a = &r["after"];
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(r["changed_weights"].as_u64().unwrap() > 0);

    // The delta rebuilds the export byte for byte.
    let ap = qforget(&["apply", s(&base), s(&delta), "--out", s(&rebuilt)]);
    assert!(
        ap.status.success(),
        "{}",
        String::from_utf8_lossy(&ap.stderr)
    );
    assert_eq!(
        std::fs::read(&rebuilt).unwrap(),
        std::fs::read(&out).unwrap(),
        "apply differs from the export"
    );

    // uint8 weights with the file's own zero points; only weights and biases changed.
    let (bb, eb) = (std::fs::read(&base).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(bb.len(), eb.len());
    let (bi, ei) = (initializers(&bb).unwrap(), initializers(&eb).unwrap());
    for ((n0, v0), (n1, v1)) in bi.iter().zip(&ei) {
        assert_eq!(n0, n1);
        if n0.ends_with("zero_point") || n0.ends_with("scale") {
            assert_eq!(v0, v1, "{n0}");
        }
        if n0.ends_with("weight_quantized") {
            assert!(matches!(v1, TensorValues::U8(_)), "{n0} stays uint8");
        }
    }

    // The export re-imports and evaluates to the reported test accuracy on the kept classes.
    let preds = dir.join("pred.txt");
    let o = qforget(&[
        "eval",
        s(&out),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--predictions",
        s(&preds),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let test =
        qforget::data::IdxDataset::load(dataset("fashion-mnist"), qforget::data::Split::Test)
            .unwrap();
    let p: Vec<u8> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let kept: Vec<usize> = (0..test.n).filter(|&i| test.labels[i] != 3).collect();
    let ok = kept.iter().filter(|&&i| p[i] == test.labels[i]).count();
    let acc = 100.0 * ok as f64 / kept.len() as f64;
    assert!(
        (acc - f(a, "test_acc")).abs() < 1e-9,
        "{acc} vs reported {}",
        f(a, "test_acc")
    );
}

#[test]
fn malformed_weight_zero_points_are_refused_by_name() {
    let dir = tempdir("wu8pt-bad");
    let case = |file: &str, edit: &dyn Fn(&mut pb::GraphProto), must_say: &str| {
        let mut m = pb::ModelProto::decode(&std::fs::read(model(FIXTURE)).unwrap()[..]).unwrap();
        edit(m.graph.as_mut().unwrap());
        let p = dir.join(file);
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        fails_cleanly(&["inspect", s(&p)], file, must_say);
    };
    // An int32 zero point of 300 for uint8 weights.
    case(
        "zp_300.onnx",
        &|g| {
            let t = zp(g);
            t.data_type = pb::tensor_proto::DataType::Int32 as i32;
            t.raw_data = 300i32.to_le_bytes().to_vec();
        },
        "zero point 'conv2.weight_zero_point' holds 300, out of the uint8 range 0..=255",
    );
    // An int8 zero point for uint8 weights (ONNX wants the same type).
    case(
        "zp_int8.onnx",
        &|g| {
            let t = zp(g);
            t.data_type = pb::tensor_proto::DataType::Int8 as i32;
        },
        "they must be the same type",
    );
    // Two zero points for one per-tensor scale.
    case(
        "zp_two.onnx",
        &|g| {
            let t = zp(g);
            t.dims = vec![2];
            t.raw_data = vec![111, 112];
        },
        "zero point and scale have different lengths",
    );
}

/// conv2's weight zero point initializer.
fn zp(g: &mut pb::GraphProto) -> &mut pb::TensorProto {
    g.initializer
        .iter_mut()
        .find(|t| t.name == "conv2.weight_zero_point")
        .unwrap()
}

#[test]
fn residual_net_with_uint8_per_tensor_weights_forgets_a_class_within_the_guard() {
    // Regression: this request was refused at forget accuracy 15.7 % (retain guard out of
    // back-offs); each back-off narrowed the re-quantization band, which released the drift the
    // wide band had held and broke the restored state within one step. The guard's report says
    // what it did; the request must meet its target with its retain accuracy kept.
    let dir = tempdir("wu8pt-res");
    let base = model("mnist_res_qdq_wu8pt.onnx");
    let r = class3_request_with(&base, "mnist", &dir.join("forgot.onnx"), &[]);
    let g = &r["guard"];
    eprintln!(
        "guard: probe {:.2} → {:.2} %, {} back-off(s), gave up {}",
        g["start_acc"].as_f64().unwrap(),
        g["final_acc"].as_f64().unwrap(),
        g["backoffs"],
        g["gave_up"]
    );
    assert_eq!(g["gave_up"], false);
}
