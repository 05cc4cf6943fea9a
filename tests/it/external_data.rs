//! A model whose weights live in an external data file (Intel Neural Compressor's output,
//! `fmnist_cnn_inc.onnx` + `.onnx_data`): a forget request through the CLI exports one
//! self-contained model (no data file needed), `apply` rebuilds those bytes exactly from the
//! base and the delta, and a data file that does not match is refused by name.

use super::{dataset, model, qforget, s, tempdir};

#[test]
fn forget_on_an_external_data_model_exports_a_self_contained_file() {
    let dir = tempdir("external-data");
    let (out, delta, rebuilt) = (
        dir.join("out.onnx"),
        dir.join("d.qfd"),
        dir.join("rebuilt.onnx"),
    );
    let base = model("fmnist_cnn_inc.onnx");
    let o = qforget(&[
        "forget",
        s(&base),
        "--dataset",
        s(&dataset("fashion-mnist")),
        "--forget-class",
        "3",
        "--train-limit",
        "4000",
        "--export",
        s(&out),
        "--out",
        s(&delta),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["target_met"].as_bool().unwrap(), "{r}");
    // The export carries its weights inline: it loads from a folder with no data file.
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    let moved = alone.join("m.onnx");
    std::fs::copy(&out, &moved).unwrap();
    let bytes = std::fs::read(&moved).unwrap();
    assert_eq!(qforget::onnx::read_model_bytes(&moved).unwrap(), bytes);
    let g = qforget::onnx::load(&moved).unwrap();
    let test =
        qforget::data::IdxDataset::load(dataset("fashion-mnist"), qforget::data::Split::Test)
            .unwrap();
    let acc = qforget::eval::accuracy(&g, &test).unwrap();
    let right = acc
        .predictions
        .iter()
        .zip(&test.labels)
        .filter(|(p, &y)| y != 3 && **p == y as usize)
        .count();
    let others = test.labels.iter().filter(|&&y| y != 3).count();
    let reported = r["after"]["test_acc"].as_f64().unwrap();
    assert!(
        (100.0 * right as f64 / others as f64 - reported).abs() < 0.01,
        "exported model scores {right}/{others}, the request reported {reported}"
    );
    // apply: base (with its data file) + delta = the exported bytes.
    let o = qforget(&["apply", s(&base), s(&delta), "--out", s(&rebuilt)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&rebuilt).unwrap(), bytes);
}

#[test]
fn a_missing_or_short_data_file_is_refused_by_name() {
    let dir = tempdir("external-bad");
    let m = dir.join("inc.onnx");
    std::fs::copy(model("fmnist_cnn_inc.onnx"), &m).unwrap();
    // No data file beside it.
    let o = qforget(&["inspect", s(&m)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for part in ["inc.onnx", "fmnist_cnn_inc.onnx_data", "cannot be read"] {
        assert!(err.contains(part), "{err}");
    }
    // A truncated one.
    let data = std::fs::read(model("fmnist_cnn_inc.onnx_data")).unwrap();
    std::fs::write(
        dir.join("fmnist_cnn_inc.onnx_data"),
        &data[..data.len() / 2],
    )
    .unwrap();
    let o = qforget(&["inspect", s(&m)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for part in ["inc.onnx", "lies outside"] {
        assert!(err.contains(part), "{err}");
    }
}
