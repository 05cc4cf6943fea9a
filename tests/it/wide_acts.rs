//! 16-bit activations (`mnist_res_qdq_a16.onnx`: onnxruntime `quantize_static` with
//! `activation_type=QUInt16`, int8 per-channel weights, opset 21; A16W8). qforget's training
//! graph holds 8-bit activations, so such a model is refused by name, on every command, before
//! anything is decoded (it used to fail as "not a valid ONNX model: initializer
//! 'input_zero_point' has data type Uint16"). onnxruntime's reference outputs for the fixture
//! are committed in `onnx-models/expected/a16/` for the import that is still to come.

use prost::Message;
use qforget::onnx::pb;

use super::malformed::fails_cleanly;
use super::{dataset, model, root, s, tempdir};

const FIXTURE: &str = "mnist_res_qdq_a16.onnx";

#[test]
fn sixteen_bit_activations_are_refused_by_name() {
    // The reference says what the fixture is: uint16 activations end to end.
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("onnx-models/expected/a16/mnist_res_qdq_a16.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["output_dtype"], "uint16");
    let m = model(FIXTURE);
    let d = dataset("mnist");
    let says = "16-bit activations (zero point 'input_zero_point' is uint16";
    for args in [
        vec!["inspect", s(&m)],
        vec!["eval", s(&m), "--dataset", s(&d)],
        vec!["forget", s(&m), "--dataset", s(&d), "--forget-class", "3"],
    ] {
        let err = fails_cleanly(&args, FIXTURE, says);
        assert!(err.contains("unsupported QuantizeLinear node"), "{err}");
    }
    assert!(qforget::onnx::load(&m).is_err());
}

#[test]
fn an_int16_zero_point_is_refused_the_same_way() {
    // The QInt16 form: the same file with every 16-bit zero point made int16 (0 stays 0).
    let mut p = pb::ModelProto::decode(&std::fs::read(model(FIXTURE)).unwrap()[..]).unwrap();
    let g = p.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "input_zero_point")
        .unwrap();
    t.data_type = pb::tensor_proto::DataType::Int16 as i32;
    let dir = tempdir("a16-int16");
    let f = dir.join("a16_int16.onnx");
    std::fs::write(&f, p.encode_to_vec()).unwrap();
    fails_cleanly(
        &["inspect", s(&f)],
        "a16_int16.onnx",
        "zero point 'input_zero_point' is int16",
    );
}

#[test]
fn a_sixteen_bit_weight_is_called_a_weight() {
    // An 8-bit fixture with one weight's zero point typed int16 (A16W16 models dequantize their
    // weights before any activation is quantized): the refusal says weights, not activations.
    let mut p =
        pb::ModelProto::decode(&std::fs::read(model("fmnist_cnn_qdq.onnx")).unwrap()[..]).unwrap();
    let g = p.graph.as_mut().unwrap();
    let (node, zp) = g
        .node
        .iter()
        .find(|n| {
            n.op_type == "DequantizeLinear"
                && n.input.len() > 2
                && g.initializer.iter().any(|i| i.name == n.input[0])
        })
        .map(|n| (n.name.clone(), n.input[2].clone()))
        .unwrap();
    let t = g.initializer.iter_mut().find(|t| t.name == zp).unwrap();
    t.data_type = pb::tensor_proto::DataType::Int16 as i32;
    let dir = tempdir("w16-int16");
    let f = dir.join("w16.onnx");
    std::fs::write(&f, p.encode_to_vec()).unwrap();
    let err = fails_cleanly(
        &["inspect", s(&f)],
        "w16.onnx",
        &format!("16-bit weights (zero point '{zp}' is int16"),
    );
    assert!(
        err.contains(&format!("unsupported DequantizeLinear node '{node}'"))
            && !err.contains("activations"),
        "{err}"
    );
}
