//! Tests of the wire-level initializer writer against the committed fixtures and small
//! hand-built models (typed int32_data/float_data, unknown fields).

use super::*;
use crate::onnx::pb;
use prost::Message;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("onnx-models")
        .join(name);
    std::fs::read(p).unwrap()
}

/// The largest int8 initializer of a model.
fn biggest_i8(model: &[u8]) -> (String, Vec<i8>) {
    initializers(model)
        .unwrap()
        .into_iter()
        .filter_map(|(n, v)| match v {
            TensorValues::I8(v) => Some((n, v)),
            _ => None,
        })
        .max_by_key(|(_, v)| v.len())
        .unwrap()
}

/// `out` differs from `base` in exactly the bytes of the int8 values that changed `old → new`.
fn only_the_tensor_changed(base: &[u8], out: &[u8], old: &[i8], new: &[i8]) {
    assert_eq!(out.len(), base.len());
    let diff = base.iter().zip(out).filter(|(a, b)| a != b).count();
    let changed = old.iter().zip(new).filter(|(a, b)| a != b).count();
    assert_eq!(diff, changed, "only the tensor's bytes change");
}

#[test]
fn same_size_raw_patch_changes_only_those_bytes() {
    let base = fixture("fmnist_cnn_qdq.onnx");
    let (name, old) = biggest_i8(&base);
    let new: Vec<i8> = old.iter().map(|&x| x.wrapping_add(1)).collect();
    let upd = [InitializerUpdate {
        name: name.clone(),
        values: TensorValues::I8(new.clone()),
    }];
    let out = patch_initializers(&base, &upd).unwrap();
    only_the_tensor_changed(&base, &out, &old, &new);
    assert_eq!(
        read_initializer(&out, &name).unwrap(),
        TensorValues::I8(new)
    );
    // Still a model our importer accepts.
    let m = crate::onnx::decode_model(&out).unwrap();
    crate::onnx::import(&m, std::path::Path::new("patched.onnx")).unwrap();
    // Patching back gives the original bytes.
    let back = patch_initializers(
        &out,
        &[InitializerUpdate {
            name,
            values: TensorValues::I8(old),
        }],
    )
    .unwrap();
    assert_eq!(back, base);
}

#[test]
fn every_fixture_reads_and_round_trips() {
    for f in [
        "fmnist_cnn_qop.onnx",
        "mnist_res_qdq_u8.onnx",
        "mnist_mlp_matmul_qdq.onnx",
    ] {
        let base = fixture(f);
        let all = initializers(&base).unwrap();
        assert!(!all.is_empty(), "{f}");
        let upd: Vec<InitializerUpdate> = all
            .into_iter()
            .map(|(name, values)| InitializerUpdate { name, values })
            .collect();
        assert_eq!(patch_initializers(&base, &upd).unwrap(), base, "{f}");
    }
}

fn tensor(name: &str, dt: i32, dims: Vec<i64>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: dt,
        dims,
        ..Default::default()
    }
}

/// A model whose initializers use the typed fields, plus unknown fields at every level.
fn typed_model() -> Vec<u8> {
    let mut a = tensor("a", 3, vec![4]);
    a.int32_data = vec![-128, 0, 5, 127];
    let mut b = tensor("b", 1, vec![2]);
    b.float_data = vec![0.5, -2.0];
    let mut c = tensor("c", 2, vec![3]);
    c.raw_data = vec![1, 2, 3];
    let m = pb::ModelProto {
        ir_version: 8,
        graph: Some(pb::GraphProto {
            name: "g".into(),
            initializer: vec![a, b, c],
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut bytes = m.encode_to_vec();
    // Unknown field 99 (string "keep me") at the model level.
    bytes.extend_from_slice(&[0x9a, 0x06, 7]);
    bytes.extend_from_slice(b"keep me");
    bytes
}

#[test]
fn typed_fields_are_rewritten_and_unknown_fields_kept() {
    let base = typed_model();
    assert_eq!(
        read_initializer(&base, "a").unwrap(),
        TensorValues::I8(vec![-128, 0, 5, 127])
    );
    let upd = [
        InitializerUpdate {
            name: "a".into(),
            values: TensorValues::I8(vec![1, -1, 100, -100]),
        },
        InitializerUpdate {
            name: "b".into(),
            values: TensorValues::F32(vec![1.25, 3.0]),
        },
    ];
    let out = patch_initializers(&base, &upd).unwrap();
    assert!(out.ends_with(b"keep me"));
    let m = pb::ModelProto::decode(&out[..]).unwrap();
    let g = m.graph.unwrap();
    assert_eq!(g.initializer[0].int32_data, vec![1, -1, 100, -100]);
    assert_eq!(g.initializer[1].float_data, vec![1.25, 3.0]);
    assert_eq!(g.initializer[2].raw_data, vec![1, 2, 3]);
    assert_eq!(g.name, "g");
    assert_eq!(m.ir_version, 8);
}

#[test]
fn wrong_updates_name_the_initializer() {
    let base = typed_model();
    let cases = [
        (
            "a",
            TensorValues::U8(vec![0; 4]),
            "'a' is int8 in the model",
        ),
        ("a", TensorValues::I8(vec![0; 3]), "'a' has 4 elements"),
        (
            "zz",
            TensorValues::I8(vec![0; 3]),
            "no initializer named 'zz'",
        ),
    ];
    for (name, values, want) in cases {
        let e = patch_initializers(
            &base,
            &[InitializerUpdate {
                name: name.into(),
                values,
            }],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{e} should say {want}");
    }
    let twice = InitializerUpdate {
        name: "c".into(),
        values: TensorValues::U8(vec![0; 3]),
    };
    let e = patch_initializers(&base, &[twice.clone(), twice]).unwrap_err();
    assert!(e.to_string().contains("updated twice"), "{e}");
}

#[test]
fn malformed_bytes_give_errors_not_panics() {
    let base = fixture("mnist_res_qdq_u8.onnx");
    let (name, _) = initializers(&base).unwrap().remove(0);
    let upd = [InitializerUpdate {
        name: name.clone(),
        values: read_initializer(&base, &name).unwrap(),
    }];
    for cut in (0..base.len()).step_by(97) {
        let _ = patch_initializers(&base[..cut], &upd);
        let _ = read_initializer(&base[..cut], &name);
    }
    let mut flipped = base.clone();
    for i in (0..base.len()).step_by(13) {
        flipped[i] ^= 0x80;
        let _ = patch_initializers(&flipped, &upd);
        let _ = initializers(&flipped);
        flipped[i] ^= 0x80;
    }
    // A graph field that claims 2^35 bytes.
    let huge = [0x3a, 0xff, 0xff, 0xff, 0xff, 0x7f, 0];
    let e = initializers(&huge).unwrap_err().to_string();
    assert!(e.contains("claims"), "{e}");
    assert!(initializers(&[]).unwrap_err().to_string().contains("empty"));
    // An 11-byte varint.
    let e = initializers(&[0xff; 11]).unwrap_err().to_string();
    assert!(e.contains("varint"), "{e}");
}

/// The largest INT4 initializer of a model.
fn biggest_i4(model: &[u8]) -> (String, Vec<i8>) {
    initializers(model)
        .unwrap()
        .into_iter()
        .filter_map(|(n, v)| match v {
            TensorValues::I4(v) => Some((n, v)),
            _ => None,
        })
        .max_by_key(|(_, v)| v.len())
        .unwrap()
}

#[test]
fn int4_patch_writes_packed_nibbles_and_nothing_else() {
    let base = fixture("fmnist_cnn_w4.onnx");
    let (name, old) = biggest_i4(&base);
    // Change the first element (low nibble of byte 0) and the last (a high nibble).
    let mut new = old.clone();
    let n = new.len();
    new[0] = if new[0] == 7 { -8 } else { new[0] + 1 };
    new[n - 1] = if new[n - 1] == -8 { 7 } else { new[n - 1] - 1 };
    let out = patch_initializers(
        &base,
        &[InitializerUpdate {
            name: name.clone(),
            values: TensorValues::I4(new.clone()),
        }],
    )
    .unwrap();
    assert_eq!(out.len(), base.len());
    let diff = base.iter().zip(&out).filter(|(a, b)| a != b).count();
    assert_eq!(diff, 2, "two nibbles in two bytes");
    assert_eq!(
        read_initializer(&out, &name).unwrap(),
        TensorValues::I4(new)
    );
    let m = crate::onnx::decode_model(&out).unwrap();
    crate::onnx::import(&m, std::path::Path::new("patched.onnx")).unwrap();
    // Out-of-range values are refused, not wrapped.
    let mut bad = old.clone();
    bad[1] = 8;
    let e = patch_initializers(
        &base,
        &[InitializerUpdate {
            name,
            values: TensorValues::I4(bad),
        }],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("outside its range"), "{e}");
}

#[test]
fn int4_in_int32_data_round_trips_with_an_odd_count() {
    // A 3-element UINT4 tensor in int32_data: one packed byte per entry (0x21, 0x03).
    let t = pb::TensorProto {
        name: "u".into(),
        dims: vec![3],
        data_type: 21,
        int32_data: vec![0x21, 0x03],
        ..Default::default()
    };
    let m = pb::ModelProto {
        graph: Some(pb::GraphProto {
            initializer: vec![t],
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = m.encode_to_vec();
    assert_eq!(
        read_initializer(&bytes, "u").unwrap(),
        TensorValues::U4(vec![1, 2, 3])
    );
    let out = patch_initializers(
        &bytes,
        &[InitializerUpdate {
            name: "u".into(),
            values: TensorValues::U4(vec![15, 0, 9]),
        }],
    )
    .unwrap();
    let back = pb::ModelProto::decode(&out[..]).unwrap();
    assert_eq!(
        back.graph.unwrap().initializer[0].int32_data,
        vec![0x0f, 0x09]
    );
    assert_eq!(
        read_initializer(&out, "u").unwrap(),
        TensorValues::U4(vec![15, 0, 9])
    );
}

/// A Constant node's tensor (PyTorch's converted-model export keeps every weight there) is read
/// and rewritten by the node's output name: same size in place, a size change re-encodes the
/// enclosing length prefixes, and patching back restores the file.
#[test]
fn constant_node_tensors_are_patched_by_output_name() {
    let base = fixture("mnist_res_qat_int.onnx");
    assert!(
        pb::ModelProto::decode(&base[..])
            .unwrap()
            .graph
            .unwrap()
            .initializer
            .is_empty(),
        "every tensor of this fixture is in a Constant node"
    );
    let (name, old) = biggest_i8(&base);
    let new: Vec<i8> = old.iter().map(|&x| x.wrapping_add(1)).collect();
    let upd = |v: &[i8]| {
        [InitializerUpdate {
            name: name.clone(),
            values: TensorValues::I8(v.to_vec()),
        }]
    };
    let out = patch_initializers(&base, &upd(&new)).unwrap();
    only_the_tensor_changed(&base, &out, &old, &new);
    assert_eq!(
        read_initializer(&out, &name).unwrap(),
        TensorValues::I8(new.clone())
    );
    assert_eq!(patch_initializers(&out, &upd(&old)).unwrap(), base);
    // Typed int32_data instead of raw bytes: a longer encoding, so the attribute's, the node's
    // and the graph's length prefixes change; the model still decodes and imports.
    let mut m = pb::ModelProto::decode(&base[..]).unwrap();
    for n in &mut m.graph.as_mut().unwrap().node {
        if n.output[0] == name {
            let t = n.attribute[0].t.as_mut().unwrap();
            t.int32_data = t.raw_data.iter().map(|&b| b as i8 as i32).collect();
            t.raw_data.clear();
        }
    }
    let typed = m.encode_to_vec();
    let out = patch_initializers(&typed, &upd(&new)).unwrap();
    assert_eq!(
        read_initializer(&out, &name).unwrap(),
        TensorValues::I8(new)
    );
    let m = crate::onnx::decode_model(&out).unwrap();
    crate::onnx::import(&m, std::path::Path::new("patched.onnx")).unwrap();
    assert_eq!(patch_initializers(&out, &upd(&old)).unwrap(), typed);
}
