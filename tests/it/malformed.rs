//! Malformed input: every case exits non-zero with one line on stderr that names the file and
//! the problem — no panic, no backtrace.

use prost::Message;
use qforget::onnx::pb;

use super::{dataset, model, qforget, s, tempdir};

const DEFAULT_MODEL: &str = "fmnist_cnn_qdq.onnx";

/// Run qforget and check the error contract; returns stderr.
pub fn fails_cleanly(args: &[&str], must_name: &str, must_say: &str) -> String {
    let out = qforget(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(err.contains(must_name), "{err:?} should name {must_name:?}");
    assert!(
        err.to_lowercase().contains(&must_say.to_lowercase()),
        "{err:?} should say {must_say:?}"
    );
    err
}

fn base_model() -> pb::ModelProto {
    let bytes = std::fs::read(model(DEFAULT_MODEL)).unwrap();
    pb::ModelProto::decode(&bytes[..]).unwrap()
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_model() {
    let dir = tempdir("bad-trunc");
    let bytes = std::fs::read(model(DEFAULT_MODEL)).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 3, 10] {
        let p = write(&dir, &format!("cut{cut}.onnx"), &bytes[..cut]);
        fails_cleanly(
            &["inspect", s(&p)],
            &format!("cut{cut}.onnx"),
            "not a valid ONNX model",
        );
    }
}

#[test]
fn not_an_onnx_file() {
    let dir = tempdir("bad-notonnx");
    let p = write(&dir, "notes.onnx", b"this is a text file, not a model\n");
    fails_cleanly(&["inspect", s(&p)], "notes.onnx", "not a valid ONNX model");
    let p = write(&dir, "empty.onnx", b"");
    fails_cleanly(
        &["eval", s(&p), "--dataset", s(&dataset("fashion-mnist"))],
        "empty.onnx",
        "empty",
    );
    let missing = dir.join("missing.onnx");
    fails_cleanly(&["inspect", s(&missing)], "missing.onnx", "No such file");
}

#[test]
fn unsupported_op_is_named_with_its_node() {
    let dir = tempdir("bad-op");
    let mut m = base_model();
    let g = m.graph.as_mut().unwrap();
    let i = g.node.iter().position(|n| n.op_type == "MaxPool").unwrap();
    g.node[i].op_type = "LpPool".to_string();
    let node = g.node[i].name.clone();
    let p = write(&dir, "lppool.onnx", &m.encode_to_vec());
    let err = fails_cleanly(&["inspect", s(&p)], "lppool.onnx", "unsupported LpPool");
    assert!(err.contains(&node), "{err}");
}

#[test]
fn missing_initializer_is_named() {
    let dir = tempdir("bad-init");
    let mut m = base_model();
    let g = m.graph.as_mut().unwrap();
    // Drop the first conv's weight tensor.
    let conv = g.node.iter().find(|n| n.op_type == "Conv").unwrap().clone();
    let w_dq = g
        .node
        .iter()
        .find(|n| n.output.first() == conv.input.get(1))
        .unwrap()
        .clone();
    let wname = w_dq.input[0].clone();
    g.initializer.retain(|t| t.name != wname);
    let p = write(&dir, "noweights.onnx", &m.encode_to_vec());
    let err = fails_cleanly(&["inspect", s(&p)], "noweights.onnx", "does not define");
    assert!(err.contains(&wname), "{err}");
}

#[test]
fn dataset_of_the_wrong_image_size() {
    let dir = tempdir("bad-size");
    // 3 images of 32×32 with labels, plain idx.
    let mut img = vec![0u8, 0, 8, 3];
    for d in [3u32, 32, 32] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend(std::iter::repeat_n(7u8, 3 * 32 * 32));
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend_from_slice(&3u32.to_be_bytes());
    lab.extend_from_slice(&[1, 2, 3]);
    write(&dir, "t10k-images-idx3-ubyte", &img);
    write(&dir, "t10k-labels-idx1-ubyte", &lab);
    fails_cleanly(
        &["eval", s(&model(DEFAULT_MODEL)), "--dataset", s(&dir)],
        "t10k-images-idx3-ubyte",
        "images are 1×32×32 but the model",
    );
}

#[test]
fn corrupt_and_missing_dataset_files() {
    let dir = tempdir("bad-data");
    fails_cleanly(
        &["eval", s(&model(DEFAULT_MODEL)), "--dataset", s(&dir)],
        "bad-data",
        "no t10k-images-idx3-ubyte",
    );
    write(
        &dir,
        "t10k-images-idx3-ubyte.gz",
        &[0x1f, 0x8b, 8, 0, 1, 2, 3],
    );
    write(&dir, "t10k-labels-idx1-ubyte", &[0, 0, 8, 1, 0, 0, 0, 0]);
    fails_cleanly(
        &["eval", s(&model(DEFAULT_MODEL)), "--dataset", s(&dir)],
        "t10k-images-idx3-ubyte.gz",
        "gzip",
    );
}

#[test]
fn labels_out_of_range() {
    let dir = tempdir("bad-labels");
    let mut img = vec![0u8, 0, 8, 3];
    for d in [2u32, 28, 28] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend(std::iter::repeat_n(0u8, 2 * 28 * 28));
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend_from_slice(&2u32.to_be_bytes());
    lab.extend_from_slice(&[1, 42]);
    write(&dir, "t10k-images-idx3-ubyte", &img);
    write(&dir, "t10k-labels-idx1-ubyte", &lab);
    fails_cleanly(
        &["eval", s(&model(DEFAULT_MODEL)), "--dataset", s(&dir)],
        "t10k-images-idx3-ubyte",
        "label 42 is out of range",
    );
}

/// A valid model with inputs or outputs qforget does not handle is "unsupported", not "not a
/// valid ONNX model", and its shape reads as numbers and names (no `Some(28)`).
#[test]
fn unsupported_inputs_and_outputs_are_described() {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TV;
    let dir = tempdir("bad-io");
    let mut m = base_model();
    let g = m.graph.as_mut().unwrap();
    let TV::TensorType(tt) = g.input[0].r#type.as_mut().unwrap().value.as_mut().unwrap();
    let dims = &mut tt.shape.as_mut().unwrap().dim;
    dims.remove(1);
    dims[0].value = Some(Value::DimParam("batch".into()));
    let name = g.input[0].name.clone();
    let p = write(&dir, "chw.onnx", &m.encode_to_vec());
    let err = fails_cleanly(&["inspect", s(&p)], "chw.onnx", "unsupported model");
    assert!(
        err.contains(&format!("input '{name}' has shape [batch, 28, 28]"))
            && err.contains("[N, C, H, W]")
            && !err.contains("Some(")
            && !err.contains("not a valid"),
        "{err}"
    );

    let mut m = base_model();
    let g = m.graph.as_mut().unwrap();
    let mut second = g.output[0].clone();
    second.name = "b".into();
    g.output.push(second);
    let first = g.output[0].name.clone();
    let p = write(&dir, "two_out.onnx", &m.encode_to_vec());
    let err = fails_cleanly(&["inspect", s(&p)], "two_out.onnx", "unsupported model");
    assert!(
        err.contains(&format!(
            "qforget needs a classifier with exactly one output, this model has 2 ('{first}', 'b')"
        )),
        "{err}"
    );
}

#[test]
fn an_unwritable_export_is_refused_before_training() {
    let dir = tempdir("bad-export");
    let out = dir.join("no-such-dir").join("x.onnx");
    let (m, d) = (model(DEFAULT_MODEL), dataset("fashion-mnist"));
    let args = [
        "forget",
        s(&m),
        "--dataset",
        s(&d),
        "--forget-class",
        "3",
        "--export",
        s(&out),
    ];
    fails_cleanly(&args, "no-such-dir/x.onnx", "cannot write to directory");
    // Refused before the run: no report was printed.
    assert!(qforget(&args).stdout.is_empty());
}
