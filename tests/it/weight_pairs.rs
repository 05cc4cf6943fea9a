//! Float weights quantized at run time (`mnist_res_qdq_wpair.onnx`, onnxruntime's
//! `quantize_static` with `AddQDQPairToWeight`): the importer's integers are onnxruntime's, a
//! forget request's export keeps the float form (floats that re-quantize to the trained
//! integers, the file's own bytes where nothing changed), and a malformed weight
//! QuantizeLinear is refused by name. The fixture's logits against onnxruntime are checked with
//! every other fixture (`fixtures`). Before this import existed the file was refused
//! ("activation scale 'stem.weight_scale' has 16 values along axis 0").

use prost::Message;
use qforget::graph::{Graph, Op};
use qforget::onnx::patch::{initializers, TensorValues};
use qforget::onnx::pb;

use super::malformed::fails_cleanly;
use super::{class3_request_meets_its_target, dataset, model, qforget, root, s, tempdir};

const FIXTURE: &str = "mnist_res_qdq_wpair.onnx";

/// File-order integers of every bound layer's weight, by initializer name.
fn weight_integers(g: &Graph) -> Vec<(String, Vec<i64>)> {
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
            Some((b.weight.clone(), b.to_file_order(&w, c_out, row)))
        })
        .collect()
}

#[test]
fn imported_integers_are_onnxruntimes_quantize_linear_outputs() {
    // expected/<fixture>.json: sha256 of onnxruntime's (ORT_DISABLE_ALL) output of each
    // weight's QuantizeLinear, written by generate_other_quantizers.py.
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("onnx-models/expected/mnist_res_qdq_wpair.json")).unwrap(),
    )
    .unwrap();
    let want = json["weight_integers"]
        .as_object()
        .expect("weight_integers");
    let g = qforget::onnx::load(model(FIXTURE)).unwrap();
    // `inspect` says where the weights live.
    let s = g.summary();
    let w: Vec<_> = s.layers.iter().filter_map(|l| l.weights.as_ref()).collect();
    assert!(w.len() == 6 && w.iter().all(|w| w.float_in_file));
    let got = weight_integers(&g);
    assert_eq!(
        got.len(),
        want.len(),
        "every weight is bound to its float initializer"
    );
    for (name, ints) in got {
        let w = &want[&name];
        assert_eq!(w["dtype"], "int8", "{name}");
        let bytes: Vec<u8> = ints.iter().map(|&v| v as i8 as u8).collect();
        assert_eq!(
            qforget::delta::hex(&qforget::delta::sha256(&bytes)),
            w["sha256"].as_str().unwrap(),
            "{name}: integers differ from onnxruntime's QuantizeLinear"
        );
    }
}

#[test]
fn class_wise_export_keeps_float_weights_that_requantize_to_the_trained_integers() {
    let dir = tempdir("wpair-export");
    let out = dir.join("forgot.onnx");
    let base = model(FIXTURE);
    let r = class3_request_meets_its_target(&base, "mnist", &out);
    let a = &r["after"];
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();

    // The file keeps its form: same size, the weights still float.
    let (bb, eb) = (std::fs::read(&base).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(bb.len(), eb.len());
    let (bi, ei) = (initializers(&bb).unwrap(), initializers(&eb).unwrap());
    let (g0, g1) = (
        qforget::onnx::load(&base).unwrap(),
        qforget::onnx::load(&out).unwrap(),
    );
    let (w0, w1) = (weight_integers(&g0), weight_integers(&g1));
    let mut changed = 0;
    for ((name, i0), (_, i1)) in w0.iter().zip(&w1) {
        let find = |v: &[(String, TensorValues)]| match v.iter().find(|(n, _)| n == name) {
            Some((_, TensorValues::F32(x))) => x.clone(),
            other => panic!("{name}: not a float initializer: {other:?}"),
        };
        let (f0, f1) = (find(&bi), find(&ei));
        for k in 0..i0.len() {
            // A float is rewritten exactly where its integer changed (an untouched weight keeps
            // the file's bytes), and the rewritten one quantizes to the trained integer.
            assert_eq!(
                f0[k].to_bits() != f1[k].to_bits(),
                i0[k] != i1[k],
                "{name}[{k}]: {} → {}, integers {} → {}",
                f0[k],
                f1[k],
                i0[k],
                i1[k]
            );
            changed += (i0[k] != i1[k]) as u64;
        }
    }
    assert_eq!(changed, r["changed_weights"].as_u64().unwrap());
    assert!(changed > 0);

    // The export evaluates to what the request reported (test accuracy on the classes kept).
    let preds = dir.join("pred.txt");
    let o = qforget(&[
        "eval",
        s(&out),
        "--dataset",
        s(&dataset("mnist")),
        "--predictions",
        s(&preds),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let test =
        qforget::data::IdxDataset::load(dataset("mnist"), qforget::data::Split::Test).unwrap();
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

fn fixture_proto() -> pb::ModelProto {
    pb::ModelProto::decode(&std::fs::read(model(FIXTURE)).unwrap()[..]).unwrap()
}

/// The QuantizeLinear of weight `w` in `m`.
fn weight_q<'a>(m: &'a mut pb::ModelProto, w: &str) -> &'a mut pb::NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "QuantizeLinear" && n.input[0] == w)
        .unwrap()
}

#[test]
fn malformed_weight_quantization_is_refused_by_name() {
    let dir = tempdir("wpair-bad");
    let case = |file: &str, edit: &dyn Fn(&mut pb::ModelProto), must_say: &str| {
        let mut m = fixture_proto();
        edit(&mut m);
        let p = dir.join(file);
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        fails_cleanly(&["inspect", s(&p)], file, must_say);
    };
    // No scale input at all.
    case(
        "no_scale.onnx",
        &|m| weight_q(m, "stem.weight").input.truncate(1),
        "no scale",
    );
    // A scale that names no tensor.
    case(
        "missing_scale.onnx",
        &|m| weight_q(m, "stem.weight").input[1] = "nowhere".into(),
        "nowhere",
    );
    // 16 per-channel scales along an axis of length 1.
    case(
        "axis.onnx",
        &|m| {
            let q = weight_q(m, "stem.weight");
            let a = q.attribute.iter_mut().find(|a| a.name == "axis").unwrap();
            a.i = 1;
        },
        "16 scales",
    );
    // A weight that is not a number.
    case(
        "nan.onnx",
        &|m| {
            let t = m
                .graph
                .as_mut()
                .unwrap()
                .initializer
                .iter_mut()
                .find(|t| t.name == "stem.weight")
                .unwrap();
            if t.raw_data.is_empty() {
                t.float_data[5] = f32::NAN;
            } else {
                t.raw_data[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        },
        "NaN",
    );
}

#[test]
fn a_float_weight_another_node_reads_too_is_imported_frozen() {
    // Writing trained floats back would change what the other reader sees: the layer keeps its
    // integers and gets no binding; the other weights still train.
    let mut m = fixture_proto();
    m.graph.as_mut().unwrap().node.push(pb::NodeProto {
        op_type: "Identity".into(),
        name: "second_reader".into(),
        input: vec!["stem.weight".into()],
        output: vec!["stem_weight_copy".into()],
        ..Default::default()
    });
    let g = qforget::onnx::import(&m, std::path::Path::new("shared.onnx")).unwrap();
    let bound: Vec<&str> = g
        .layers
        .iter()
        .filter_map(|l| l.binding.as_ref().map(|b| b.weight.as_str()))
        .collect();
    assert!(!bound.contains(&"stem.weight"), "{bound:?}");
    assert_eq!(bound.len(), 5, "{bound:?}");
}
